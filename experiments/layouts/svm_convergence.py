"""Metric layout of ``svm_convergence``: arrays with a [record] axis follow ``steps``."""

from typing import TypedDict

import numpy as np


class KindSummary(TypedDict):
    """One parameterisation (W or (K, Q)) over the seeds."""

    final_corr_mean: float
    final_corr_min: float
    iterations_to_threshold: list[int]  #: [seed] -1 if never
    fraction_reached: float
    kinds: list[str]  #: [seed] "global", "local" or "none"


class Summary(TypedDict):
    W: KindSummary
    KQ: KindSummary
    final_cross_W_to_nuc_mean: float
    final_cross_KQ_to_fro_mean: float
    corr_fro_nuc_mean: float
    ablation_final_corr_mean: np.ndarray  #: [ridge] over config.ridge_ablation


class Metrics(TypedDict):
    steps: np.ndarray  #: [record]
    corr_W: np.ndarray  #: [seed, record] corr(W_t, W_mm) against the Frobenius SVM
    corr_KQ: np.ndarray  #: [seed, record] against the nuclear-norm SVM
    mass_W: np.ndarray  #: [seed, record] softmax mass on the selected tokens
    mass_KQ: np.ndarray
    norm_W: np.ndarray  #: [seed, record] ||W_t||
    norm_KQ: np.ndarray
    cross_W_to_nuc: np.ndarray  #: [seed, record] W run against the nuclear-norm SVM
    cross_KQ_to_fro: np.ndarray  #: [seed, record] (K, Q) run against the Frobenius SVM
    ablation_corr: np.ndarray  #: [seed, ridge, record]
    corr_fro_nuc: np.ndarray  #: [seed]
    rank_fro: list[int]  #: [seed]
    rank_nuc: list[int]  #: [seed]
    summary: Summary

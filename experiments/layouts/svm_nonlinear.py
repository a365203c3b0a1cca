"""Metric layout of ``svm_nonlinear``: arrays with a [record] axis follow ``steps``."""

from typing import TypedDict

import numpy as np


class Summary(TypedDict):
    """One value per seed."""

    final_corr_perp: np.ndarray
    final_corr_growth: np.ndarray
    final_corr_full: np.ndarray
    norm_fin_growth_last_decade: np.ndarray
    norm_perp_growth_last_decade: np.ndarray
    final_mass_out: np.ndarray
    final_mass_in_min: np.ndarray


class Metrics(TypedDict):
    steps: np.ndarray  #: [record] 0, then log-spaced
    corr_perp: np.ndarray  #: [seed, record] corr(W_perp, W_mm(O)); NaN if infeasible
    corr_full: np.ndarray  #: [seed, record] corr(W_t, W_mm(O))
    corr_growth: np.ndarray  #: [seed, record] growth of W_perp over the last decade
    norm_fin: np.ndarray  #: [seed, record] ||W_fin||
    norm_perp: np.ndarray  #: [seed, record] ||W_perp||
    mass_out: np.ndarray  #: [seed, record] softmax mass outside the selected sets
    mass_in_min: np.ndarray  #: [seed, record] smallest weight of a selected token
    loss: np.ndarray  #: [seed, record]
    set_sizes: np.ndarray  #: [seed, example] size of each selected set
    multi: list[int]  #: [seed] examples selecting several tokens
    excluded: list[int]  #: [seed]
    feasible: list[bool]  #: [seed] whether the general SVM is feasible
    set_stable_at_threshold_over_10: list[bool]  #: [seed]
    summary: Summary

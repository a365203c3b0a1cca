"""Metric layout of ``batch_size_tests``.

Arrays indexed ``[record]`` follow ``steps`` (``0, record_every, ...``); each record is measured
on the fixed probe set at the parameters before that step's SGD update.
"""

from typing import TypedDict

import numpy as np


class TestSummary(TypedDict):
    """One series over training (first/last quarter of the records)."""

    initial: float  #: the first record (step 0, the initialisation)
    first_quarter: float  #: mean over the first quarter of the records
    last_quarter: float  #: mean over the last quarter
    growth: float  #: last_quarter / first_quarter
    spearman_step: float  #: rank correlation with the step
    spearman_loss: float  #: rank correlation with the probe-set loss
    fraction_passed: float  #: records where config.batch_size >= the request (NaN: noise scale)


class Summary(TypedDict):
    #: norm_test_batch_size, inner_product_batch_size, orthogonality_batch_size, noise_scale
    tests: dict[str, TestSummary]
    augmented_fraction_passed: float  #: batch_size >= max(inner product, orthogonality)
    loss_initial: float  #: probe-set loss at step 0
    loss_final: float  #: at the last record
    loss_first_quarter: float
    loss_last_quarter: float
    grad_norm_growth: float  #: ||G||, last quarter / first quarter
    total_variance_growth: float  #: tr(Sigma), last quarter / first quarter
    num_params: int


class Metrics(TypedDict):
    steps: np.ndarray  #: [record] step of each record
    norm_test_batch_size: np.ndarray  #: [record] B_simple / eta^2 (Byrd et al. 2012)
    inner_product_batch_size: np.ndarray  #: [record] (Bollapragada et al. 2018)
    orthogonality_batch_size: np.ndarray  #: [record] (Bollapragada et al. 2018)
    noise_scale: np.ndarray  #: [record] B_simple = tr(Sigma) / ||G||^2 (McCandlish et al. 2018)
    grad_norm: np.ndarray  #: [record] ||G||, the probe set's mean gradient
    total_variance: np.ndarray  #: [record] tr(Sigma), per-example covariance (n - 1)
    coherence: np.ndarray  #: [record] m-coherence n ||G||^2 / mean ||g_i||^2
    loss: np.ndarray  #: [record] mean loss on the probe set
    summary: Summary

"""Metric layout of ``icl_as_gd``."""

from typing import TypedDict

import numpy as np


class Summary(TypedDict):
    """Values at the last record, one per seed, and the check of the construction."""

    final_loss_lsa: list[float]
    final_loss_gd: list[float]
    final_pred_diff: list[float]
    final_sensitivity_cos: list[float]
    final_weight_cos: list[float]
    construction_max_abs_diff: float  #: max over seeds of |LSA construction - GD step|


class Metrics(TypedDict):
    steps: np.ndarray  #: [record] Adam steps of the records
    eta_grid: list[float]  #: GD step sizes of gd_curve
    eta_star: list[float]  #: [seed] optimal GD step
    gd_curve: np.ndarray  #: [seed, eta] query loss of one GD step
    loss_lsa: np.ndarray  #: [seed, record] query loss of the trained LSA
    loss_gd: np.ndarray  #: [seed, record] query loss of one GD step at eta*
    pred_diff: np.ndarray  #: [seed, record] RMS prediction difference
    sensitivity_cos: np.ndarray  #: [seed, record] cosine of the input sensitivities
    weight_cos: np.ndarray  #: [seed, record] cosine of the effective weights
    summary: Summary

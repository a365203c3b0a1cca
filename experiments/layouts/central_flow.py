"""Metric layout of ``central_flow``: arrays with a [record] axis follow ``steps``."""

from typing import TypedDict

import numpy as np


class Summary(TypedDict):
    threshold: float  #: 2 / eta
    gd_crossing_step: int  #: first record step with GD sharpness >= 2 / eta (-1 if never)
    cf_sharpness_ratio_max: float  #: max of the central flow's lambda_1 / (2 / eta)
    cf_sharpness_ratio_after_min: float  #: its min after GD's crossing
    gd_sharpness_ratio_after_mean: float  #: median of GD's ratio after the crossing
    gf_sharpness_final: float
    cf_predicted_loss_rel_error_median: float  #: vs smoothed GD loss, after the crossing
    cf_loss_rel_error_median: float  #: L(w_CF) vs smoothed GD loss, after the crossing
    gf_loss_rel_error_median: float  #: gradient flow loss vs smoothed GD loss
    distance_cf_final: float  #: ||smoothed GD - central flow|| at the last record
    distance_gf_final: float  #: ||smoothed GD - gradient flow|| at the last record
    travel_final: float  #: ||smoothed GD(t) - w_0|| at the last record
    cf_num_hvps: int
    cf_num_third_order: int


class Metrics(TypedDict):
    steps: np.ndarray  #: [record] record steps t
    gd_loss: np.ndarray  #: [step] GD loss of every step
    gd_loss_smoothed: np.ndarray  #: [step] centred moving average over smooth_window
    gd_sharpness: np.ndarray  #: [record]
    cf_loss: np.ndarray  #: [record] L(w_CF(t))
    cf_predicted_loss: np.ndarray  #: [record] L + 1/2 <H, Sigma>
    cf_sharpness: np.ndarray  #: [record, k]
    cf_residuals: np.ndarray  #: [record, k]
    cf_trace_X: np.ndarray  #: [record]
    cf_sdcp_status: np.ndarray  #: [record]
    cf_eigsh_status: np.ndarray  #: [record]
    gf_loss: np.ndarray  #: [record] gradient flow at t eta
    gf_sharpness: np.ndarray  #: [record]
    distance_cf: np.ndarray  #: [record] ||(w_t + w_{t+1})/2 - w_CF(t)||
    distance_gf: np.ndarray  #: [record] ||(w_t + w_{t+1})/2 - w_GF(t eta)||
    distance_cf_raw: np.ndarray  #: [record] ||w_t - w_CF(t)||
    summary: Summary

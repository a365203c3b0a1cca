"""Metric layout of ``implicit_bias_logistic``."""

from typing import TypedDict

import numpy as np


class Prediction(TypedDict):
    """The asymptotics predicted from the data (``attention.asymptotic_prediction``)."""

    w_tilde: np.ndarray  #: [2] offset of the GD path
    gap_limit: float  #: limit of direction gap x log t
    loss_times_t: float  #: limit of t x loss
    exponent: float  #: kappa: the residual decays like t^-kappa
    lambda_perp: float
    theta: float
    spans: bool


class Fit(TypedDict):
    """Component of w_t along w_hat fitted as A log t + B over the last decade."""

    A: float
    B: float


class Dataset(TypedDict):
    """One dataset; arrays with a [record] axis follow ``steps``."""

    X: np.ndarray  #: [example, 2] after pruning
    y: np.ndarray  #: [example] labels +-1
    w_hat: np.ndarray  #: [2] hard-margin SVM
    num_pruned: int
    svm_converged: bool
    ws: np.ndarray  #: [record, 2] GD iterates
    steps: np.ndarray  #: [record] log-spaced GD steps
    loss: np.ndarray
    angle: np.ndarray
    direction_gap: np.ndarray
    gap_times_log: np.ndarray
    margin_gap: np.ndarray
    norm_over_log: np.ndarray
    predicted_gap: np.ndarray
    residual: np.ndarray  #: ||w_t - w_hat log t - w_tilde||
    fit: Fit
    along: np.ndarray  #: [record] component of w_t along w_hat
    ortho: np.ndarray  #: [record] norm of the orthogonal component
    ortho_limit: float  #: ||P_perp w_tilde||
    prediction: Prediction
    residual_decay_exponent: float  #: fitted over the last decade


class Summary(TypedDict):
    """One value per dataset."""

    fit_slope_along_w_hat: list[float]
    final_ortho: list[float]
    predicted_ortho: list[float]
    predicted_gap_limit: list[float]
    final_residual: list[float]
    residual_decay_exponent: list[float]
    predicted_exponent: list[float]
    predicted_loss_times_t: list[float]
    final_gap_over_predicted: list[float]
    final_direction_gap: list[float]
    final_gap_times_log: list[float]
    final_norm_over_log: list[float]
    svm_norm: list[float]
    final_loss_times_t: list[float]


class Metrics(TypedDict):
    datasets: list[Dataset]
    summary: Summary

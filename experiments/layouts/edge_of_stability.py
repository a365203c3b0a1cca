"""Metric layout of ``edge_of_stability``: one entry per run, named ``LOSS_ETA`` (MLP) or
``cnn_LOSS_ETA``."""

from typing import TypedDict

import numpy as np


class Run(TypedDict):
    steps: np.ndarray  #: [record] the steps of the sharpness records
    sharpness: np.ndarray  #: [record, k] top-k Hessian eigenvalues before the step's update
    residuals: np.ndarray  #: [record, k] their certificates
    num_matvecs: np.ndarray  #: [record] Hessian-vector products per estimate
    status: np.ndarray  #: [record] 0 converged, 1 step budget, 2 rounding floor
    loss: np.ndarray  #: [step] full-batch training loss of every step
    check_steps: np.ndarray  #: [check] steps whose params are stored
    check_params: np.ndarray  #: [check, num_params] ravelled params at those steps
    num_params: int
    loss_kind: str  #: "mse" or "cross_entropy"
    eta: float
    model: str  #: "mlp" or "cnn"


class RunSummary(TypedDict):
    eta: float
    threshold: float  #: 2 / eta
    initial_ratio: float  #: S_0 / (2 / eta)
    max_ratio: float
    tail_ratio_mean: float  #: over the last tail_fraction of the steps
    tail_ratio_min: float
    tail_ratio_max: float
    first_crossing_step: int  #: first step with S >= 2 / eta (-1 if never)
    final_loss: float
    fraction_loss_increases: float  #: fraction of steps whose loss exceeds the previous one
    median_matvecs: float
    max_matvecs: int
    fraction_converged: float


class Metrics(TypedDict):
    runs: dict[str, Run]
    summary: dict[str, RunSummary]

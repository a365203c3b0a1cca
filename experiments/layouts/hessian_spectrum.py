"""Metric layout of ``hessian_spectrum``."""

from typing import NotRequired, TypedDict

import numpy as np


class Spectrum(TypedDict):
    """Top eigenpairs and SLQ density of one operator at one time."""

    eigenvalues: np.ndarray  #: [top_k] descending
    residuals: np.ndarray  #: [top_k] ||Av - theta v||, which bounds each eigenvalue's error
    converged: np.ndarray  #: [top_k] bool
    lanczos_steps: int
    num_matvecs: int
    density_nodes: np.ndarray  #: [probe, step] Ritz nodes of the SLQ
    density_weights: np.ndarray  #: [probe, step] their weights (each probe sums to 1)
    trace_per_param: float  #: tr/P from the SLQ first moment
    trace_per_param_stderr: float
    neg_pos_ratio: float  #: sum of |negative| over sum of positive curvature mass


class Operators(TypedDict):
    hessian: Spectrum
    ggn: Spectrum


class Run(TypedDict):
    """One (dataset, model) run: spectra at initialisation and after training."""

    num_params: int
    init: Operators
    final: Operators
    dense_hessian_top: NotRequired[np.ndarray]  #: [top_k] for P <= dense_check_max_dim
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    loss_history_step: np.ndarray  #: [record]
    loss_history: np.ndarray  #: [record] training loss


class Metrics(TypedDict):
    runs: dict[str, Run]  #: entry of config.runs ("DATASET_MODEL") -> run

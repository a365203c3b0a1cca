"""Metric layout of ``adaptive_eos``: one entry per Adam run, named ``adam_ETA``."""

from typing import TypedDict

import numpy as np


class Run(TypedDict):
    steps: np.ndarray  #: [record] steps of the sharpness records (record 0: step 0)
    pre_sharpness: np.ndarray  #: [record, k] lambda(P^-1 H); NaN at step 0 (no P yet)
    pre_residuals: np.ndarray  #: [record, k] certificates of pre_sharpness
    raw_sharpness: np.ndarray  #: [record, k] lambda(H)
    num_matvecs: np.ndarray  #: [record] products per preconditioned estimate
    raw_num_matvecs: np.ndarray  #: [record] products per raw estimate
    status: np.ndarray  #: [record] 0 converged (preconditioned estimate)
    loss: np.ndarray  #: [step] full-batch training loss of every step
    eta: float


class RunSummary(TypedDict):
    eta: float
    threshold: float  #: (2 + 2 b1) / ((1 - b1) eta)
    max_ratio: float  #: max of lambda(P^-1 H) / threshold
    tail_ratio_mean: float  #: over the last tail_fraction of the records
    tail_ratio_min: float
    tail_ratio_max: float
    first_crossing_step: int  #: -1 if never
    raw_initial: float
    raw_max: float
    raw_final: float
    final_loss: float
    median_matvecs: float
    median_raw_matvecs: float
    fraction_converged: float


class Metrics(TypedDict):
    runs: dict[str, Run]
    summary: dict[str, RunSummary]

"""Metric layout of ``baselines``: nested dicts keyed by dataset name, then model name."""

from typing import TypedDict

import numpy as np


class Run(TypedDict):
    """One (dataset, model, seed) training run."""

    test_acc: float  #: final test accuracy
    train_acc: float  #: final training accuracy
    curve_step: np.ndarray  #: [record] steps at which the curve was recorded
    curve_test_acc: np.ndarray  #: [record] test accuracy at those steps


class Summary(TypedDict):
    """Test accuracy over the seeds of one (dataset, model)."""

    mean: float
    std: float
    per_seed: list[float]


class Metrics(TypedDict):
    reference: dict[str, dict[str, float]]  #: dataset -> model -> published test accuracy
    results: dict[str, dict[str, list[Run]]]  #: dataset -> model -> runs in seed order
    summary: dict[str, dict[str, Summary]]  #: dataset -> model -> summary

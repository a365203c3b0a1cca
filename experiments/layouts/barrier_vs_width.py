"""Metric layout of ``barrier_vs_width``."""

from typing import TypedDict

import numpy as np

#: The alignment methods, in the order of the method axis.
METHODS = ("none", "wm", "am", "ste", "wm_repair")

#: The axes of the arrays, as stored in the result for readers of the JSON file.
AXES = "barrier_*: [dataset, width, method, pair]; test_error: [dataset, width, model]"


class Metrics(TypedDict):
    """Barriers (``max_minus_mean`` on the test set) of every pair, per dataset and width."""

    methods: list[str]  #: METHODS
    barrier_loss: np.ndarray  #: [dataset, width, method, pair]; NaN where a method did not run
    barrier_error: np.ndarray  #: [dataset, width, method, pair]; NaN where a method did not run
    test_error: np.ndarray  #: [dataset, width, model] test error of every trained model
    axes: str  #: AXES

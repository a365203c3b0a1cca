"""Metric layout of ``barrier_vs_training`` (barriers are ``max_minus_mean`` on the test set)."""

from typing import TypedDict

import numpy as np


class Metrics(TypedDict):
    """Part 1 along the checkpoints of two independent runs; part 2 along the spawn steps."""

    steps: np.ndarray  #: [checkpoint] training step of each checkpoint
    naive_loss: np.ndarray  #: [checkpoint] loss barrier without alignment
    naive_error: np.ndarray  #: [checkpoint] error barrier without alignment
    wm_loss: np.ndarray  #: [checkpoint] loss barrier after weight matching
    wm_error: np.ndarray  #: [checkpoint] error barrier after weight matching
    test_error: np.ndarray  #: [checkpoint] test error of the first model
    spawn_steps: np.ndarray  #: [spawn] step k at which the two children were spawned
    spawn_loss: np.ndarray  #: [spawn] loss barrier between the children at the end
    spawn_error: np.ndarray  #: [spawn] error barrier between the children at the end
    child_test_error: np.ndarray  #: [spawn] test error of the first child

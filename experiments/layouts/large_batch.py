"""Metric layout of ``large_batch``.

Axes: ``[seed]`` follows ``config.seed + 0 .. num_seeds - 1``; ``[batch]`` follows
``config.batch_sizes``; ``[record]`` follows ``steps``; ``[variant]`` follows ``VARIANTS``
(``small`` is the small batch, the others the large batch; see the experiment's docstring).
"""

from typing import TypedDict

import numpy as np

VARIANTS = ("small", "baseline", "+sqrt_lr", "+ghost_bn", "+regime", "sqrt_lr+regime", "all")


class Fit(TypedDict):
    """``d_t ~ intercept + slope log t`` and ``d_t ~ C t^power_exponent`` over t >= fit_min_step."""

    intercept: np.ndarray  #: [seed, batch]
    slope: np.ndarray  #: [seed, batch]
    r2: np.ndarray  #: [seed, batch] R^2 of the a + b log t fit
    power_exponent: np.ndarray  #: [seed, batch] slope of log d against log t (random walk: 0.5)
    num_points: int  #: records used by each fit


class Summary(TypedDict):
    num_train: int  #: training examples n
    num_updates: int  #: T = epochs * (n // small_batch), the updates of every sweep run
    gap_mean: list[float]  #: [variant - 1] mean over seeds of acc(small) - acc(variant)
    gap_std: list[float]  #: [variant - 1] sample std over seeds (0 with one seed)
    gap_closed_fraction: float  #: 1 - gap(all) / gap(baseline), of the seed means


class Metrics(TypedDict):
    steps: np.ndarray  #: [record] 0, record_every, ... < num_updates
    distance: np.ndarray  #: [seed, batch, record] ||w_t - w_0||, base lr, num_updates steps
    fit: Fit
    sweep_test_accuracy: np.ndarray  #: [seed, batch] after num_updates steps at the base lr
    variants: list[str]  #: [variant] VARIANTS
    variant_batch_size: list[int]  #: [variant]
    variant_num_steps: list[int]  #: [variant] updates
    variant_learning_rate: list[float]  #: [variant]
    variant_ghost: list[bool]  #: [variant] ghost batch norm on
    test_accuracy: np.ndarray  #: [variant, seed] eval mode, held-out split
    train_accuracy: np.ndarray  #: [variant, seed] eval mode, training set
    final_distance: np.ndarray  #: [variant, seed] ||w_T - w_0|| at the end of the run
    summary: Summary

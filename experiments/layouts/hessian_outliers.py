"""Metric layout of ``hessian_outliers``.

Nested lists indexed ``[C, width]`` follow ``config.num_classes`` and ``config.widths``; the seed
axis follows ``summary["seeds"]`` (the config seed first, whose runs are in ``runs``).
"""

from typing import NotRequired, TypedDict

import numpy as np


def run_key(num_classes: int, width: int) -> str:
    """The key of the run with ``num_classes`` classes and hidden ``width`` in ``runs``."""
    return f"C{num_classes}_w{width}"


class Spectrum(TypedDict):
    """Top eigenpairs of one operator (Hessian or GGN) of one trained model."""

    eigenvalues: np.ndarray  #: [k] descending, k = C + num_extra
    residuals: np.ndarray  #: [k] ||Av - theta v||
    converged: bool
    num_matvecs: int
    outlier_count: int  #: by the last-gap rule at config.gap_threshold
    bulk_edge: float  #: eigenvalues[outlier_count] (NaN if every eigenvalue is an outlier)
    outlier_gap: float  #: eigenvalues[count - 1] / eigenvalues[count] (1 without outliers)
    overlap: float  #: top-C eigenspace against the span of the class-mean gradients
    density_nodes: NotRequired[np.ndarray]  #: Hessian only: [probe, step] SLQ nodes
    density_weights: NotRequired[np.ndarray]  #: Hessian only: [probe, step] SLQ weights


class Run(TypedDict):
    num_params: int
    train_loss: float
    train_accuracy: float
    overlap_random: float  #: C / P, the overlap of a random C-dimensional subspace
    hessian: Spectrum
    ggn: Spectrum
    dense_hessian_top: NotRequired[np.ndarray]  #: [k] dense eigvalsh, for P <= dense_check_max_dim


class Counts(TypedDict):
    """Outlier counts at one gap threshold, ``[C, width, seed]``, per operator."""

    hessian: list[list[list[int]]]
    ggn: list[list[list[int]]]


class KindSummary(TypedDict):
    counts_by_seed: list[list[list[int]]]  #: [C, width, seed] at config.gap_threshold
    outlier_count: list[list[int]]  #: [C, width] first seed
    overlap: list[list[float]]  #: [C, width] first seed
    bulk_edge: list[list[float]]  #: [C, width] first seed


class Summary(TypedDict):
    seeds: list[int]
    threshold_sensitivity: dict[str, Counts]  #: str(threshold) -> counts
    hessian: KindSummary
    ggn: KindSummary


class Metrics(TypedDict):
    runs: dict[str, Run]  #: run_key(C, width) -> run (first seed)
    summary: Summary

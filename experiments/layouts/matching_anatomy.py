"""Metric layout of ``matching_anatomy``."""

from typing import TypedDict

import numpy as np

#: The columns of ``layer_table``.
LAYER_COLUMNS = ("midpoint_barrier", "max_barrier", "predicted", "measured_midpoint")


class Distances(TypedDict):
    before: float  #: ||theta_A - theta_B||
    after: float  #: the same after weight matching
    norm_a: float
    norm_b: float


class Overlap(TypedDict):
    """Top-k singular-subspace overlaps of one weight matrix, k = 1..top_k."""

    left: np.ndarray  #: [k]
    right: np.ndarray  #: [k]
    sv_a: np.ndarray  #: singular values of model A's matrix
    random: np.ndarray  #: [k] the overlap of random subspaces, k / rows


class Metrics(TypedDict):
    distances: Distances
    overlap_before: dict[str, Overlap]  #: weight-matrix path -> overlaps before matching
    overlap_after: dict[str, Overlap]  #: the same after matching
    layers: list[str]  #: rows of layer_table: the layer groups, then "all"
    layer_table: np.ndarray  #: [layer, column], columns LAYER_COLUMNS; "all" has no max
    layer_columns: list[str]  #: LAYER_COLUMNS
    wm_history: np.ndarray  #: weight-matching objective per sweep

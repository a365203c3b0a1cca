"""Metric layout of ``svm_rank``."""

from typing import TypedDict


class PerN(TypedDict):
    """One number of examples n; lists follow ``ds``, NaN where no draw was feasible."""

    infeasible_fraction: list[float]
    rank_fro_mean: list[float]
    rank_fro_max: list[float]
    rank_nuc_mean: list[float]
    rank_nuc_max: list[float]
    corr_mean: list[float]  #: corr(W_fro, W_nuc) over feasible draws
    max_violation: float  #: largest constraint violation over all d


class Metrics(TypedDict):
    ds: list[int]  #: the dimensions d
    per_n: dict[str, PerN]  #: str(n) -> results

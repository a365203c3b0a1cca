"""Rank of the Frobenius and nuclear-norm Att-SVM solutions, and infeasibility at small d.

For each number of examples n and dimension d, draws random token-selection problems (T tokens
per example, unit-sphere tokens, queries and head) and solves Att-SVM for the optimal tokens with
both norms (``att_svm``: JAX dual QP for Frobenius, cvxpy/Clarabel SDP for nuclear). Records the
fraction of infeasible draws (LP check), the numerical rank of each solution (singular values
above ``rank_tol`` times the largest), and ``corr(W_fro, W_nuc)``. Theory (Tarzanagh et al.):
the Frobenius solution has rank at most n; the nuclear-norm solution tends to have lower rank;
small d makes the problem infeasible.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from experiments.layouts.svm_rank import Metrics
from landscape import attention as att
from landscape import data
from landscape.experiment import RunContext, check_fields


@dataclass(frozen=True)
class Config:
    """Default: n in {5, 10}, d from 2 to 20, T = 8, 12 draws per (n, d)."""

    seed: int = 0
    ns: tuple[int, ...] = (5, 10)
    ds: tuple[int, ...] = (2, 3, 4, 6, 8, 10, 14, 20)
    T: int = 8
    num_draws: int = 12
    rank_tol: float = 1e-5

    @classmethod
    def smoke(cls) -> Config:
        return cls(ns=(2,), ds=(2, 4), T=3, num_draws=2)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("ns", "ds", "num_draws"))
        if not 0 < self.rank_tol < 1:
            raise ValueError(f"config key 'rank_tol' must be in (0, 1) (relative to the largest "
                             f"singular value); got {self.rank_tol}")
        for key in ("ns", "ds"):
            if not getattr(self, key):
                raise ValueError(f"config key {key!r} must be non-empty; got ()")
        if self.T < 2:
            raise ValueError(f"config key 'T' must be >= 2 (tokens to select from); got {self.T}")


def _rank(W, tol) -> int:
    s = np.linalg.svd(W, compute_uv=False)
    return int((s > tol * s[0]).sum())


def one_draw(config: Config, n: int, d: int, k: int) -> dict:
    """Solve both SVMs for draw ``k`` of (n, d); ranks are -1 and corr NaN when infeasible."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), n * 1000 + d), k)
    tok = data.token_selection_data(key, n, config.T, d)
    fro = att.att_svm(tok.X, tok.Z, tok.opt_index, norm="fro", on_infeasible="flag")
    if not fro.feasible:
        return {"feasible": False, "rank_fro": -1, "rank_nuc": -1, "corr": float("nan"),
                "violation": 0.0}
    nuc = att.att_svm(tok.X, tok.Z, tok.opt_index, norm="nuc")
    corr = float((fro.W * nuc.W).sum() / (np.linalg.norm(fro.W) * np.linalg.norm(nuc.W)))
    return {"feasible": True, "rank_fro": _rank(fro.W, config.rank_tol),
            "rank_nuc": _rank(nuc.W, config.rank_tol), "corr": corr,
            "violation": max(fro.max_violation, nuc.max_violation)}


def run_cell(config: Config, n: int, d: int) -> dict:
    draws = [one_draw(config, n, d, k) for k in range(config.num_draws)]
    feas = np.array([r["feasible"] for r in draws])
    pick = lambda f: np.array([r[f] for r in draws], float)[feas]  # noqa: E731
    return {
        "infeasible_fraction": float(1.0 - feas.mean()),
        "rank_fro": pick("rank_fro"), "rank_nuc": pick("rank_nuc"), "corr": pick("corr"),
        "max_violation": float(pick("violation").max()) if feas.any() else 0.0,
    }


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    cells = [(n, d) for n in config.ns for d in config.ds]
    out = {}
    for n, d in ctx.progress(cells, desc="(n, d)"):
        out[(n, d)] = ctx.stage(f"n{n}_d{d}", lambda n=n, d=d: run_cell(config, n, d))
    stat = lambda n, f, g: [g(out[(n, d)][f]) if len(out[(n, d)][f]) else np.nan  # noqa: E731
                            for d in config.ds]
    per_n = {}
    for n in config.ns:
        per_n[str(n)] = {
            "infeasible_fraction": [out[(n, d)]["infeasible_fraction"] for d in config.ds],
            "rank_fro_mean": stat(n, "rank_fro", np.mean),
            "rank_fro_max": stat(n, "rank_fro", np.max),
            "rank_nuc_mean": stat(n, "rank_nuc", np.mean),
            "rank_nuc_max": stat(n, "rank_nuc", np.max),
            "corr_mean": stat(n, "corr", np.mean),
            "max_violation": max(out[(n, d)]["max_violation"] for d in config.ds),
        }
    return {"ds": list(config.ds), "per_n": per_n}

"""Attention converges in direction to its max-margin token selection (Tarzanagh et al. 2023).

For each seed, random token-selection data (n examples, T tokens, dimension d; tokens, queries
and head on the unit sphere, random labels) trains a one-layer attention model
``f(X) = v^T X^T softmax(X W z)`` with the logistic loss and normalised GD (step 0.1, float64):

* in the ``W`` parameterisation, against the Frobenius Att-SVM solution;
* in the ``(K, Q)`` parameterisation (``W = K Q^T``, each factor normalised separately, a tiny
  ridge), against the nuclear-norm Att-SVM* solution.

Each run is compared with the SVM of the token selection it converged to (the token of largest
softmax weight per example), classified as globally optimal, locally optimal or neither
(``landscape.attention.locality``). The run records ``corr(W_t, W_mm)``, the softmax mass on the
selected tokens and ``||W_t||``, the cross-correlations (each run against the *other* norm's
solution: the two solutions differ, so each run should prefer its own), ``corr(W_fro, W_nuc)``,
and a ridge ablation for ``(K, Q)`` (without a ridge the gradient underflows once the softmax
saturates and the direction freezes short of the SVM).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from experiments.layouts.svm_convergence import Metrics
from landscape import attention as att
from landscape import data
from landscape.experiment import RunContext, check_fields


@dataclass(frozen=True)
class Config:
    """Default: n=6, T=8, d=10, 10 seeds, 3000 normalised-GD steps of size 0.1."""

    seed: int = 0
    num_seeds: int = 10
    n: int = 6
    T: int = 8
    d: int = 10
    num_steps: int = 3000
    record_every: int = 20
    learning_rate: float = 0.1
    init_scale_W: float = 0.01
    init_scale_KQ: float = 0.1
    ridge: float = 1e-16
    ridge_ablation: tuple[float, ...] = (0.0, 1e-16, 1e-12, 1e-8, 1e-4)
    threshold: float = 0.99

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_seeds=2, n=3, T=4, d=5, num_steps=400, record_every=20,
                   ridge_ablation=(0.0, 1e-16))

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("num_seeds", "n", "d", "num_steps", "record_every",
                                     "learning_rate", "init_scale_W", "init_scale_KQ"),
                     nonnegative=("ridge", "ridge_ablation"), unit=("threshold",))
        if self.T < 2:
            raise ValueError(f"config key 'T' must be >= 2 (tokens to select from); got {self.T}")
        if self.num_steps % self.record_every:
            raise ValueError(f"config key 'num_steps' must be a multiple of record_every "
                             f"({self.record_every}); got {self.num_steps}")
        if not self.ridge_ablation:
            raise ValueError("config key 'ridge_ablation' must be non-empty; got ()")


def _train(params, X, Z, Y, v, *, num_steps, record_every, learning_rate, ridge):
    return att.train_attention(params, X, Z, Y, att.linear_head(v), num_steps=num_steps,
                               learning_rate=learning_rate, ridge=ridge,
                               record_every=record_every).W


_TRAIN = jax.jit(_train, static_argnames=("num_steps", "record_every", "learning_rate", "ridge"))


def iterations_to(steps, corr, threshold) -> int:
    """First recorded step after which ``corr`` stays >= ``threshold`` (-1 if never)."""
    below = np.flatnonzero(~(np.asarray(corr) >= threshold))
    if len(below) == 0:
        return int(steps[0])
    return int(steps[below[-1] + 1]) if below[-1] + 1 < len(steps) else -1


def _track(Ws, tok, norm):
    """Selection reached by a run, its kind, and the metrics against that selection's SVM."""
    sel = att.selected_tokens(Ws[-1], tok.X, tok.Z)
    verdict = att.is_locally_optimal(tok.X, tok.Z, tok.scores, sel, norm=norm)
    if not verdict.feasible:
        nan = np.full(Ws.shape[0], np.nan)
        return verdict, {"corr": nan, "mass": nan, "norm": np.linalg.norm(Ws, axis=(1, 2))}
    m = att.track_svm(Ws, tok.X, tok.Z, verdict.solution.W, sel)
    return verdict, {"corr": np.asarray(m.corr), "mass": np.asarray(m.mass),
                     "norm": np.asarray(m.norm)}


def run_seed(config: Config, s: int) -> dict:
    """One seed: data, the W run, the (K, Q) runs for every ridge, metrics (numpy, float64)."""
    with jax.enable_x64(True):  # the theory needs float64 whatever the global flag
        return _run_seed(config, s)


def _run_seed(config: Config, s: int) -> dict:
    kd, kw, kk, kq = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), s), 4)
    c = config
    tok = data.token_selection_data(kd, c.n, c.T, c.d, dtype=jnp.float64)
    kw_ = dict(num_steps=c.num_steps, record_every=c.record_every, learning_rate=c.learning_rate)
    pW = {"W": c.init_scale_W * jax.random.normal(kw, (c.d, c.d), jnp.float64)}
    W_runs = np.asarray(_TRAIN(pW, tok.X, tok.Z, tok.Y, tok.v, ridge=0.0, **kw_))
    pKQ = {"K": c.init_scale_KQ * jax.random.normal(kk, (c.d, c.d), jnp.float64),
           "Q": c.init_scale_KQ * jax.random.normal(kq, (c.d, c.d), jnp.float64)}
    ridges = tuple(dict.fromkeys((c.ridge,) + tuple(c.ridge_ablation)))
    KQ_runs = {r: np.asarray(_TRAIN(pKQ, tok.X, tok.Z, tok.Y, tok.v, ridge=r, **kw_))
               for r in ridges}
    vW, mW = _track(W_runs, tok, "fro")
    vKQ, mKQ = _track(KQ_runs[c.ridge], tok, "nuc")
    fro = att.att_svm(tok.X, tok.Z, tok.opt_index, norm="fro", on_infeasible="flag")
    nuc = att.att_svm(tok.X, tok.Z, tok.opt_index, norm="nuc", on_infeasible="flag")
    cross_W = np.asarray(att.matrix_corr(W_runs, vKQ.solution.W[None]))
    cross_KQ = np.asarray(att.matrix_corr(KQ_runs[c.ridge], vW.solution.W[None]))
    ablation = [_track(KQ_runs[r], tok, "nuc")[1]["corr"] for r in c.ridge_ablation]
    return {
        "W": mW, "KQ": mKQ, "kind_W": vW.kind, "kind_KQ": vKQ.kind,
        "cross_W_to_nuc": cross_W, "cross_KQ_to_fro": cross_KQ,
        "ablation_corr": np.stack(ablation),
        "corr_fro_nuc": float(att.matrix_corr(fro.W, nuc.W)) if fro.feasible else float("nan"),
        "rank_fro": int(np.linalg.matrix_rank(fro.W, 1e-6 * np.linalg.norm(fro.W, 2))),
        "rank_nuc": int(np.linalg.matrix_rank(nuc.W, 1e-6 * np.linalg.norm(nuc.W, 2))),
    }


def _summary(config, steps, seeds) -> dict:
    out = {}
    for key in ("W", "KQ"):
        corr = np.stack([r[key]["corr"] for r in seeds])
        its = [iterations_to(steps, c, config.threshold) for c in corr]
        out[key] = {"final_corr_mean": float(np.nanmean(corr[:, -1])),
                    "final_corr_min": float(np.nanmin(corr[:, -1])),
                    "iterations_to_threshold": its,
                    "fraction_reached": float(np.mean(np.asarray(its) >= 0)),
                    "kinds": [r[f"kind_{key}"] for r in seeds]}
    out["final_cross_W_to_nuc_mean"] = float(np.mean([r["cross_W_to_nuc"][-1] for r in seeds]))
    out["final_cross_KQ_to_fro_mean"] = float(np.mean([r["cross_KQ_to_fro"][-1] for r in seeds]))
    out["corr_fro_nuc_mean"] = float(np.nanmean([r["corr_fro_nuc"] for r in seeds]))
    abl = np.stack([r["ablation_corr"][:, -1] for r in seeds])
    out["ablation_final_corr_mean"] = np.nanmean(abl, axis=0)
    return out


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    seeds = [ctx.stage(f"seed{s}", lambda s=s: run_seed(config, s))
             for s in ctx.progress(range(config.num_seeds), desc="seeds")]
    steps = np.arange(config.num_steps // config.record_every + 1) * config.record_every
    stack = lambda k, f: np.stack([r[k][f] for r in seeds])  # noqa: E731
    return {
        "steps": steps,
        "corr_W": stack("W", "corr"), "corr_KQ": stack("KQ", "corr"),
        "mass_W": stack("W", "mass"), "mass_KQ": stack("KQ", "mass"),
        "norm_W": stack("W", "norm"), "norm_KQ": stack("KQ", "norm"),
        "cross_W_to_nuc": np.stack([r["cross_W_to_nuc"] for r in seeds]),
        "cross_KQ_to_fro": np.stack([r["cross_KQ_to_fro"] for r in seeds]),
        "ablation_corr": np.stack([r["ablation_corr"] for r in seeds]),
        "corr_fro_nuc": np.asarray([r["corr_fro_nuc"] for r in seeds]),
        "rank_fro": [r["rank_fro"] for r in seeds], "rank_nuc": [r["rank_nuc"] for r in seeds],
        "summary": _summary(config, steps, seeds),
    }

"""Nonlinear head: the general SVM equivalence against gradient descent.

With a two-layer ReLU head ``h(u) = a^T relu(U u)`` (random, fixed), attention may keep several
tokens per example. For each seed the run trains ``W`` with normalised GD (step 0.1, float64),
reads off the selected token sets ``O_i`` (softmax weight above ``threshold`` at the end), solves
the general Att-SVM for those sets (``att_svm`` with a boolean mask: selected tokens beat the
others by a margin and tie among themselves) and tracks the prediction of Tarzanagh et al.
(2023, Sec. 6): ``W_t = W_fin + W_perp`` with ``W_perp`` aligning with ``W_mm(O)``
(``corr_perp -> 1``) and ``W_fin`` (the part that reweighs the selected tokens) staying finite.
``corr_full = corr(W_t, W_mm)`` is shown for contrast.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from landscape import attention as att
from landscape import data
from landscape.experiment import RunContext


@dataclass(frozen=True)
class Config:
    """Default: n=6, T=8, d=10, ReLU head of width 8, 6 seeds, 10000 steps."""

    seed: int = 0
    num_seeds: int = 6
    n: int = 6
    T: int = 8
    d: int = 10
    head_width: int = 8
    num_steps: int = 10_000
    record_every: int = 200
    learning_rate: float = 0.1
    init_scale: float = 0.01
    threshold: float = 1e-3

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_seeds=2, n=3, T=4, d=4, head_width=4, num_steps=200, record_every=50)


def _train(params, X, Z, Y, U, a, *, num_steps, record_every, learning_rate):
    return att.train_attention(params, X, Z, Y, att.relu_head(U, a), num_steps=num_steps,
                               learning_rate=learning_rate, record_every=record_every)


_TRAIN = jax.jit(_train, static_argnames=("num_steps", "record_every", "learning_rate"))


def run_seed(config: Config, s: int) -> dict:
    c = config
    with jax.enable_x64(True):
        kd, kh, kw = jax.random.split(jax.random.fold_in(jax.random.key(c.seed), s), 3)
        tok = data.token_selection_data(kd, c.n, c.T, c.d, dtype=jnp.float64)
        U, a = att.random_relu_head(kh, c.d, c.head_width, dtype=jnp.float64)
        W0 = c.init_scale * jax.random.normal(kw, (c.d, c.d), jnp.float64)
        traj = _TRAIN({"W": W0}, tok.X, tok.Z, tok.Y, U, a, num_steps=c.num_steps,
                      record_every=c.record_every, learning_rate=c.learning_rate)
        Ws = np.asarray(traj.W)
        sel = att.selected_set(Ws[-1], tok.X, tok.Z, c.threshold)
    if sel.all(axis=1).all():
        nan = np.full(Ws.shape[0], np.nan)
        return {"corr_perp": nan, "corr_full": nan, "norm_fin": nan, "norm_perp": nan,
                "feasible": False, "set_sizes": sel.sum(1), "multi": 0, "excluded": c.n,
                "loss": np.asarray(traj.loss)}
    cmp = att.compare_general_svm(Ws, tok.X, tok.Z, sel)
    return {"corr_perp": cmp.corr_perp, "corr_full": cmp.corr_full, "norm_fin": cmp.norm_fin,
            "norm_perp": cmp.norm_perp, "feasible": bool(cmp.solution.feasible),
            "set_sizes": sel.sum(1), "multi": cmp.multi, "excluded": cmp.excluded,
            "loss": np.asarray(traj.loss)}


def run(config: Config, ctx: RunContext | None = None) -> dict:
    ctx = ctx or RunContext.ephemeral()
    rows = [ctx.stage(f"seed{s}", lambda s=s: run_seed(config, s))
            for s in ctx.progress(range(config.num_seeds), desc="seeds")]
    steps = np.arange(config.num_steps // config.record_every + 1) * config.record_every
    stack = lambda k: np.stack([r[k] for r in rows])  # noqa: E731
    corr_perp = stack("corr_perp")
    mid = len(steps) // 2
    return {
        "steps": steps,
        "corr_perp": corr_perp, "corr_full": stack("corr_full"),
        "norm_fin": stack("norm_fin"), "norm_perp": stack("norm_perp"), "loss": stack("loss"),
        "set_sizes": stack("set_sizes"),
        "multi": [r["multi"] for r in rows], "excluded": [r["excluded"] for r in rows],
        "feasible": [r["feasible"] for r in rows],
        "summary": {
            "final_corr_perp": corr_perp[:, -1],
            "final_corr_full": stack("corr_full")[:, -1],
            "norm_fin_growth_last_half": stack("norm_fin")[:, -1] / stack("norm_fin")[:, mid],
            "norm_perp_growth_last_half": stack("norm_perp")[:, -1] / stack("norm_perp")[:, mid],
        },
    }

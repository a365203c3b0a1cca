"""Nonlinear head: the general SVM equivalence against gradient descent.

With a two-layer ReLU head ``h(u) = a^T relu(U u)`` (random, fixed), attention may keep several
tokens per example. For each seed the run trains ``W`` with plain GD (float64) over several
decades of steps, recording on a log-spaced schedule. It reads off the selected token sets ``O_i``
(softmax weight above ``threshold`` at the end), solves the general Att-SVM for those sets
(``att_svm`` with a boolean mask: selected tokens beat the others by a margin and tie among
themselves) and tracks the prediction of Tarzanagh et al. (2023, Sec. 6): ``W_t = W_fin + W_perp``
with ``W_fin`` (the part that reweighs the selected tokens) converging to a finite matrix and
``W_perp`` growing in the direction of ``W_mm(O)``.

Why plain GD and not the normalised GD of ``svm_convergence``: normalised GD keeps its step at
``learning_rate`` in norm, so the finite part never settles and the growth of ``||W_perp||`` falls
back to ``log t`` anyway (measured: 40,000 normalised steps reach ``||W|| = 40``, as 10^6 GD steps
do). With plain GD ``||W_perp||`` grows like ``log t``, so ``corr(W_perp, W_mm)`` approaches 1 at
the slow ``1/log t`` rate; the growth direction over the last decade, ``W_perp(t) - W_perp(t/10)``,
cancels the bounded offset and is the sharp check (``corr_growth``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.layouts.svm_nonlinear import Metrics
from landscape import attention as att
from landscape import data
from landscape.experiment import RunContext, check_fields


@dataclass(frozen=True)
class Config:
    """Default: n=6, T=8, d=10, ReLU head of width 8, 8 seeds, 10^6 GD steps of size 5."""

    seed: int = 0
    num_seeds: int = 8
    n: int = 6
    T: int = 8
    d: int = 10
    head_width: int = 8
    num_steps: int = 1_000_000
    records_per_decade: int = 10
    learning_rate: float = 5.0
    init_scale: float = 0.01
    threshold: float = 1e-2

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_seeds=2, n=3, T=4, d=4, head_width=4, num_steps=1000,
                   records_per_decade=4)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("num_seeds", "n", "d", "head_width", "records_per_decade",
                                     "learning_rate", "init_scale"))
        if not 0 < self.threshold < 1:
            raise ValueError(f"config key 'threshold' must be in (0, 1) (a softmax weight); "
                             f"got {self.threshold}")
        if self.T < 2:
            raise ValueError(f"config key 'T' must be >= 2 (tokens to select from); got {self.T}")
        if self.num_steps < 100:  # see record_steps
            raise ValueError(f"config key 'num_steps' must be >= 100 (two decades); "
                             f"got {self.num_steps}")


def record_steps(config: Config) -> np.ndarray:
    """Step 0, then ``records_per_decade`` log-spaced steps per decade from 10 to ``num_steps``."""
    c = config
    if c.num_steps < 100:
        raise ValueError(f"num_steps must be >= 100 (two decades); got {c.num_steps}")
    k = int(round(c.records_per_decade * np.log10(c.num_steps / 10)))
    steps = np.rint(np.geomspace(10, c.num_steps, k + 1)).astype(np.int64)
    return np.concatenate([[0], steps])


def _train(params, X, Z, Y, U, a, *, record_at, learning_rate):
    return att.train_attention(params, X, Z, Y, att.relu_head(U, a), num_steps=record_at[-1],
                               optimizer=optax.sgd(learning_rate), record_at=record_at)


def run_seed(config: Config, s: int) -> dict:
    c = config
    at = record_steps(c)
    with jax.enable_x64(True):
        kd, kh, kw = jax.random.split(jax.random.fold_in(jax.random.key(c.seed), s), 3)
        tok = data.token_selection_data(kd, c.n, c.T, c.d, dtype=jnp.float64)
        U, a = att.random_relu_head(kh, c.d, c.head_width, dtype=jnp.float64)
        W0 = c.init_scale * jax.random.normal(kw, (c.d, c.d), jnp.float64)
        train = jax.jit(lambda p: _train(p, tok.X, tok.Z, tok.Y, U, a, record_at=tuple(at),
                                         learning_rate=c.learning_rate))
        traj = train({"W": W0})
        Ws = np.asarray(traj.W)
        sel = att.selected_set(Ws[-1], tok.X, tok.Z, c.threshold)
        sel_lower = att.selected_set(Ws[-1], tok.X, tok.Z, c.threshold / 10)
    common = {"set_sizes": sel.sum(1), "loss": np.asarray(traj.loss),
              "set_stable_at_threshold_over_10": bool((sel == sel_lower).all())}
    if sel.all(axis=1).all():
        nan = np.full(Ws.shape[0], np.nan)
        return {**common, **{k: nan for k in ("corr_perp", "corr_full", "corr_growth",
                                              "norm_fin", "norm_perp", "mass_out",
                                              "mass_in_min")},
                "feasible": False, "multi": 0, "excluded": c.n}
    cmp = att.compare_general_svm(Ws, tok.X, tok.Z, sel, growth_lag=c.records_per_decade)
    return {**common, "corr_perp": cmp.corr_perp, "corr_full": cmp.corr_full,
            "corr_growth": cmp.corr_growth, "norm_fin": cmp.norm_fin,
            "norm_perp": cmp.norm_perp, "mass_out": cmp.mass_out, "mass_in_min": cmp.mass_in_min,
            "feasible": bool(cmp.solution.feasible), "multi": cmp.multi,
            "excluded": cmp.excluded}


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    rows = [ctx.stage(f"seed{s}", lambda s=s: run_seed(config, s))
            for s in ctx.progress(range(config.num_seeds), desc="seeds")]
    stack = lambda k: np.stack([r[k] for r in rows])  # noqa: E731
    lag = config.records_per_decade
    with np.errstate(invalid="ignore", divide="ignore"):  # no finite part: 0/0 -> NaN
        fin_growth = stack("norm_fin")[:, -1] / stack("norm_fin")[:, -1 - lag]
    return {
        "steps": record_steps(config),
        **{k: stack(k) for k in ("corr_perp", "corr_full", "corr_growth", "norm_fin",
                                  "norm_perp", "mass_out", "mass_in_min", "loss", "set_sizes")},
        "multi": [r["multi"] for r in rows], "excluded": [r["excluded"] for r in rows],
        "feasible": [r["feasible"] for r in rows],
        "set_stable_at_threshold_over_10": [r["set_stable_at_threshold_over_10"] for r in rows],
        "summary": {
            "final_corr_perp": stack("corr_perp")[:, -1],
            "final_corr_growth": stack("corr_growth")[:, -1],
            "final_corr_full": stack("corr_full")[:, -1],
            "norm_fin_growth_last_decade": fin_growth,
            "norm_perp_growth_last_decade": (stack("norm_perp")[:, -1]
                                             / stack("norm_perp")[:, -1 - lag]),
            "final_mass_out": stack("mass_out")[:, -1],
            "final_mass_in_min": stack("mass_in_min")[:, -1],
        },
    }

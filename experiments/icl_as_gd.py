"""A trained linear self-attention layer does one step of GD in context (von Oswald et al. 2023).

In-context linear regression (d inputs, N context examples, ``w ~ N(0, I)``, ``x ~ U(-1, 1)^d``).
The baseline is one GD step from ``W_0 = 0`` on the in-context least squares loss with the step
``eta*`` that minimises the query error (closed form, ``optimal_gd_learning_rate``), which is also
exactly the LSA construction of von Oswald et al. (checked to rounding here). An LSA layer
(``{"W_K", "W_Q", "W_V", "P"}``) is trained with Adam on fresh tasks; every ``record_every`` steps
it is compared with the GD learner on a fixed evaluation set: both losses, the RMS prediction
difference, the mean cosine between the input sensitivities ``d y_hat / d x_q`` and the cosine
between the effective weights (equal up to scale means cosine 1). Float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from experiments.layouts.icl_as_gd import Metrics
from landscape import attention as att
from landscape import data
from landscape.experiment import RunContext, check_fields


@dataclass(frozen=True)
class Config:
    """Default: d = 10, N = 10, 2 seeds of 4000 Adam steps (batch 256)."""

    seed: int = 0
    num_seeds: int = 2
    dim: int = 10
    num_context: int = 10
    num_steps: int = 4000
    batch_size: int = 256
    learning_rate: float = 1e-3
    record_every: int = 200
    num_eval_tasks: int = 2048
    init_scale: float = 0.05
    eta_grid: tuple[float, ...] = tuple(np.round(np.linspace(0.2, 3.0, 15), 3))

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_seeds=1, dim=3, num_context=5, num_steps=200, batch_size=32,
                   learning_rate=1e-2, record_every=50, num_eval_tasks=128,
                   eta_grid=(0.5, 1.0, 2.0))

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("num_seeds", "dim", "num_context", "num_steps",
                                     "batch_size", "learning_rate", "record_every",
                                     "num_eval_tasks", "init_scale", "eta_grid"))
        if not self.eta_grid:
            raise ValueError("config key 'eta_grid' must be non-empty; got ()")
        if self.num_steps % self.record_every:
            raise ValueError(f"config key 'num_steps' must be a multiple of record_every "
                             f"({self.record_every}); got {self.num_steps}")


_TRAIN = jax.jit(att.train_lsa, static_argnames=("num_steps", "batch_size", "record_every"))


def run_seed(config: Config, s: int) -> dict:
    c = config
    with jax.enable_x64(True):
        ke, ki, kt = jax.random.split(jax.random.fold_in(jax.random.key(c.seed), s), 3)
        ev = data.linear_regression_tasks(ke, c.num_eval_tasks, c.num_context, c.dim,
                                          dtype=jnp.float64)
        eta = att.optimal_gd_learning_rate(ev)
        gd_curve = [float(0.5 * jnp.mean((att.gd_step_prediction(ev, e) - ev["y_query"]) ** 2))
                    for e in c.eta_grid]
        construction = att.lsa_construction(c.dim, eta, c.num_context, dtype=jnp.float64)
        check = float(jnp.max(jnp.abs(att.lsa_predict(construction, data.icl_tokens(ev))
                                      - att.gd_step_prediction(ev, eta))))
        p0 = att.init_lsa(ki, c.dim, c.init_scale, dtype=jnp.float64)
        _, steps, recs = _TRAIN(kt, p0, ev, eta, num_steps=c.num_steps, batch_size=c.batch_size,
                                learning_rate=c.learning_rate, record_every=c.record_every)
        recs = {k: np.asarray(v) for k, v in recs._asdict().items()}
    return {"eta_star": float(eta), "gd_curve": np.asarray(gd_curve),
            "construction_max_abs_diff": check, "steps": np.asarray(steps), **recs}


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    rows = [ctx.stage(f"seed{s}", lambda s=s: run_seed(config, s))
            for s in ctx.progress(range(config.num_seeds), desc="seeds")]
    stack = lambda k: np.stack([r[k] for r in rows])  # noqa: E731
    fields = ("loss_lsa", "loss_gd", "pred_diff", "sensitivity_cos", "weight_cos")
    return {
        "steps": rows[0]["steps"], "eta_grid": list(config.eta_grid),
        "eta_star": [r["eta_star"] for r in rows], "gd_curve": stack("gd_curve"),
        **{f: stack(f) for f in fields},
        "summary": {
            **{f"final_{f}": [float(r[f][-1]) for r in rows] for f in fields},
            "construction_max_abs_diff": max(r["construction_max_abs_diff"] for r in rows),
        },
    }

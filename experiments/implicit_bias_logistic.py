"""GD on separable logistic regression converges in direction to the hard-margin SVM, slowly.

Soudry et al. (2018): on separable data, full-batch GD on the logistic loss has
``w_t / ||w_t|| -> w_hat / ||w_hat||`` with a direction gap decaying like ``1 / log t``, while the
loss decays like ``1 / t`` and ``||w_t|| / log t -> ||w_hat||``. The run draws asymmetric
separable 2-D datasets (``asymmetric_separable_2d``; symmetric data hides the slow rate), solves
the bias-free hard-margin SVM with the JAX dual QP, runs GD (float64) to ``num_steps`` recording
at log-spaced steps, and fits ``gap = a / log t + b`` on the last half (in log t) of the records.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from landscape import attention as att
from landscape.experiment import RunContext


@dataclass(frozen=True)
class Config:
    """Default: 3 datasets (12 positives, 6 negatives), GD step 1 for 2e6 steps."""

    seed: int = 0
    num_datasets: int = 3
    n_pos: int = 12
    n_neg: int = 6
    learning_rate: float = 1.0
    num_steps: int = 2_000_000
    num_records: int = 60

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_datasets=1, num_steps=2000, num_records=12)


def run_dataset(config: Config, k: int) -> dict:
    c = config
    steps = np.unique(np.geomspace(10, c.num_steps, c.num_records).astype(np.int64))
    with jax.enable_x64(True):
        X, y = att.asymmetric_separable_2d(jax.random.fold_in(jax.random.key(c.seed), k),
                                           c.n_pos, c.n_neg, dtype=jnp.float64)
        w_hat, qp = att.hard_margin_svm(X, y)
        ws, losses = jax.jit(att.logistic_gd)(X, y, steps, learning_rate=c.learning_rate)
    m = att.implicit_bias_metrics(ws, losses, steps, X, y, w_hat)
    tail = steps >= np.exp(0.5 * (np.log(steps[0]) + np.log(steps[-1])))
    fit = att.fit_inverse_log_rate(steps[tail], m.direction_gap[tail])
    return {
        "X": np.asarray(X), "y": np.asarray(y), "w_hat": np.asarray(w_hat),
        "svm_converged": bool(qp.converged), "ws": np.asarray(ws), "steps": steps,
        **{f: np.asarray(getattr(m, f)) for f in m._fields if f != "steps"},
        "fit": fit._asdict(),
    }


def run(config: Config, ctx: RunContext | None = None) -> dict:
    ctx = ctx or RunContext.ephemeral()
    rows = [ctx.stage(f"dataset{k}", lambda k=k: run_dataset(config, k))
            for k in ctx.progress(range(config.num_datasets), desc="datasets")]
    return {
        "datasets": rows,
        "summary": {
            "fit_a": [r["fit"]["a"] for r in rows], "fit_b": [r["fit"]["b"] for r in rows],
            "fit_r2": [r["fit"]["r2"] for r in rows],
            "final_direction_gap": [float(r["direction_gap"][-1]) for r in rows],
            "final_gap_times_log": [float(r["gap_times_log"][-1]) for r in rows],
            "final_norm_over_log": [float(r["norm_over_log"][-1]) for r in rows],
            "svm_norm": [float(np.linalg.norm(r["w_hat"])) for r in rows],
            "final_loss_times_t": [float(r["loss"][-1] * r["steps"][-1]) for r in rows],
        },
    }

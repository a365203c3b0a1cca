"""GD on separable logistic regression converges in direction to the hard-margin SVM, slowly.

Soudry et al. (2018): on separable data, full-batch GD on the logistic loss has
``w_t / ||w_t|| -> w_hat / ||w_hat||`` with a direction gap decaying like ``1 / log t``, while the
loss decays like ``1 / t``. The run draws asymmetric separable 2-D datasets
(``asymmetric_separable_2d``; symmetric data hides the slow rate), solves the bias-free hard-margin
SVM with the JAX dual QP, and runs GD (float64) to ``num_steps``, recording at log-spaced steps.

It checks the asymptotics quantitatively (``asymptotic_prediction``): ``w_t - w_hat log t``
converges to the offset ``w_tilde`` fixed by the support vectors, so ``gap * log t`` tends to
``||P_perp w_tilde|| / ||w_hat||`` and ``t * loss`` to ``||w_hat||^2 / eta``, and the residual
decays like ``t^(-kappa)`` with ``kappa`` predicted from the data. Points whose margin is barely
above the support margin (``theta`` near 1) make ``kappa = theta - 1`` tiny, so the transient
outlasts any feasible run (measured on the unpruned draws: ``theta - 1`` = 0.03-0.08 and
``gap * log t`` still drifting after 2e6 steps). ``margin_ratio`` removes those points with
``prune_near_support``, which leaves the SVM unchanged. The rate is fitted over the last decade:
the component of ``w_t`` along ``w_hat`` grows like ``A log t + B`` with ``A`` to be compared with
``||w_hat||``, while the orthogonal component stays bounded (``gap ~ ortho / (A log t)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from experiments.layouts.implicit_bias_logistic import Metrics
from landscape import attention as att
from landscape.experiment import RunContext, check_fields


@dataclass(frozen=True)
class Config:
    """Default: 3 datasets (12 positives, 6 negatives, pruned at margin ratio 1.5), GD step 1
    for 2e6 steps."""

    seed: int = 0
    num_datasets: int = 3
    n_pos: int = 12
    n_neg: int = 6
    margin_ratio: float = 1.5
    learning_rate: float = 1.0
    num_steps: int = 2_000_000
    num_records: int = 60

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_datasets=1, num_steps=2000, num_records=12)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("num_datasets", "n_pos", "n_neg", "learning_rate"))
        if not self.margin_ratio > 1:
            raise ValueError(f"config key 'margin_ratio' must be > 1 (points with margins in "
                             f"(1, margin_ratio) are pruned); got {self.margin_ratio}")
        if self.num_steps <= 10:  # records are log-spaced from step 10 to num_steps
            raise ValueError(f"config key 'num_steps' must be > 10; got {self.num_steps}")
        if self.num_records < 2:  # the rate is fitted to the records of the last decade
            raise ValueError(f"config key 'num_records' must be >= 2; got {self.num_records}")


def run_dataset(config: Config, k: int) -> dict:
    c = config
    steps = np.unique(np.geomspace(10, c.num_steps, c.num_records).astype(np.int64))
    with jax.enable_x64(True):
        X0, y0 = att.asymmetric_separable_2d(jax.random.fold_in(jax.random.key(c.seed), k),
                                             c.n_pos, c.n_neg, dtype=jnp.float64)
        w0, _ = att.hard_margin_svm(X0, y0)
        X, y = (jnp.asarray(a) for a in att.prune_near_support(X0, y0, w0, c.margin_ratio))
        w_hat, qp = att.hard_margin_svm(X, y)
        ws, losses = jax.jit(att.logistic_gd)(X, y, steps, learning_rate=c.learning_rate)
    pred = att.asymptotic_prediction(X, y, w_hat, qp.lam, c.learning_rate)
    m = att.implicit_bias_metrics(ws, losses, steps, X, y, w_hat, pred)
    tail = steps >= steps[-1] / 10
    # The 1/log t rate, fitted: the component of w_t along w_hat grows like A log t + B with
    # A = ||w_hat|| while the orthogonal component stays bounded (it tends to that of w_tilde).
    u = np.asarray(w_hat) / np.linalg.norm(np.asarray(w_hat))
    along = np.asarray(ws) @ u
    ortho = np.linalg.norm(np.asarray(ws) - along[:, None] * u, axis=1)
    slope, icpt = np.polyfit(np.log(steps[tail]), along[tail], 1)
    decay = np.polyfit(np.log(steps[tail]), np.log(m.residual[tail]), 1)[0]
    return {
        "X": np.asarray(X), "y": np.asarray(y), "w_hat": np.asarray(w_hat),
        "num_pruned": int(len(y0) - len(y)), "svm_converged": bool(qp.converged),
        "ws": np.asarray(ws), "steps": steps,
        **{f: np.asarray(getattr(m, f)) for f in m._fields if f != "steps"},
        "fit": {"A": float(slope), "B": float(icpt)},
        "along": along, "ortho": ortho,
        "ortho_limit": pred.gap_limit * float(np.linalg.norm(w_hat)),  # ||P_perp w_tilde||
        "prediction": {"w_tilde": pred.w_tilde, "gap_limit": pred.gap_limit,
                       "loss_times_t": pred.loss_times_t, "exponent": pred.exponent,
                       "lambda_perp": pred.lambda_perp, "theta": pred.theta,
                       "spans": pred.spans},
        "residual_decay_exponent": float(-decay),
    }


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    rows = [ctx.stage(f"dataset{k}", lambda k=k: run_dataset(config, k))
            for k in ctx.progress(range(config.num_datasets), desc="datasets")]
    return {
        "datasets": rows,
        "summary": {
            "fit_slope_along_w_hat": [r["fit"]["A"] for r in rows],
            "final_ortho": [float(r["ortho"][-1]) for r in rows],
            "predicted_ortho": [r["ortho_limit"] for r in rows],
            "predicted_gap_limit": [r["prediction"]["gap_limit"] for r in rows],
            "final_residual": [float(r["residual"][-1]) for r in rows],
            "residual_decay_exponent": [r["residual_decay_exponent"] for r in rows],
            "predicted_exponent": [r["prediction"]["exponent"] for r in rows],
            "predicted_loss_times_t": [r["prediction"]["loss_times_t"] for r in rows],
            "final_gap_over_predicted": [float(r["direction_gap"][-1] / r["predicted_gap"][-1])
                                         for r in rows],
            "final_direction_gap": [float(r["direction_gap"][-1]) for r in rows],
            "final_gap_times_log": [float(r["gap_times_log"][-1]) for r in rows],
            "final_norm_over_log": [float(r["norm_over_log"][-1]) for r in rows],
            "svm_norm": [float(np.linalg.norm(r["w_hat"])) for r in rows],
            "final_loss_times_t": [float(r["loss"][-1] * r["steps"][-1]) for r in rows],
        },
    }

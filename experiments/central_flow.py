"""GD against its central flow at the edge of stability (Cohen, Damian, Talwalkar, Kolter, Lee
2025).

Full-batch GD (``optax.sgd``) trains the shared small setting (``experiments._eos``: a tanh MLP
on a fixed subset of MNIST-1D, square loss) at one step size; from the same initial point,
:func:`landscape.dynamics.central_flow` integrates the central flow of GD (Euler, ``dt`` steps)
and :func:`landscape.dynamics.gradient_flow` the gradient flow (at time ``t eta``).

GD at the edge of stability oscillates with period two along the top eigenvectors, so its
*smoothed* iterate is taken as ``(w_t + w_{t+1}) / 2`` (which cancels the period-two component)
at every record step ``t``, and its smoothed loss as the centred moving average of the per-step
losses over ``smooth_window`` steps.

Expected (the central-flows paper): the central flow tracks the smoothed GD trajectory: its
predicted time-averaged loss ``L(w) + 1/2 <H, Sigma>`` follows the smoothed GD loss, its sharpness
is held at ``2 / eta``, and its distance to smoothed GD stays small, while gradient flow, which
keeps sharpening past ``2 / eta``, drifts away once GD reaches the edge of stability. Before
the sharpness reaches ``2 / eta`` the central flow is gradient flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import optax

from experiments import _eos
from experiments.layouts.central_flow import Metrics
from landscape import dynamics, train
from landscape.experiment import RunContext, check_fields
from landscape.tree import ravel


@dataclass(frozen=True)
class Config:
    """Default: MNIST-1D, 1000 examples, tanh MLP 40-32-32-10, square loss, eta 0.2."""

    seed: int = 0
    dataset: str = "mnist1d"
    num_examples: int = 1000
    width: int = 32
    depth: int = 2
    learning_rate: float = 0.2
    num_steps: int = 2000
    record_every: int = 10
    dt: float = 0.5
    k: int = 2
    smooth_window: int = 21

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_examples=100, width=6, depth=1, learning_rate=0.5, num_steps=60,
                   record_every=10, k=1, smooth_window=5)

    def __post_init__(self):
        check_fields(self, positive=("num_examples", "width", "depth", "learning_rate",
                                     "num_steps", "record_every", "dt", "k", "smooth_window"),
                     choices={"dataset": _eos.DATASETS})
        if self.num_steps % self.record_every:
            raise ValueError(f"config key 'num_steps' must be a multiple of record_every "
                             f"({self.record_every}); got {self.num_steps}")
        if self.smooth_window % 2 == 0:
            raise ValueError(f"config key 'smooth_window' must be odd (a centred window); got "
                             f"{self.smooth_window}")


def setting(config: Config) -> _eos.Setting:
    c = config
    return _eos.setting(seed=c.seed, num_examples=c.num_examples, width=c.width,
                        depth=c.depth, loss="mse", dataset=c.dataset)


def record_steps(config: Config) -> np.ndarray:
    """The steps ``t`` at which GD, its smoothed iterate and the flows are compared."""
    return np.arange(0, config.num_steps, config.record_every)


def run_gd(config: Config) -> dict:
    """GD: per-step losses, sharpness at the record steps, and ``w_t``, ``w_{t+1}`` there."""
    c = config
    s = setting(c)
    steps = record_steps(c)
    wanted = set(steps.tolist()) | set((steps + 1).tolist())
    kept: dict[int, np.ndarray] = {}

    def keep(step, params, _):
        if step in wanted:
            kept[step] = np.asarray(ravel(params)[0])
        return {}

    probes = {"S": dynamics.sharpness_probe(s.loss_fn, s.dataset, k=1, every=c.record_every),
              "loss": train.probe(lambda ctx, st: (ctx.loss, st), every=1)}
    res = train.train(s.loss_fn, s.params, optax.sgd(c.learning_rate), s.dataset,
                      key=jax.random.key(c.seed + 1), num_steps=c.num_steps + 1, probes=probes,
                      callback=keep, callback_every=1)
    loss = np.asarray(res.trace["loss"])[: c.num_steps]
    rows = np.searchsorted(res.trace_steps["S"], steps)
    w_t = np.stack([kept[int(t)] for t in steps])
    w_next = np.stack([kept[int(t) + 1] for t in steps])
    return {"loss": loss, "sharpness": np.asarray(res.trace["S"]["eigenvalues"])[rows, 0],
            "params": w_t, "smoothed_params": 0.5 * (w_t + w_next)}


def run_central_flow(config: Config) -> dict:
    c = config
    s = setting(c)
    cf = dynamics.central_flow(s.loss_fn, s.params, s.dataset, learning_rate=c.learning_rate,
                               num_steps=c.num_steps, key=jax.random.key(c.seed + 2), dt=c.dt,
                               k=c.k, record_every=c.record_every)
    params = jax.vmap(lambda p: ravel(p)[0])(cf.params)
    return {"loss": cf.loss[:-1], "predicted_loss": cf.predicted_loss[:-1],
            "sharpness": cf.eigenvalues[:-1], "residuals": cf.eigenvalue_residuals[:-1],
            "trace_X": cf.trace_X[:-1], "params": params[:-1],
            "sdcp_status": cf.sdcp_status[:-1], "eigsh_status": cf.eigsh_status[:-1],
            "num_hvps": int(cf.num_hvps[-1]), "num_third_order": int(cf.num_third_order[-1]),
            "num_grads": int(cf.num_grads[-1])}


def run_gradient_flow(config: Config) -> dict:
    c = config
    s = setting(c)
    times = record_steps(c) * c.learning_rate
    gf = dynamics.gradient_flow(s.loss_fn, s.params, s.dataset, times,
                                key=jax.random.key(c.seed + 3))
    params = jax.vmap(lambda p: ravel(p)[0])(gf.params)
    return {"loss": gf.losses, "sharpness": gf.sharpness, "params": params,
            "num_steps": int(gf.num_steps)}


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` (odd) entries, shrinking at the ends."""
    x = np.asarray(x, np.float64)
    half = window // 2
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(x.size)
    lo, hi = np.maximum(i - half, 0), np.minimum(i + half + 1, x.size)
    return (c[hi] - c[lo]) / (hi - lo)


def _summary(config: Config, steps, gd, cf, gf, smooth) -> dict:
    thr = 2.0 / config.learning_rate
    gd_ratio = np.asarray(gd["sharpness"]) / thr
    crossed = np.flatnonzero(gd_ratio >= 1.0)
    cross = int(steps[crossed[0]]) if crossed.size else -1
    after = steps >= cross if cross >= 0 else np.zeros_like(steps, bool)
    d_cf = np.linalg.norm(gd["smoothed_params"] - cf["params"], axis=1)
    d_gf = np.linalg.norm(gd["smoothed_params"] - gf["params"], axis=1)
    travel = np.linalg.norm(gd["smoothed_params"] - gd["smoothed_params"][:1], axis=1)
    smooth_at = smooth[steps]
    rel = lambda a: np.abs(np.asarray(a) - smooth_at) / smooth_at  # noqa: E731
    cf_ratio = np.asarray(cf["sharpness"])[:, 0] / thr

    def med(x):
        return float(np.median(x[after])) if after.any() else float("nan")

    return {
        "threshold": thr, "gd_crossing_step": cross,
        "cf_sharpness_ratio_max": float(np.max(cf_ratio)),
        "cf_sharpness_ratio_after_min": float(np.min(cf_ratio[after])) if after.any() else
        float("nan"),
        "gd_sharpness_ratio_after_mean": med(gd_ratio),
        "gf_sharpness_final": float(np.asarray(gf["sharpness"])[-1]),
        "cf_predicted_loss_rel_error_median": med(rel(cf["predicted_loss"])),
        "cf_loss_rel_error_median": med(rel(cf["loss"])),
        "gf_loss_rel_error_median": med(rel(gf["loss"])),
        "distance_cf_final": float(d_cf[-1]), "distance_gf_final": float(d_gf[-1]),
        "travel_final": float(travel[-1]),
        "cf_num_hvps": cf["num_hvps"], "cf_num_third_order": cf["num_third_order"],
    }


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    gd = ctx.stage("gd", lambda: run_gd(config))
    cf = ctx.stage("central_flow", lambda: run_central_flow(config))
    gf = ctx.stage("gradient_flow", lambda: run_gradient_flow(config))
    steps = record_steps(config)
    smooth = moving_average(gd["loss"], config.smooth_window)
    return {
        "steps": steps, "gd_loss": gd["loss"], "gd_loss_smoothed": smooth,
        "gd_sharpness": gd["sharpness"],
        "cf_loss": cf["loss"], "cf_predicted_loss": cf["predicted_loss"],
        "cf_sharpness": cf["sharpness"], "cf_residuals": cf["residuals"],
        "cf_trace_X": cf["trace_X"], "cf_sdcp_status": cf["sdcp_status"],
        "cf_eigsh_status": cf["eigsh_status"],
        "gf_loss": gf["loss"], "gf_sharpness": gf["sharpness"],
        "distance_cf": np.linalg.norm(gd["smoothed_params"] - cf["params"], axis=1),
        "distance_gf": np.linalg.norm(gd["smoothed_params"] - gf["params"], axis=1),
        "distance_cf_raw": np.linalg.norm(gd["params"] - cf["params"], axis=1),
        "summary": _summary(config, steps, gd, cf, gf, smooth),
    }

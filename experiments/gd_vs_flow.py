"""Gradient descent leaves gradient flow when the sharpness reaches 2/eta (Cohen et al. 2021).

Cohen, Kaur, Li, Kolter, Talwalkar 2021, "Gradient descent on neural networks typically occurs
at the edge of stability" (section 3, and the appendix on gradient flow), compare full-batch GD
with step ``eta`` after ``t`` steps with the gradient flow ``dw/dtau = -grad L`` at time
``tau = t eta``: GD follows the flow while the sharpness ``S = lambda_max(H)`` is below
``2 / eta`` and departs from it once ``S`` reaches ``2 / eta``; from then on GD's sharpness
hovers near ``2 / eta`` (the edge of stability) while the flow's keeps rising.

Here, on the shared small edge-of-stability setting (``experiments._eos``: a tanh MLP on a digits
subset with the square loss), for each step size GD runs ``num_steps`` full-batch steps from the
same initialisation, recording ``w_t``, the loss and the sharpness (warm-started Lanczos) every
``record_every`` steps. One gradient-flow run (``landscape.dynamics.flow.gradient_flow``: RK4 with
the step ``step_scale / S`` of the paper) is sampled at every ``t eta`` of every step size. The
metrics are the distance ``||w_GD(t) - w_flow(t eta)||``, the distance the flow has travelled
``||w_flow(t eta) - w_0||`` (its scale), both sharpnesses and both losses, and per step size the
first recorded step at which GD's sharpness reaches ``2 / eta``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from experiments import _eos
from experiments.layouts.gd_vs_flow import Metrics
from landscape.dynamics import flow as gf
from landscape.experiment import RunContext, check_fields


@dataclass(frozen=True)
class Config:
    """Default: 1000 digits, width 32, depth 2, mse; eta in {0.3, 0.35, 0.4}, 1500 steps each."""

    seed: int = 0
    num_examples: int = 1000
    width: int = 32
    depth: int = 2
    loss: str = "mse"
    learning_rates: tuple[float, ...] = (0.3, 0.35, 0.4)
    num_steps: int = 1500
    record_every: int = 10
    step_scale: float = 1.0
    sharpness_every: int = 5

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_examples=64, width=8, depth=1, learning_rates=(0.5, 1.0), num_steps=60,
                   record_every=10)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("num_examples", "width", "depth", "learning_rates",
                                     "num_steps", "record_every", "step_scale",
                                     "sharpness_every"),
                     choices={"loss": _eos.LOSSES})
        if not self.learning_rates:
            raise ValueError("config key 'learning_rates' must be non-empty; got ()")
        if self.num_steps % self.record_every:
            raise ValueError(f"config key 'num_steps' must be a multiple of record_every "
                             f"({self.record_every}); got {self.num_steps}")


def _setting(config: Config):
    return _eos.setting(seed=config.seed, num_examples=config.num_examples, width=config.width,
                        depth=config.depth, loss=config.loss)


def run_gd(config: Config, st: _eos.Setting, j: int) -> dict:
    """GD at ``learning_rates[j]``: ravelled params, loss and sharpness every record_every."""
    key = jax.random.fold_in(jax.random.key(config.seed), j)
    gd = gf.gd_trajectory(st.loss_fn, st.params, st.dataset,
                          learning_rate=config.learning_rates[j], num_steps=config.num_steps,
                          every=config.record_every, key=key)
    return {"steps": gd.steps, "params": gd.params, "loss": gd.losses,
            "sharpness": gd.sharpness}


def flow_times(config: Config, steps, dtype) -> tuple[np.ndarray, np.ndarray]:
    """The union of the flow times ``t eta`` of every step size (sorted, in ``dtype``), and for
    each ``[eta, record]`` its index in that union."""
    taus = (np.asarray(steps, np.float64)[None, :]
            * np.asarray(config.learning_rates, np.float64)[:, None]).astype(dtype)
    union = np.unique(taus)
    return union, np.searchsorted(union, taus)


def run_flow(config: Config, st: _eos.Setting, gds: list[dict]) -> dict:
    """One gradient-flow run to the largest ``t eta``, compared with each GD run."""
    steps = gds[0]["steps"]
    dtype = np.asarray(gds[0]["params"]).dtype
    union, index = flow_times(config, steps, dtype)
    key = jax.random.fold_in(jax.random.key(config.seed), len(config.learning_rates))
    fl = gf.gradient_flow(st.loss_fn, st.params, st.dataset, union, key=key,
                          step_scale=config.step_scale, sharpness_every=config.sharpness_every)
    w = np.asarray(jax.vmap(lambda p: ravel_pytree(p)[0])(fl.params))
    dist = np.stack([np.asarray(gf.gd_flow_distance(g["params"], w[index[j]]))
                     for j, g in enumerate(gds)])
    travel = np.linalg.norm(w[index] - w[:1][None], axis=-1)
    return {"distance": dist, "travel": travel,
            "sharpness": np.asarray(fl.sharpness)[index], "loss": np.asarray(fl.losses)[index],
            "num_steps": int(fl.num_steps), "num_grads": int(fl.num_grads),
            "num_hvps": int(fl.num_hvps),
            "max_error": float(np.nanmax(np.asarray(fl.error_estimates)))}


def _summary(config: Config, steps, gds, flow, num_params) -> dict:
    out = {k: [] for k in ("threshold", "crossing_step", "flow_crossing_step",
                           "distance_at_crossing", "max_distance_before", "final_distance",
                           "relative_distance_before", "relative_final_distance")}
    nan = float("nan")
    for j, eta in enumerate(config.learning_rates):
        d, travel = flow["distance"][j], flow["travel"][j]
        cross = gf.first_crossing(steps, gds[j]["sharpness"], 2.0 / eta)
        before = steps < cross if cross >= 0 else np.ones_like(steps, bool)
        rel = d[1:] / np.maximum(travel[1:], np.finfo(np.float64).tiny)
        out["threshold"].append(2.0 / eta)
        out["crossing_step"].append(cross)
        out["flow_crossing_step"].append(gf.first_crossing(steps, flow["sharpness"][j],
                                                           2.0 / eta))
        out["distance_at_crossing"].append(
            float(d[np.searchsorted(steps, cross)]) if cross >= 0 else nan)
        out["max_distance_before"].append(float(np.max(d[before])) if before.any() else nan)
        out["final_distance"].append(float(d[-1]))
        out["relative_distance_before"].append(
            float(np.max(rel[before[1:]])) if before[1:].any() else nan)
        out["relative_final_distance"].append(float(rel[-1]) if rel.size else nan)
    out.update(flow_num_steps=flow["num_steps"], flow_num_grads=flow["num_grads"],
               flow_num_hvps=flow["num_hvps"], flow_max_error_estimate=flow["max_error"],
               num_params=num_params)
    return out


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    st = _setting(config)  # one loss_fn: the GD runs share one compiled loop
    gds = [ctx.stage(f"gd{j}", lambda j=j: run_gd(config, st, j))
           for j in ctx.progress(range(len(config.learning_rates)), desc="step sizes")]
    flow = ctx.stage("flow", lambda: run_flow(config, st, gds))
    steps = np.asarray(gds[0]["steps"])
    num_params = int(np.asarray(gds[0]["params"]).shape[1])
    stack = lambda key: np.stack([np.asarray(g[key], np.float64) for g in gds])  # noqa: E731
    return {
        "steps": steps,
        "distance": np.asarray(flow["distance"], np.float64),
        "travel": np.asarray(flow["travel"], np.float64),
        "gd_sharpness": stack("sharpness"),
        "flow_sharpness": np.asarray(flow["sharpness"], np.float64),
        "gd_loss": stack("loss"),
        "flow_loss": np.asarray(flow["loss"], np.float64),
        "summary": _summary(config, steps, gds, flow, num_params),
    }

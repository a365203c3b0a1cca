"""Progressive sharpening and the edge of stability under full-batch GD (Cohen et al. 2021, Fig. 1).

Full-batch GD (``optax.sgd``) trains the shared small setting (``experiments._eos``: a tanh MLP
on a fixed subset of MNIST-1D) with the square loss and with cross-entropy, at three step sizes
each, and a small tanh 1D CNN with the square loss at two step sizes. The sharpness
``S_t = lambda_max(H(w_t))`` of the full training loss is tracked at every step (every
``cnn_every`` steps for the CNN, whose products cost more) by
:func:`landscape.dynamics.sharpness_probe` (warm-started Lanczos with residual certificates);
the training loss of every step is recorded too.

Expected (Cohen et al. 2021, "Gradient descent on neural networks typically occurs at the edge of
stability"): the sharpness rises (progressive sharpening) until it reaches ``2 / eta``, then
hovers at or just above ``2 / eta`` while the loss keeps falling over long time scales,
non-monotonically; at the smallest step size it may never reach ``2 / eta``. With
cross-entropy the sharpness falls again late in training, as the loss goes to zero.

The run also stores the parameters every ``num_steps // num_checks`` steps of each run, so that
a test can compare the recorded sharpness with a dense eigendecomposition there.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import optax

from experiments import _eos
from experiments.layouts.edge_of_stability import Metrics
from landscape import dynamics, train
from landscape.experiment import RunContext, check_fields


@dataclass(frozen=True)
class Config:
    """Default: MNIST-1D, 1000 examples, tanh MLP 40-32-32-10, 3000 full-batch GD steps."""

    seed: int = 0
    dataset: str = "mnist1d"
    num_examples: int = 1000
    width: int = 32
    depth: int = 2
    num_steps: int = 3000
    mse_learning_rates: tuple[float, ...] = (0.1, 0.15, 0.2)
    ce_learning_rates: tuple[float, ...] = (0.5, 1.0, 2.0)
    cnn_learning_rates: tuple[float, ...] = (0.3, 0.4)
    cnn_width: int = 8
    cnn_layers: int = 2
    cnn_num_steps: int = 2000
    cnn_every: int = 2
    k: int = 1
    every: int = 1
    num_checks: int = 4
    tail_fraction: float = 0.2

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_examples=100, width=6, depth=1, num_steps=60,
                   mse_learning_rates=(0.5,), ce_learning_rates=(2.0,), k=2, num_checks=2,
                   cnn_learning_rates=(0.5,), cnn_width=2, cnn_layers=1, cnn_num_steps=20)

    def __post_init__(self):
        check_fields(self, positive=("num_examples", "width", "depth", "num_steps",
                                     "mse_learning_rates", "ce_learning_rates", "k", "every",
                                     "num_checks", "cnn_learning_rates", "cnn_width",
                                     "cnn_layers", "cnn_num_steps", "cnn_every"),
                     unit=("tail_fraction",), choices={"dataset": _eos.DATASETS})
        for steps, every in (("num_steps", "every"), ("cnn_num_steps", "cnn_every")):
            if getattr(self, steps) % getattr(self, every):
                raise ValueError(f"config key '{steps}' must be a multiple of {every} "
                                 f"({getattr(self, every)}); got {getattr(self, steps)}")


def _loss_probe():
    return train.probe(lambda ctx, s: (ctx.loss, s), every=1)


def run_one(config: Config, loss: str, eta: float, model: str = "mlp") -> dict:
    """One GD run: per-step loss, tracked sharpness, products, and params at the check steps."""
    c = config
    mlp = model == "mlp"
    s = _eos.setting(seed=c.seed, num_examples=c.num_examples,
                     width=c.width if mlp else c.cnn_width, depth=c.depth if mlp else c.cnn_layers,
                     loss=loss, dataset=c.dataset, model=model)
    num_steps, every = (c.num_steps, c.every) if mlp else (c.cnn_num_steps, c.cnn_every)
    # params are recorded only at the check steps (multiples of check_every): a record of every
    # step would carry a (steps, num_params) buffer through the compiled loop
    check_every = max(num_steps // c.num_checks // every, 1) * every
    probes = {"S": dynamics.sharpness_probe(s.loss_fn, s.dataset, k=c.k, every=every),
              "loss": _loss_probe(),
              "params": dynamics.params_probe(every=check_every)}
    res = train.train(s.loss_fn, s.params, optax.sgd(eta), s.dataset,
                      key=jax.random.key(c.seed + 1), num_steps=num_steps, probes=probes)
    tr = res.trace["S"]
    return {"steps": res.trace_steps["S"], "sharpness": tr["eigenvalues"],
            "residuals": tr["residuals"], "num_matvecs": tr["num_matvecs"],
            "status": tr["status"], "loss": res.trace["loss"],
            "check_steps": res.trace_steps["params"], "check_params": res.trace["params"],
            "num_params": s.num_params}


def _summary(config: Config, runs: dict) -> dict:
    out = {}
    for name, r in runs.items():
        eta = r["eta"]
        thr = 2.0 / eta
        ratio = np.asarray(r["sharpness"])[:, 0] / thr
        tail = ratio[int(len(ratio) * (1 - config.tail_fraction)):]
        crossed = np.flatnonzero(ratio >= 1.0)
        loss = np.asarray(r["loss"])
        ups = np.mean(np.diff(loss) > 0)
        out[name] = {
            "eta": eta, "threshold": thr,
            "initial_ratio": float(ratio[0]), "max_ratio": float(np.max(ratio)),
            "tail_ratio_mean": float(np.mean(tail)), "tail_ratio_min": float(np.min(tail)),
            "tail_ratio_max": float(np.max(tail)),
            "first_crossing_step": int(r["steps"][crossed[0]]) if crossed.size else -1,
            "final_loss": float(loss[-1]), "fraction_loss_increases": float(ups),
            "median_matvecs": float(np.median(r["num_matvecs"])),
            "max_matvecs": int(np.max(r["num_matvecs"])),
            "fraction_converged": float(np.mean(np.asarray(r["status"]) == 0)),
        }
    return out


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    plan = [("mlp", "mse", eta) for eta in config.mse_learning_rates] + \
           [("mlp", "cross_entropy", eta) for eta in config.ce_learning_rates] + \
           [("cnn", "mse", eta) for eta in config.cnn_learning_rates]
    runs = {}
    for model, loss, eta in ctx.progress(plan, desc="runs"):
        name = f"{loss}_{eta:g}" if model == "mlp" else f"cnn_{loss}_{eta:g}"
        r = ctx.stage(name, lambda m=model, loss=loss, eta=eta: run_one(config, loss, eta, m))
        runs[name] = {**r, "loss_kind": loss, "eta": float(eta), "model": model}
    return {"runs": runs, "summary": _summary(config, runs)}

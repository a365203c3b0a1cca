"""Adaptive gradient methods at the edge of stability (Cohen et al. 2022).

Full-batch Adam (``optax.adam``) trains the shared small setting (``experiments._eos``: a tanh
MLP on a fixed subset of MNIST-1D, square loss) at three step sizes. Every ``every`` steps the
probe records the *preconditioned* sharpness ``lambda_max(P^-1 H)`` with ``P`` read from Adam's
state exactly as optax applies it (``sqrt(nu / (1 - b2^t)) + eps``; computed as the symmetric
``P^-1/2 H P^-1/2``), and the raw sharpness ``lambda_max(H)``, both by warm-started Lanczos with
certificates (:func:`landscape.dynamics.sharpness_probe` with ``preconditioner="adam"``).

Expected (Cohen, Gilmer, Dahl, ... 2022, "Adaptive gradient methods at the edge of stability"):
the preconditioned sharpness rises until it reaches the stability threshold of Adam with a
frozen preconditioner, ``(2 + 2 b1) / ((1 - b1) eta)`` (``38 / eta`` at ``b1 = 0.9``), and then
hovers there ("adaptive edge of stability"), while the raw sharpness is not held at any
threshold and can keep rising (the preconditioner adapts to it).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import optax

from experiments import _eos
from experiments.layouts.adaptive_eos import Metrics
from landscape import dynamics, train
from landscape.experiment import RunContext, check_fields


@dataclass(frozen=True)
class Config:
    """Default: MNIST-1D, 1000 examples, tanh MLP 40-32-32-10, square loss, 3000 Adam steps."""

    seed: int = 0
    dataset: str = "mnist1d"
    num_examples: int = 1000
    width: int = 32
    depth: int = 2
    loss: str = "mse"
    num_steps: int = 3000
    learning_rates: tuple[float, ...] = (3e-3, 6e-3, 1.2e-2)
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    k: int = 1
    every: int = 5
    tail_fraction: float = 0.2

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_examples=100, width=6, depth=1, num_steps=60, learning_rates=(0.02,),
                   every=5)

    def __post_init__(self):
        check_fields(self, positive=("num_examples", "width", "depth", "num_steps",
                                     "learning_rates", "eps", "k", "every"),
                     unit=("b1", "b2", "tail_fraction"),
                     choices={"dataset": _eos.DATASETS, "loss": _eos.LOSSES})
        if self.num_steps % self.every:
            raise ValueError(f"config key 'num_steps' must be a multiple of every "
                             f"({self.every}); got {self.num_steps}")
        if not (self.b1 < 1 and self.b2 < 1):
            raise ValueError("config keys 'b1' and 'b2' must be < 1")


def setting(config: Config) -> _eos.Setting:
    c = config
    return _eos.setting(seed=c.seed, num_examples=c.num_examples, width=c.width,
                        depth=c.depth, loss=c.loss, dataset=c.dataset)


def optimizer(config: Config, eta: float):
    return optax.adam(eta, b1=config.b1, b2=config.b2, eps=config.eps)


def run_one(config: Config, eta: float) -> dict:
    """One Adam run: per-step loss, preconditioned and raw sharpness every ``every`` steps."""
    c = config
    s = setting(c)
    pr = dynamics.sharpness_probe(s.loss_fn, s.dataset, k=c.k, every=c.every,
                                  preconditioner="adam",
                                  preconditioner_args={"b2": c.b2, "eps": c.eps})
    probes = {"S": pr, "loss": train.probe(lambda ctx, st: (ctx.loss, st), every=1)}
    res = train.train(s.loss_fn, s.params, optimizer(c, eta), s.dataset,
                      key=jax.random.key(c.seed + 1), num_steps=c.num_steps, probes=probes)
    tr = res.trace["S"]
    return {"steps": res.trace_steps["S"], "pre_sharpness": tr["eigenvalues"],
            "pre_residuals": tr["residuals"], "raw_sharpness": tr["raw_eigenvalues"],
            "num_matvecs": tr["num_matvecs"], "raw_num_matvecs": tr["raw_num_matvecs"],
            "status": tr["status"], "loss": res.trace["loss"]}


def _summary(config: Config, runs: dict) -> dict:
    out = {}
    for name, r in runs.items():
        thr = float(dynamics.stability_threshold("adam", r["eta"], b1=config.b1))
        ratio = np.asarray(r["pre_sharpness"])[1:, 0] / thr  # record 0: no preconditioner yet
        tail = ratio[int(len(ratio) * (1 - config.tail_fraction)):]
        crossed = np.flatnonzero(ratio >= 1.0)
        raw = np.asarray(r["raw_sharpness"])[:, 0]
        out[name] = {
            "eta": r["eta"], "threshold": thr,
            "max_ratio": float(np.max(ratio)), "tail_ratio_mean": float(np.mean(tail)),
            "tail_ratio_min": float(np.min(tail)), "tail_ratio_max": float(np.max(tail)),
            "first_crossing_step": int(r["steps"][1:][crossed[0]]) if crossed.size else -1,
            "raw_initial": float(raw[0]), "raw_max": float(np.max(raw)),
            "raw_final": float(raw[-1]), "final_loss": float(np.asarray(r["loss"])[-1]),
            "median_matvecs": float(np.median(r["num_matvecs"][1:])),
            "median_raw_matvecs": float(np.median(r["raw_num_matvecs"])),
            "fraction_converged": float(np.mean(np.asarray(r["status"])[1:] == 0)),
        }
    return out


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    runs = {}
    for eta in ctx.progress(config.learning_rates, desc="runs"):
        name = f"adam_{eta:g}"
        r = ctx.stage(name, lambda eta=eta: run_one(config, eta))
        runs[name] = {**r, "eta": float(eta)}
    return {"runs": runs, "summary": _summary(config, runs)}

"""Baselines: a linear model, an MLP and a CNN on MNIST-1D and on scikit-learn digits.

Each (dataset, model, seed) trains with Adam on minibatches and reports its test accuracy; the
result gives mean and standard deviation over seeds. On MNIST-1D (4000 train / 1000 test) the
published reference (Greydanus and Kobak, "Scaling down deep learning with MNIST-1D", ICML 2024,
Table 1) is about 32% for logistic regression, 68% for an MLP and 94% for a CNN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import numpy as np
import optax

from experiments.layouts.baselines import Metrics
from landscape.experiment import RunContext, check_fields

# Published MNIST-1D test accuracies (Greydanus and Kobak 2024, Table 1).
MNIST1D_REFERENCE = {"linear": 0.32, "mlp": 0.68, "cnn": 0.94}


@dataclass(frozen=True)
class Config:
    """Default: 3 seeds x {linear, mlp, cnn} x {mnist1d, digits}, about 2-3 minutes on 2 cores."""

    seed: int = 0
    num_seeds: int = 3
    datasets: tuple[Literal["mnist1d", "digits"], ...] = ("mnist1d", "digits")
    models: tuple[Literal["linear", "mlp", "cnn"], ...] = ("linear", "mlp", "cnn")
    mnist1d_train: int = 4000
    mnist1d_test: int = 1000
    mlp_width: int = 100
    mlp_depth: int = 2
    cnn_width: int = 16
    cnn_layers: int = 3
    learning_rate: float = 3e-3
    batch_size: int = 100
    num_steps: int = 3000
    eval_every: int = 500

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_seeds=1, mnist1d_train=400, mnist1d_test=200, mlp_width=32,
                   cnn_width=8, num_steps=60, eval_every=30, batch_size=50)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("num_seeds", "mnist1d_train", "mnist1d_test", "mlp_width",
                                     "cnn_width", "cnn_layers", "learning_rate", "batch_size",
                                     "num_steps", "eval_every"),
                     nonnegative=("mlp_depth",),
                     choices={"datasets": ("mnist1d", "digits"),
                              "models": ("linear", "mlp", "cnn")})
        for key in ("datasets", "models"):
            if not getattr(self, key):
                raise ValueError(f"config key {key!r} must be non-empty; got ()")
        if "mnist1d" in self.datasets and self.batch_size > self.mnist1d_train:
            raise ValueError(f"config key 'batch_size' must be <= mnist1d_train "
                             f"({self.mnist1d_train}); got {self.batch_size}")


def _dataset(config: Config, name: str, key):
    from landscape import data

    if name == "mnist1d":
        return data.mnist1d(key, num_train=config.mnist1d_train, num_test=config.mnist1d_test)
    if name == "digits":
        return data.digits(key)
    raise ValueError(f"unknown dataset {name!r}; expected 'mnist1d' or 'digits'")


def _model(config: Config, name: str, dataset: str, key):
    from landscape import models

    in_features = 40 if dataset == "mnist1d" else 64
    if name == "linear":
        return models.MLP(in_features, 1, 0, 10, key=key)
    if name == "mlp":
        return models.MLP(in_features, config.mlp_width, config.mlp_depth, 10, key=key)
    if name == "cnn":
        cls = models.CNN1D if dataset == "mnist1d" else models.CNN2D
        return cls(10, width=config.cnn_width, num_layers=config.cnn_layers, key=key)
    raise ValueError(f"unknown model {name!r}; expected 'linear', 'mlp' or 'cnn'")


def train_one(config: Config, dataset: str, model_name: str, seed: int, ctx: RunContext):
    """Train one model; returns its final test accuracy and the test-accuracy curve."""
    from landscape import losses, train
    from landscape.nnx import functional, loss_fn

    k_data, k_init, k_train = jax.random.split(jax.random.key(seed), 3)
    # The split is fixed by the config seed; the seed loop varies init and data order.
    train_set, test_set = _dataset(config, dataset, jax.random.key(config.seed))
    model = _model(config, model_name, dataset, k_init)
    lf, params, _ = loss_fn(model, "cross_entropy", mode="eval")
    fm = functional(model, mode="eval")
    acc = jax.jit(lambda p, b: losses.accuracy(fm.apply(p, b["x"]), b["y"]))
    result = train.train(
        lf, params, optax.adam(config.learning_rate), train_set, key=k_train,
        num_steps=config.num_steps, batch_size=config.batch_size,
        callback=lambda step, p, _: {"test_acc": acc(p, test_set), "train_acc": acc(p, train_set)},
        callback_every=config.eval_every,
        checkpoint=ctx.path(f"{dataset}-{model_name}-{seed}.ckpt"),
        checkpoint_every=config.eval_every, desc=f"{dataset}/{model_name}/{seed}",
    )
    h = result.history
    return {"test_acc": float(h["test_acc"][-1]), "train_acc": float(h["train_acc"][-1]),
            "curve_step": h["step"], "curve_test_acc": h["test_acc"]}


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    seeds = [config.seed + i for i in range(config.num_seeds)]
    out: dict = {"reference": {"mnist1d": MNIST1D_REFERENCE}, "results": {}}
    jobs = [(d, m, s) for d in config.datasets for m in config.models for s in seeds]
    for d, m, s in ctx.progress(jobs, desc="baselines"):
        res = ctx.stage(f"{d}-{m}-{s}", lambda d=d, m=m, s=s: train_one(config, d, m, s, ctx))
        out["results"].setdefault(d, {}).setdefault(m, []).append(res)
    summary = {}
    for d, per_model in out["results"].items():
        for m, runs in per_model.items():
            accs = np.array([r["test_acc"] for r in runs])
            summary.setdefault(d, {})[m] = {"mean": float(accs.mean()), "std": float(accs.std()),
                                            "per_seed": accs.tolist()}
    out["summary"] = summary
    return out

"""Barrier along training: post-matching barrier vs training time, and Frankle's instability.

Part 1 (Singh et al., "Landscaping linear mode connectivity"): two MLPs trained from
independent seeds are compared at checkpoints along training: linear barrier (test loss and
error, ``max_minus_mean``) without alignment and after weight matching.

Part 2 (Frankle, Dziugaite, Roy, Carbin 2020): a parent is trained for ``k`` steps; two
children are spawned from it (same params and optimizer state) and trained to ``num_steps``
with different data orders; their barrier (no alignment) is measured for each ``k``. Expected:
the barrier falls to about zero after a short period early in training, and small networks on
easy data can be stable already at ``k = 0`` (Frankle et al. found this for LeNet on MNIST,
while ResNet-20 on CIFAR-10 needs a few thousand steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import numpy as np

from experiments import _lmc
from experiments.layouts.barrier_vs_training import Metrics
from landscape import connectivity as C
from landscape.experiment import RunContext, check_fields


@dataclass(frozen=True)
class Config:
    """Default about 3 minutes on 2 CPU cores: MNIST-1D, width 128, 2 hidden layers, 1500 Adam
    steps of batch 128; 8 checkpoints; spawn steps k in {0, 25, 50, 100, 200, 400, 800}."""

    seed: int = 0
    dataset: Literal["mnist1d", "digits"] = "mnist1d"
    width: int = 128
    depth: int = 2
    num_steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 1e-3
    checkpoints: tuple[int, ...] = (0, 25, 50, 100, 200, 400, 800, 1500)
    spawn_steps: tuple[int, ...] = (0, 25, 50, 100, 200, 400, 800)
    num_points: int = 25
    num_train: int | None = None

    @classmethod
    def smoke(cls) -> Config:
        return cls(dataset="digits", width=8, num_steps=30, checkpoints=(0, 10, 30),
                   spawn_steps=(0, 10), num_points=5, num_train=300)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("width", "depth", "num_steps", "batch_size",
                                     "learning_rate", "num_train"),
                     nonnegative=("checkpoints", "spawn_steps"),
                     choices={"dataset": ("mnist1d", "digits")})
        if self.num_points < 2:
            raise ValueError(f"config key 'num_points' must be >= 2; got {self.num_points}")
        for key in ("checkpoints", "spawn_steps"):  # trained in segments, in this order
            steps = getattr(self, key)
            if not steps or list(steps) != sorted(set(steps)):
                raise ValueError(f"config key {key!r} must be non-empty and strictly "
                                 f"increasing; got {steps}")
            if steps[-1] > self.num_steps:
                raise ValueError(f"config key {key!r} must be <= num_steps "
                                 f"({self.num_steps}); got {steps[-1]}")
        if self.num_train is not None and self.batch_size > self.num_train:
            raise ValueError(f"config key 'batch_size' must be <= num_train "
                             f"({self.num_train}); got {self.batch_size}")


def _barriers(pa, pb, test, num_points):
    path = C.interpolate(_lmc.loss_fn, pa, pb, test, num_points, error_fn=_lmc.error_fn)
    return [float(C.barrier(path).value), float(C.barrier(path, metric="error").value)]


def _setup(config):
    key = jax.random.key(config.seed)
    train, test = _lmc.load(config.dataset, key, config.num_train)
    return key, train, test, train["x"].shape[1], int(test["y"].max()) + 1


def along_training(config: Config) -> dict:
    key, train, test, din, classes = _setup(config)
    keys = jax.random.split(jax.random.fold_in(key, 1), 2)
    params = _lmc.stacked_init(keys, din, config.width, config.depth, classes)
    state, done, rows = None, 0, []
    for step in config.checkpoints:
        params, state = _lmc.train_many(keys, params, train, num_steps=step - done,
                                        batch_size=config.batch_size, lr=config.learning_rate,
                                        start_step=done, opt_state=state, return_state=True)
        done = step
        pa, pb = _lmc.unstack(params, 0), _lmc.unstack(params, 1)
        spec = C.mlp_spec(pa)
        wm = C.weight_matching(spec, pa, pb, key=key)
        rows.append(_barriers(pa, pb, test, config.num_points)
                    + _barriers(pa, C.apply_permutation(spec, wm.perm, pb), test,
                                config.num_points)
                    + [_lmc.evaluate(pa, test)[1]])
    return {"steps": np.asarray(config.checkpoints), "table": np.asarray(rows)}


def instability(config: Config) -> dict:
    key, train, test, din, classes = _setup(config)
    parent_key = jax.random.fold_in(key, 2)
    params = _lmc.stacked_init(parent_key[None], din, config.width, config.depth, classes)
    state, done, rows = None, 0, []
    for k in config.spawn_steps:
        params, state = _lmc.train_many(parent_key[None], params, train, num_steps=k - done,
                                        batch_size=config.batch_size, lr=config.learning_rate,
                                        start_step=done, opt_state=state, return_state=True)
        done = k
        child_keys = jax.random.split(jax.random.fold_in(key, 100 + k), 2)
        twin = lambda t: jax.tree.map(lambda v: jax.numpy.concatenate([v, v]), t)
        children = _lmc.train_many(child_keys, twin(params), train,
                                   num_steps=config.num_steps - k, batch_size=config.batch_size,
                                   lr=config.learning_rate, start_step=k, opt_state=twin(state))
        ca, cb = _lmc.unstack(children, 0), _lmc.unstack(children, 1)
        rows.append(_barriers(ca, cb, test, config.num_points) + [_lmc.evaluate(ca, test)[1]])
    return {"spawn_steps": np.asarray(config.spawn_steps), "table": np.asarray(rows)}


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    a = ctx.stage("along_training", lambda: along_training(config))
    ctx.log(f"post-WM loss barrier at the end: {a['table'][-1, 2]:.3f}")
    b = ctx.stage("instability", lambda: instability(config))
    ctx.log(f"instability error barriers: {np.round(b['table'][:, 1], 3).tolist()}")
    return {"steps": a["steps"], "naive_loss": a["table"][:, 0], "naive_error": a["table"][:, 1],
            "wm_loss": a["table"][:, 2], "wm_error": a["table"][:, 3],
            "test_error": a["table"][:, 4], "spawn_steps": b["spawn_steps"],
            "spawn_loss": b["table"][:, 0], "spawn_error": b["table"][:, 1],
            "child_test_error": b["table"][:, 2]}

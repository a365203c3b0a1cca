"""Train longer, generalise better: weight distance and the large-batch gap (Hoffer et al. 2017).

Hoffer, Hubara, Soudry 2017, "Train longer, generalize better: closing the generalization gap in
large batch training of neural networks". Claims tested here: (i) the distance from
initialisation grows about like ``log t`` ("ultra-slow diffusion", section 3); (ii) the test
accuracy lost by a large batch trained for the same number of epochs is mostly recovered by
square-root learning-rate scaling ``lr_B = lr_b sqrt(B / b)``, ghost batch norm (BatchNorm
statistics over virtual batches of ``b_ghost`` examples, section 4) and regime adaptation (as
many updates as the small batch, i.e. ``B / b`` times more epochs; section 5).

Setting: scikit-learn's digits (1438 train / 359 test, a fresh random split per seed; inputs
centred by the training mean), an MLP ``64 -> width x depth -> 10`` with ReLU and BatchNorm
after every hidden linear layer, softmax cross-entropy, SGD with momentum ``momentum`` and a
constant learning rate, minibatches drawn without replacement per epoch (the last partial batch
of an epoch is dropped). Test and train accuracy use eval mode (the running statistics).

(a) Distance: for every batch size in ``batch_sizes``, ``T = epochs * (n // small_batch)``
updates at the base learning rate (the same number of updates for every batch size), recording
``||w_t - w_0||`` (``landscape.dynamics.distance.distance_probe``) every ``record_every`` steps,
with a least-squares fit ``d ~ a + b log t`` over ``t >= fit_min_step`` and, for comparison, a
power law ``log d ~ c + p log t`` on the same points (a random walk has ``p = 1/2``).

(b) The gap: the small batch ``small_batch`` for ``epochs`` epochs (run (a)'s), and the large
batch ``large_batch`` under: ``baseline`` (same epochs, same lr), ``+sqrt_lr``, ``+ghost_bn``
(ghost batches of ``ghost_batch_size``), ``+regime`` (``T`` updates: run (a)'s),
``sqrt_lr+regime`` (the two without ghost batch norm, which isolates ghost batch norm's share of
``all``) and ``all`` (the three together). Each seed draws the split, the initialisation and the
data order, shared by every run of that seed, so gaps are paired.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from experiments.layouts.large_batch import VARIANTS, Metrics
from landscape.experiment import RunContext, check_fields

DIGITS_TRAIN = 1438  #: training examples of landscape.data.digits' default split


@dataclass(frozen=True)
class Config:
    """Default: width 64, depth 2, lr 0.05, momentum 0.9; batches 32..1024; 40 epochs of batch
    32 (1760 updates); large batch 1024 with ghost batches of 32; 3 seeds."""

    seed: int = 0
    num_seeds: int = 3
    num_train: int | None = None  #: None: the whole training split (1438); else its first ones
    width: int = 64
    depth: int = 2
    learning_rate: float = 0.05
    momentum: float = 0.9
    batch_sizes: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
    small_batch: int = 32
    large_batch: int = 1024
    ghost_batch_size: int = 32
    epochs: int = 40
    record_every: int = 1
    fit_min_step: int = 1

    @classmethod
    def smoke(cls) -> Config:
        # 32 and 20 updates: one chunk-cap bucket of landscape.train, so each model kind and
        # batch size compiles once (3 programs)
        return cls(num_seeds=1, num_train=128, width=8, depth=1, batch_sizes=(16, 24),
                   small_batch=16, large_batch=24, ghost_batch_size=8, epochs=4)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("num_seeds", "width", "depth", "learning_rate",
                                     "batch_sizes", "small_batch", "large_batch",
                                     "ghost_batch_size", "epochs", "record_every",
                                     "fit_min_step", "num_train"),
                     nonnegative=("momentum",))
        if self.num_train is not None and self.num_train > DIGITS_TRAIN:
            raise ValueError(f"config key 'num_train' must be <= {DIGITS_TRAIN} (the digits "
                             f"training split); got {self.num_train}")
        n = self.num_train or DIGITS_TRAIN
        for name in ("small_batch", "large_batch"):
            if getattr(self, name) not in self.batch_sizes:
                raise ValueError(f"config key {name!r} ({getattr(self, name)}) must be one of "
                                 f"batch_sizes {self.batch_sizes}")
        if max(self.batch_sizes) > n:
            raise ValueError(f"config key 'batch_sizes' must be <= the training set ({n}); got "
                             f"{max(self.batch_sizes)}")
        if self.large_batch % self.ghost_batch_size:
            raise ValueError(f"config key 'large_batch' ({self.large_batch}) must be a multiple "
                             f"of ghost_batch_size ({self.ghost_batch_size})")
        if self.momentum >= 1:
            raise ValueError(f"config key 'momentum' must be < 1; got {self.momentum}")
        if self.fit_min_step >= self.num_updates(n) - 1:
            raise ValueError(f"config key 'fit_min_step' must leave points to fit (< "
                             f"{self.num_updates(n) - 1}); got {self.fit_min_step}")

    def num_updates(self, n: int) -> int:
        """``T``: the small batch's updates in ``epochs`` epochs of ``n`` examples."""
        return self.epochs * (n // self.small_batch)


def _data(config: Config, seed: int):
    from landscape import data

    train, test = data.digits(jax.random.fold_in(jax.random.key(seed), 0), flatten=True)
    if config.num_train is not None:
        train = jax.tree.map(lambda a: a[:config.num_train], train)
    dtype = jnp.result_type(float)
    mu = jnp.mean(train["x"].astype(dtype), axis=0)
    prep = lambda d: {"x": d["x"].astype(dtype) - mu, "y": d["y"]}  # noqa: E731
    return prep(train), prep(test)


def _model(config: Config, seed: int, ghost: int | None):
    from landscape import models

    return models.MLP(64, config.width, config.depth, 10, activation="relu", norm="batch",
                      ghost_batch_size=ghost, key=jax.random.fold_in(jax.random.key(seed), 1))


class _Runner:
    """One compiled training loop per model kind (plain / ghost BN), shared by every seed."""

    def __init__(self, config: Config):
        from landscape.dynamics.distance import distance_probe
        from landscape.nnx import functional, loss_fn

        self.config = config
        self.loss = {g: loss_fn(_model(config, config.seed, g), "cross_entropy", mode="train")[0]
                     for g in (None, config.ghost_batch_size)}
        self.eval_fm = functional(_model(config, config.seed, None), mode="eval")
        self.optimizer = lambda learning_rate: optax.sgd(learning_rate,
                                                         momentum=config.momentum or None)

        @jax.jit
        def accuracy(params, state, d):
            logits = self.eval_fm.apply(params, d["x"], state=state)
            return jnp.mean(jnp.argmax(logits, axis=-1) == d["y"])

        self.accuracy = accuracy
        # one probe object: a new one per run would recompile the loop
        self.probe = distance_probe(every=config.record_every, per_layer=False)
        self._seeds: dict = {}

    def _seed(self, seed: int):
        """The split and the initial params/statistics of ``seed`` (the same for both kinds:
        ghost batch norm has BatchNorm's variables and draws the same initialisation)."""
        from landscape.nnx import functional

        if seed not in self._seeds:
            tr, te = _data(self.config, seed)
            fm = functional(_model(self.config, seed, None), mode="train")
            self._seeds = {seed: (tr, te, fm.params, fm.state)}
        return self._seeds[seed]

    def run(self, seed: int, batch_size: int, num_steps: int, learning_rate: float,
            ghost: bool) -> dict:
        from landscape import train

        cfg = self.config
        g = cfg.ghost_batch_size if ghost else None
        tr, te, params, state = self._seed(seed)
        res = train.train(self.loss[g], params, self.optimizer, tr,
                          key=jax.random.fold_in(jax.random.key(seed), 2), num_steps=num_steps,
                          batch_size=batch_size, model_state=state,
                          hyperparams={"learning_rate": learning_rate}, progress=False,
                          probes={"d": self.probe})
        w0, wT = (ravel_pytree(p)[0] for p in (params, res.params))
        return {"distance": np.asarray(res.trace["d"]["total"], np.float64),
                "final_distance": float(jnp.linalg.norm(wT - w0)),
                "test_accuracy": float(self.accuracy(res.params, res.model_state, te)),
                "train_accuracy": float(self.accuracy(res.params, res.model_state, tr))}


def _variant_runs(config: Config, n: int) -> dict[str, tuple[int, int, float, bool]]:
    """``{variant: (batch_size, num_steps, learning_rate, ghost)}`` of part (b)."""
    b, B, lr = config.small_batch, config.large_batch, config.learning_rate
    same_epochs = config.epochs * (n // B)
    T = config.num_updates(n)
    lr_sqrt = lr * math.sqrt(B / b)
    return {"small": (b, T, lr, False), "baseline": (B, same_epochs, lr, False),
            "+sqrt_lr": (B, same_epochs, lr_sqrt, False), "+ghost_bn": (B, same_epochs, lr, True),
            "+regime": (B, T, lr, False), "sqrt_lr+regime": (B, T, lr_sqrt, False),
            "all": (B, T, lr_sqrt, True)}


def _fits(config: Config, steps: np.ndarray, distance: np.ndarray) -> dict:
    from landscape.dynamics.distance import fit_log_growth

    fit = fit_log_growth(steps, distance, t_min=config.fit_min_step)
    used = steps >= config.fit_min_step
    logd = np.log(np.maximum(distance[..., used], np.finfo(np.float64).tiny))
    logt = np.log(steps[used])
    p = [np.polyfit(logt, row, 1)[0] for row in logd.reshape(-1, logd.shape[-1])]
    return {"intercept": np.asarray(fit.intercept, np.float64),
            "slope": np.asarray(fit.slope, np.float64), "r2": np.asarray(fit.r2, np.float64),
            "power_exponent": np.reshape(p, distance.shape[:-1]),
            "num_points": fit.num_points}


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    runner = _Runner(config)
    n = int(runner._seed(config.seed)[0]["y"].shape[0])
    T = config.num_updates(n)
    seeds = [config.seed + i for i in range(config.num_seeds)]
    sweep = {}
    for s in ctx.progress(seeds, desc="seeds"):
        for B in config.batch_sizes:
            sweep[s, B] = ctx.stage(f"sweep-s{s}-B{B}", lambda s=s, B=B: runner.run(
                s, B, T, config.learning_rate, False))
    plan = _variant_runs(config, n)
    var = {}
    for s in seeds:
        for name, (B, steps, lr, ghost) in plan.items():
            if name == "small":
                var[s, name] = sweep[s, config.small_batch]
            elif name == "+regime":
                var[s, name] = sweep[s, config.large_batch]
            else:
                var[s, name] = ctx.stage(f"{name}-s{s}", lambda s=s, a=(B, steps, lr, ghost):
                                         runner.run(s, *a))
    steps = np.arange(0, T, config.record_every)
    dist = np.stack([[sweep[s, B]["distance"] for B in config.batch_sizes] for s in seeds])
    per = lambda key: np.asarray([[var[s, v][key] for s in seeds] for v in VARIANTS])  # noqa
    test, train_acc = per("test_accuracy"), per("train_accuracy")
    gap = test[0][None] - test[1:]
    return {
        "steps": steps,
        "distance": dist,
        "fit": _fits(config, steps, dist),
        "sweep_test_accuracy": np.asarray([[sweep[s, B]["test_accuracy"]
                                            for B in config.batch_sizes] for s in seeds]),
        "variants": list(VARIANTS),
        "variant_batch_size": [plan[v][0] for v in VARIANTS],
        "variant_num_steps": [plan[v][1] for v in VARIANTS],
        "variant_learning_rate": [plan[v][2] for v in VARIANTS],
        "variant_ghost": [plan[v][3] for v in VARIANTS],
        "test_accuracy": test,
        "train_accuracy": train_acc,
        "final_distance": per("final_distance"),
        "summary": {
            "num_train": n, "num_updates": T,
            "gap_mean": [float(x) for x in gap.mean(axis=1)],
            "gap_std": [float(x) for x in (gap.std(axis=1, ddof=1) if len(seeds) > 1
                                            else np.zeros(len(gap)))],
            "gap_closed_fraction": float(1 - gap[-1].mean() / gap[0].mean())
            if gap[0].mean() != 0 else float("nan"),
        },
    }

"""Merging independently trained MLPs into one model: test accuracy of each method.

Two-model merges of models trained from independent seeds: plain weight averaging, weight
matching then averaging (Ainsworth et al. 2023), WM + REPAIR (Jordan et al. 2023), and PLeaS
(Nasery et al.: partial matching + layer-wise least squares) with the merged hidden width set
to ``f * h`` for each factor ``f`` in ``pleas_factors`` (``f = 1``: same size as one model;
``f = 2``: no merging, which reproduces the logit ensemble). References: the endpoints' mean
accuracy and the ensemble (averaged logits). Multi-model: merge the first ``m`` models, plain
average vs WM alignment to a common reference (then MergeMany-style re-alignment rounds).
Expected: plain averaging collapses to near chance, WM recovers much of the accuracy, REPAIR
more, and PLeaS trades width for accuracy up to the ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import numpy as np

from experiments import _lmc
from experiments.layouts.merging import Metrics
from landscape import connectivity as C
from landscape.experiment import RunContext, check_fields


@dataclass(frozen=True)
class Config:
    """Default about 2 minutes on 2 CPU cores: MNIST-1D, 4 MLPs of width 128 with 2 hidden
    layers, 2000 Adam steps of batch 128; PLeaS fitted on 2000 training examples."""

    seed: int = 0
    dataset: Literal["mnist1d", "digits"] = "mnist1d"
    width: int = 128
    depth: int = 2
    num_models: int = 4
    num_steps: int = 2000
    batch_size: int = 128
    learning_rate: float = 1e-3
    pleas_factors: tuple[float, ...] = (1.0, 1.25, 1.5, 1.75, 2.0)
    fit_examples: int = 2000
    align_rounds: int = 2
    num_train: int | None = None

    @classmethod
    def smoke(cls) -> Config:
        return cls(dataset="digits", width=8, num_models=3, num_steps=30,
                   pleas_factors=(1.0, 2.0), fit_examples=200, align_rounds=1, num_train=300)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("width", "depth", "num_steps", "batch_size",
                                     "learning_rate", "fit_examples", "align_rounds",
                                     "num_train"),
                     choices={"dataset": ("mnist1d", "digits")})
        if self.num_models < 2:
            raise ValueError(f"config key 'num_models' must be >= 2 (merges need two models); "
                             f"got {self.num_models}")
        if not self.pleas_factors:
            raise ValueError("config key 'pleas_factors' must be non-empty; got ()")
        bad = [f for f in self.pleas_factors if not 1 <= f <= 2]
        if bad:  # PLeaS merges two width-h layers into one of width f * h in [h, 2h]
            raise ValueError(f"config key 'pleas_factors' must be in [1, 2]; got {bad[0]}")
        if self.num_train is not None and self.batch_size > self.num_train:
            raise ValueError(f"config key 'batch_size' must be <= num_train "
                             f"({self.num_train}); got {self.batch_size}")


def _accuracy(params, test):
    return 1.0 - _lmc.evaluate(params, test)[1]


def _two_model(config, models, train, test):
    pa, pb = models[0], models[1]
    spec = C.mlp_spec(pa)
    fit = jax.tree.map(lambda v: v[: config.fit_examples], train)
    wm = C.weight_matching(spec, pa, pb, key=jax.random.key(config.seed))
    pb2 = C.apply_permutation(spec, wm.perm, pb)
    ens = (_lmc.logits(pa, test["x"]) + _lmc.logits(pb, test["x"])) / 2
    out = {"endpoints": (_accuracy(pa, test) + _accuracy(pb, test)) / 2,
           "ensemble": float(np.mean(np.argmax(ens, -1) == test["y"])),
           "average": _accuracy(C.average([pa, pb]), test),
           "wm": _accuracy(C.average([pa, pb2]), test),
           "wm_repair": _accuracy(C.repair(_lmc.pre_features, C.mlp_producers(pa), pa, pb2,
                                           fit), test)}
    pleas = []
    for f in config.pleas_factors:
        widths = [int(round(f * config.width))] * config.depth
        pleas.append(_accuracy(C.pleas_merge(pa, pb, fit["x"], widths), test))
    out["pleas"] = np.asarray(pleas)
    return out


def _multi(config, models, test):
    spec = C.mlp_spec(models[0])
    plain, aligned = [], []
    for m in range(2, len(models) + 1):
        group = models[:m]
        plain.append(_accuracy(C.average(group), test))
        al, _ = C.align_models(spec, group, key=jax.random.key(config.seed),
                               num_rounds=config.align_rounds)
        aligned.append(_accuracy(C.average(al), test))
    return {"num_merged": np.arange(2, len(models) + 1), "multi_average": np.asarray(plain),
            "multi_wm": np.asarray(aligned)}


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()

    def work():
        key = jax.random.key(config.seed)
        train, test = _lmc.load(config.dataset, key, config.num_train)
        keys = jax.random.split(jax.random.fold_in(key, 4), config.num_models)
        init = _lmc.stacked_init(keys, train["x"].shape[1], config.width, config.depth,
                                 int(test["y"].max()) + 1)
        trained = _lmc.train_many(keys, init, train, num_steps=config.num_steps,
                                  batch_size=config.batch_size, lr=config.learning_rate)
        models = [_lmc.unstack(trained, i) for i in range(config.num_models)]
        return {**_two_model(config, models, train, test), **_multi(config, models, test)}

    out = ctx.stage("merging", work)
    ctx.log(f"accuracy: average {out['average']:.3f}, wm {out['wm']:.3f}, "
            f"wm+repair {out['wm_repair']:.3f}, ensemble {out['ensemble']:.3f}")
    return out

"""Loss barrier between independently trained MLPs vs width, with and without alignment.

For each dataset (MNIST-1D, scikit-learn digits) and hidden width, ``2 * num_pairs`` MLPs with
``depth`` hidden layers are trained from independent seeds (Adam, minibatches), and every pair
(0,1), (2,3), ... is compared along the linear path on the test set, after:

* ``none``: no alignment;
* ``wm``: weight matching (Ainsworth et al. 2023);
* ``am``: activation matching on training activations;
* ``ste``: straight-through estimator, warm-started from the WM permutation, ``ste_steps``
  Adam steps on the midpoint loss of the matching examples (widths up to ``ste_max_width``: it
  solves one weight matching per step, ~23 s for 500 steps at width 512), keeping the
  permutation with the lowest midpoint loss on those examples;
* ``wm_repair``: WM, then REPAIR (Jordan et al. 2023) at every alpha of a coarser grid.

Barrier: ``max_minus_mean`` of the test loss and of the test error.

What the papers report (on their own networks and data; whether it holds here is what this
experiment measures, and the README says where it does not):

* Ainsworth, Hayase, Srinivasa, "Git Re-Basin: Merging Models modulo Permutation Symmetries"
  (ICLR 2023): without alignment the barrier stays large as width grows; after weight or
  activation matching it falls toward zero with width; STE, which optimises the midpoint
  directly, gives lower barriers than weight matching.
* Jordan, Sedghi, Saukh, Entezari, Neyshabur, "REPAIR: REnormalizing Permuted Activations for
  Interpolation Repair" (ICLR 2023): interpolated deep networks suffer a collapse in the
  variance of their activations, and rescaling the interpolated network's preactivations to
  the endpoints' statistics lowers the barrier left after neuron alignment further (60-100%
  relative reduction across the architectures and tasks they test, on CIFAR-10 and ImageNet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from experiments import _lmc
from experiments.layouts.barrier_vs_width import AXES, METHODS, Metrics
from landscape import connectivity as C
from landscape.experiment import RunContext, check_fields


@dataclass(frozen=True)
class Config:
    """Default sized for about 5 minutes on 2 CPU cores: 2 datasets x 6 widths (16..512),
    2 pairs (4 seeds) per width, 2 hidden layers, 1500 Adam steps of batch 128; STE with 500
    steps at every width; REPAIR on 9 alphas."""

    seed: int = 0
    datasets: tuple[Literal["mnist1d", "digits"], ...] = ("mnist1d", "digits")
    widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    depth: int = 2
    num_pairs: int = 2
    num_steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 1e-3
    num_points: int = 25
    repair_points: int = 9
    ste_max_width: int = 512
    ste_steps: int = 500
    num_train: int | None = None
    matching_examples: int = 2000

    @classmethod
    def smoke(cls) -> Config:
        return cls(datasets=("digits",), widths=(8,), num_pairs=1, num_steps=40,
                   num_points=5, repair_points=3, ste_steps=1, num_train=300,
                   matching_examples=200)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("widths", "depth", "num_pairs", "num_steps", "batch_size",
                                     "learning_rate", "ste_steps", "num_train",
                                     "matching_examples"),
                     nonnegative=("ste_max_width",),
                     choices={"datasets": ("mnist1d", "digits")})
        for key in ("datasets", "widths"):
            if not getattr(self, key):
                raise ValueError(f"config key {key!r} must be non-empty; got ()")
        for key in ("num_points", "repair_points"):
            if getattr(self, key) < 2:
                raise ValueError(f"config key {key!r} must be >= 2; got {getattr(self, key)}")
        if self.num_train is not None and self.batch_size > self.num_train:
            raise ValueError(f"config key 'batch_size' must be <= num_train "
                             f"({self.num_train}); got {self.batch_size}")


def _path_barriers(params_a, params_b, test, num_points):
    path = C.interpolate(_lmc.loss_fn, params_a, params_b, test, num_points,
                         error_fn=_lmc.error_fn)
    return (float(C.barrier(path).value), float(C.barrier(path, metric="error").value))


def _repair_barriers(pa, pb, train, test, points):
    producers = C.mlp_producers(pa)
    alphas = np.linspace(0, 1, points)
    vals = [_lmc.evaluate(C.repair(_lmc.pre_features, producers, pa, pb, train,
                                   alpha=float(a)), test)
            for a in alphas]
    path = C.Path(jnp.asarray(alphas), jnp.asarray([v[0] for v in vals]),
                  jnp.asarray([v[1] for v in vals]))
    return float(C.barrier(path).value), float(C.barrier(path, metric="error").value)


def _compare_pair(config, pa, pb, train, test, width):
    spec = C.mlp_spec(pa)
    match_data = jax.tree.map(lambda v: v[: config.matching_examples], train)
    key = jax.random.key(config.seed)
    out = {"none": _path_barriers(pa, pb, test, config.num_points)}
    wm = C.weight_matching(spec, pa, pb, key=key)
    pb_wm = C.apply_permutation(spec, wm.perm, pb)
    out["wm"] = _path_barriers(pa, pb_wm, test, config.num_points)
    am = C.activation_matching(spec, C.mlp_features, pa, pb, match_data, batch_size=500)
    out["am"] = _path_barriers(pa, C.apply_permutation(spec, am.perm, pb), test, config.num_points)
    if width <= config.ste_max_width:
        ste = C.ste_matching(spec, _lmc.loss_fn, pa, pb, match_data, key=key,
                             num_steps=config.ste_steps, init_perm=wm.perm)
        out["ste"] = _path_barriers(pa, C.apply_permutation(spec, ste.perm, pb), test,
                                    config.num_points)
    out["wm_repair"] = _repair_barriers(pa, pb_wm, match_data, test, config.repair_points)
    return {m: out.get(m, (np.nan, np.nan)) for m in METHODS}


def run_one(config: Config, dataset: str, width: int) -> dict:
    key = jax.random.key(config.seed)
    train, test = _lmc.load(dataset, key, config.num_train)
    n_models = 2 * config.num_pairs
    keys = jax.random.split(jax.random.fold_in(key, width), n_models)
    init = _lmc.stacked_init(keys, train["x"].shape[1], width, config.depth,
                             int(test["y"].max()) + 1)
    trained = _lmc.train_many(keys, init, train, num_steps=config.num_steps,
                              batch_size=config.batch_size, lr=config.learning_rate)
    models = [_lmc.unstack(trained, i) for i in range(n_models)]
    per_pair = [_compare_pair(config, models[2 * i], models[2 * i + 1], train, test, width)
                for i in range(config.num_pairs)]
    return {"barrier_loss": np.asarray([[p[m][0] for p in per_pair] for m in METHODS]),
            "barrier_error": np.asarray([[p[m][1] for p in per_pair] for m in METHODS]),
            "test_error": np.asarray([_lmc.evaluate(m, test)[1] for m in models])}


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    grid = [(d, w) for d in config.datasets for w in config.widths]
    res = {}
    for d, w in ctx.progress(grid, desc="barrier_vs_width", total=len(grid)):
        res[(d, w)] = ctx.stage(f"{d}_w{w}", lambda d=d, w=w: run_one(config, d, w))
        ctx.log(f"{d} width {w}: loss barriers " + ", ".join(
            f"{m}={np.nanmean(res[(d, w)]['barrier_loss'][i]):.3f}"
            for i, m in enumerate(METHODS)))
    stack = lambda k: np.asarray([[res[(d, w)][k] for w in config.widths]
                                  for d in config.datasets])
    return {"methods": list(METHODS), "barrier_loss": stack("barrier_loss"),
            "barrier_error": stack("barrier_error"), "test_error": stack("test_error"),
            "axes": AXES}

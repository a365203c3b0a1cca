"""What weight matching changes: Ito et al.'s diagnostics and layer-wise barriers.

Two MLPs are trained from independent seeds and aligned by weight matching. Reported:

* L2 distance ``||theta_A - theta_B||`` before and after alignment (Ito, Yamada, Kumagai:
  matching barely reduces it);
* per layer, the overlap ``||U_A^T U_B||_F^2 / k`` of the top-k left and right singular
  subspaces of the weight matrices, before and after alignment (matching aligns the directions
  with large singular values); ``k / m`` is the overlap expected for random subspaces;
* layer-wise barriers (Singh et al.): interpolate one layer, hold the rest at model A (after
  alignment), ``midpoint_minus_mean`` of the train loss, beside the second-order prediction
  ``(1/4)(g_A - g_B).delta + (1/8) delta^T Hbar delta`` for that layer's ``delta``, and the
  same for the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import numpy as np

from experiments import _lmc
from experiments.layouts.matching_anatomy import LAYER_COLUMNS, Metrics
from landscape import connectivity as C
from landscape.experiment import RunContext, check_fields


@dataclass(frozen=True)
class Config:
    """Default about 2 minutes on 2 CPU cores: MNIST-1D, width 128, 3 hidden layers, 2000 Adam
    steps of batch 128; overlaps up to k = 32; barriers on 2000 training examples."""

    seed: int = 0
    dataset: Literal["mnist1d", "digits"] = "mnist1d"
    width: int = 128
    depth: int = 3
    num_steps: int = 2000
    batch_size: int = 128
    learning_rate: float = 1e-3
    top_k: int = 32
    num_points: int = 25
    eval_examples: int = 2000
    num_train: int | None = None

    @classmethod
    def smoke(cls) -> Config:
        return cls(dataset="digits", width=8, depth=2, num_steps=30, top_k=4, num_points=5,
                   eval_examples=200, num_train=300)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("width", "depth", "num_steps", "batch_size",
                                     "learning_rate", "top_k", "eval_examples", "num_train"),
                     choices={"dataset": ("mnist1d", "digits")})
        if self.num_points < 3 or self.num_points % 2 == 0:
            raise ValueError(f"config key 'num_points' must be odd and >= 3 (the "
                             f"midpoint_minus_mean barrier needs alpha = 0.5 on the grid); "
                             f"got {self.num_points}")
        if self.num_train is not None and self.batch_size > self.num_train:
            raise ValueError(f"config key 'batch_size' must be <= num_train "
                             f"({self.num_train}); got {self.batch_size}")


def _train_pair(config):
    key = jax.random.key(config.seed)
    train, test = _lmc.load(config.dataset, key, config.num_train)
    keys = jax.random.split(jax.random.fold_in(key, 3), 2)
    init = _lmc.stacked_init(keys, train["x"].shape[1], config.width, config.depth,
                             int(test["y"].max()) + 1)
    trained = _lmc.train_many(keys, init, train, num_steps=config.num_steps,
                              batch_size=config.batch_size, lr=config.learning_rate)
    return _lmc.unstack(trained, 0), _lmc.unstack(trained, 1), train


def _overlaps(pa, pb, k):
    ov = C.subspace_overlap(pa, pb, k=k)
    return {key: {"left": o.left, "right": o.right, "sv_a": o.sv_a,
                  "random": np.arange(1, len(o.left) + 1) / _rows(pa, key)}
            for key, o in ov.items()}


def _rows(params, key):
    """Rows of a weight matrix: the dimension of its left singular vectors."""
    return C.leaf_keys(params)[key].shape[0]


def _layer_rows(pa, pb, data, num_points):
    groups = C.group_by_layer(pa)
    paths = C.layerwise_paths(_lmc.loss_fn, pa, pb, data, groups, num_points=num_points)
    rows = {}
    for name, keys in groups.items():
        hybrid = jax.tree_util.tree_map_with_path(
            lambda p, a, b, keys=keys: b if jax.tree_util.keystr(p) in keys else a, pa, pb)
        so = C.second_order_barrier(_lmc.loss_fn, pa, hybrid, data, batch_size=500)
        rows[name] = [float(C.barrier(paths[name], "midpoint_minus_mean").value),
                      float(C.barrier(paths[name]).value), float(so.predicted),
                      float(so.measured)]
    so = C.second_order_barrier(_lmc.loss_fn, pa, pb, data, batch_size=500)
    rows["all"] = [float(so.measured), float("nan"), float(so.predicted), float(so.measured)]
    return rows


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()

    def analyse():
        pa, pb, train = _train_pair(config)
        spec = C.mlp_spec(pa)
        wm = C.weight_matching(spec, pa, pb, key=jax.random.key(config.seed))
        pb2 = C.apply_permutation(spec, wm.perm, pb)
        data = jax.tree.map(lambda v: v[: config.eval_examples], train)
        rows = _layer_rows(pa, pb2, data, config.num_points)
        return {"distances": C.l2_distances(pa, pb, pb2),
                "overlap_before": _overlaps(pa, pb, config.top_k),
                "overlap_after": _overlaps(pa, pb2, config.top_k),
                "layers": list(rows), "layer_table": np.asarray(list(rows.values())),
                "wm_history": wm.history}

    out = ctx.stage("anatomy", analyse)
    d = out["distances"]
    ctx.log(f"L2 distance before {d['before']:.2f}, after {d['after']:.2f}")
    out["layer_columns"] = list(LAYER_COLUMNS)
    return out

"""Loss surfaces around trained MLPs, and a curved low-loss path between two of them.

* 2D slices ``theta* + x d1 + y d2`` of the test loss (Li et al. 2018) for an MLP without and
  with BatchNorm (``landscape.models.MLP``, eval mode, trained running statistics), along
  (a) Gaussian directions with filter normalisation and (b) the top-2 Hessian eigenvectors of
  the training loss (``spectral.eigsh``), rescaled to the norm of the filter-normalised
  direction so that both grids span comparable distances. Direction seeds are stored.
* A quadratic Bezier curve with one trained bend (Garipov et al. 2018) between two MLPs trained
  from independent seeds, against the straight line: test loss and error along both.
Expected: the linear path has a clear barrier; the Bezier curve stays near the endpoint loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import _lmc
from experiments.layouts.surfaces import Metrics
from landscape import connectivity as C
from landscape import losses
from landscape import nnx as lnnx
from landscape import train as T
from landscape.experiment import RunContext, check_fields
from landscape.models.mlp import MLP


@dataclass(frozen=True)
class Config:
    """Default about 3 minutes on 2 CPU cores: MNIST-1D, width 64, 2 hidden layers, 2000 Adam
    steps of batch 128; 21 x 21 grids on [-1, 1]^2; Hessian on 1000 training examples; Bezier
    bend trained for 1500 steps."""

    seed: int = 0
    dataset: Literal["mnist1d", "digits"] = "mnist1d"
    width: int = 64
    depth: int = 2
    num_steps: int = 2000
    batch_size: int = 128
    learning_rate: float = 1e-3
    grid_points: int = 21
    grid_radius: float = 1.0
    direction_seeds: tuple[int, int] = (11, 12)
    hessian_examples: int = 1000
    bezier_steps: int = 1500
    bezier_lr: float = 1e-2
    num_points: int = 25
    num_train: int | None = None

    @classmethod
    def smoke(cls) -> Config:
        return cls(dataset="digits", width=8, num_steps=30, grid_points=3, hessian_examples=100,
                   bezier_steps=5, num_points=5, num_train=300)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("width", "depth", "num_steps", "batch_size",
                                     "learning_rate", "grid_points", "grid_radius",
                                     "hessian_examples", "bezier_steps", "bezier_lr",
                                     "num_train"),
                     choices={"dataset": ("mnist1d", "digits")})
        seeds = self.direction_seeds
        if len(seeds) != 2 or seeds[0] == seeds[1]:  # two different directions span a plane
            raise ValueError(f"config key 'direction_seeds' must be two different seeds; "
                             f"got {seeds}")
        if self.num_points < 2:
            raise ValueError(f"config key 'num_points' must be >= 2; got {self.num_points}")
        if self.num_train is not None and self.batch_size > self.num_train:
            raise ValueError(f"config key 'batch_size' must be <= num_train "
                             f"({self.num_train}); got {self.batch_size}")


def _train_flax(config, norm, train):
    model = MLP(train["x"].shape[1], config.width, config.depth, 10, norm=norm,
                key=jax.random.key(config.seed))
    key = jax.random.key(config.seed)
    if norm is None:
        loss, params, _ = lnnx.loss_fn(model, "cross_entropy", mode="eval")
        res = T.train(loss, params, optax.adam(config.learning_rate), train, key=key,
                      num_steps=config.num_steps, batch_size=config.batch_size)
        return res.params, None
    loss, params, state = lnnx.loss_fn(model, "cross_entropy", mode="train")
    res = T.train(loss, params, optax.adam(config.learning_rate), train, key=key,
                  num_steps=config.num_steps, batch_size=config.batch_size, model_state=state)
    return res.params, res.model_state


def _slices(config, norm, train, test):
    params, state = _train_flax(config, norm, train)
    fm = lnnx.functional(MLP(train["x"].shape[1], config.width, config.depth, 10, norm=norm,
                             key=jax.random.key(0)), mode="eval")
    loss = lambda p, b: losses.softmax_cross_entropy(fm.apply(p, b["x"], state=state), b["y"])
    err = lambda p, b: losses.error(fm.apply(p, b["x"], state=state), b["y"]).astype(
        jnp.result_type(float))
    d1, d2 = (C.gaussian_direction(jax.random.key(s), params, "filter")
              for s in config.direction_seeds)
    grid = jnp.linspace(-config.grid_radius, config.grid_radius, config.grid_points)
    gauss = C.slice_2d(loss, params, d1, d2, test, grid, grid, error_fn=err, chunk_size=64,
                       seeds=config.direction_seeds)
    sub = jax.tree.map(lambda v: v[: config.hessian_examples], train)
    hdirs, eig = C.hessian_directions(loss, params, sub, key=jax.random.key(config.seed), k=2)
    scale = float(jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(d1))))
    h1, h2 = (jax.tree.map(lambda v: v * scale, d) for d in hdirs)
    hess = C.slice_2d(loss, params, h1, h2, test, grid, grid, error_fn=err, chunk_size=64)
    return {"grid": np.asarray(grid), "gauss_loss": np.asarray(gauss.losses),
            "gauss_error": np.asarray(gauss.errors), "hess_loss": np.asarray(hess.losses),
            "hess_error": np.asarray(hess.errors), "eigenvalues": np.asarray(eig.eigenvalues),
            "eig_residuals": np.asarray(eig.residuals), "direction_norm": scale}


def _bezier(config, train, test):
    key = jax.random.key(config.seed)
    keys = jax.random.split(jax.random.fold_in(key, 5), 2)
    init = _lmc.stacked_init(keys, train["x"].shape[1], config.width, config.depth, 10)
    trained = _lmc.train_many(keys, init, train, num_steps=config.num_steps,
                              batch_size=config.batch_size, lr=config.learning_rate)
    pa, pb = _lmc.unstack(trained, 0), _lmc.unstack(trained, 1)
    fit = C.fit_bezier(_lmc.loss_fn, pa, pb, train, key=key, num_steps=config.bezier_steps,
                       batch_size=config.batch_size, learning_rate=config.bezier_lr)
    line = C.interpolate(_lmc.loss_fn, pa, pb, test, config.num_points, error_fn=_lmc.error_fn)
    curve = C.bezier_path(_lmc.loss_fn, pa, fit.bend, pb, test, config.num_points,
                          error_fn=_lmc.error_fn)
    return {"t": np.asarray(line.alphas), "linear_loss": np.asarray(line.losses),
            "linear_error": np.asarray(line.errors), "bezier_loss": np.asarray(curve.losses),
            "bezier_error": np.asarray(curve.errors), "bezier_train_loss": np.asarray(fit.losses)}


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    train, test = _lmc.load(config.dataset, jax.random.key(config.seed), config.num_train)
    out = {}
    for norm in ("none", "batch"):
        out[norm] = ctx.stage(f"slices_{norm}", lambda norm=norm: _slices(
            config, None if norm == "none" else norm, train, test))
    out["bezier"] = ctx.stage("bezier", lambda: _bezier(config, train, test))
    b = out["bezier"]
    ctx.log(f"max test loss: linear {b['linear_loss'].max():.3f}, "
            f"Bezier {b['bezier_loss'].max():.3f}")
    return out

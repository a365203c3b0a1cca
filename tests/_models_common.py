"""Shared by the tests/test_models_*.py files (no tests here): dtype, tolerance, small helpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from landscape import models

FLOAT = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32, or float64 under x64
TOL = 1e-10 if FLOAT == jnp.float64 else 1e-5


def _params(model):
    return nnx.state(model, nnx.Param)


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def _normal(key, shape):
    return jax.random.normal(jax.random.key(key), shape, FLOAT)


def _tiny_transformer(seed=0, **kw):
    return models.Transformer(7, 8, 2, 2, 6, rngs=nnx.Rngs(seed), **kw)

"""Pytree helpers used throughout landscape (pure and jit-able).

Argument checks live in ``landscape.validate``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

__all__ = [
    "ravel",
    "tree_vdot",
    "tree_norm",
    "tree_add",
    "tree_sub",
    "tree_scale",
    "tree_axpy",
    "tree_zeros_like",
    "tree_random_normal",
    "tree_lerp",
    "take",
]

HIGHEST = jax.lax.Precision.HIGHEST


def ravel(tree):
    """Flatten a pytree to one vector. Returns ``(flat, unravel)`` (see ``ravel_pytree``)."""
    return ravel_pytree(tree)


def tree_vdot(a, b) -> jax.Array:
    """Inner product ``sum_leaves <a_leaf, b_leaf>`` accumulated at the highest precision."""
    parts = jax.tree.map(
        lambda x, y: jnp.vdot(x.ravel(), y.ravel(), precision=HIGHEST), a, b
    )
    return sum(jax.tree.leaves(parts), start=jnp.zeros((), _result_dtype(a)))


def _result_dtype(tree):
    leaves = jax.tree.leaves(tree)
    return jnp.result_type(*leaves) if leaves else jnp.float32


def tree_norm(a) -> jax.Array:
    """Euclidean norm of all leaves together."""
    return jnp.sqrt(tree_vdot(a, a))


def tree_add(a, b):
    return jax.tree.map(jnp.add, a, b)


def tree_sub(a, b):
    return jax.tree.map(jnp.subtract, a, b)


def tree_scale(a, s):
    return jax.tree.map(lambda x: x * s, a)


def tree_axpy(alpha, x, y):
    """``alpha * x + y`` leafwise."""
    return jax.tree.map(lambda xi, yi: alpha * xi + yi, x, y)


def tree_zeros_like(a):
    return jax.tree.map(jnp.zeros_like, a)


def tree_lerp(a, b, alpha):
    """``(1 - alpha) a + alpha b`` leafwise (the linear path of mode connectivity)."""
    return jax.tree.map(lambda x, y: (1 - alpha) * x + alpha * y, a, b)


def tree_random_normal(key, like):
    """Standard normal pytree with the structure, shapes and dtypes of ``like``."""
    leaves, treedef = jax.tree.flatten(like)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = [jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, out)


def take(batch, idx):
    """Select examples ``idx`` (an index array or slice) from every leaf."""
    return jax.tree.map(lambda x: x[idx], batch)



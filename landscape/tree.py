"""Pytree helpers and input checks used throughout landscape.

Everything here is pure and jit-able except the ``check_*`` functions, which run on concrete
values at the Python level and raise a ``ValueError``/``TypeError`` that names the offending
argument (the library's "fail fast, never a silent NaN" rule).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
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
    "num_examples",
    "check_same_structure",
    "check_finite",
    "check_scalar",
    "check_batch",
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


def num_examples(batch, name: str = "batch") -> int:
    """Leading-axis length shared by every leaf of ``batch``; raises if they disagree."""
    leaves = jax.tree.leaves(batch)
    if not leaves:
        raise ValueError(f"{name} has no array leaves")
    sizes = {int(np.shape(x)[0]) if np.ndim(x) else -1 for x in leaves}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            f"{name} leaves must share a leading example axis; got leading sizes "
            f"{sorted(sizes)} (-1 marks a scalar leaf)"
        )
    return sizes.pop()


def take(batch, idx):
    """Select examples ``idx`` (an index array or slice) from every leaf."""
    return jax.tree.map(lambda x: x[idx], batch)


def check_batch(batch, name: str = "dataset") -> int:
    """Validate a dataset/batch pytree and return its number of examples."""
    n = num_examples(batch, name)
    if n == 0:
        raise ValueError(f"{name} is empty (0 examples)")
    return n


def check_same_structure(a, b, name_a: str = "a", name_b: str = "b") -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same tree structure and leaf shapes."""
    ta, tb = jax.tree.structure(a), jax.tree.structure(b)
    if ta != tb:
        raise ValueError(f"{name_a} and {name_b} have different pytree structures:\n{ta}\nvs\n{tb}")
    for i, (x, y) in enumerate(zip(jax.tree.leaves(a), jax.tree.leaves(b))):
        if np.shape(x) != np.shape(y):
            raise ValueError(
                f"{name_a} and {name_b} differ at leaf {i}: shape {np.shape(x)} vs {np.shape(y)}"
            )


def check_finite(tree: Any, name: str) -> None:
    """Raise ``ValueError`` if any leaf of ``tree`` holds NaN or inf (concrete values only)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            where = jax.tree_util.keystr(path) or "<root>"
            raise ValueError(f"{name} contains non-finite values at {where}")


def check_scalar(value, name: str = "loss_fn") -> None:
    """Raise ``TypeError`` unless ``value`` (array or ShapeDtypeStruct) is a real scalar."""
    shape = tuple(getattr(value, "shape", np.shape(value)))
    dtype = getattr(value, "dtype", np.asarray(value).dtype)
    if shape != ():
        raise TypeError(f"{name} must return a scalar; got an array of shape {shape}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must return a real floating scalar; got dtype {dtype}")

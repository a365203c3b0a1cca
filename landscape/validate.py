"""Argument validation for all of landscape: one home for every ``check_*`` helper.

Each check runs at the Python level and raises a ``ValueError``/``TypeError`` whose message
names the offending argument and says what was expected (the library's "fail fast, never a
silent NaN" rule). Value checks (finiteness) run only on concrete values: under an outer
``jax.jit`` the arguments are tracers and only shapes, structures and dtypes can be checked.
"""

from __future__ import annotations

import numbers
import operator as _operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = [
    "is_concrete",
    "num_examples",
    "check_batch",
    "check_same_structure",
    "check_finite",
    "check_scalar",
    "check_int",
    "check_positive_int",
    "check_positive",
    "check_key",
    "check_vector",
    "check_concrete_values",
    "check_params",
    "check_vector_like",
    "check_scalar_loss",
    "check_finite_value",
    "check_models",
    "flat_dim_dtype",
]


def is_concrete(tree) -> bool:
    """True when no leaf of ``tree`` is a JAX tracer (so values can be inspected)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


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


def check_int(value, name: str, *, low: int = 1, high: int | None = None) -> int:
    """Return ``value`` as an int in ``[low, high]`` or raise naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int; got bool {value!r}")
    try:
        ivalue = _operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}") from None
    if ivalue < low or (high is not None and ivalue > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bounds}; got {ivalue}")
    return ivalue


def check_positive_int(value, name: str, *, allow_zero: bool = False) -> int:
    """Return ``value`` as an ``int`` (numpy integers accepted) or raise ``ValueError``."""
    lo = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        what = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {what} int; got {value!r}")
    return int(value)


def check_positive(value, name: str) -> float:
    """Return ``value`` as a positive finite float or raise naming ``name``."""
    try:
        fvalue = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number; got {value!r}") from None
    if not np.isfinite(fvalue) or fvalue <= 0:
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return fvalue


def check_key(key, name: str = "key") -> None:
    """Raise ``TypeError`` unless ``key`` looks like a ``jax.random`` key."""
    if key is None:
        raise TypeError(f"{name} is required: pass a jax.random key, e.g. jax.random.key(0)")
    if jnp.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        return
    shape, dtype = np.shape(key), getattr(key, "dtype", None)
    if shape != (2,) or dtype is None or not jnp.issubdtype(dtype, jnp.unsignedinteger):
        raise TypeError(
            f"{name} must be a jax.random key (jax.random.key(seed) or PRNGKey); "
            f"got {type(key).__name__} with shape {shape}"
        )


def check_vector(v, dim: int, name: str) -> None:
    """Raise unless ``v`` is a ``(dim,)`` vector with finite, not-all-zero values."""
    if np.ndim(v) != 1 or np.shape(v)[0] != dim:
        raise ValueError(f"{name} must have shape ({dim},); got {np.shape(v)}")
    check_concrete_values(v, name)


def check_concrete_values(x, name: str) -> None:
    """Raise if concrete ``x`` is non-finite or identically zero (skipped under tracing)."""
    if isinstance(x, jax.core.Tracer):
        return
    arr = np.asarray(x)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    if not np.any(arr):
        raise ValueError(f"{name} is identically zero; a start vector needs a nonzero direction")


def check_params(params, name: str = "params") -> None:
    """Params must be a non-empty pytree of floating arrays, finite when concrete."""
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError(f"{name} has no array leaves")
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            where = jax.tree_util.keystr(path) or "<root>"
            raise TypeError(
                f"{name} leaves must be floating arrays; {where} has dtype {jnp.result_type(leaf)}"
            )
    if is_concrete(params):
        check_finite(params, name)


def check_vector_like(params, v, name: str = "v") -> None:
    """``v`` must match ``params`` in structure, leaf shapes and be finite when concrete."""
    check_same_structure(params, v, "params", name)
    if is_concrete(v):
        check_finite(v, name)


def check_scalar_loss(
    loss_fn, params, batch, name: str = "loss_fn", call: str = "(params, batch)"
) -> None:
    """Abstractly evaluate ``loss_fn(params, batch)`` and require a real floating scalar."""
    try:
        out = jax.eval_shape(loss_fn, params, batch)
    except Exception as exc:  # surface the user's error with context
        raise TypeError(f"{name}{call} failed to evaluate: {exc}") from exc
    if not hasattr(out, "shape"):
        raise TypeError(f"{name} must return a scalar array; got {type(out).__name__}")
    check_scalar(out, name)


def check_finite_value(value, what: str) -> None:
    """Raise if a concrete scalar is NaN/inf (no-op for tracers)."""
    if is_concrete(value) and not np.all(np.isfinite(np.asarray(value))):
        raise ValueError(f"{what} is not finite ({np.asarray(value)}) at the given params")


def check_models(params_a, params_b, name_a: str = "params_a", name_b: str = "params_b"):
    """Same structure, shapes and floating dtypes; finite values when concrete."""
    check_same_structure(params_a, params_b, name_a, name_b)
    for nm, p in ((name_a, params_a), (name_b, params_b)):
        for leaf in jax.tree.leaves(p):
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise TypeError(f"{nm} leaves must be floating arrays; got {jnp.result_type(leaf)}")
        if not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(p)):
            check_finite(p, nm)


def flat_dim_dtype(params) -> tuple[int, np.dtype]:
    """Length and dtype of ``ravel_pytree(params)`` without materialising it."""
    flat = jax.eval_shape(lambda p: ravel_pytree(p)[0], params)
    return int(flat.shape[0]), np.dtype(flat.dtype)

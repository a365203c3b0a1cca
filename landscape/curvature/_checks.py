"""Input checks shared by the curvature operators (private).

The public ``landscape.tree.check_*`` helpers need concrete values; operators may also be built
inside a trace (params as tracers), where only shape/structure checks are possible. These helpers
run the value checks only when the values are concrete.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
import numpy as np

from landscape import batching
from landscape import tree as T


def is_concrete(tree) -> bool:
    """True when no leaf of ``tree`` is a JAX tracer (so values can be inspected)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


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
        T.check_finite(params, name)


def check_batch_size(batch_size) -> int:
    """``batch_size`` must be a positive Python int."""
    if isinstance(batch_size, bool):
        raise TypeError(f"batch_size must be a positive int; got {batch_size!r}")
    try:
        b = operator.index(batch_size)
    except TypeError:
        raise TypeError(f"batch_size must be a positive int; got {batch_size!r}") from None
    if b <= 0:
        raise ValueError(f"batch_size must be a positive int; got {b}")
    return b


def check_dataset(dataset, name: str = "dataset") -> int:
    """Non-empty pytree of arrays sharing the leading example axis (or a ``ShardedDataset``);
    returns the number ``n`` of real examples."""
    data = dataset.data if isinstance(dataset, batching.ShardedDataset) else dataset
    T.check_batch(data, name)
    return batching.num_examples(dataset, name)


def check_supervised(dataset, name: str = "dataset") -> int:
    """A ``{"x", "y"}`` dict (plain or sharded) with a shared leading axis; returns ``n``."""
    data = dataset.data if isinstance(dataset, batching.ShardedDataset) else dataset
    if not isinstance(data, dict) or "x" not in data or "y" not in data:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise TypeError(f"{name} must be a dict with keys 'x' and 'y'; got {got}")
    return check_dataset(dataset, name)


def check_vector_like(params, v, name: str = "v") -> None:
    """``v`` must match ``params`` in structure, leaf shapes and be finite when concrete."""
    T.check_same_structure(params, v, "params", name)
    if is_concrete(v):
        T.check_finite(v, name)


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
    T.check_scalar(out, name)


def check_finite_value(value, what: str) -> None:
    """Raise if a concrete scalar is NaN/inf (no-op for tracers)."""
    if is_concrete(value) and not np.all(np.isfinite(np.asarray(value))):
        raise ValueError(f"{what} is not finite ({np.asarray(value)}) at the given params")


def flat_dim_dtype(params) -> tuple[int, np.dtype]:
    """Length and dtype of ``ravel_pytree(params)`` without materialising it."""
    flat = jax.eval_shape(lambda p: T.ravel(p)[0], params)
    return int(flat.shape[0]), np.dtype(flat.dtype)

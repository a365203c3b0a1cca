"""Exact averaging over a whole dataset in batches: the one batching primitive of landscape.

Every function that consumes a dataset (curvature products, dataset losses, path evaluations,
activation statistics) reduces it here. A dataset is either

* a pytree of arrays sharing a leading example axis of ``n`` examples, or
* a :class:`ShardedDataset` (from ``landscape.parallel.shard_dataset``): the arrays padded to a
  multiple of the device count, a 0/1 weight per row, and the static number ``n`` of real rows.

:func:`sum_over_batches` visits the ``n`` real examples in consecutive batches of
``batch_size``: ``n // batch_size`` full batches under ``lax.scan`` plus one remainder batch
of ``n % batch_size`` examples with its own static shape. Nothing is padded, masked or dropped,
so a per-batch *sum* summed over batches is the exact dataset sum, and :func:`dataset_mean`
divides once by ``n``. For a padded sharded dataset the real rows are found with
``jnp.flatnonzero(weights, size=n)`` (static size, traceable) and each batch is gathered from
them, so padding rows never enter any result, on any number of devices. Peak memory is one
batch.

Example indices passed to the batch function are positions ``0..n-1`` among the real examples,
so per-example randomness (``fold_in(key, idx)``) is the same whatever the batch size, device
count or padding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from landscape import tree as T
from landscape import validate

__all__ = [
    "ShardedDataset",
    "num_examples",
    "examples",
    "first_batch",
    "sum_over_batches",
    "dataset_mean",
    "check_batch_size",
    "check_supervised",
]


@dataclasses.dataclass(frozen=True)
class ShardedDataset:
    """A dataset laid out along the example axis of a mesh of ``d`` devices.

    Built by ``landscape.parallel.shard_dataset`` or ``shard_process_local``. It is a pytree
    (``num_examples`` is static), so it can be passed to ``jax.jit``, and every dataset consumer
    of landscape accepts it in place of a plain dataset.

    Attributes:
        data: the dataset pytree; every leaf has leading size ``num_padded`` (a multiple of the
            mesh size) and is sharded along that axis.
        weights: ``(num_padded,)`` floats, 1 for real examples and 0 for padding; ``None`` when
            no padding was needed.
        num_examples: the number of real examples ``n`` (static metadata).
    """

    data: Any
    weights: jax.Array | None
    num_examples: int

    @property
    def num_padded(self) -> int:
        return int(np.shape(jax.tree.leaves(self.data)[0])[0])


jax.tree_util.register_dataclass(
    ShardedDataset, data_fields=["data", "weights"], meta_fields=["num_examples"]
)


def num_examples(dataset, name: str = "dataset") -> int:
    """The number ``n >= 1`` of real examples (padding excluded).

    Raises ``ValueError`` naming ``name`` when the leaves do not share a leading example axis
    or the dataset is empty.
    """
    if isinstance(dataset, ShardedDataset):
        validate.check_batch(dataset.data, f"{name}.data")
        return int(dataset.num_examples)
    return validate.check_batch(dataset, name)


def _real_rows(dataset):
    """``(data, rows)``: the data pytree and the ``(n,)`` row indices of real examples, or None
    when the real examples are the contiguous rows ``0..n-1`` (plain or unpadded datasets)."""
    if not isinstance(dataset, ShardedDataset):
        return dataset, None
    if dataset.weights is None:
        return dataset.data, None
    rows = jnp.flatnonzero(dataset.weights, size=dataset.num_examples)
    return dataset.data, rows


def examples(dataset, start: int, stop: int):
    """The real examples ``start..stop-1`` as a plain batch pytree (static bounds)."""
    data, rows = _real_rows(dataset)
    if rows is None:
        return T.take(data, slice(start, stop))
    return T.take(data, rows[start:stop])


def first_batch(dataset, batch_size: int | None = None):
    """The first ``min(batch_size, n)`` real examples (for shape checks and ``eval_shape``)."""
    n = num_examples(dataset)
    return examples(dataset, 0, n if batch_size is None else min(int(batch_size), n))


def sum_over_batches(fn: Callable, dataset, batch_size: int | None, init=None):
    """``init + sum_batches fn(batch, idx)`` over consecutive batches of the real examples.

    Args:
      fn: ``fn(batch, idx) -> pytree``; ``batch`` is a plain pytree of ``b`` examples, ``idx``
        the ``(b,)`` int32 positions of those examples among the ``n`` real ones. It should
        return a *sum* over the batch's examples (see :func:`dataset_mean` for means).
      dataset: plain dataset pytree or :class:`ShardedDataset`.
      batch_size: examples per batch (``None``: the whole dataset in one batch).
      init: the starting value (a pytree shaped like ``fn``'s output); zeros by default.

    Returns:
      A pytree like ``init``. Traceable; the loop over full batches is one ``lax.scan``.
    """
    n = num_examples(dataset)
    b = n if batch_size is None else min(int(batch_size), n)
    nb, rem = divmod(n, b)
    data, rows = _real_rows(dataset)

    if init is None:
        shape = jax.eval_shape(fn, examples(dataset, 0, b), jnp.arange(b, dtype=jnp.int32))
        init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
    add = lambda a, v: jax.tree.map(lambda x, y: x + y.astype(x.dtype), a, v)
    if nb == 1:
        acc = add(init, fn(examples(dataset, 0, b), jnp.arange(b, dtype=jnp.int32)))
    else:
        idx = jnp.arange(nb * b, dtype=jnp.int32).reshape(nb, b)
        if rows is None:
            main = jax.tree.map(lambda x: x[: nb * b].reshape((nb, b) + x.shape[1:]), data)

            def body(carry, xs):
                batch, i = xs
                return add(carry, fn(batch, i)), None

            acc, _ = jax.lax.scan(body, init, (main, idx))
        else:

            def body(carry, i):
                return add(carry, fn(jax.tree.map(lambda x: x[rows[i]], data), i)), None

            acc, _ = jax.lax.scan(body, init, idx)
    if rem:
        tail = jnp.arange(nb * b, n, dtype=jnp.int32)
        acc = add(acc, fn(examples(dataset, nb * b, n), tail))
    return acc


def dataset_mean(fn: Callable, dataset, batch_size: int | None, *, dtype=None):
    """Exact mean over ``dataset`` of ``fn(batch)``, a pytree of per-batch *means*.

    Each batch mean is weighted by its number of examples, and the weighted sum is divided once
    by ``n``, so the result is the exact mean over the ``n`` real examples for every
    ``batch_size`` and every sharding (up to floating-point summation order). ``dtype``, when
    given, is the accumulation dtype of every leaf. Traceable.
    """
    n = num_examples(dataset)

    def summed(batch, idx):
        out = fn(batch)
        scale = lambda v: (v.astype(dtype) if dtype is not None else v) * idx.shape[0]
        return jax.tree.map(scale, out)

    total = sum_over_batches(summed, dataset, batch_size)
    return jax.tree.map(lambda a: a / n, total)


def check_batch_size(batch_size, name: str = "batch_size", *, allow_none: bool = True):
    """Return ``batch_size`` (a positive int, or None where allowed) or raise naming ``name``.

    ``TypeError`` for a non-integer (bools, floats and strings included), ``ValueError`` for an
    integer below 1.
    """
    if batch_size is None and allow_none:
        return None
    expected = "a positive int or None" if allow_none else "a positive int"
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise TypeError(f"{name} must be {expected}; got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"{name} must be {expected}; got {batch_size!r}")
    return int(batch_size)


def check_supervised(dataset, name: str = "dataset") -> int:
    """Check that ``dataset`` (plain or sharded) is a ``{"x", "y"}`` dict whose leaves share a
    leading example axis; return the number ``n`` of real examples."""
    data = dataset.data if isinstance(dataset, ShardedDataset) else dataset
    if not isinstance(data, dict) or "x" not in data or "y" not in data:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise TypeError(f"{name} must be a dict with keys 'x' and 'y'; got {got}")
    return num_examples(dataset, name)

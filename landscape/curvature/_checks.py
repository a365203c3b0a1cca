"""Input checks shared by the curvature operators (private).

The public ``landscape.tree.check_*`` helpers need concrete values; operators may also be built
inside a trace (params as tracers), where only shape/structure checks are possible. These helpers
run the value checks only when the values are concrete.
"""

from __future__ import annotations

import operator

from landscape import batching
from landscape import tree as T
from landscape.validate import (  # noqa: F401  (re-exported for existing callers)
    check_finite_value,
    check_params,
    check_scalar_loss,
    check_vector_like,
    flat_dim_dtype,
    is_concrete,
)


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



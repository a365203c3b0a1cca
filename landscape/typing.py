"""Type aliases shared across landscape.

The unit of everything is ``loss_fn(params, batch) -> scalar``: ``params`` is any pytree of
arrays, ``batch`` is any pytree of arrays with a leading example axis. Supervised datasets are
dicts ``{"x": inputs, "y": targets}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

Array = jax.Array
PRNGKey = jax.Array
Params = Any
"""A pytree of arrays (nested dicts, lists, NamedTuples, flax ``nnx.State`` ...)."""
Batch = Any
"""A pytree of arrays sharing a leading example axis."""
Dataset = Any
"""A pytree of arrays holding all examples (same layout as a batch)."""
LossFn = Callable[[Params, Batch], Array]
"""``loss_fn(params, batch) -> scalar`` mean loss over the batch."""
ApplyFn = Callable[[Params, Array], Array]
"""``apply_fn(params, x) -> outputs`` network outputs (logits) for a batch of inputs."""

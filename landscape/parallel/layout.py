"""Meshes, shardings and padded datasets: where the examples and the parameters live.

See ``landscape.parallel`` for the data-parallel model and the padding rule.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from landscape.batching import ShardedDataset
from landscape.validate import check_batch

__all__ = [
    "DATA_AXIS",
    "ShardedDataset",
    "data_mesh",
    "data_sharding",
    "replicated_sharding",
    "replicate",
    "pad_dataset",
    "shard_dataset",
    "constrain_batch",
]

DATA_AXIS = "data"


# ----------------------------------------------------------------------------- meshes, shardings


def data_mesh(devices=None, axis_name: str = DATA_AXIS) -> Mesh:
    """One-dimensional mesh ``(len(devices),)`` with axis ``axis_name`` over ``devices``.

    ``devices=None`` takes every device of every process (``jax.devices()``), ordered by process,
    so that process ``p`` owns a contiguous block of the example axis.
    """
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 0:
        raise ValueError("devices must be a non-empty sequence of jax devices")
    if not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(f"devices must be jax.Device objects; got {[type(d) for d in devices]}")
    return Mesh(np.asarray(devices, dtype=object), (axis_name,))


def _check_mesh(mesh) -> Mesh:
    if mesh is None:
        return data_mesh()
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (see data_mesh()); got {type(mesh)}")
    if len(mesh.axis_names) != 1:
        raise ValueError(
            f"mesh must be one-dimensional (a single data axis); got axes {mesh.axis_names}"
        )
    return mesh


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (example) axis over the mesh axis."""
    mesh = _check_mesh(mesh)
    return NamedSharding(mesh, P(mesh.axis_names[0]))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that holds a full copy on every device of ``mesh``."""
    return NamedSharding(_check_mesh(mesh), P())


def replicate(tree, mesh: Mesh | None = None):
    """Copy every leaf of ``tree`` onto every device of ``mesh`` (params, optimizer state).

    In a multi-process run, every process must pass the same values (for example params built
    from the same key).
    """
    sharding = replicated_sharding(_check_mesh(mesh))
    return jax.tree.map(lambda x: _put(np.asarray(x) if _is_host(x) else x, sharding), tree)


def _is_host(x) -> bool:
    return not isinstance(x, jax.Array)


def _put(x, sharding: NamedSharding):
    """``device_put`` that also works when ``sharding`` spans devices of other processes."""
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


# ----------------------------------------------------------------------------- datasets


def pad_dataset(dataset, multiple: int):
    """Pad the example axis up to a multiple of ``multiple`` with copies of the last example.

    Returns ``(padded, weights)``; ``weights`` is a ``(n_padded,)`` numpy array of ones and zeros
    in the dataset's floating dtype (float32 if it has none), or ``None`` if ``n`` already is a
    multiple. Host-side (numpy) and exact: the first ``n`` examples are the input unchanged.
    """
    if not isinstance(multiple, int | np.integer) or multiple < 1:
        raise ValueError(f"multiple must be a positive int; got {multiple!r}")
    n = check_batch(dataset, "dataset")
    extra = -n % multiple
    if extra == 0:
        return dataset, None
    padded = jax.tree.map(lambda x: _pad_leaf(np.asarray(x), extra), dataset)
    weights = np.concatenate([np.ones(n), np.zeros(extra)]).astype(_weight_dtype(dataset))
    return padded, weights


def _pad_leaf(x: np.ndarray, extra: int) -> np.ndarray:
    return np.concatenate([x, np.repeat(x[-1:], extra, axis=0)], axis=0)


def _weight_dtype(dataset):
    floats = [np.result_type(x) for x in jax.tree.leaves(dataset)]
    floats = [d for d in floats if np.issubdtype(d, np.floating)]
    dtype = np.result_type(*floats) if floats else np.float32
    return jax.dtypes.canonicalize_dtype(dtype)


def shard_dataset(dataset, mesh: Mesh | None = None) -> ShardedDataset:
    """Pad ``dataset`` to a multiple of the mesh size and shard it along the example axis.

    ``dataset`` is a pytree of arrays with a shared leading axis of ``n`` examples (numpy or jax,
    the full dataset, identical on every process). Each device receives ``ceil(n / d)`` examples.
    To have each process load only its own part, use :func:`shard_process_local` instead.
    """
    mesh = _check_mesh(mesh)
    n = check_batch(dataset, "dataset")
    padded, weights = pad_dataset(dataset, mesh.size)
    sharding = data_sharding(mesh)
    data = jax.tree.map(lambda x: _put(x, sharding), padded)
    w = None if weights is None else _put(weights, sharding)
    return ShardedDataset(data=data, weights=w, num_examples=n)


def constrain_batch(batch, mesh: Mesh):
    """Inside ``jit``: ask GSPMD to keep ``batch`` sharded along the example axis of ``mesh``.

    Use it on a batch that a jitted training loop slices or gathers from a dataset, so that the
    per-example work stays split over the devices. The batch size must be a multiple of the
    mesh size.
    """
    return jax.lax.with_sharding_constraint(batch, data_sharding(mesh))

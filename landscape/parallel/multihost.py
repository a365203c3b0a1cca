"""Several processes (hosts): joining a run and building global arrays from local parts.

Every process runs the same program. It calls :func:`initialize` before any other JAX call, loads
only its block of the data (:func:`process_slice`) and passes it to :func:`shard_process_local`;
from there on the functions of ``landscape.parallel`` work unchanged on the global arrays. See
https://docs.jax.dev/en/latest/multi_process.html.
"""

from __future__ import annotations

import ipaddress
import math

import jax
import numpy as np
from jax.sharding import Mesh

from landscape.parallel.layout import (
    ShardedDataset,
    _check_mesh,
    _pad_leaf,
    _weight_dtype,
    data_sharding,
)
from landscape.validate import check_batch

__all__ = ["initialize", "process_slice", "shard_process_local"]

# ----------------------------------------------------------------------------- several processes


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids=None,
    cpu_collectives: str = "gloo",
    bind_address: str | None = None,
    initialization_timeout: int = 300,
) -> None:
    """Join a multi-process JAX run; call it first thing in every process, before any JAX work.

    Thin wrapper of ``jax.distributed.initialize`` that also selects the CPU collectives
    (``jax_cpu_collectives_implementation``, gloo over TCP by default; it does not affect GPUs,
    which use NCCL). ``coordinator_address`` is ``"HOST:PORT"`` of process 0, the same in every
    process; ``process_id`` runs over ``0..num_processes-1``. Left as ``None``, the three are
    detected by JAX from the launcher (Slurm, Open MPI, ``mpi4py``) or read from
    ``JAX_COORDINATOR_ADDRESS``. On a loopback coordinator address the coordinator binds only to
    loopback (JAX's default binds every interface). Afterwards ``jax.devices()`` lists the
    devices of all processes and ``jax.local_devices()`` this process's; on GPU hosts run one
    process per host, or one per GPU with ``local_device_ids=[i]``.
    """
    if coordinator_address is not None:
        host, _ = _split_address(coordinator_address)
        if bind_address is None and _is_loopback(host):
            bind_address = coordinator_address
    if num_processes is not None and (not isinstance(num_processes, int) or num_processes < 1):
        raise ValueError(f"num_processes must be a positive int; got {num_processes!r}")
    if process_id is not None and (
        not isinstance(process_id, int)
        or process_id < 0
        or (num_processes is not None and process_id >= num_processes)
    ):
        raise ValueError(f"process_id must be an int in [0, num_processes); got {process_id!r}")
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        coordinator_bind_address=bind_address,
        initialization_timeout=initialization_timeout,
    )


def _split_address(address) -> tuple[str, int]:
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(f"coordinator_address must be 'HOST:PORT'; got {address!r}")
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator_address must end in a port 1..65535; got {address!r}")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def process_slice(num_examples: int, process_index=None, process_count=None) -> slice:
    """The contiguous block of ``range(num_examples)`` that process ``process_index`` loads.

    Blocks differ in size by at most one example; defaults are this process and all processes.
    """
    p = jax.process_index() if process_index is None else process_index
    k = jax.process_count() if process_count is None else process_count
    if not isinstance(num_examples, int | np.integer) or num_examples < k:
        raise ValueError(
            f"num_examples must be an int >= {k} (one per process); got {num_examples!r}"
        )
    if not 0 <= p < k:
        raise ValueError(f"process_index must be in [0, {k}); got {p}")
    return slice(p * num_examples // k, (p + 1) * num_examples // k)


def shard_process_local(local_dataset, mesh: Mesh | None = None) -> ShardedDataset:
    """Assemble a global :class:`ShardedDataset` from the part of the data each process holds.

    Every process calls this with its own examples (sizes may differ between processes). The
    local parts are padded to a common size, a multiple of the local device count, and joined
    with ``jax.make_array_from_process_local_data``; ``num_examples`` is the global total. All
    processes must call it together (it exchanges the local sizes).
    """
    mesh = _check_mesh(mesh)
    n_local = check_batch(local_dataset, "local_dataset")
    sizes = _gather_sizes(n_local)
    n_devices_local = len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])
    if n_devices_local * jax.process_count() != mesh.size:
        raise ValueError("mesh must hold the same number of devices from every process")
    rows = math.ceil(max(sizes) / n_devices_local) * n_devices_local
    padded, weights = _pad_to(local_dataset, n_local, rows, all_equal=rows == min(sizes))
    sharding = data_sharding(mesh)
    make = lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x))
    data = jax.tree.map(make, padded)
    w = None if weights is None else make(weights)
    return ShardedDataset(data=data, weights=w, num_examples=int(sum(sizes)))


def _gather_sizes(n_local: int) -> list[int]:
    if jax.process_count() == 1:
        return [n_local]
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(np.asarray([n_local], np.int64))
    return [int(s) for s in np.asarray(gathered).ravel()]


def _pad_to(dataset, n: int, rows: int, *, all_equal: bool):
    if all_equal:
        return dataset, None
    padded = jax.tree.map(lambda x: _pad_leaf(np.asarray(x), rows - n), dataset)
    weights = np.concatenate([np.ones(n), np.zeros(rows - n)]).astype(_weight_dtype(dataset))
    return padded, weights

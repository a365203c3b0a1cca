"""Data parallelism over devices and hosts with ``jax.sharding`` (GSPMD, no ``pmap``).

The model is data parallel: parameters and optimizer state are *replicated* on every device, and
datasets and batches (pytrees with a leading example axis) are *sharded* along that axis over a
one-dimensional :class:`jax.sharding.Mesh` whose single axis is named ``"data"``. ``jax.jit``
then partitions the computation and inserts the cross-device reductions itself; see the JAX
guides "Distributed arrays and automatic parallelization" and "Multi-process environments"
(https://docs.jax.dev/en/latest/notebooks/Distributed_arrays_and_automatic_parallelization.html,
https://docs.jax.dev/en/latest/multi_process.html).

Uneven sizes. A dataset of ``n`` examples on ``d`` devices is padded up to the next multiple of
``d`` with copies of its last example, and a weight vector (1 for real examples, 0 for padding)
travels with it in a :class:`ShardedDataset`. Losses are then the weighted mean
``sum_i w_i l_i / sum_i w_i``, which is *exactly* the mean over the ``n`` real examples: the
padding is never trimmed away or double counted. Padding with real examples (rather than zeros)
keeps every per-example loss finite, so ``0 * l_i`` is an exact zero.

Accuracy. Sharded and one-device results are the same quantity; they differ only in the order
of floating-point reductions, i.e. in the last bits: relative differences of a few ``1e-7`` in
float32 and a few ``1e-16`` in float64 (the tests use ``1e-6`` and ``1e-12``).

Where it runs.

* One CPU or one GPU: ``data_mesh()`` is a mesh of one device and everything is a no-op wrapper.
* N simulated CPU devices: set ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (or
  ``jax.config.update("jax_num_cpu_devices", N)``) *before* JAX initialises its backend.
* Several GPUs on one host: nothing to do, ``jax.devices()`` lists them all.
* Several hosts (or processes): every process calls :func:`initialize` first (before any other
  JAX call) with the same ``coordinator_address`` (``"IP_OF_PROCESS_0:PORT"``), the same
  ``num_processes`` and its own ``process_id`` in ``0..num_processes-1``. On CPU the cross-process
  collectives are gloo over TCP. Each process then loads only its part of the data
  (:func:`process_slice`) and :func:`shard_process_local` assembles the global array.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from landscape.tree import check_batch, check_finite, check_scalar

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
    "mean_loss",
    "sharded_mean_loss",
    "sharded_value_and_grad",
    "data_parallel",
    "data_parallel_loss",
    "sharded_train_step",
    "initialize",
    "process_slice",
    "shard_process_local",
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


@dataclasses.dataclass(frozen=True)
class ShardedDataset:
    """A dataset laid out along the example axis of a mesh.

    Attributes:
        data: the dataset pytree; every leaf has leading size ``num_padded`` (a multiple of the
            mesh size) and is sharded along that axis.
        weights: ``(num_padded,)`` floats, 1 for real examples and 0 for padding; ``None`` when
            no padding was needed (then ``loss_fn`` is applied to the batch as is).
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


# ----------------------------------------------------------------------------- losses


def mean_loss(loss_fn: Callable, params, data, weights=None) -> jax.Array:
    """Exact mean loss over the real examples of a (possibly padded) batch. Pure and jit-able.

    With ``weights=None`` this is ``loss_fn(params, data)``. With weights ``w`` (shape ``(n,)``)
    it is ``sum_i w_i loss_fn(params, data[i:i+1]) / sum_i w_i``, the per-example losses being
    evaluated with ``vmap``; this assumes (as everywhere in landscape) that ``loss_fn`` is a mean
    of per-example losses, with no coupling between examples (BatchNorm must be in eval mode).
    """
    if weights is None:
        return loss_fn(params, data)

    def one(example):
        return loss_fn(params, jax.tree.map(lambda x: x[None], example))

    per_example = jax.vmap(one)(data)
    w = weights.astype(per_example.dtype)
    return jnp.sum(w * per_example) / jnp.sum(w)


def _prepare(loss_fn, params, dataset, mesh):
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable loss_fn(params, batch); got {type(loss_fn)}")
    mesh = _check_mesh(mesh)
    if not isinstance(dataset, ShardedDataset):
        dataset = shard_dataset(dataset, mesh)
    elif dataset.num_padded % mesh.size:
        raise ValueError(
            f"dataset was sharded for another mesh: {dataset.num_padded} rows are not a multiple "
            f"of the mesh size {mesh.size}"
        )
    one = jax.tree.map(lambda x: jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype), dataset.data)
    check_scalar(jax.eval_shape(loss_fn, params, one), "loss_fn")
    return mesh, replicate(params, mesh), dataset


@jax.jit(static_argnames=("loss_fn", "mesh", "grad"))
def _mean_loss_jit(params, dataset, *, loss_fn, mesh, grad):
    def f(p):
        return mean_loss(loss_fn, p, dataset.data, dataset.weights)

    out = jax.value_and_grad(f)(params) if grad else f(params)
    return jax.lax.with_sharding_constraint(out, replicated_sharding(mesh))


def sharded_mean_loss(loss_fn: Callable, params, dataset, mesh: Mesh | None = None) -> jax.Array:
    """Mean of ``loss_fn`` over all examples of ``dataset``, computed data-parallel on ``mesh``.

    ``dataset`` is a raw dataset pytree (it is sharded here) or a :class:`ShardedDataset`.
    Returns a replicated scalar equal to ``loss_fn(params, dataset)`` on one device, up to
    reduction order (see the module docstring). Host-level driver (it places data); inside your
    own ``jit`` use :func:`mean_loss`. Raises ``ValueError`` if the loss is not finite.
    """
    mesh, params, dataset = _prepare(loss_fn, params, dataset, mesh)
    loss = _mean_loss_jit(params, dataset, loss_fn=loss_fn, mesh=mesh, grad=False)
    check_finite(loss, "loss_fn(params, dataset)")
    return loss


def sharded_value_and_grad(loss_fn: Callable, params, dataset, mesh: Mesh | None = None):
    """``(mean loss, gradient)`` over all of ``dataset``, data-parallel; both replicated."""
    mesh, params, dataset = _prepare(loss_fn, params, dataset, mesh)
    loss, grads = _mean_loss_jit(params, dataset, loss_fn=loss_fn, mesh=mesh, grad=True)
    check_finite(loss, "loss_fn(params, dataset)")
    return loss, grads


# ----------------------------------------------------------------------------- training steps


def data_parallel(step: Callable, mesh: Mesh | None = None, *, donate: bool = False) -> Callable:
    """Make ``step(params, opt_state, batch, *rest) -> outputs`` run data-parallel on ``mesh``.

    The returned function replicates ``params`` and ``opt_state``, shards ``batch`` along its
    example axis, and calls ``jax.jit(step)``; every output is replicated. The batch size must be
    a multiple of the mesh size (pad it with :func:`shard_dataset` and a weighted loss, as
    :func:`sharded_train_step` does, otherwise). ``donate=True`` donates params and opt_state.
    """
    mesh = _check_mesh(mesh)
    rep, dat = replicated_sharding(mesh), data_sharding(mesh)
    jitted = jax.jit(step, out_shardings=rep, donate_argnums=(0, 1) if donate else ())

    def run(params, opt_state, batch, *rest):
        n = check_batch(batch, "batch")
        if n % mesh.size:
            raise ValueError(
                f"batch has {n} examples, not a multiple of the {mesh.size} devices of the mesh; "
                "pad it (shard_dataset) and use a weighted loss (sharded_train_step)"
            )
        params, opt_state = replicate((params, opt_state), mesh)
        return jitted(params, opt_state, jax.tree.map(lambda x: _put(x, dat), batch), *rest)

    return run


def data_parallel_loss(loss_fn: Callable, mesh: Mesh | None = None) -> Callable:
    """Wrap ``loss_fn(params, batch, *rest)`` so its batch is split over the devices of ``mesh``.

    The wrapper applies :func:`constrain_batch` to ``batch`` and then calls ``loss_fn``; the
    value is unchanged. Pass it to a jitted training loop together with replicated params to
    make that loop data-parallel, e.g. with ``landscape.train.train``::

        mesh = parallel.data_mesh()
        result = train(parallel.data_parallel_loss(loss_fn, mesh), parallel.replicate(params, mesh),
                       optimizer, parallel.replicate(dataset, mesh), key=key, num_steps=1000,
                       batch_size=256)  # batch_size: a multiple of mesh.size

    The batch size must be a multiple of ``mesh.size`` (checked at trace time). Works for the
    stateful signature ``loss_fn(params, batch, state, key)`` too: with BatchNorm in train mode the
    batch statistics are still those of the whole batch, as on one device.
    """
    mesh = _check_mesh(mesh)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable loss_fn(params, batch); got {type(loss_fn)}")

    def sharded_loss(params, batch, *rest, **kwargs):
        n = check_batch(batch, "batch")
        if n % mesh.size:
            raise ValueError(
                f"batch has {n} examples, not a multiple of the {mesh.size} devices of the mesh; "
                "choose batch_size as a multiple of mesh.size"
            )
        return loss_fn(params, constrain_batch(batch, mesh), *rest, **kwargs)

    return sharded_loss


def sharded_train_step(loss_fn: Callable, optimizer, mesh: Mesh | None = None) -> Callable:
    """One optax step on the exact mean loss of a (padded, sharded) batch, data-parallel.

    Returns ``step(params, opt_state, batch) -> (params, opt_state, loss)``, where ``batch`` is a
    :class:`ShardedDataset` or a raw batch pytree (sharded, and padded if needed, on the fly) and
    ``loss`` is the mean loss at the *incoming* params. ``optimizer`` is an
    ``optax.GradientTransformation``; build ``opt_state = optimizer.init(params)``. The result
    equals the same step on one device up to reduction order.
    """
    mesh = _check_mesh(mesh)
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(f"optimizer must be an optax.GradientTransformation; got {type(optimizer)}")

    @jax.jit
    def _step(params, opt_state, dataset: ShardedDataset):
        loss, grads = jax.value_and_grad(
            lambda p: mean_loss(loss_fn, p, dataset.data, dataset.weights)
        )(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: p + u.astype(p.dtype), params, updates)
        return jax.lax.with_sharding_constraint((params, opt_state, loss), replicated_sharding(mesh))

    def step(params, opt_state, batch):
        _, params, batch = _prepare(loss_fn, params, batch, mesh)
        return _step(params, replicate(opt_state, mesh), batch)

    return step


# ----------------------------------------------------------------------------- several processes


def initialize(
    coordinator_address: str,
    num_processes: int,
    process_id: int,
    *,
    local_device_ids=None,
    cpu_collectives: str = "gloo",
    bind_address: str | None = None,
    initialization_timeout: int = 300,
) -> None:
    """Join a multi-process JAX run; call it first thing in every process, before any JAX work.

    Thin wrapper of ``jax.distributed.initialize`` that also selects the CPU collectives
    (``jax_cpu_collectives_implementation``, gloo over TCP by default; it has no effect on GPU,
    where NCCL is used). ``coordinator_address`` is ``"HOST:PORT"`` of process 0, the same in every
    process; ``process_id`` runs over ``0..num_processes-1``. On a loopback coordinator address
    the coordinator binds only to loopback (JAX's default binds every interface). After it,
    ``jax.devices()`` lists the devices of all processes and ``jax.local_devices()`` this
    process's; one process per GPU is usual (``local_device_ids=[i]``).
    """
    host, port = _split_address(coordinator_address)
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes must be a positive int; got {num_processes!r}")
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be an int in [0, {num_processes}); got {process_id!r}")
    if bind_address is None and _is_loopback(host):
        bind_address = coordinator_address
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
        raise ValueError(f"num_examples must be an int >= {k} (one per process); got {num_examples}")
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

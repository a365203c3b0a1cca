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
of floating-point reductions, i.e. in the last bits. On the tests' small MLP the largest
differences relative to the largest entry were about ``1e-7`` in float32 and ``1e-16`` in float64
(the tests require ``1e-6`` and ``1e-12``).

Typical use::

    from landscape import parallel
    mesh = parallel.data_mesh()                      # every device of every process
    data = parallel.shard_dataset(dataset, mesh)     # padded + weights if n % mesh.size != 0
    loss = parallel.sharded_mean_loss(loss_fn, params, data, mesh)
    step = parallel.sharded_train_step(loss_fn, optax.adam(1e-3), mesh)
    params, opt_state, loss = step(params, opt_state, data)
    # or make landscape.train.train data-parallel (batch_size a multiple of mesh.size):
    train(parallel.data_parallel_loss(loss_fn, mesh), parallel.replicate(params, mesh), ...)

Where it runs (the code is the same everywhere):

* One CPU or one GPU: ``data_mesh()`` has one device; nothing is split.
* N simulated CPU devices: set ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (or call
  ``jax.config.update("jax_num_cpu_devices", N)``) *before* JAX initialises its backend, i.e.
  before the first ``jax.devices()`` or computation.
* Several GPUs on one host: nothing to do; ``jax.devices()`` lists them all (install
  ``jax[cuda12]``/``jax[cuda13]``; restrict with ``CUDA_VISIBLE_DEVICES``).
* Several hosts (or processes): every process calls :func:`initialize` first (before any other
  JAX call) with the same ``coordinator_address`` (``"IP_OF_PROCESS_0:PORT"``), the same
  ``num_processes`` and its own ``process_id`` in ``0..num_processes-1`` (for example read from
  your launcher's environment: Slurm's ``SLURM_PROCID``/``SLURM_NTASKS``). On CPU the
  cross-process collectives are gloo over TCP, on GPU NCCL. Each process then loads only its
  block of the data (:func:`process_slice`) and :func:`shard_process_local` assembles the global
  arrays; params must be the same in every process (build them from the same key).
"""

from landscape.parallel.layout import (
    DATA_AXIS,
    ShardedDataset,
    constrain_batch,
    data_mesh,
    data_sharding,
    pad_dataset,
    replicate,
    replicated_sharding,
    shard_dataset,
)
from landscape.parallel.multihost import initialize, process_slice, shard_process_local
from landscape.parallel.steps import (
    data_parallel,
    data_parallel_loss,
    mean_loss,
    sharded_mean_loss,
    sharded_train_step,
    sharded_value_and_grad,
)

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

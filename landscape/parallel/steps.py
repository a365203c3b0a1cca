"""Data-parallel losses, gradients and optimizer steps (``jax.jit`` + shardings, GSPMD).

See ``landscape.parallel`` for the data-parallel model, the padding rule and the accuracy.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from landscape import train
from landscape.parallel.layout import (
    ShardedDataset,
    _check_mesh,
    _put,
    constrain_batch,
    data_sharding,
    replicate,
    replicated_sharding,
    shard_dataset,
)
from landscape.validate import check_batch, check_finite, check_scalar

__all__ = [
    "mean_loss",
    "sharded_mean_loss",
    "sharded_value_and_grad",
    "data_parallel",
    "data_parallel_loss",
    "sharded_train_step",
]

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

    Memory: each device evaluates its ``ceil(n / d)`` examples in one pass. Compiled once per
    ``(loss_fn, mesh, shapes)``: pass the same function object, not a fresh lambda, per call.
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
    In a multi-process run ``batch`` is the global batch: the same host data in every process,
    or global arrays such as ``shard_process_local(local_batch, mesh).data``.
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
    ``optax.GradientTransformation``; build ``opt_state = optimizer.init(params)``. The step is
    one step of the library's training loop (``landscape.train.run_steps`` with
    ``num_steps=1``: ``value_and_grad``, ``optimizer.update``, ``optax.apply_updates``) on the
    exact weighted mean loss, so it equals a full-batch step of ``landscape.train.train`` on one
    device up to reduction order. For a compiled loop of many steps, use ``train.train`` with
    :func:`data_parallel_loss` instead.
    """
    mesh = _check_mesh(mesh)
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(f"optimizer must be an optax.GradientTransformation; got {type(optimizer)}")

    opt = optax.GradientTransformation(optimizer.init, optimizer.update)  # any init/update pair

    def weighted_loss(params, dataset: ShardedDataset):
        return mean_loss(loss_fn, params, dataset.data, dataset.weights)

    @jax.jit
    def _step(params, opt_state, dataset: ShardedDataset):
        # one step of the library's training loop; full batch and a deterministic loss, so the
        # key draws nothing
        state = train.TrainState(params, opt_state, None, jnp.zeros((), jnp.int32))
        state, loss, *_ = train.run_steps(weighted_loss, opt, state, dataset,
                                          key=jax.random.key(0), num_steps=1)
        # run_steps averages in the widest float; the loss of one step converts back exactly
        loss = loss.astype(jax.eval_shape(weighted_loss, params, dataset).dtype)
        out = (state.params, state.opt_state, loss)
        return jax.lax.with_sharding_constraint(out, replicated_sharding(mesh))

    def step(params, opt_state, batch):
        _, params, batch = _prepare(loss_fn, params, batch, mesh)
        return _step(params, replicate(opt_state, mesh), batch)

    return step

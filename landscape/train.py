"""The one training loop of landscape: optax steps in compiled chunks, with probes.

Everything in landscape that trains goes through :func:`run_steps` (the pure, jit-able and
vmap-able primitive) or :func:`train` (the driver around it: data order, chunking, progress,
callbacks, checkpoint/resume and the probe trace).

**Steps.** Step ``t`` draws its batch with :func:`batch_at` from ``(key, t)``, evaluates
``loss, grads = value_and_grad(loss_fn)(params, batch)``, and applies
``optimizer.update(grads, opt_state, params)`` with ``optax.apply_updates`` (``value_and_grad=``
replaces the gradient, e.g. by a robust aggregate of per-example gradients;
``update_extra_args=`` passes keyword arguments built from the batch to ``update``). Steps run
inside ``lax.fori_loop`` in one ``jax.jit`` whose trip count is a traced value, so compile time does
not grow with the number of steps, and chunks of any length share one compilation.

**Data order.** With ``batch_size`` set, epoch ``e`` visits the examples in the order
``jax.random.permutation(fold_in(key, e), n)``, in ``n // batch_size`` full batches (the last
partial batch of each epoch is dropped, so every step has the same batch size). Without
``batch_size`` every step is full-batch. Dropout keys are ``fold_in(key', step)``. Because the
batch and key of step ``t`` are pure functions of ``(key, t)``, a resumed run replays exactly
the same steps: killed with SIGKILL and restarted, it ends with bit-identical parameters (on
CPU).

**Hyperparameters as traced values.** ``optimizer`` is either an ``optax.GradientTransformation``
(its hyperparameters are constants of the compiled program), or a factory such as ``optax.sgd``
together with ``hyperparams={"learning_rate": eta, ...}``: the factory is called *inside* the
compiled loop on traced hyperparameters, so a sweep over learning rates compiles once, and
:func:`run_steps` can be ``jax.vmap``-ed over learning rates or seeds.

**Custom data order.** :func:`run_steps` takes ``batch_fn(dataset, step, key) -> batch`` in
place of the default order (:func:`batch_at`), e.g. to draw fresh synthetic examples at every
step from per-step keys held in ``dataset``; like the default it must be a pure function of
``(dataset, step, key)``.

**Probes.** A :class:`Probe` is a measurement that runs inside the compiled loop every
``every`` steps (at steps ``t = 0, every, 2 every, ...``, on the parameters *before* the update
of step ``t``, after that step's loss and gradient are evaluated; ``ctx.loss`` is the loss of
step ``t``) and whose outputs are recorded per step: ``result.trace[name]`` is a pytree of
arrays with a leading record axis and ``result.trace_steps[name]`` the steps they were taken
at. A probe carries its own state from one call to the next (e.g. the previous top eigenvector
for a warm start), and holds arrays it needs (e.g. the full dataset) as its ``data`` field,
which enters the compiled loop as an argument, never as a baked-in constant.

Two loss signatures are supported:

* stateless: ``loss_fn(params, batch) -> scalar``;
* stateful (pass ``model_state``; e.g. BatchNorm from ``landscape.nnx.loss_fn(..., mode="train")``):
  ``loss_fn(params, batch, state, key) -> (scalar, new_state)``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from landscape import checkpoint as ckpt
from landscape import conv_rewrite, reprs
from landscape.validate import check_batch, check_finite, check_scalar

__all__ = [
    "TrainState",
    "TrainResult",
    "Probe",
    "ProbeContext",
    "probe",
    "train",
    "run_steps",
    "init_state",
    "batch_at",
    "batch_indices",
    "progress_enabled",
]


class TrainState(NamedTuple):
    """Everything a run needs to continue: params, optimizer state, model state, step count."""

    params: Any
    opt_state: Any
    model_state: Any
    step: jax.Array  # int32 scalar


class ProbeContext(NamedTuple):
    """What a probe sees at step ``step`` (before that step's update).

    Attributes:
      step: int32 scalar, the step index ``t``.
      params, opt_state, model_state: the training state before the update of step ``t``.
      batch: the batch of step ``t`` (the full dataset for full-batch training).
      key: a PRNG key for this probe call, ``fold_in(fold_in(key, PROBE_SALT), t)``.
      data: the probe's own ``data`` field (e.g. the full dataset or a fixed subset).
      hyperparams: the traced hyperparameters of the run (``{}`` for a fixed optimizer).
      loss: the loss of step ``t``, ``loss_fn(params, batch)``: the value whose gradient the
        update of step ``t`` applies (so a probe with ``every=1`` recording it gives the
        per-step training losses without a second forward pass).
      grads: the gradient of ``loss`` with respect to ``params`` that step ``t`` computed (a
        pytree like params), so a probe can use the step's gradient without a second backward
        pass; ``None`` when ``train``'s ``value_and_grad`` replaces the gradient.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any
    batch: Any
    key: jax.Array
    data: Any
    hyperparams: Any
    loss: Any = None
    grads: Any = None


@functools.partial(jax.tree_util.register_dataclass, data_fields=["data"],
                   meta_fields=["fn", "every", "init"])
@dataclasses.dataclass(frozen=True)
class Probe:
    """A measurement taken inside the compiled training loop every ``every`` steps.

    Attributes:
      fn: ``fn(ctx: ProbeContext, state) -> (record, new_state)``; ``record`` is a pytree of
        arrays with fixed shapes (one row of the trace), ``state`` the probe's carried state.
      every: positive int; the probe runs at steps ``0, every, 2 every, ...``.
      init: ``init(params, data) -> state`` (default: no state, ``None``).
      data: arrays the probe reads (a pytree, traced; ``None`` for none).
    """

    fn: Callable
    every: int = 1
    init: Callable | None = None
    data: Any = None


def probe(fn: Callable, *, every: int = 1, init: Callable | None = None, data=None) -> Probe:
    """Build a :class:`Probe`, checking ``every``."""
    if not callable(fn):
        raise TypeError(f"probe fn must be callable fn(ctx, state); got {type(fn).__name__}")
    if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
        raise ValueError(f"probe every must be a positive int; got {every!r}")
    if init is not None and not callable(init):
        raise TypeError(f"probe init must be callable init(params, data); got {type(init)}")
    return Probe(fn=fn, every=int(every), init=init, data=data)


class TrainResult(NamedTuple):
    """Outcome of :func:`train`.

    Attributes:
      params, model_state, opt_state: final values.
      history: dict of 1-D NumPy arrays, one entry per callback point: ``"step"``, ``"loss"``
        (mean training loss over the steps since the previous callback or checkpoint point, so
        that a resumed run reports the same values) and whatever the callback returned.
      resumed_from: the step the run resumed from (0 for a fresh run).
      trace: ``{probe name: pytree of NumPy arrays with a leading record axis}``.
      trace_steps: ``{probe name: (R,) int array}``, the step of each record.
      probe_states: the final carried state of each probe.
    """

    params: Any
    model_state: Any
    opt_state: Any
    history: dict[str, np.ndarray]
    resumed_from: int
    trace: dict[str, Any] = {}
    trace_steps: dict[str, np.ndarray] = {}
    probe_states: dict[str, Any] = {}

    __repr__ = reprs.train_result_repr


PROBE_SALT = 0x9B0BE


def progress_enabled() -> bool:
    """Progress bars show in a terminal and stay quiet under CI or when output is piped."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def batch_at(dataset, step, key, batch_size: int | None):
    """The batch used at ``step`` (traceable): full batch, or a slice of the epoch permutation."""
    if batch_size is None:
        return dataset
    n = jax.tree.leaves(dataset)[0].shape[0]
    per_epoch = n // batch_size
    epoch, i = step // per_epoch, step % per_epoch
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
    idx = jax.lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)
    return jax.tree.map(lambda x: x[idx], dataset)


def batch_indices(key, n: int, batch_size: int, num_steps: int) -> jax.Array:
    """The example indices :func:`batch_at` takes at steps ``0 .. num_steps - 1``, precomputed.

    Returns ``(num_steps, batch_size)`` int32: row ``t`` equals the indices of
    ``batch_at(dataset, t, key, batch_size)`` for a dataset of ``n`` examples, computed with one
    permutation per epoch instead of one per step. A ``batch_fn`` that reads row ``step`` of
    this table reproduces the default data order at a fraction of the cost where the
    permutation dominates a step (small models, many runs under ``jax.vmap``, whose batched
    keys make each permutation a batched sort). ``key`` is the data key ``batch_at`` gets,
    ``jax.random.split(run_key)[0]`` inside :func:`run_steps`.
    """
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, n = {n}]; got {batch_size}")
    per_epoch = n // batch_size
    epochs = -(-int(num_steps) // per_epoch)
    perms = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key, e), n)
                     [: per_epoch * batch_size])(jnp.arange(epochs))
    return perms.reshape(epochs * per_epoch, batch_size)[:num_steps].astype(jnp.int32)


def init_state(params, optimizer, model_state=None, hyperparams=None) -> TrainState:
    """The state at step 0: ``TrainState(params, optimizer.init(params), model_state, 0)``."""
    opt = _optimizer(optimizer, hyperparams)
    return TrainState(params, opt.init(params), model_state, jnp.zeros((), jnp.int32))


def _optimizer(optimizer, hyperparams):
    if isinstance(optimizer, optax.GradientTransformation):
        if hyperparams:
            raise ValueError("hyperparams are given, but optimizer is already a "
                             "GradientTransformation; pass a factory such as optax.sgd instead")
        return optimizer
    return optimizer(**(hyperparams or {}))


class _Spec(NamedTuple):
    """The static part of a compiled loop (the jit cache key)."""

    loss_fn: Callable
    optimizer: Any
    batch_size: int | None
    stateful: bool
    probe_names: tuple[str, ...]
    rows: tuple[int, ...]  # record rows per probe per chunk
    batch_fn: Callable | None = None  # custom data order (run_steps)
    value_and_grad: Callable | None = None  # custom gradient of a stateless loss
    update_extra_args: Callable | None = None  # (params, batch) -> optimizer.update kwargs
    rewrite: bool = False  # run the steps with their convolutions rewritten (conv_rewrite)


def _sample(spec: _Spec, dataset, step, key):
    """The batch of ``step``: ``spec.batch_fn`` if given, else :func:`batch_at`."""
    if spec.batch_fn is not None:
        return spec.batch_fn(dataset, step, key)
    return batch_at(dataset, step, key, spec.batch_size)


TRACING_STEP: contextvars.ContextVar = contextvars.ContextVar("landscape_train_step",
                                                              default=None)
"""A fresh dict while the loss of a training step is traced, else ``None``.

``landscape.nnx`` reads it to warn (once per trace) when that loss runs an eval-mode model with
BatchNorm statistics, which would stay frozen (``landscape.nnx.FrozenBatchStatsWarning``).
Probes and evaluations outside the step never see it set.
"""


def _flags_step(fn):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        token = TRACING_STEP.set({})
        try:
            return fn(*args, **kwargs)
        finally:
            TRACING_STEP.reset(token)

    return wrapped


@_flags_step
def _value_and_grad(spec: _Spec, st: TrainState, batch, drop_key):
    """``(loss, grads, new model state)`` of one step at ``st`` on ``batch``."""
    if spec.stateful:
        k = jax.random.fold_in(drop_key, st.step)
        (loss, new_ms), grads = jax.value_and_grad(spec.loss_fn, has_aux=True)(
            st.params, batch, st.model_state, k)
        return loss, grads, new_ms
    if spec.value_and_grad is not None:
        loss, grads = spec.value_and_grad(st.params, batch)
        return loss, grads, st.model_state
    loss, grads = jax.value_and_grad(spec.loss_fn)(st.params, batch)
    return loss, grads, st.model_state


def _record_shapes(spec: _Spec, probes, probe_states, state, dataset, key, hyperparams):
    """Abstract record shapes of each probe (for the per-chunk buffers)."""
    if not spec.probe_names:
        return {}
    batch = jax.eval_shape(lambda: _sample(spec, dataset, state.step, key))
    if spec.stateful:
        loss = jax.eval_shape(lambda b: spec.loss_fn(state.params, b, state.model_state, key)[0],
                              batch)
    else:
        loss = jax.eval_shape(lambda b: spec.loss_fn(state.params, b), batch)
    grads = None if spec.value_and_grad is not None else jax.tree.map(
        lambda p: jax.ShapeDtypeStruct(jnp.shape(p), jnp.result_type(p)), state.params)
    out = {}
    for name in spec.probe_names:
        pr = probes[name]
        ctx = ProbeContext(state.step, state.params, state.opt_state, state.model_state, batch,
                           key, pr.data, hyperparams, loss, grads)
        out[name] = jax.eval_shape(pr.fn, ctx, probe_states[name])[0]
    return out


def _wants_rewrite(spec: _Spec, state, dataset, key, rewrite_convs) -> bool:
    """``rewrite_convs`` if given; otherwise whether the backend is CPU and the step's loss (or
    ``value_and_grad``) runs a ``lax.conv_general_dilated``, decided from one abstract trace."""
    abstract = lambda tree: jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)

    def detect():
        # the dataset enters as an argument: NumPy leaves cannot be indexed by a traced index
        batch = jax.eval_shape(lambda d, t, k: _sample(spec, d, t, k), dataset, state.step, key)
        if spec.stateful:
            return conv_rewrite.contains_conv(lambda p, b, m: spec.loss_fn(p, b, m, key),
                                              abstract(state.params), batch,
                                              abstract(state.model_state))
        fn = spec.value_and_grad if spec.value_and_grad is not None else spec.loss_fn
        return conv_rewrite.contains_conv(fn, abstract(state.params), batch)

    return conv_rewrite.wanted(rewrite_convs, detect)


def _loop(spec: _Spec, state, probe_states, total, dataset, key, hyperparams, probes, length):
    """``length`` steps from ``state`` (traceable, pure); the body of every compiled chunk.

    With ``spec.rewrite`` the whole chunk is traced once and evaluated with its convolutions,
    the derivative ones included, in XLA:CPU's fast form (``landscape.conv_rewrite``): the
    gradient's convolutions exist only once the step is traced, so rewriting the loss alone
    would leave them in the slow form inside the loop."""
    args = (spec, state, probe_states, total, dataset, key, hyperparams, probes, length)
    if spec.rewrite:
        return conv_rewrite.rewrite_convs(lambda: _steps(*args))()
    return _steps(*args)


def _steps(spec: _Spec, state, probe_states, total, dataset, key, hyperparams, probes, length):
    """:func:`_loop` without the rewrite."""
    opt = _optimizer(spec.optimizer, hyperparams)
    probe_key = jax.random.fold_in(key, PROBE_SALT)
    shapes = _record_shapes(spec, probes, probe_states, state, dataset, key, hyperparams)
    buffers = {
        name: (jax.tree.map(lambda s, r=rows: jnp.zeros((r,) + s.shape, s.dtype), shapes[name]),
               jnp.zeros((rows,), jnp.int32), jnp.zeros((), jnp.int32))
        for name, rows in zip(spec.probe_names, spec.rows)
    }

    def one_step(st: TrainState, pstates, bufs):
        data_key, drop_key = jax.random.split(key)
        batch = _sample(spec, dataset, st.step, data_key)
        loss, grads, new_ms = _value_and_grad(spec, st, batch, drop_key)
        pstates, bufs = dict(pstates), dict(bufs)
        for name in spec.probe_names:
            step_grads = None if spec.value_and_grad is not None else grads
            pstates[name], bufs[name] = _run_probe(probes[name], st, batch, loss, step_grads,
                                                   probe_key,
                                                   hyperparams, pstates[name], bufs[name])
        extra = {} if spec.update_extra_args is None else spec.update_extra_args(st.params,
                                                                                  batch)
        updates, opt_state = opt.update(grads, st.opt_state, st.params, **extra)
        params = optax.apply_updates(st.params, updates)
        return TrainState(params, opt_state, new_ms, st.step + 1), loss, pstates, bufs

    def body(_, carry):
        st, tot, pstates, bufs = carry
        st, loss, pstates, bufs = one_step(st, pstates, bufs)
        return st, tot + loss, pstates, bufs

    return jax.lax.fori_loop(0, length, body, (state, total, probe_states, buffers))


def _run_probe(pr: Probe, st: TrainState, batch, loss, grads, probe_key, hyperparams, pstate,
               buf):
    records, steps, count = buf

    def fire(args):
        pstate, records, steps, count = args
        ctx = ProbeContext(st.step, st.params, st.opt_state, st.model_state, batch,
                           jax.random.fold_in(probe_key, st.step), pr.data, hyperparams, loss,
                           grads)
        rec, pstate = pr.fn(ctx, pstate)
        records = jax.tree.map(lambda r, x: r.at[count].set(jnp.asarray(x, r.dtype)), records, rec)
        return pstate, records, steps.at[count].set(st.step), count + 1

    out = jax.lax.cond(st.step % pr.every == 0, fire, lambda a: a,
                       (pstate, records, steps, count))
    return out[0], out[1:]


@functools.partial(jax.jit, static_argnums=0)
def _compiled_chunk(spec, state, probe_states, total, dataset, key, hyperparams, probes, length):
    return _loop(spec, state, probe_states, total, dataset, key, hyperparams, probes, length)


def run_steps(loss_fn, optimizer, state: TrainState, dataset, *, key, num_steps,
              hyperparams: Mapping | None = None, batch_size: int | None = None,
              probes: Mapping[str, Probe] | None = None, probe_states=None,
              max_records: int | None = None, batch_fn: Callable | None = None,
              value_and_grad: Callable | None = None,
              update_extra_args: Callable | None = None,
              rewrite_convs: bool | None = None):
    """Run ``num_steps`` steps from ``state``: the pure primitive under :func:`train`.

    Traceable end to end: ``num_steps`` and ``hyperparams`` may be traced, so the function can
    be wrapped in ``jax.jit`` or ``jax.vmap`` (e.g. over learning rates or over seeds' keys).

    Args:
      loss_fn, dataset, key, batch_size: as in :func:`train`; ``state.model_state`` not None
        selects the stateful loss signature.
      optimizer: an ``optax.GradientTransformation``, or a factory called on ``hyperparams``.
      state: a :class:`TrainState` (see :func:`init_state`).
      num_steps: int or int32 scalar.
      probes, probe_states: the probes and their states (default: each probe's ``init``).
      max_records: static bound on records per probe (default ``num_steps`` when it is a
        Python int); needed with probes when ``num_steps`` is traced.
      batch_fn: ``batch_fn(dataset, step, key) -> batch``, a custom data order in place of
        :func:`batch_at` (``batch_size`` must then be None); ``step`` is the traced index of
        the step and ``key`` the run's data key.
      value_and_grad, update_extra_args, rewrite_convs: as in :func:`train`.

    Returns:
      ``(state, mean_loss, trace, trace_steps, probe_states)``; each probe's records fill the
      first ``ceil(num_steps / every)`` rows of its buffer (the rest are zeros).
    """
    probes = dict(probes or {})
    _check_value_and_grad(value_and_grad, state.model_state is not None)
    _check_update_extra_args(update_extra_args)
    if batch_fn is not None and (batch_size is not None or not callable(batch_fn)):
        raise ValueError("batch_fn must be a callable batch_fn(dataset, step, key), and "
                         "batch_size None (batch_fn replaces the default data order)")
    if probe_states is None:
        probe_states = {n: _probe_init(p, state.params) for n, p in probes.items()}
    if probes and max_records is None:
        if not isinstance(num_steps, int | np.integer):
            raise ValueError("max_records is required when num_steps is traced and probes are "
                             "given")
        max_records = int(num_steps)
    names = tuple(sorted(probes))
    rows = tuple(-(-int(max_records) // probes[n].every) + 1 for n in names) if probes else ()
    spec = _Spec(loss_fn, optimizer, batch_size, state.model_state is not None, names, rows,
                 batch_fn, value_and_grad, update_extra_args)
    spec = spec._replace(rewrite=_wants_rewrite(spec, state, dataset, key, rewrite_convs))
    total = jnp.zeros((), jnp.result_type(float))
    state, total, probe_states, bufs = _loop(spec, state, probe_states, total, dataset, key,
                                             dict(hyperparams or {}), probes, num_steps)
    mean = total / num_steps
    trace = {n: bufs[n][0] for n in names}
    steps = {n: bufs[n][1] for n in names}
    return state, mean, trace, steps, probe_states


def _probe_init(pr: Probe, params):
    return None if pr.init is None else pr.init(params, pr.data)


def train(
    loss_fn: Callable,
    params: Any,
    optimizer,
    dataset: Any,
    *,
    key: jax.Array,
    num_steps: int,
    batch_size: int | None = None,
    model_state: Any = None,
    hyperparams: Mapping | None = None,
    probes: Mapping[str, Probe] | None = None,
    callback: Callable[[int, Any, Any], dict] | None = None,
    callback_every: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    progress: bool | None = None,
    desc: str = "train",
    chunk_seconds: float = 1.0,
    value_and_grad: Callable | None = None,
    update_extra_args: Callable | None = None,
    rewrite_convs: bool | None = None,
) -> TrainResult:
    """Train ``params`` with ``optimizer`` for ``num_steps`` steps on ``dataset``.

    Args:
      loss_fn: mean loss over a batch (see the module docstring for the two signatures).
      params: initial parameter pytree.
      optimizer: an ``optax.GradientTransformation``, or a factory (``optax.sgd``, or any
        ``**hyperparams -> GradientTransformation``) used with ``hyperparams``.
      dataset: pytree of arrays with a leading example axis (e.g. ``{"x", "y"}``).
      key: PRNG key fixing the data order, dropout keys and probe keys.
      num_steps: number of optimizer steps.
      batch_size: minibatch size, or None for full-batch training.
      model_state: initial non-parameter state for a stateful loss (BatchNorm statistics).
      hyperparams: dict of scalars for an optimizer factory; they enter the compiled loop as
        traced values, so runs that differ only in these values share one compilation.
      probes: ``{name: Probe}`` measured inside the loop (see :class:`Probe`); the records are
        returned in ``result.trace[name]`` with steps ``result.trace_steps[name]``.
      callback: ``callback(step, params, model_state) -> dict`` of scalars, called at step 0 and
        every ``callback_every`` steps (and at the end); entries are appended to ``history``.
      checkpoint: path of a checkpoint file; if it exists the run resumes from it, and it is
        (atomically) rewritten every ``checkpoint_every`` steps and at the end. The probe trace
        and probe states are saved with it.
      progress: show a tqdm bar (default: only in a terminal, never under CI).
      chunk_seconds: target wall time of one compiled chunk between progress updates (chunks
        are sized from the measured step time; results do not depend on it).
      value_and_grad: ``value_and_grad(params, batch) -> (loss, grads)`` used by the steps in
        place of ``jax.value_and_grad(loss_fn)`` (stateless losses only), e.g.
        ``landscape.dynamics.robust_value_and_grad(loss_fn, "winsorize", c=2)`` for robust
        aggregates of per-example gradients. ``loss_fn`` still serves the probes and the input
        checks; ``grads`` must have the structure, shapes and dtypes of ``params``.
      update_extra_args: ``update_extra_args(params, batch) -> dict`` of keyword arguments passed
        to ``optimizer.update(grads, opt_state, params, **kwargs)`` at every step, for optax
        ``GradientTransformationExtraArgs`` that need the step's data, e.g.
        ``lambda p, b: {"tract_inputs": b["x"]}`` for ``landscape.optim.tract``.
      rewrite_convs: run the steps with their convolutions, the gradient's included, in the
        form of XLA:CPU's fast kernel (``landscape.conv_rewrite``; inside the compiled loop
        XLA:CPU otherwise runs a ``lax.conv`` model's derivative convolutions 25-70x slower).
        ``None`` (default): exactly when the backend is CPU and the loss (or
        ``value_and_grad``) contains a ``lax.conv_general_dilated``, decided from one abstract
        trace; models without convolutions, and ``models.ShiftConv``, are never touched. The
        steps are equal to rounding.

    Returns:
      ``TrainResult``.
    """
    n = check_batch(dataset, "dataset")
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative integer; got {num_steps!r}")
    num_steps = int(num_steps)
    if batch_size is not None and not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}] (the dataset size); got {batch_size}")
    check_finite(params, "params")
    probes = _check_probes(probes)
    hyperparams = _check_hyperparams(optimizer, hyperparams)
    _check_loss(loss_fn, params, dataset, model_state, batch_size, key)
    _check_value_and_grad(value_and_grad, model_state is not None, params, dataset, batch_size,
                          n)
    _check_update_extra_args(update_extra_args)
    grid = _grid(num_steps, callback_every, checkpoint_every)

    state = init_state(params, optimizer, model_state, hyperparams)
    names = tuple(sorted(probes))
    probe_states = {nm: _probe_init(probes[nm], params) for nm in names}
    cap = _chunk_cap(num_steps)
    rows = tuple(-(-cap // probes[nm].every) + 1 for nm in names)
    spec = _Spec(loss_fn, optimizer, batch_size, model_state is not None, names, rows, None,
                 value_and_grad, update_extra_args)
    spec = spec._replace(rewrite=_wants_rewrite(spec, state, dataset, key, rewrite_convs))
    run = functools.partial(_compiled_chunk, spec)
    shapes = _record_shapes(spec, probes, probe_states, state, dataset, key, hyperparams)
    trace = _Trace(names, shapes)
    history: dict[str, list] = {}
    state, probe_states, trace, history, start = _maybe_resume(
        checkpoint, state, probe_states, trace, history, key)

    from tqdm.auto import tqdm

    show = progress_enabled() if progress is None else progress
    bar = tqdm(total=num_steps, initial=start, desc=desc, disable=not show, leave=False)
    if callback is not None and start == 0:
        _record(history, 0, float("nan"), callback(0, state.params, state.model_state))
    step, since, total = start, 0, jnp.zeros((), jnp.result_type(float))
    sizer = _ChunkSizer(chunk_seconds, cap)
    while step < num_steps:
        length = min(sizer.next(), grid.next_stop(step, num_steps) - step)
        t0 = time.perf_counter()
        state, total, probe_states, bufs = run(state, probe_states, total, dataset, key,
                                               hyperparams, probes, length)
        trace.extend(bufs)
        step += length
        since += length
        total_host = np.asarray(total)
        sizer.observe(length, time.perf_counter() - t0)
        if not np.isfinite(total_host):
            raise FloatingPointError(f"training loss became non-finite ({float(total_host)}) "
                                     f"before step {step}; lower the learning rate")
        mean_loss = float(total_host / np.asarray(since, total_host.dtype))
        bar.update(length)
        bar.set_postfix(loss=f"{mean_loss:.4g}")
        if grid.is_callback(step, num_steps):
            extra = {} if callback is None else callback(step, state.params, state.model_state)
            _record(history, step, mean_loss, extra)
        if grid.is_callback(step, num_steps) or grid.is_checkpoint(step, num_steps):
            since, total = 0, jnp.zeros((), jnp.result_type(float))
        if checkpoint is not None and grid.is_checkpoint(step, num_steps):
            _save(checkpoint, state, probe_states, trace, history, key)
    bar.close()
    hist = {k: np.asarray(v) for k, v in history.items()}
    records, steps = trace.arrays()
    return TrainResult(state.params, state.model_state, state.opt_state, hist, start, records,
                       steps, probe_states)


def _check_update_extra_args(update_extra_args):
    if update_extra_args is not None and not callable(update_extra_args):
        raise TypeError(f"update_extra_args must be callable update_extra_args(params, batch) -> "
                        f"dict; got {type(update_extra_args).__name__}")


def _check_value_and_grad(value_and_grad, stateful, params=None, dataset=None,
                          batch_size=None, n=None):
    """Reject a ``value_and_grad`` that is not callable, given with a stateful loss, or (when
    ``params`` is given) whose gradient does not match ``params``."""
    if value_and_grad is None:
        return
    if not callable(value_and_grad):
        raise TypeError(f"value_and_grad must be callable value_and_grad(params, batch) -> "
                        f"(loss, grads); got {type(value_and_grad).__name__}")
    if stateful:
        raise ValueError("value_and_grad is for stateless losses loss_fn(params, batch); this "
                         "run has a model_state")
    if params is None:
        return
    b = n if batch_size is None else batch_size
    batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct((b,) + a.shape[1:], a.dtype), dataset)
    out = jax.eval_shape(value_and_grad, params, batch)
    if not (isinstance(out, tuple) and len(out) == 2 and jnp.shape(out[0]) == ()):
        raise ValueError("value_and_grad(params, batch) must return (scalar loss, grads)")
    want = jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), params)
    got = jax.tree.map(lambda a: (a.shape, a.dtype), out[1])
    if jax.tree.structure(want) != jax.tree.structure(got) or jax.tree.leaves(want) != \
            jax.tree.leaves(got):
        raise ValueError("value_and_grad(params, batch) must return gradients with the "
                         "structure, shapes and dtypes of params")


class _Grid(NamedTuple):
    callback_every: int
    checkpoint_every: int

    def next_stop(self, step, num_steps):
        stops = [num_steps] + [step - step % e + e for e in self if e]
        return min(stops)

    def is_callback(self, step, num_steps):
        e = self.callback_every
        return bool(e) and (step % e == 0 or step == num_steps)

    def is_checkpoint(self, step, num_steps):
        e = self.checkpoint_every
        return step == num_steps or (bool(e) and step % e == 0)


def _grid(num_steps, callback_every, checkpoint_every) -> _Grid:
    for name, e in (("callback_every", callback_every), ("checkpoint_every", checkpoint_every)):
        if isinstance(e, bool) or e < 0 or int(e) != e:
            raise ValueError(f"{name} must be a non-negative integer; got {e!r}")
    return _Grid(int(callback_every), int(checkpoint_every))


def _chunk_cap(num_steps: int) -> int:
    """Static upper bound on a chunk's length (a power of two, so few distinct compilations)."""
    return 1 << max(0, min(int(num_steps), 4096) - 1).bit_length()


class _ChunkSizer:
    """Chunk lengths that take about ``seconds`` each, from the measured time per step.

    The first chunk is short (it also pays for compilation); later ones grow or shrink toward
    the target. Chunk length changes nothing but how often Python sees the run: the trip
    count is a traced value, so every length shares one compilation.
    """

    def __init__(self, seconds: float, cap: int):
        self.seconds, self.cap, self.size, self.calls = float(seconds), cap, min(8, cap), 0

    def next(self) -> int:
        return max(1, self.size)

    def observe(self, length: int, elapsed: float) -> None:
        self.calls += 1
        if self.calls == 1:  # compilation dominates the first chunk
            self.size = min(self.cap, 4 * length)
            return
        per_step = max(elapsed / max(length, 1), 1e-9)
        target = int(self.seconds / per_step)
        self.size = int(min(self.cap, max(1, min(target, 4 * length))))


class _Trace:
    """Host-side accumulation of the probe records of each chunk."""

    def __init__(self, names, shapes):
        self.names, self.shapes = names, shapes
        self.records = {nm: [] for nm in names}
        self.steps = {nm: [] for nm in names}

    def empty(self, nm, count=0):
        return jax.tree.map(lambda s: np.zeros((count,) + s.shape, s.dtype), self.shapes[nm])

    def extend(self, bufs):
        for nm in self.names:
            records, steps, count = bufs[nm]
            c = int(count)
            self.records[nm].append(jax.tree.map(lambda r, c=c: np.asarray(r[:c]), records))
            self.steps[nm].append(np.asarray(steps[:c]))

    def arrays(self):
        recs, steps = {}, {}
        for nm in self.names:
            parts = self.records[nm] or [self.empty(nm)]
            recs[nm] = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
            steps[nm] = np.concatenate(self.steps[nm] or [np.zeros(0, np.int32)])
        return recs, steps



def _check_probes(probes) -> dict:
    probes = dict(probes or {})
    for name, pr in probes.items():
        if not isinstance(name, str):
            raise TypeError(f"probe names must be strings; got {name!r}")
        if not isinstance(pr, Probe):
            raise TypeError(f"probes[{name!r}] must be a landscape.train.Probe (see "
                            f"train.probe); got {type(pr).__name__}")
    return probes


def _check_hyperparams(optimizer, hyperparams) -> dict:
    if isinstance(optimizer, optax.GradientTransformation):
        _optimizer(optimizer, hyperparams)  # raises when hyperparams are given
        return {}
    if not callable(optimizer):
        raise TypeError("optimizer must be an optax.GradientTransformation or a factory "
                        f"(e.g. optax.sgd) called with hyperparams; got {type(optimizer)}")
    out = {}
    for k, v in dict(hyperparams or {}).items():
        arr = jnp.asarray(v)
        if arr.ndim != 0 or not jnp.issubdtype(arr.dtype, jnp.number):
            raise ValueError(f"hyperparams[{k!r}] must be a number; got {v!r}")
        if not np.isfinite(np.asarray(arr)):
            raise ValueError(f"hyperparams[{k!r}] must be finite; got {v!r}")
        out[k] = arr
    try:
        built = optimizer(**out)
    except TypeError as exc:
        raise TypeError(f"optimizer factory rejected hyperparams {sorted(out)}: {exc}") from None
    if not isinstance(built, optax.GradientTransformation):
        raise TypeError("optimizer(**hyperparams) must return an optax.GradientTransformation; "
                        f"got {type(built).__name__}")
    return out


def _check_loss(loss_fn, params, dataset, model_state, batch_size, key):
    batch = jax.tree.map(lambda x: x[: batch_size or x.shape[0]], dataset)
    if model_state is None:
        out = jax.eval_shape(loss_fn, params, batch)
    else:
        out = jax.eval_shape(loss_fn, params, batch, model_state, key)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("with model_state, loss_fn must return (loss, new_state)")
        out = out[0]
    check_scalar(out, "loss_fn")


def _key_list(key):
    return np.asarray(jax.random.key_data(key)).ravel().tolist()


def _save(path, state, probe_states, trace, history, key):
    records, steps = trace.arrays()
    tree = {"state": state, "probe_states": probe_states, "trace": records, "steps": steps}
    ckpt.save(path, tree, {"history": history, "key": _key_list(key),
                           "trace_counts": {nm: len(s) for nm, s in steps.items()}})


def _maybe_resume(path, state, probe_states, trace, history, key):
    if path is None or not Path(path).exists():
        return state, probe_states, trace, history, 0
    counts = ckpt.metadata(path).get("trace_counts", {})
    like = {"state": state, "probe_states": probe_states,
            "trace": {nm: trace.empty(nm, int(counts.get(nm, 0))) for nm in trace.names},
            "steps": {nm: np.zeros(int(counts.get(nm, 0)), np.int32) for nm in trace.names}}
    tree, meta = ckpt.load(path, like)
    if meta.get("key") != _key_list(key):
        raise ValueError(f"checkpoint {path} was written by a run with a different key; "
                         "delete it or pass the original key")
    for nm in trace.names:
        trace.records[nm] = [jax.tree.map(np.asarray, tree["trace"][nm])]
        trace.steps[nm] = [np.asarray(tree["steps"][nm])]
    history = {k: list(v) for k, v in meta["history"].items()}
    return tree["state"], tree["probe_states"], trace, history, int(tree["state"].step)


def _record(history, step, loss, extra):
    row = {"step": step, "loss": loss, **{k: float(v) for k, v in extra.items()}}
    for k, v in row.items():
        history.setdefault(k, []).append(v)

"""A jit-compiled training loop over optax optimizers, with seeded data order and resumable runs.

``train`` runs ``num_steps`` optimizer steps. Steps are executed in compiled chunks
(``lax.fori_loop`` inside one ``jax.jit``), so compile time does not grow with ``num_steps`` and
Python runs only between chunks: to call the callback, write a checkpoint and advance the
progress bar.

Data order: with ``batch_size`` set, epoch ``e`` visits the examples in the order
``jax.random.permutation(fold_in(key, e), n)``, in ``n // batch_size`` full batches (the last
partial batch of each epoch is dropped, so every step has the same batch size). Without
``batch_size`` every step is full-batch. Dropout keys are ``fold_in(key', step)``. Because the
batch and key of step ``t`` are pure functions of ``(key, t)``, a resumed run replays exactly
the same steps: killed with SIGKILL and restarted, it ends with bit-identical parameters (on CPU).

Two loss signatures are supported:

* stateless: ``loss_fn(params, batch) -> scalar``;
* stateful (pass ``model_state``; e.g. BatchNorm from ``landscape.nnx.loss_fn(..., mode="train")``):
  ``loss_fn(params, batch, state, key) -> (scalar, new_state)``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from landscape import checkpoint as ckpt
from landscape.tree import check_batch, check_finite, check_scalar

__all__ = ["TrainState", "TrainResult", "train", "batch_at", "progress_enabled"]


class TrainState(NamedTuple):
    """Everything a run needs to continue: params, optimizer state, model state, step count."""

    params: Any
    opt_state: Any
    model_state: Any
    step: jax.Array  # int32 scalar


class TrainResult(NamedTuple):
    """Outcome of ``train``.

    Attributes:
      params, model_state, opt_state: final values.
      history: dict of 1-D NumPy arrays, one entry per callback call: ``"step"``, ``"loss"``
        (mean training loss over the chunk of steps before that point) and whatever the
        callback returned.
      resumed_from: the step the run resumed from (0 for a fresh run).
    """

    params: Any
    model_state: Any
    opt_state: Any
    history: dict[str, np.ndarray]
    resumed_from: int


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


def _make_chunk(loss_fn, optimizer, batch_size, stateful):
    def one_step(step_key, state: TrainState, dataset):
        data_key, drop_key = jax.random.split(step_key)
        batch = batch_at(dataset, state.step, data_key, batch_size)
        if stateful:
            k = jax.random.fold_in(drop_key, state.step)
            (loss, new_ms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                state.params, batch, state.model_state, k)
        else:
            loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
            new_ms = state.model_state
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, new_ms, state.step + 1), loss

    @jax.jit
    def chunk(state: TrainState, dataset, key, length):
        def body(_, carry):
            st, total = carry
            st, loss = one_step(key, st, dataset)
            return st, total + loss

        zero = jnp.zeros((), jnp.result_type(float))
        state, total = jax.lax.fori_loop(0, length, body, (state, zero))
        return state, total / length

    return chunk


def train(
    loss_fn: Callable,
    params: Any,
    optimizer: optax.GradientTransformation,
    dataset: Any,
    *,
    key: jax.Array,
    num_steps: int,
    batch_size: int | None = None,
    model_state: Any = None,
    callback: Callable[[int, Any, Any], dict] | None = None,
    callback_every: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    progress: bool | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train ``params`` with ``optimizer`` for ``num_steps`` steps on ``dataset``.

    Args:
      loss_fn: mean loss over a batch (see the module docstring for the two signatures).
      params: initial parameter pytree.
      optimizer: any ``optax.GradientTransformation``.
      dataset: pytree of arrays with a leading example axis (e.g. ``{"x", "y"}``).
      key: PRNG key fixing the data order and dropout keys.
      num_steps: number of optimizer steps.
      batch_size: minibatch size, or None for full-batch training.
      model_state: initial non-parameter state for a stateful loss (BatchNorm statistics).
      callback: ``callback(step, params, model_state) -> dict`` of scalars, called at step 0 and
        every ``callback_every`` steps (and at the end); entries are appended to ``history``.
      checkpoint: path of a checkpoint file; if it exists the run resumes from it, and it is
        (atomically) rewritten every ``checkpoint_every`` steps and at the end.
      progress: show a tqdm bar (default: only in a terminal, never under CI).

    Returns:
      ``TrainResult``.
    """
    n = check_batch(dataset, "dataset")
    if int(num_steps) != num_steps or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative integer; got {num_steps!r}")
    if batch_size is not None and not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}] (the dataset size); got {batch_size}")
    check_finite(params, "params")
    stateful = model_state is not None
    _check_loss(loss_fn, params, dataset, model_state, batch_size, key)

    chunk_len = _chunk_length(num_steps, callback_every, checkpoint_every)
    chunk = _make_chunk(loss_fn, optimizer, batch_size, stateful)
    state = TrainState(params, optimizer.init(params), model_state, jnp.zeros((), jnp.int32))
    history: dict[str, list] = {}
    state, history, start = _maybe_resume(checkpoint, state, history, key)

    from tqdm.auto import tqdm

    show = progress_enabled() if progress is None else progress
    bar = tqdm(total=num_steps, initial=start, desc=desc, disable=not show, leave=False)
    if callback is not None and start == 0:
        _record(history, 0, float("nan"), callback(0, state.params, state.model_state))
    step = start
    while step < num_steps:
        length = min(chunk_len, num_steps - step)
        state, mean_loss = chunk(state, dataset, key, length)
        step += length
        mean_loss = float(mean_loss)
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"training loss became non-finite ({mean_loss}) before "
                                     f"step {step}; lower the learning rate")
        bar.update(length)
        bar.set_postfix(loss=f"{mean_loss:.4g}")
        at_cb = callback_every and (step % callback_every == 0 or step == num_steps)
        if callback is not None and at_cb:
            _record(history, step, mean_loss, callback(step, state.params, state.model_state))
        elif callback is None and at_cb:
            _record(history, step, mean_loss, {})
        if checkpoint is not None and (
            step == num_steps or (checkpoint_every and step % checkpoint_every == 0)
        ):
            ckpt.save(checkpoint, state, {"history": history, "key": _key_list(key)})
    bar.close()
    hist = {k: np.asarray(v) for k, v in history.items()}
    return TrainResult(state.params, state.model_state, state.opt_state, hist, start)


def _chunk_length(num_steps, callback_every, checkpoint_every):
    every = [e for e in (callback_every, checkpoint_every) if e]
    for name, e in (("callback_every", callback_every), ("checkpoint_every", checkpoint_every)):
        if e < 0 or int(e) != e:
            raise ValueError(f"{name} must be a non-negative integer; got {e!r}")
    return max(1, math.gcd(*every) if every else max(num_steps, 1))


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


def _maybe_resume(path, state, history, key):
    if path is None or not Path(path).exists():
        return state, history, 0
    state, meta = ckpt.load(path, state)
    if meta.get("key") != _key_list(key):
        raise ValueError(f"checkpoint {path} was written by a run with a different key; "
                         "delete it or pass the original key")
    return state, {k: list(v) for k, v in meta["history"].items()}, int(state.step)


def _record(history, step, loss, extra):
    row = {"step": step, "loss": loss, **{k: float(v) for k, v in extra.items()}}
    for k, v in row.items():
        history.setdefault(k, []).append(v)

"""AdAdaGrad: AdaGrad and AdaGrad-Norm with the batch size grown by adaptive-sampling tests.

Tim Tsz-Kit Lau, Han Liu, Mladen Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive
Gradient Methods" (arXiv:2402.11215, 2024). Two pieces:

* :func:`scale_by_adagrad_norm` / :func:`adagrad_norm`, AdaGrad-Norm (Ward, Wu, Bottou 2019,
  "AdaGrad stepsizes: sharp convergence over nonconvex landscapes"), one scalar step size for
  the whole params vector ``w`` (all leaves together):

      b_t^2 = b_{t-1}^2 + ||g_t||^2,    d_t = g_t / b_t,    w_t = w_{t-1} - alpha_t d_t

  with ``b_0 > 0`` given (``b0``; the current gradient enters ``b_t`` before the step). The
  coordinate-wise AdaGrad of the paper, ``b_{t,j}^2 = b_{t-1,j}^2 + g_{t,j}^2``,
  ``d_{t,j} = g_{t,j} / b_{t,j}``, is ``optax.adagrad(alpha, initial_accumulator_value=b0**2,
  eps=0.0)`` exactly (optax's default ``eps=1e-7`` adds ``eps`` under the square root).
* :func:`adaptive_batch_train`, the batch-size controller: train with
  ``landscape.train.run_steps`` in segments of ``check_every`` steps; after each segment
  measure the norm, inner-product, orthogonality or augmented (inner product and
  orthogonality together, the larger request) test of
  ``landscape.dynamics.gradient_statistics`` at the current params on a fresh sample of the
  current batch size ``b``, and continue with

      b <- min(max(b, ceil(requested)), max_batch_size),

  the rule of the paper and of its code (the batch never shrinks). The optimizer state
  carries over from segment to segment (the AdaGrad accumulators are never reset). With
  ``checkpoint=path`` a killed run resumes at its last saved segment boundary and ends
  bit-identical to an uninterrupted one.

**Deviations of the authors' code** (github.com/timlautk/AdAdaGrad, read, not installed; no
reference installs from PyPI, so the tests use NumPy oracles of the paper's equations):
its ``Adagradnorm`` class keeps one accumulator per output row of each weight matrix (the
layer-wise variant of Ward et al.'s code, with ``1e-10`` added to ``b`` and
``initial_accumulator_value=1e-2`` on ``b^2``), not the paper's single scalar ``b``; and its
inner-product and orthogonality tests compute their variances leaf by leaf (per tensor) and sum
them, where the paper (and ``gradient_statistics``) uses the whole gradient vector. We follow
the paper in both.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from landscape import checkpoint as ckpt
from landscape import train as train_lib
from landscape import validate
from landscape.dynamics.gradient_stats import (
    INNER_PRODUCT_THETA,
    NORM_TEST_ETA,
    ORTHOGONALITY_NU,
    gradient_statistics,
)
from landscape.optim.base import chain_with_decay_and_lr

__all__ = [
    "AdaGradNormState",
    "scale_by_adagrad_norm",
    "adagrad_norm",
    "AdaptiveBatchResult",
    "adaptive_batch_train",
    "next_batch_size",
    "BATCH_SIZE_TESTS",
    "segment_key",
    "check_indices",
]

#: Test names of :func:`adaptive_batch_train`.
BATCH_SIZE_TESTS = ("norm", "inner_product", "orthogonality", "augmented")


class AdaGradNormState(NamedTuple):
    """State of :func:`scale_by_adagrad_norm`: ``count`` (int32) and ``sum_of_squares``
    ``b_t^2`` (a scalar in at least float32)."""

    count: jax.Array
    sum_of_squares: jax.Array


def _acc_dtype(params):
    leaves = jax.tree.leaves(params)
    return jnp.promote_types(jnp.result_type(*leaves), jnp.float32)


def scale_by_adagrad_norm(b0: float = 0.1) -> optax.GradientTransformation:
    """AdaGrad-Norm's direction ``d_t = g_t / b_t``, ``b_t^2 = b_{t-1}^2 + ||g_t||^2``.

    ``||g_t||`` is the norm of the whole gradient pytree, and ``b_0 = b0`` (must be > 0 for
    the first step to be finite when ``g_1 = 0``; ``b_t = 0`` gives ``d_t = 0``). The module
    docstring has the paper.
    """

    def init(params):
        dt = _acc_dtype(params)
        return AdaGradNormState(jnp.zeros((), jnp.int32),
                                jnp.square(jnp.asarray(b0, dt)).astype(dt))

    def update(updates, state, params=None):
        del params
        dt = state.sum_of_squares.dtype
        sq = sum(jnp.sum(jnp.square(jnp.asarray(g, dt))) for g in jax.tree.leaves(updates))
        total = state.sum_of_squares + sq
        inv = jnp.where(total > 0, jax.lax.rsqrt(jnp.where(total > 0, total, 1)), 0).astype(dt)
        out = jax.tree.map(lambda g: (g * inv).astype(g.dtype), updates)
        return out, AdaGradNormState(optax.safe_int32_increment(state.count), total)

    return optax.GradientTransformation(init, update)


def adagrad_norm(learning_rate: optax.ScalarOrSchedule = 1.0, b0: float = 0.1,
                 weight_decay: float = 0.0, mask=None) -> optax.GradientTransformationExtraArgs:
    """AdaGrad-Norm: ``w_t = w_{t-1} - alpha_t (g_t / b_t + weight_decay * w_{t-1})`` with
    ``b_t^2 = b_{t-1}^2 + ||g_t||^2`` and ``b_0 = b0`` (:func:`scale_by_adagrad_norm`)."""
    return chain_with_decay_and_lr(scale_by_adagrad_norm(b0), learning_rate, weight_decay, mask)


# ----------------------------------------------------------------------------- controller


class AdaptiveBatchResult(NamedTuple):
    """Outcome of :func:`adaptive_batch_train` (``S`` segments).

    Attributes:
      params, opt_state: final values.
      segment_starts: ``(S,)`` int, the first step of each segment.
      batch_sizes: ``(S,)`` int, the batch size of each segment's steps.
      requested: ``(S,)`` float, the real batch size the test asked for after each segment
        (``statistic / tol^2``; NaN where no test ran: after the last segment, and once the
        batch size is ``max_batch_size``).
      losses: ``(S,)`` mean training loss over each segment's steps.
      examples: training examples processed (sum of steps times batch size).
      test_examples: examples the tests used (each test takes two per-example gradient
        passes over its sample).
    """

    params: Any
    opt_state: Any
    segment_starts: np.ndarray
    batch_sizes: np.ndarray
    requested: np.ndarray
    losses: np.ndarray
    examples: int
    test_examples: int


def next_batch_size(current: int, requested: float, max_batch_size: int) -> int:
    """The paper's rule: ``min(max(current, ceil(requested)), max_batch_size)`` (``inf`` and
    NaN requests give ``max_batch_size`` and ``current``)."""
    if math.isnan(requested):
        return int(current)
    if math.isinf(requested):
        return int(max_batch_size)
    return int(min(max(current, math.ceil(requested)), max_batch_size))


@dataclasses.dataclass(frozen=True)
class _Sampler:
    """``batch_fn`` of a segment: ``train.batch_at`` with the segment's key, which travels in
    the data (so that every segment of one batch size shares one compilation)."""

    batch_size: int

    def __call__(self, data, step, key):
        del key
        return train_lib.batch_at(data["data"], step, data["key"], self.batch_size)


@functools.partial(jax.jit, static_argnames=("loss_fn", "optimizer", "sampler"))
def _segment(loss_fn, optimizer, sampler, state, data, hyperparams, num_steps):
    state, mean, *_ = train_lib.run_steps(loss_fn, optimizer, state, data, key=data["key"],
                                          num_steps=num_steps, hyperparams=hyperparams,
                                          batch_fn=sampler)
    return state, mean


def _requested(stats, test: str) -> float:
    if test == "norm":
        return float(stats.norm_test.batch_size)
    if test == "inner_product":
        return float(stats.inner_product_test.batch_size)
    if test == "orthogonality":
        return float(stats.orthogonality_test.batch_size)
    return max(float(stats.inner_product_test.batch_size),
               float(stats.orthogonality_test.batch_size))


def segment_key(key, s: int):
    """The key of segment ``s``: its steps draw ``train.batch_at(dataset, t, key_s, b)`` for
    local steps ``t = 0, 1, ...``."""
    return jax.random.fold_in(jax.random.fold_in(key, 0), s)


def check_indices(key, s: int, n: int, batch_size: int):
    """The examples of the test after segment ``s``: ``batch_size`` of ``n`` drawn without
    replacement."""
    return jax.random.choice(jax.random.fold_in(jax.random.fold_in(key, 1), s), n,
                             (batch_size,), replace=False)


def _hyperparams(optimizer, hyperparams) -> dict:
    """``hyperparams`` as arrays (traced in the segments); none with a built transformation."""
    if isinstance(optimizer, optax.GradientTransformation):
        if hyperparams:
            raise ValueError("hyperparams are given, but optimizer is already a "
                             "GradientTransformation; pass a factory such as optax.adagrad")
        return {}
    if not callable(optimizer):
        raise TypeError(f"optimizer must be an optax.GradientTransformation or a factory; got "
                        f"{type(optimizer).__name__}")
    return {k: jnp.asarray(v) for k, v in dict(hyperparams or {}).items()}


def _check_controller(test, dataset, initial_batch_size, max_batch_size, check_every,
                      num_steps, key, tols, checkpoint, checkpoint_every):
    if test not in BATCH_SIZE_TESTS:
        raise ValueError(f"test must be one of {BATCH_SIZE_TESTS}; got {test!r}")
    n = validate.check_batch(dataset, "dataset")
    if n < 2:
        raise ValueError(f"dataset must hold at least 2 examples (the tests need 2); got {n}")
    b = validate.check_int(initial_batch_size, "initial_batch_size", low=2, high=n)
    bmax = validate.check_int(max_batch_size, "max_batch_size", low=b, high=n)
    validate.check_int(check_every, "check_every", low=1)
    validate.check_int(num_steps, "num_steps", low=0)
    validate.check_key(key)
    for name, v in tols.items():
        validate.check_positive(v, name)
    validate.check_int(checkpoint_every, "checkpoint_every", low=0)
    if checkpoint is not None and not isinstance(checkpoint, (str, Path)):
        raise TypeError(f"checkpoint must be a path (str or pathlib.Path) or None; got "
                        f"{type(checkpoint).__name__}")
    return n, b, bmax


# ----------------------------------------------------------------------------- checkpoints

#: The ``format`` entry of the checkpoints of :func:`adaptive_batch_train`.
_CHECKPOINT_FORMAT = "landscape.optim.adaptive_batch_train/1"


@dataclasses.dataclass
class _Progress:
    """Host-side record of the finished segments: the histories and counters of
    :class:`AdaptiveBatchResult` and the batch size of the next segment (a checkpoint's JSON
    metadata; Python floats survive JSON exactly, NaN included)."""

    batch_size: int
    segment_starts: list = dataclasses.field(default_factory=list)
    batch_sizes: list = dataclasses.field(default_factory=list)
    requested: list = dataclasses.field(default_factory=list)
    losses: list = dataclasses.field(default_factory=list)
    examples: int = 0
    test_examples: int = 0


def _key_list(key) -> list:
    return np.asarray(jax.random.key_data(key)).ravel().tolist()


def _run_config(*, key, dataset_size, params, hyperparams, **arguments) -> dict:
    """The arguments that fix a run's trajectory, as JSON values named by argument (the
    optimizer and the loss cannot be compared; the optimizer state's structure and shapes are
    checked when the checkpoint loads)."""
    out = {name: (v if v is None or isinstance(v, str) else
                  int(v) if isinstance(v, (int, np.integer)) else float(v))
           for name, v in arguments.items()}
    out["hyperparams"] = {k: np.asarray(v).item() for k, v in sorted(hyperparams.items())}
    out["dataset"] = f"{dataset_size} examples"
    out["params"] = [f"{np.dtype(jnp.result_type(x)).name}{list(np.shape(x))}"
                     for x in jax.tree.leaves(params)]
    out["key"] = _key_list(key)
    return out


def _maybe_resume(path, state, config: dict, batch_size: int):
    """``(state, progress)`` from the checkpoint at ``path``, or the fresh ones when there is
    none; a checkpoint of another run raises ``ValueError`` naming the differing arguments."""
    fresh = (state, _Progress(batch_size))
    if path is None or not Path(path).exists():
        return fresh
    meta = ckpt.metadata(path)
    if meta.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path} was not written by adaptive_batch_train (format "
                         f"{meta.get('format')!r}); pass another path")
    stored = meta["config"]
    diffs = []
    for name in sorted(set(stored) | set(config)):
        old, new = (json.dumps(c.get(name), sort_keys=True) for c in (stored, config))
        if old != new:
            diffs.append(name if name == "key" else f"{name} ({old} in the file, {new} now)")
    if diffs:
        raise ValueError(f"checkpoint {path} was written by a run with a different "
                         f"{', '.join(diffs)}; delete it or pass the original arguments")
    tree, _ = ckpt.load(path, {"state": state})
    return tree["state"], _Progress(**meta["progress"])


def _save(path, state, config: dict, progress: _Progress) -> None:
    ckpt.save(path, {"state": state}, {"format": _CHECKPOINT_FORMAT, "config": config,
                                       "progress": dataclasses.asdict(progress)})


def adaptive_batch_train(loss_fn: Callable, params, optimizer, dataset, *, key,
                         num_steps: int, test: str = "norm", initial_batch_size: int,
                         max_batch_size: int, check_every: int = 1, eta: float = NORM_TEST_ETA,
                         theta: float = INNER_PRODUCT_THETA, nu: float = ORTHOGONALITY_NU,
                         hyperparams: Mapping | None = None,
                         chunk_size: int | None = None, checkpoint: str | Path | None = None,
                         checkpoint_every: int = 0) -> AdaptiveBatchResult:
    """Train with the batch size grown by an adaptive-sampling test (AdAdaGrad's controller).

    Segment ``s`` runs ``check_every`` steps (fewer in the last) of ``optimizer`` with batch
    size ``b_s`` through ``landscape.train.run_steps``, its step ``t`` on the batch
    ``train.batch_at(dataset, t, segment_key(key, s), b_s)`` (an epoch-permutation order of
    its own). After segment ``s`` (unless it is the last or ``b_s = max_batch_size``), the
    test runs at the current params on the ``b_s`` examples ``check_indices(key, s, n, b_s)``
    and ``b_{s+1} = next_batch_size(b_s, requested, max_batch_size)``. The optimizer state
    carries over; one compilation per distinct batch size.

    Args:
      loss_fn: stateless mean loss ``loss_fn(params, batch) -> scalar``.
      params: initial params.
      optimizer: an ``optax.GradientTransformation`` (e.g. :func:`adagrad_norm` or
        ``optax.adagrad``), or a factory used with ``hyperparams`` (as in ``train``).
      dataset: pytree of arrays with a leading axis of ``n >= 2`` examples.
      key: PRNG key of the data order and the test samples.
      num_steps: total optimizer steps.
      test: one of :data:`BATCH_SIZE_TESTS` ("augmented": the larger request of the
        inner-product and orthogonality tests, Bollapragada et al. 2018).
      initial_batch_size, max_batch_size: ``2 <= initial <= max <= n``.
      check_every: steps per segment (the paper's code tests every step: 1).
      eta, theta, nu: the tolerances of the norm, inner-product and orthogonality tests.
      hyperparams: for an optimizer factory (traced, as in ``train``).
      chunk_size: examples per ``vmap`` in the tests' per-example gradients.
      checkpoint: path of a checkpoint file (``landscape.checkpoint``, written atomically).
        If it exists the run resumes from it: params, optimizer state, step, the batch size
        of the next segment, the histories and the counters are restored, and the result is
        bit-identical to that of an uninterrupted run. A file written with different
        ``num_steps``, ``test``, batch sizes, ``check_every``, tolerances, ``chunk_size``,
        ``hyperparams``, dataset size, params dtypes/shapes or ``key`` raises ``ValueError``
        naming them (the loss and the optimizer are not compared; a different optimizer
        state structure fails to load).
      checkpoint_every: the checkpoint is rewritten at segment boundaries only (after the
        segment's test, so a resume never repeats it): after each segment that reaches or
        crosses a multiple of ``checkpoint_every`` (the first boundary at or after each
        multiple), and after the last segment; ``0``: only after the last.

    Returns:
      :class:`AdaptiveBatchResult`.
    """
    tols = {"eta": eta, "theta": theta, "nu": nu}
    n, b, bmax = _check_controller(test, dataset, initial_batch_size, max_batch_size,
                                   check_every, num_steps, key, tols, checkpoint,
                                   checkpoint_every)
    validate.check_params(params)
    hp = _hyperparams(optimizer, hyperparams)
    num_steps, check_every, every = int(num_steps), int(check_every), int(checkpoint_every)
    config = _run_config(key=key, dataset_size=n, params=params, hyperparams=hp,
                         num_steps=num_steps, test=test, initial_batch_size=b,
                         max_batch_size=bmax, check_every=check_every, chunk_size=chunk_size,
                         **tols)
    state, done = _maybe_resume(checkpoint, train_lib.init_state(params, optimizer, None, hp),
                                config, b)
    num_segments = -(-num_steps // check_every)
    for s in range(len(done.segment_starts), num_segments):
        b = done.batch_size
        start = s * check_every
        length = min(check_every, num_steps - start)
        data = {"data": dataset, "key": segment_key(key, s)}
        local = state._replace(step=jnp.zeros((), jnp.int32))
        local, mean = _segment(loss_fn, optimizer, _Sampler(b), local, data, hp,
                               jnp.asarray(length, jnp.int32))
        state = local._replace(step=jnp.asarray(start + length, jnp.int32))
        loss = float(mean)
        if not np.isfinite(loss):
            raise FloatingPointError(f"training loss became non-finite in the segment starting "
                                     f"at step {start}; lower the learning rate")
        r = float("nan")
        if s < num_segments - 1 and b < bmax:
            idx = check_indices(key, s, n, b)
            sample = jax.tree.map(lambda x, i=idx: x[i], dataset)
            stats = gradient_statistics(loss_fn, state.params, sample, chunk_size=chunk_size,
                                        **tols)
            r = _requested(stats, test)
            done.test_examples += 2 * b
            done.batch_size = next_batch_size(b, r, bmax)
        done.segment_starts.append(start)
        done.batch_sizes.append(b)
        done.requested.append(r)
        done.losses.append(loss)
        done.examples += length * b
        end = start + length
        if checkpoint is not None and (end == num_steps
                                       or (every and end // every > start // every)):
            _save(checkpoint, state, config, done)
    return AdaptiveBatchResult(state.params, state.opt_state,
                               np.asarray(done.segment_starts, np.int64),
                               np.asarray(done.batch_sizes, np.int64),
                               np.asarray(done.requested, np.float64),
                               np.asarray(done.losses, np.float64), int(done.examples),
                               int(done.test_examples))

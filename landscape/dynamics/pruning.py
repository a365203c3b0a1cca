"""Data pruning scores computed early in training: EL2N and GraNd, and the pruning helpers.

Paul, Ganguli, Dziugaite 2021, "Deep learning on a data diet: finding important examples early
in training", score a training example ``(x, y)`` at training time ``t`` by

* **GraNd**: ``chi_t(x, y) = E_w ||g_t(x, y)||``, the norm of the gradient of the example's loss
  with respect to all parameters, averaged over independent initialisations (one trained copy
  of the network per seed);
* **EL2N**: ``E_w ||p(w_t, x) - y||_2``, the L2 norm of the error vector: softmax probabilities
  ``p = softmax(f(w_t, x))`` minus the one-hot label ``e_y``, averaged the same way.

Both are computed a few epochs into training (GraNd also at initialisation), and pruning keeps
the highest-scoring ("hardest") examples. With ``S`` seeds the averages here are the plain
means over the ``S`` given parameter sets.

* :func:`el2n_scores` ``(apply_fn, params_list, data)`` and :func:`grand_scores`
  ``(loss_fn, params_list, data)`` return ``(n,)`` scores (or ``(S, n)`` with
  ``per_seed=True``); ``params_list`` is a list/tuple of params pytrees, one per seed, or a
  single pytree whose leaves carry a leading seed axis with ``stacked=True``;
* :func:`num_kept`, :func:`prune_indices` (keep the hardest or the easiest, ties broken by the
  lower index), :func:`random_indices` (the random-pruning baseline, from an explicit key) and
  :func:`subset` (the kept examples of a dataset).

GraNd uses :func:`landscape.dynamics.per_example_norms` (memory: one chunk of per-example
gradients); EL2N needs forward passes only (memory: one batch of logits).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from landscape import batching, validate
from landscape.dynamics.gradient_stats import per_example_norms

__all__ = [
    "el2n_scores",
    "grand_scores",
    "num_kept",
    "prune_indices",
    "random_indices",
    "subset",
    "KEEP",
]

#: The orders :func:`prune_indices` keeps examples in.
KEEP = ("hardest", "easiest", "random")


# ----------------------------------------------------------------------------- seeds


def _seed_params(params_list, stacked: bool, name: str = "params_list") -> list:
    """The list of per-seed params pytrees, checked to share one structure."""
    if stacked:
        leaves = jax.tree.leaves(params_list)
        if not leaves or any(np.ndim(x) == 0 for x in leaves):
            raise ValueError(f"{name} with stacked=True must be a pytree whose leaves have a "
                             "leading seed axis")
        sizes = {int(np.shape(x)[0]) for x in leaves}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(f"{name} with stacked=True: leaves must share a non-empty leading "
                             f"seed axis; got leading sizes {sorted(sizes)}")
        out = [jax.tree.map(lambda x, s=s: x[s], params_list) for s in range(sizes.pop())]
    else:
        if not isinstance(params_list, list | tuple) or not params_list:
            raise TypeError(f"{name} must be a non-empty list or tuple of params pytrees (one "
                            f"per seed), or a stacked pytree with stacked=True; got "
                            f"{type(params_list).__name__}")
        out = list(params_list)
    for s, p in enumerate(out):
        validate.check_params(p, f"{name}[{s}]")
        if s:
            validate.check_same_structure(out[0], p, f"{name}[0]", f"{name}[{s}]")
    return out


# ----------------------------------------------------------------------------- EL2N


def _map_chunks(fn: Callable, data, n: int, c: int):
    """``(n,)`` rows of ``fn(chunk) -> (b,)`` over consecutive chunks of ``c`` examples: a
    ``lax.scan`` over the ``n // c`` full chunks, then the remainder with its own shape."""
    nb, rem = divmod(n, c)
    parts = []
    if nb:
        main = jax.tree.map(lambda x: x[: nb * c].reshape((nb, c) + x.shape[1:]), data)
        _, ys = jax.lax.scan(lambda carry, chunk: (carry, fn(chunk)), None, main)
        parts.append(ys.reshape(nb * c))
    if rem:
        parts.append(fn(jax.tree.map(lambda x: x[nb * c:], data)))
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts)


def _targets(y, num_classes: int, dtype):
    """One-hot rows for integer labels ``(b,)``; float targets ``(b, C)`` as they are."""
    if jnp.issubdtype(y.dtype, jnp.integer):
        return jax.nn.one_hot(y, num_classes, dtype=dtype)
    return y.astype(dtype)


@functools.partial(jax.jit, static_argnames=("apply_fn", "n", "c"))
def _el2n_impl(apply_fn, params, data, n, c):
    dtype = jnp.result_type(*jax.tree.leaves(params))

    def fn(chunk):
        logits = apply_fn(params, chunk["x"]).astype(dtype)
        err = jax.nn.softmax(logits, axis=-1) - _targets(chunk["y"], logits.shape[-1], dtype)
        return jnp.sqrt(jnp.sum(err * err, axis=-1))

    return _map_chunks(fn, data, n, c)


def _check_el2n(apply_fn, params, data, name="data"):
    """The number of examples; raises for a non-classifier ``apply_fn`` or bad labels."""
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable apply_fn(params, x) -> logits (n, C); got "
                        f"{type(apply_fn).__name__}")
    n = batching.check_supervised(data, name)
    one = batching.examples(data, 0, 1)
    try:
        out = jax.eval_shape(apply_fn, params, one["x"])
    except Exception as exc:  # surface the user's error with context
        raise TypeError(f"apply_fn(params, {name}['x']) failed to evaluate: {exc}") from exc
    if len(getattr(out, "shape", ())) != 2 or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"apply_fn must return floating logits of shape (n, C); got "
                         f"{getattr(out, 'shape', type(out).__name__)}")
    num_classes = out.shape[1]
    y = (data.data if isinstance(data, batching.ShardedDataset) else data)["y"]
    if jnp.issubdtype(jnp.result_type(y), jnp.integer):
        if np.ndim(y) != 1:
            raise ValueError(f"{name}['y'] integer labels must have shape (n,); got "
                             f"{np.shape(y)}")
        if validate.is_concrete(y):
            yy = np.asarray(y)
            if yy.size and (yy.min() < 0 or yy.max() >= num_classes):
                raise ValueError(f"{name}['y'] labels must lie in [0, {num_classes}) (the "
                                 f"number of logits); got [{yy.min()}, {yy.max()}]")
    elif np.ndim(y) != 2 or np.shape(y)[1] != num_classes:
        raise ValueError(f"{name}['y'] must be integer labels (n,) or float targets "
                         f"(n, {num_classes}); got dtype {jnp.result_type(y)} and shape "
                         f"{np.shape(y)}")
    return n


def el2n_scores(apply_fn: Callable, params_list, data, *, batch_size: int | None = None,
                stacked: bool = False, per_seed: bool = False) -> jax.Array:
    """EL2N scores ``(1/S) sum_s ||softmax(f(w_s, x_i)) - y_i||_2`` (Paul et al. 2021).

    Args:
      apply_fn: ``apply_fn(params, x) -> logits`` of shape ``(b, C)`` (e.g.
        ``landscape.nnx.functional(model).apply``).
      params_list: list/tuple of ``S >= 1`` params pytrees (one network per seed, typically a
        few epochs into training), or one pytree with a leading seed axis (``stacked=True``).
      data: ``{"x": (n, ...), "y": ...}`` (or a ``batching.ShardedDataset`` of it) with integer
        labels ``y`` ``(n,)`` in ``[0, C)`` (one-hot ``e_y``) or float targets ``(n, C)``
        (one-hot or soft labels, used as given).
      batch_size: examples per forward pass (``None``: all ``n`` at once).
      stacked: see ``params_list``.
      per_seed: return the ``(S, n)`` scores of each seed instead of their mean.

    Returns:
      ``(n,)`` scores in ``[0, sqrt(2)]`` for one-hot targets, in the params dtype (the
      logits are cast to it before the softmax).

    ``apply_fn`` is a static argument of a compiled function: pass the same function object
    to reuse the compilation.

    Raises:
      TypeError/ValueError naming ``apply_fn`` (not callable, not ``(n, C)`` logits, not
      finite on some example),
      ``params_list``, ``data`` (not ``{"x", "y"}``, labels out of range or of the wrong
      shape) or ``batch_size``.
    """
    seeds = _seed_params(params_list, stacked)
    n = _check_el2n(apply_fn, seeds[0], data)
    c = batching.check_batch_size(batch_size, "batch_size")
    plain = batching.examples(data, 0, n) if isinstance(data, batching.ShardedDataset) else data
    rows = jnp.stack([_el2n_impl(apply_fn, p, plain, n, n if c is None else min(c, n))
                      for p in seeds])
    if validate.is_concrete(rows) and not np.all(np.isfinite(np.asarray(rows))):
        bad = int(np.sum(~np.all(np.isfinite(np.asarray(rows)), axis=0)))
        raise ValueError(f"apply_fn returned non-finite logits for {bad} of the {n} examples "
                         "of data at the given params")
    return rows if per_seed else jnp.mean(rows, axis=0)


# ----------------------------------------------------------------------------- GraNd


def grand_scores(loss_fn: Callable, params_list, data, *, chunk_size: int | None = None,
                 stacked: bool = False, per_seed: bool = False) -> jax.Array:
    """GraNd scores ``(1/S) sum_s ||grad_w l(w_s; x_i, y_i)||`` (Paul et al. 2021).

    ``l(w; x_i, y_i) = loss_fn(w, example_i)`` with the example passed as a batch of one, and
    the norm is over all parameters (:func:`landscape.dynamics.per_example_norms`). At
    initialisation (``w_s`` fresh draws) this is the paper's GraNd at ``t = 0``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss.
      params_list: list/tuple of ``S >= 1`` params pytrees, or one stacked pytree
        (``stacked=True``), as in :func:`el2n_scores`.
      data: pytree with a leading example axis of ``n`` examples (or a ``ShardedDataset``).
      chunk_size: examples per ``vmap`` of per-example gradients (``None``: all at once); the
        memory bound.
      stacked, per_seed: as in :func:`el2n_scores`.

    Returns:
      ``(n,)`` scores (``(S, n)`` with ``per_seed=True``).

    Raises:
      TypeError/ValueError naming ``loss_fn`` (not a scalar, not finite on some example),
      ``params_list``, ``data`` or ``chunk_size``.
    """
    seeds = _seed_params(params_list, stacked)
    rows = jnp.stack([per_example_norms(loss_fn, p, data, chunk_size=chunk_size)
                      for p in seeds])
    return rows if per_seed else jnp.mean(rows, axis=0)


# ----------------------------------------------------------------------------- pruning


def _check_fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1); got {value!r}")
    f = float(value)
    if not 0.0 <= f < 1.0:
        raise ValueError(f"{name} must be in [0, 1); got {value!r}")
    return f


def num_kept(num_examples: int, fraction: float) -> int:
    """Examples kept when pruning ``fraction`` of ``num_examples``:
    ``num_examples - round(fraction * num_examples)`` (Python's round, half to even), at least 1.

    Raises ValueError naming ``fraction`` (outside ``[0, 1)``, or leaving no example) or
    ``num_examples`` (not a positive int).
    """
    n = validate.check_positive_int(num_examples, "num_examples")
    f = _check_fraction(fraction, "fraction")
    k = n - round(f * n)
    if k < 1:
        raise ValueError(f"fraction={fraction!r} prunes all {n} examples; it must leave at "
                         "least one")
    return k


def _check_scores(scores) -> int:
    if np.ndim(scores) != 1 or np.shape(scores)[0] == 0:
        raise ValueError(f"scores must be a non-empty 1-D array (n,); got shape "
                         f"{np.shape(scores)}")
    dt = jnp.result_type(scores)
    if not (jnp.issubdtype(dt, jnp.floating) or jnp.issubdtype(dt, jnp.integer)):
        raise TypeError(f"scores must be real numbers; got dtype {dt}")
    if validate.is_concrete(scores) and not np.all(np.isfinite(np.asarray(scores))):
        raise ValueError("scores contains non-finite values")
    return int(np.shape(scores)[0])


def prune_indices(scores, fraction: float, *, keep: str = "hardest", offset: float = 0.0,
                  key=None) -> jax.Array:
    """Indices of the examples kept after pruning ``fraction`` of them by their scores.

    The examples are ranked (``keep="hardest"``: highest score first, the data-diet rule;
    ``"easiest"``: lowest first); equal scores rank by the lower index first (a stable sort), so
    the result is deterministic. The first ``round(offset * n)`` ranked examples are skipped
    (Paul et al. drop the very highest-scoring examples, often mislabelled, when pruning hard)
    and the next ``k = num_kept(n, fraction)`` are kept. ``keep="random"`` keeps a uniformly
    random ``k``-subset drawn with ``key`` (:func:`random_indices`; scores only give ``n``).
    Traceable in ``scores`` (``fraction`` and ``offset`` are static).

    Args:
      scores: ``(n,)`` finite scores (EL2N, GraNd, ...).
      fraction: fraction pruned, in ``[0, 1)``; 0 keeps every example.
      keep: ``"hardest"``, ``"easiest"`` or ``"random"``.
      offset: fraction of top-ranked examples skipped, in ``[0, 1)`` (not with ``"random"``).
      key: PRNG key, required with ``keep="random"``.

    Returns:
      ``(k,)`` int32 indices, sorted ascending (so a subset keeps the data order).

    Raises:
      ValueError/TypeError naming ``scores``, ``fraction``, ``keep``, ``offset`` (or when
      ``offset`` and ``fraction`` together run past the end) or ``key``.
    """
    n = _check_scores(scores)
    k = num_kept(n, fraction)
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {KEEP}; got {keep!r}")
    skip = round(_check_fraction(offset, "offset") * n)
    if keep == "random":
        if skip:
            raise ValueError("offset applies to a ranking; keep='random' takes offset=0")
        return random_indices(key, n, fraction)
    if skip + k > n:
        raise ValueError(f"offset={offset!r} skips {skip} examples and fraction={fraction!r} "
                         f"keeps {k}: more than the {n} there are")
    s = jnp.asarray(scores)
    order = jnp.argsort(-s if keep == "hardest" else s, stable=True)
    return jnp.sort(order[skip:skip + k]).astype(jnp.int32)


def random_indices(key, num_examples: int, fraction: float) -> jax.Array:
    """``(k,)`` sorted int32 indices of a uniformly random subset of ``k = num_kept(num_examples,
    fraction)`` examples: ``sort(jax.random.permutation(key, num_examples)[:k])``."""
    validate.check_key(key, "key")
    k = num_kept(num_examples, fraction)
    return jnp.sort(jax.random.permutation(key, num_examples)[:k]).astype(jnp.int32)


def subset(data, indices):
    """The examples ``indices`` of ``data`` (every leaf's leading axis indexed by ``indices``).

    ``indices``: 1-D integers in ``[0, n)`` (checked when concrete). Raises ValueError/TypeError
    naming ``data`` (no shared leading axis) or ``indices``.
    """
    n = validate.check_batch(data, "data")
    if np.ndim(indices) != 1 or not jnp.issubdtype(jnp.result_type(indices), jnp.integer):
        raise TypeError(f"indices must be a 1-D integer array; got shape {np.shape(indices)} "
                        f"and dtype {jnp.result_type(indices)}")
    if validate.is_concrete(indices):
        idx = np.asarray(indices)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"indices must lie in [0, {n}) (the examples of data); got "
                             f"[{idx.min()}, {idx.max()}]")
    idx = jnp.asarray(indices)
    return jax.tree.map(lambda x: jnp.asarray(x)[idx], data)

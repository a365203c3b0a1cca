"""Robust aggregation of per-example gradients: winsorised means and the median of means.

For a batch of ``n`` examples with per-example gradients ``g_1, ..., g_n`` (pytrees like params;
here stacked with a leading example axis, as :func:`landscape.dynamics.per_example_grads`
returns them), plain SGD steps along their mean. Chatterjee (2020, "Coherent gradients: an
approach to understanding generalization in gradient descent-based optimization", ICLR) and
Zielinski, Krishnan, Chatterjee (2020, "Weak and strong gradient directions: explaining
memorization, generalization, and hardness of examples at scale") argue that the directions
shared by many examples ("strong" directions) carry generalisation while the directions pushed
by few examples ("weak" ones) carry memorisation, and suppress the weak ones with a robust
estimate of the mean, coordinate by coordinate (Chatterjee & Zielinski 2022, "On the
generalization mystery in deep learning", section on suppressing weak gradient directions):

* **winsorised mean** with ``c``: for each coordinate ``j`` let ``x_(1) <= ... <= x_(n)`` be the
  sorted values ``g_{1,j}, ..., g_{n,j}``; clip every value to ``[x_(c+1), x_(n-c)]`` (the
  ``c`` smallest values become the ``(c+1)``-th smallest, the ``c`` largest the ``(c+1)``-th
  largest) and average: ``W_c = (1/n) sum_i clip(g_{i,j}, x_(c+1), x_(n-c))``. ``c = 0`` is the
  mean; any ``c`` extreme examples per coordinate can move ``W_c`` no further than the next one
  does. Needs ``2 c < n``. (Chatterjee 2020's "winsorized gradient descent", W(c).)
* **median of means** with ``k`` groups: split the ``n`` examples into ``k`` consecutive groups
  (sizes ``ceil(n/k)`` for the first ``n mod k`` groups and ``floor(n/k)`` for the rest, like
  ``numpy.array_split``), average within each group, and take the coordinate-wise median of the
  ``k`` group means (for even ``k`` the mean of the two middle ones). ``k = 1`` is the mean.
  (Zielinski et al. 2020's "M3" is ``k = 3``.) The groups are consecutive blocks, so the
  result depends on the order of the examples: feed a randomly ordered batch (SGD batches
  drawn by :func:`landscape.train.batch_at` are).

Both are exact per coordinate and per leaf (no approximation: the order statistics are exact,
ties included), cost ``O(c n)`` (small ``c``) or ``O(n log n)`` (a sort) per coordinate, and
are traceable (``n``, ``c``, ``k`` are static). :func:`robust_aggregation` wraps them as an
optax ``GradientTransformation`` fed with per-example gradients, and
:func:`robust_value_and_grad` gives ``(loss, robust gradient)`` of a ``loss_fn(params, batch)``
for a custom training step. ``landscape.train.train`` always feeds the
optimizer ``value_and_grad(loss_fn)``, the mean gradient, so training with these aggregates
needs a step that computes per-example gradients (see ``experiments/coherence.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from landscape import validate
from landscape.dynamics.gradient_stats import per_example_grads

__all__ = [
    "AGGREGATIONS",
    "winsorized_mean",
    "median_of_means",
    "group_sizes",
    "aggregate",
    "robust_aggregation",
    "robust_value_and_grad",
]

#: The aggregations :func:`aggregate` knows: the plain mean and the two robust ones.
AGGREGATIONS = ("mean", "winsorize", "median_of_means")


def _num_examples(per_example_grads, name: str) -> int:
    """``n``: the leading axis shared by every (floating) leaf, or an error naming ``name``."""
    leaves = jax.tree.leaves(per_example_grads)
    if not leaves:
        raise ValueError(f"{name} must be a non-empty pytree of arrays with a leading example "
                         "axis")
    sizes = set()
    for leaf in leaves:
        shape, dtype = jnp.shape(leaf), jnp.result_type(leaf)
        if len(shape) < 1 or not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"{name} leaves must be floating arrays with a leading example "
                             f"axis (n, *param_shape); got shape {shape} and dtype {dtype}")
        sizes.add(shape[0])
    if len(sizes) != 1:
        raise ValueError(f"{name} leaves must share the leading example axis; got sizes "
                         f"{sorted(sizes)}")
    n = sizes.pop()
    if n < 1:
        raise ValueError(f"{name} must hold at least one example; got n = 0")
    return int(n)


def _check_c(c, n: int) -> int:
    c = validate.check_int(c, "c", low=0)
    if 2 * c >= n:
        raise ValueError(f"c must satisfy 2 c < n (the batch holds n = {n} examples, so "
                         f"c <= {(n - 1) // 2}); got c = {c}")
    return c


def winsorized_mean(per_example_grads, c: int):
    """Coordinate-wise winsorised mean ``W_c`` of per-example gradients (module docstring).

    Args:
      per_example_grads: pytree of floating arrays of shape ``(n, *s)`` (leading example axis).
      c: number of extreme values clipped on each side of every coordinate, ``0 <= 2 c < n``.

    Returns:
      A pytree of arrays of shape ``s``: ``(1/n) sum_i clip(g_i, x_(c+1), x_(n-c))`` per
      coordinate, where ``x_(r)`` is the ``r``-th smallest of the ``n`` values. Rounding: that of
      a mean in the input dtype (the clipping itself is exact).

    Raises:
      ValueError naming ``per_example_grads`` (no leaves, no leading axis, mismatched ``n``) or
      ``c`` (negative, or ``2 c >= n``); TypeError naming ``c`` (not an int).
    """
    n = _num_examples(per_example_grads, "per_example_grads")
    c = _check_c(c, n)

    def leaf(x):
        if c == 0:
            return jnp.mean(x, axis=0)
        if c < _EXTRACT_BELOW:
            lo, hi = -_largest(-x, c), _largest(x, c)
        else:
            s = jnp.sort(x, axis=0)
            lo, hi = s[c], s[n - 1 - c]
        return jnp.mean(jnp.clip(x, lo, hi), axis=0)

    return jax.tree.map(leaf, per_example_grads)


#: Below this ``c`` the order statistics come from ``c + 1`` max-and-remove passes (``O(c n)``
#: per coordinate) instead of a full sort: XLA's CPU sort along the example axis is several
#: times slower than a few reductions for the small ``c`` used in practice. Both are exact.
_EXTRACT_BELOW = 8


def _largest(x, c: int):
    """The ``(c+1)``-th largest value along axis 0, counting repeated values (exact).

    Pass ``r`` takes the largest value ``m`` not yet removed, counts how many entries equal it
    and removes them all; the answer is the ``m`` of the pass at which the running count first
    exceeds ``c``.
    """

    def body(_, carry):
        rest, count, ans = carry
        m = jnp.max(rest, axis=0)
        hit = rest == m
        ans = jnp.where(count <= c, m, ans)
        return jnp.where(hit, -jnp.inf, rest), count + jnp.sum(hit, axis=0, dtype=jnp.int32), ans

    zero = jnp.zeros(x.shape[1:], jnp.int32)
    init = (x, zero, jnp.full(x.shape[1:], -jnp.inf, x.dtype))
    return jax.lax.fori_loop(0, c + 1, body, init)[2]


def group_sizes(n: int, num_groups: int) -> np.ndarray:
    """``(num_groups,)`` sizes of the consecutive groups: ``numpy.array_split`` of ``n``."""
    n = validate.check_int(n, "n", low=1)
    k = validate.check_int(num_groups, "num_groups", low=1, high=n)
    return np.array([n // k + (j < n % k) for j in range(k)], np.int64)


def median_of_means(per_example_grads, num_groups: int):
    """Coordinate-wise median of the means of ``num_groups`` consecutive groups of examples.

    Args:
      per_example_grads: pytree of floating arrays of shape ``(n, *s)``.
      num_groups: ``k`` with ``1 <= k <= n``; examples ``[0, s_0)`` form group 0, the next
        ``s_1`` group 1, ..., with the sizes of :func:`group_sizes` (``numpy.array_split``).

    Returns:
      A pytree of arrays of shape ``s``: ``median_j (1/s_j) sum_{i in group j} g_i`` per
      coordinate (``jnp.median``: the middle value for odd ``k``, the mean of the two middle
      values for even ``k``).

    Raises:
      ValueError naming ``per_example_grads`` or ``num_groups`` (outside ``[1, n]``).
    """
    n = _num_examples(per_example_grads, "per_example_grads")
    sizes = group_sizes(n, num_groups)
    k = len(sizes)
    ids = np.repeat(np.arange(k), sizes)

    def leaf(x):
        sums = jax.ops.segment_sum(x, ids, num_segments=k, indices_are_sorted=True)
        means = sums / jnp.asarray(sizes, x.dtype).reshape((k,) + (1,) * (x.ndim - 1))
        return means[0] if k == 1 else jnp.median(means, axis=0)

    return jax.tree.map(leaf, per_example_grads)


def _check_kind(kind) -> str:
    if kind not in AGGREGATIONS:
        raise ValueError(f"kind must be one of {AGGREGATIONS}; got {kind!r}")
    return kind


def aggregate(per_example_grads, kind: str = "mean", *, c: int = 1, num_groups: int = 3):
    """``kind`` ``"mean"``, ``"winsorize"`` (:func:`winsorized_mean` with ``c``) or
    ``"median_of_means"`` (:func:`median_of_means` with ``num_groups``) of per-example
    gradients of shape ``(n, *s)``; returns a pytree of shape-``s`` arrays."""
    kind = _check_kind(kind)
    if kind == "winsorize":
        return winsorized_mean(per_example_grads, c)
    if kind == "median_of_means":
        return median_of_means(per_example_grads, num_groups)
    _num_examples(per_example_grads, "per_example_grads")
    return jax.tree.map(lambda x: jnp.mean(x, axis=0), per_example_grads)


def _check_static(kind, c, num_groups):
    kind = _check_kind(kind)
    c = validate.check_int(c, "c", low=0)
    num_groups = validate.check_int(num_groups, "num_groups", low=1)
    return kind, c, num_groups


def robust_aggregation(kind: str = "winsorize", *, c: int = 1,
                       num_groups: int = 3) -> optax.GradientTransformation:
    """An optax transformation that turns per-example gradients into one robust gradient.

    **Contract.** Its ``update(updates, state, params=None)`` must be fed the *per-example*
    gradients: a pytree like params whose leaves have a leading example axis, shape
    ``(n, *param_shape)`` (e.g. :func:`landscape.dynamics.per_example_grads`); it returns
    ``aggregate(updates, kind, c=c, num_groups=num_groups)``, a gradient like params, and
    keeps no state. It is therefore the *first* link of a chain and not a drop-in for the
    mean gradient that ``optax`` optimizers (and ``landscape.train.train``) usually receive::

        opt = optax.chain(robust_aggregation("winsorize", c=2), optax.sgd(0.1))
        state = opt.init(params)
        g = dynamics.per_example_grads(loss_fn, params, batch)      # leaves (n, *s)
        updates, state = opt.update(g, state, params)
        params = optax.apply_updates(params, updates)

    ``c`` and ``num_groups`` are checked against ``n`` at the first ``update`` (``2 c < n``,
    ``num_groups <= n``). With ``params`` given, each leaf of ``updates`` must have shape
    ``(n,) + param.shape``.
    """
    kind, c, num_groups = _check_static(kind, c, num_groups)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is not None:
            _check_against_params(updates, params)
        return aggregate(updates, kind, c=c, num_groups=num_groups), state

    return optax.GradientTransformation(init_fn, update_fn)


def _check_against_params(updates, params):
    if jax.tree.structure(updates) != jax.tree.structure(params):
        raise ValueError("updates (per-example gradients) must have the tree structure of "
                         f"params; got {jax.tree.structure(updates)} and "
                         f"{jax.tree.structure(params)}")
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
        if jnp.shape(u)[1:] != jnp.shape(p) or len(jnp.shape(u)) != len(jnp.shape(p)) + 1:
            raise ValueError("robust_aggregation is fed per-example gradients: every leaf of "
                             "updates must have shape (n,) + param.shape; got "
                             f"{jnp.shape(u)} for a parameter of shape {jnp.shape(p)} (a mean "
                             "gradient? pass dynamics.per_example_grads instead)")
    _num_examples(updates, "updates")


def robust_value_and_grad(loss_fn: Callable, kind: str = "winsorize", *, c: int = 1,
                          num_groups: int = 3, chunk_size: int | None = None) -> Callable:
    """``f(params, batch) -> (loss_fn(params, batch), robust gradient)`` (traceable).

    The gradient is :func:`aggregate` of the per-example gradients
    (:func:`landscape.dynamics.per_example_grads` with ``chunk_size``; each example passed to
    ``loss_fn`` as a batch of one), so for ``kind="mean"`` and a mean loss it equals
    ``jax.grad(loss_fn)`` up to rounding. Feed it to a plain optax optimizer (``optax.sgd``),
    not after :func:`robust_aggregation`. Cost: ``n`` per-example gradients and one forward
    pass per call, plus the sort of ``n`` values per coordinate for ``"winsorize"``.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable loss_fn(params, batch); got {type(loss_fn)}")
    kind, c, num_groups = _check_static(kind, c, num_groups)

    def value_and_grad(params, batch):
        g = per_example_grads(loss_fn, params, batch, chunk_size=chunk_size)
        return loss_fn(params, batch), aggregate(g, kind, c=c, num_groups=num_groups)

    return value_and_grad

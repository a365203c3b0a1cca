"""Per-example losses along training and the opposing groups behind loss spikes.

Rosenfeld & Risteski (2024, ICLR, "Outliers with opposing signals have an outsized effect on
neural network optimization") find that the loss spikes of GD and SGD at large step sizes are
driven by small groups of training examples with large gradients that pull in opposing
directions: around a spike the loss of one group jumps up while the loss of the other drops
(anti-phase), and the spikes coincide with the sharpness reaching ``2 / eta``. They find the
groups by the examples whose loss changes most between steps.

:func:`per_example_loss_probe` records ``L_i(w_t)``, the loss of every example of a fixed set,
inside :func:`landscape.train.train` (:func:`per_example_losses` is the same outside it).
:func:`opposing_signals` analyses the recorded ``[record, n]`` matrix on the host (NumPy,
float64): per-interval changes and their top-``k`` examples, the spikes of the mean loss
(:func:`loss_spikes`), the two groups that move against each other around the largest spike
(the rule is in :class:`OpposingSignals`), their losses over training (:func:`group_losses`)
and how anti-phase they are around every spike. :func:`group_composition` and
:func:`feature_groups` say what the groups are (classes; a split by a per-example feature).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from landscape import batching, validate
from landscape.train import Probe, ProbeContext, probe

__all__ = [
    "per_example_losses",
    "per_example_loss_probe",
    "opposing_signals",
    "OpposingSignals",
    "loss_spikes",
    "group_losses",
    "anti_phase",
    "group_composition",
    "feature_groups",
]


# ----------------------------------------------------------------------------- recording


def _losses(loss_fn, params, data, n, c):
    """``(n,)`` ``loss_fn(params, example_i)``, each example a batch of one, ``c`` per vmap."""
    one = lambda ex: loss_fn(params, jax.tree.map(lambda x: x[None], ex))  # noqa: E731
    return jax.lax.map(one, data, batch_size=None if c >= n else c)


def _plain(data, n):
    return batching.examples(data, 0, n) if isinstance(data, batching.ShardedDataset) else data


def per_example_losses(loss_fn: Callable, params, batch, *, chunk_size: int | None = None):
    """``(n,)`` per-example losses ``l_i = loss_fn(params, example_i)``.

    Each example is passed to ``loss_fn`` as a batch of one (the convention of
    :func:`landscape.dynamics.per_example_grads`), so for a mean loss ``mean_i l_i`` is the
    batch loss and any ``loss_fn(params, batch)`` of landscape works. ``jax.lax.map`` with
    ``batch_size=chunk_size``: ``vmap`` over ``chunk_size`` examples at a time, so the working
    memory is one chunk's activations. Traceable.

    Raises ValueError/TypeError naming ``loss_fn`` (not callable or not scalar), ``batch``
    (empty or mismatched leading axes) or ``chunk_size`` (not a positive int).
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable loss_fn(params, batch); got {type(loss_fn)}")
    n = batching.num_examples(batch, "batch")
    c = batching.check_batch_size(chunk_size, "chunk_size")
    validate.check_scalar_loss(loss_fn, params, batching.examples(batch, 0, 1))
    return _losses(loss_fn, params, _plain(batch, n), n, n if c is None else min(c, n))


def per_example_loss_probe(loss_fn: Callable, dataset, *, every: int = 1,
                           chunk_size: int | None = None) -> Probe:
    """A training probe recording the loss of every example of ``dataset`` every ``every`` steps.

    At the parameters ``w_t`` before the update of step ``t`` (as every probe), the record is
    the ``(n,)`` vector ``l_i(w_t) = loss_fn(w_t, example_i)`` of :func:`per_example_losses`;
    ``result.trace[name]`` is the ``[record, n]`` matrix :func:`opposing_signals` reads, and
    ``result.trace_steps[name]`` its steps. ``dataset`` is a fixed set (the full training set
    for full-batch GD, or a fixed subset under SGD); it enters the compiled loop as the probe's
    data. Cost per record: one forward pass over ``dataset`` in chunks of ``chunk_size``.
    ``loss_fn`` is the stateless ``loss_fn(params, batch)`` (for a stateful training loss pass
    its eval form).
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable loss_fn(params, batch); got {type(loss_fn)}")
    n = batching.num_examples(dataset, "dataset")
    c = batching.check_batch_size(chunk_size, "chunk_size")
    c = n if c is None else min(c, n)

    def fn(ctx: ProbeContext, state):
        return _losses(loss_fn, ctx.params, _plain(ctx.data, n), n, c), state

    return probe(fn, every=every, data=dataset)


# ----------------------------------------------------------------------------- analysis


class OpposingSignals(NamedTuple):
    """Result of :func:`opposing_signals` for ``R`` records of ``n`` examples (NumPy arrays).

    Interval ``j`` runs from record ``j`` to record ``j + 1``; ``delta[j, i] = L[j+1, i] -
    L[j, i]``. Groups are labelled ``groups[i] = 0`` (group A), ``1`` (group B), ``-1`` (neither).

    **Spikes** (:func:`loss_spikes`) of the mean loss ``Lbar[j] = mean_i L[j, i]``: record ``p``
    is a spike's peak when ``Lbar[p]`` is the largest value of ``Lbar`` on the records
    ``[p - window, p + window]`` (the first one on ties) and
    ``Lbar[p] >= (1 + min_rise) Lbar[a]``, where ``a`` (the spike's start) is the record of the
    smallest ``Lbar`` on ``[p - window, p]``. A spike's *window* is the records
    ``[max(p - window, 0), min(p + window, R - 1)]``.

    **Groups** (found on the window of the largest spike, the one of largest ``Lbar[p] -
    Lbar[a]``): the changes of its ``m`` intervals are centred across examples,
    ``D[t, i] = delta[t, i] - mean_j delta[t, j]`` (the mean loss's own change removed), and
    ``u`` is the leading right singular vector of ``D`` (``m x n``): the best rank-one fit
    ``D ~ s u^T`` says that example ``i`` moves like ``u_i`` times a common time course ``s``.
    The sign is fixed so that ``sum_{a <= t < p} s_t > 0`` (the time course rises over the
    spike). Group A is the examples with ``u_i >= threshold * max_j u_j`` and group B those
    with ``u_i <= threshold * min_j u_j``, each cut to the ``k`` of largest ``|u_i|``: the
    examples whose loss goes up, respectively down, relative to the mean as the spike rises,
    and which move together through the whole window. Without spikes there are no groups.

    Attributes:
      steps: ``(R,)`` the step of each record.
      mean_loss: ``(R,)`` ``Lbar``.
      delta: ``(R - 1, n)`` per-interval changes.
      top_increase, top_decrease: ``(R - 1, k)`` the ``k`` examples of largest (most positive
        first), respectively smallest (most negative first) ``delta[j]`` in each interval.
      spikes: ``(S, 2)`` int ``[start a, peak p]`` record indices of each spike, in time order.
      spike_rise: ``(S,)`` ``Lbar[p] - Lbar[a]``.
      biggest: index into ``spikes`` of the largest rise (``-1`` without spikes).
      spike_change: ``(n,)`` ``L[p] - L[a]`` over the largest spike (zeros without spikes).
      spike_increase, spike_decrease: ``(k,)`` the ``k`` examples of largest, respectively
        smallest ``spike_change`` (empty without spikes).
      loadings: ``(n,)`` ``u`` (zeros without spikes).
      groups: ``(n,)`` int in ``{0, 1, -1}``.
      group_sizes: ``(2,)`` sizes of groups A and B.
      group_losses: ``(2, R)`` mean loss of each group at each record (NaN for an empty group).
      anti_phase: ``(S,)`` per spike, the Pearson correlation of the group-mean changes
        ``(mean_{i in A} delta[t, i], mean_{i in B} delta[t, i])`` over the intervals ``t`` of
        that spike's window: ``-1`` for exact anti-phase (NaN when undefined). The groups are
        chosen on the window of spike ``biggest``; at the other spikes it is out of sample.
    """

    steps: np.ndarray
    mean_loss: np.ndarray
    delta: np.ndarray
    top_increase: np.ndarray
    top_decrease: np.ndarray
    spikes: np.ndarray
    spike_rise: np.ndarray
    biggest: int
    spike_change: np.ndarray
    spike_increase: np.ndarray
    spike_decrease: np.ndarray
    loadings: np.ndarray
    groups: np.ndarray
    group_sizes: np.ndarray
    group_losses: np.ndarray
    anti_phase: np.ndarray


def _matrix(losses, name="losses"):
    if isinstance(losses, jax.core.Tracer):
        raise TypeError(f"{name} must be concrete (opposing_signals runs on the host, not "
                        f"under jit)")
    L = np.asarray(losses, np.float64)
    if L.ndim != 2 or L.shape[0] < 2 or L.shape[1] < 1:
        raise ValueError(f"{name} must be a [record, example] matrix with at least 2 records "
                         f"and 1 example; got shape {L.shape}")
    if not np.all(np.isfinite(L)):
        raise ValueError(f"{name} contains non-finite values")
    return L


def loss_spikes(mean_loss, *, window: int = 10, min_rise: float = 0.1) -> np.ndarray:
    """``(S, 2)`` ``[start, peak]`` record indices of the spikes of ``mean_loss`` (``(R,)``).

    The rule is the one of :class:`OpposingSignals`: a peak is the first maximum of a
    ``2 window + 1`` neighbourhood that is at least ``1 + min_rise`` times the smallest value
    of the ``window`` records before it (its start).
    """
    y = np.asarray(mean_loss, np.float64)
    if y.ndim != 1 or not np.all(np.isfinite(y)):
        raise ValueError(f"mean_loss must be a finite 1-D array; got shape {y.shape}")
    window = validate.check_int(window, "window", low=1)
    min_rise = float(validate.check_positive(min_rise, "min_rise"))
    out = []
    for p in range(1, len(y)):
        lo, hi = max(p - window, 0), min(p + window, len(y) - 1)
        if int(np.argmax(y[lo:hi + 1])) + lo != p:
            continue
        a = int(np.argmin(y[lo:p + 1])) + lo
        if y[p] >= (1 + min_rise) * y[a] and y[p] > y[a]:
            out.append((a, p))
    return np.asarray(out, np.int64).reshape(-1, 2)


def _top(x, k, largest):
    order = np.argsort(-x if largest else x, kind="stable", axis=-1)
    return order[..., :k]


def group_losses(losses, groups) -> np.ndarray:
    """``(2, R)`` the mean over each group (``groups == 0``, ``== 1``) of ``losses[:, i]``
    (``[R, n]``); NaN for an empty group."""
    L = _matrix(losses)
    g = _groups(groups, L.shape[1])
    out = np.full((2, L.shape[0]), np.nan)
    for j in range(2):
        if np.any(g == j):
            out[j] = L[:, g == j].mean(axis=1)
    return out


def _groups(groups, n, name="groups"):
    g = np.asarray(groups)
    if g.shape != (n,) or not np.issubdtype(g.dtype, np.integer) or not np.all(
            np.isin(g, (-1, 0, 1))):
        raise ValueError(f"{name} must be an int array of shape ({n},) with values in "
                         f"{{-1, 0, 1}}; got dtype {g.dtype}, shape {g.shape}")
    return g


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / den) if den > 0 else float("nan")


def _anti_phase(delta, groups, spikes, window):
    anti = np.full(len(spikes), np.nan)
    A, B = groups == 0, groups == 1
    if A.any() and B.any():
        R = delta.shape[0] + 1
        dA, dB = delta[:, A].mean(axis=1), delta[:, B].mean(axis=1)
        for s, (_, p) in enumerate(spikes):
            lo, hi = max(p - window, 0), min(p + window, R - 1)
            anti[s] = _corr(dA[lo:hi], dB[lo:hi])
    return anti


def anti_phase(losses, groups, spikes, *, window: int = 10) -> np.ndarray:
    """``(S,)`` per spike, the correlation of the group-mean loss changes of groups A and B.

    For spike ``s`` with peak record ``p`` (``spikes[s] = [a, p]``, e.g. from
    :func:`loss_spikes`), the Pearson correlation of ``mean_{i in A} delta[t, i]`` and
    ``mean_{i in B} delta[t, i]`` over the intervals ``t`` of the records
    ``[max(p - window, 0), min(p + window, R - 1)]``, with ``delta`` the per-interval changes
    of ``losses`` (``[R, n]``) and ``groups`` (``(n,)`` in ``{-1, 0, 1}``), e.g. from
    :func:`feature_groups`. ``-1`` is exact anti-phase; NaN for an empty group or a constant
    series.
    """
    L = _matrix(losses)
    g = _groups(groups, L.shape[1])
    window = validate.check_int(window, "window", low=1)
    sp = np.asarray(spikes)
    if sp.ndim != 2 or sp.shape[1] != 2 or not np.issubdtype(sp.dtype, np.integer) or (
            sp.size and (sp.min() < 0 or sp.max() >= L.shape[0])):
        raise ValueError(f"spikes must be an (S, 2) int array of record indices in [0, "
                         f"{L.shape[0]}); got dtype {sp.dtype}, shape {sp.shape}")
    return _anti_phase(np.diff(L, axis=0), g, sp, window)


def _grouping(delta, spike, window, k, threshold, R):
    a, p = (int(v) for v in spike)
    lo, hi = max(p - window, 0), min(p + window, R - 1)
    D = delta[lo:hi]
    D = D - D.mean(axis=1, keepdims=True)
    _, _, vt = np.linalg.svd(D, full_matrices=False)
    u = vt[0]
    s = D @ u
    if np.sum(s[a - lo:p - lo]) < 0:
        u = -u
    g = np.full(u.shape, -1, np.int64)
    for j, sel in ((0, u >= threshold * u.max()), (1, u <= threshold * u.min())):
        idx = np.flatnonzero(sel & (u != 0))
        idx = idx[np.argsort(-np.abs(u[idx]), kind="stable")][:k]
        g[idx] = j
    return u, g


def opposing_signals(losses, steps=None, *, k: int = 10, window: int = 10,
                     min_rise: float = 0.1, threshold: float = 0.5) -> OpposingSignals:
    """Loss changes, spikes and the two opposing groups of a ``[record, n]`` loss matrix.

    Rosenfeld & Risteski (2024): small groups of examples whose losses move in anti-phase drive
    the loss spikes of training at large step sizes; they are found among the examples whose
    loss changes most. ``losses[j, i]`` is the loss of example ``i`` at record ``j`` (e.g.
    ``result.trace[name]`` of :func:`per_example_loss_probe`). Host-side NumPy in float64 (the
    number of spikes is data-dependent, so this is not traceable). Every rule is stated in
    :class:`OpposingSignals`.

    Args:
      losses: ``[R, n]`` finite per-example losses, ``R >= 2``.
      steps: ``(R,)`` increasing steps of the records (default ``0..R-1``).
      k: examples per top-``k`` list and the largest group size (``1 <= k <= n``).
      window: records on each side of a spike's peak (its neighbourhood and its window).
      min_rise: the relative rise that makes a local maximum a spike (``> 0``).
      threshold: in ``(0, 1]``, the fraction of the largest loading a group member needs.

    Returns:
      :class:`OpposingSignals`.
    """
    L = _matrix(losses)
    R, n = L.shape
    st = np.arange(R) if steps is None else np.asarray(steps)
    if st.shape != (R,) or not np.all(np.diff(st) > 0):
        raise ValueError(f"steps must be an increasing array of shape ({R},); got shape "
                         f"{st.shape}")
    k = validate.check_int(k, "k", low=1, high=n)
    if not (isinstance(threshold, int | float) and 0 < threshold <= 1):
        raise ValueError(f"threshold must be in (0, 1]; got {threshold!r}")
    mean = L.mean(axis=1)
    spikes = loss_spikes(mean, window=window, min_rise=min_rise)
    delta = np.diff(L, axis=0)
    rise = mean[spikes[:, 1]] - mean[spikes[:, 0]]
    biggest = int(np.argmax(rise)) if len(rise) else -1
    if biggest >= 0:
        a, p = spikes[biggest]
        change = L[p] - L[a]
        u, groups = _grouping(delta, spikes[biggest], window, k, threshold, R)
        inc, dec = _top(change, k, True), _top(change, k, False)
    else:
        change, u = np.zeros(n), np.zeros(n)
        groups = np.full(n, -1, np.int64)
        inc = dec = np.zeros(0, np.int64)
    sizes = np.array([np.sum(groups == 0), np.sum(groups == 1)], np.int64)
    return OpposingSignals(
        steps=st, mean_loss=mean, delta=delta, top_increase=_top(delta, k, True),
        top_decrease=_top(delta, k, False), spikes=spikes, spike_rise=rise, biggest=biggest,
        spike_change=change, spike_increase=inc, spike_decrease=dec, loadings=u,
        groups=groups, group_sizes=sizes, group_losses=group_losses(L, groups),
        anti_phase=_anti_phase(delta, groups, spikes, window))


# ----------------------------------------------------------------------------- what the groups are


def group_composition(groups, labels, num_classes: int) -> np.ndarray:
    """``(2, num_classes)`` int: how many examples of each class are in groups A and B.

    ``groups``: ``(n,)`` in ``{-1, 0, 1}``; ``labels``: ``(n,)`` ints in ``[0, num_classes)``.
    """
    y = np.asarray(labels)
    num_classes = validate.check_int(num_classes, "num_classes", low=1)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (
            y.size and (y.min() < 0 or y.max() >= num_classes)):
        raise ValueError(f"labels must be a 1-D int array with values in [0, {num_classes}); "
                         f"got dtype {y.dtype}, shape {y.shape}")
    g = _groups(groups, len(y))
    return np.stack([np.bincount(y[g == j], minlength=num_classes) for j in range(2)])


def feature_groups(feature, *, fraction: float = 0.1) -> np.ndarray:
    """``(n,)`` groups by a per-example scalar: ``0`` for the ``m = max(floor(fraction n), 1)``
    examples of largest ``feature``, ``1`` for the ``m`` of smallest (ties by index), ``-1``
    for the others.

    With :func:`group_losses` this asks whether a feature (e.g. the mean input intensity)
    splits the examples into groups whose losses move in anti-phase, as the opposing signals
    of Rosenfeld & Risteski (2024) do (a sky background vs. none).
    """
    f = np.asarray(feature, np.float64)
    if f.ndim != 1 or f.size < 2 or not np.all(np.isfinite(f)):
        raise ValueError(f"feature must be a finite 1-D array of at least 2 values; got shape "
                         f"{f.shape}")
    if not (isinstance(fraction, int | float) and 0 < fraction <= 0.5):
        raise ValueError(f"fraction must be in (0, 0.5]; got {fraction!r}")
    m = max(int(fraction * f.size), 1)
    order = np.argsort(-f, kind="stable")
    g = np.full(f.size, -1, np.int64)
    g[np.argsort(f, kind="stable")[:m]] = 1
    g[order[:m]] = 0
    return g

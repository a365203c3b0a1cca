"""A plain NumPy weight-matching reference, shared by the connectivity benchmark and its tests.

Git Re-Basin's coordinate descent (Ainsworth, Hayase, Srinivasa 2023, Algorithm 1) written
directly in float64 NumPy, without jit, caching or pytree machinery, so that
``landscape.connectivity.weight_matching`` can be checked (tests) and timed (benchmark) against
it. One restart from the identity; the caller supplies the sweep order.

For permutation ``p`` with the others held fixed, the cost matrix is

    C = sum over the (leaf, axis) of p:  A_leaf(axis -> rows) @ B_leaf'(axis -> rows)^T

where ``B_leaf'`` is ``B_leaf`` with every *other* spec axis of that leaf permuted by its current
permutation, and ``scipy.optimize.linear_sum_assignment`` maximises ``sum_i C[i, cols[i]]``.
A new assignment is kept when it beats the current one by more than ``tol`` (relative); the run
stops after a sweep that keeps nothing.

Tied axes: when ``p`` acts on two axes of one leaf (a recurrent matrix permuted as
``P W P^T``), the objective is quadratic in ``p`` and ``C`` (built with the other occurrence at
its current value) only linearises it, so the assignment is a proposal: it is kept if the
objective ``<theta_A, pi(theta_B)>``, computed here from scratch, grows by more than ``tol``;
otherwise the cycles of the move (the groups of units it rotates among themselves) are tried
one at a time, largest linearised gain first, each kept only if the objective grows.

Lives in ``benchmarks/`` because the benchmark runs as a script from the repository root (its
own folder is then first on ``sys.path``); the tests add that folder to ``sys.path`` explicitly,
as ``tests/test_benchmark_harness.py`` does for the other benchmark helpers.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["numpy_weight_matching", "numpy_objective"]


def _leaves(params):
    from landscape.connectivity import leaf_keys  # only the key-path naming of the leaves

    return {k: np.asarray(v, np.float64) for k, v in leaf_keys(params).items()}


def _take(x, p, axis, n):
    """``x[..., p, ...]`` along ``axis``; an axis of size ``m * n`` is viewed as ``(m, n)``."""
    axis = axis % x.ndim
    if x.shape[axis] == n:
        return np.take(x, p, axis=axis)
    shape = x.shape[:axis] + (x.shape[axis] // n, n) + x.shape[axis + 1:]
    return np.take(x.reshape(shape), p, axis=axis + 1).reshape(x.shape)


def _rows(x, axis, n):
    """Move the (block) axis of size ``n`` to the front and flatten the rest: ``(n, -1)``."""
    axis = axis % x.ndim
    if x.shape[axis] != n:
        x = x.reshape(x.shape[:axis] + (x.shape[axis] // n, n) + x.shape[axis + 1:])
        axis += 1
    return np.moveaxis(x, axis, 0).reshape(n, -1)


def numpy_objective(spec, perm, la, lb):
    """``sum over spec leaves of <A_leaf, pi(B_leaf)>`` in float64 (``la``, ``lb``: key -> leaf)."""
    total = 0.0
    for key, axes in spec.axes_to_perm.items():
        wb = lb[key]
        for ax, name in axes.items():
            wb = _take(wb, perm[name], ax, spec.sizes[name])
        total += float(np.vdot(la[key].ravel(), wb.ravel()))
    return total


def _tied_move(spec, perm, name, cols, cost, la, lb, tol):
    """The proposal ``cols`` if it raises the objective, else the subset of its cycles that do
    (tried one by one, largest gain of ``cost`` first); None if nothing raises it."""
    gain = lambda v, ref: v > ref + tol * max(abs(ref), 1.0)
    before = numpy_objective(spec, perm, la, lb)
    if gain(numpy_objective(spec, {**perm, name: cols}, la, lb), before):
        return cols
    cur = perm[name]
    pos = {int(u): j for j, u in enumerate(cur)}  # position of each unit in the current perm
    cycles, done = [], set()
    for i in range(len(cur)):
        if i in done or cols[i] == cur[i]:
            continue
        cycle = [i]
        done.add(i)
        while pos[int(cols[cycle[-1]])] != i:
            cycle.append(pos[int(cols[cycle[-1]])])
            done.add(cycle[-1])
        cycles.append(cycle)
    gains = [sum(cost[j, cols[j]] - cost[j, cur[j]] for j in cy) for cy in cycles]
    best = None
    for k in sorted(range(len(cycles)), key=lambda k: -gains[k]):
        trial = np.array(cur if best is None else best)
        trial[cycles[k]] = cols[cycles[k]]
        after = numpy_objective(spec, {**perm, name: trial}, la, lb)
        if gain(after, before):
            best, before = trial, after
    return best


def numpy_weight_matching(spec, params_a, params_b, order_fn, max_sweeps=100, tol=1e-12):
    """Coordinate descent over the permutations of ``spec`` (one restart, from the identity).

    Args:
      spec: a ``landscape.connectivity.PermutationSpec``.
      params_a, params_b: pytrees of arrays (any float dtype; computed in float64).
      order_fn: ``order_fn(sweep) -> sequence of indices into spec.names`` (the visiting order).
      max_sweeps: cap on sweeps.
      tol: relative improvement needed to keep a new assignment.

    Returns:
      ``(perm, num_sweeps)`` with ``perm = {name: int array (n,)}``.
    """
    la, lb = _leaves(params_a), _leaves(params_b)
    perm = {n: np.arange(s) for n, s in spec.sizes.items()}
    a2p = spec.axes_to_perm
    tied = {n for n, _, axes in spec.entries if len({k for k, _ in axes}) < len(axes)}
    for sweep in range(max_sweeps):
        progress = False
        for i in order_fn(sweep):
            name = spec.names[i]
            n = spec.sizes[name]
            cost = np.zeros((n, n))
            for key, axis in spec.perm_to_axes[name]:
                wb = lb[key]
                for ax, other in a2p[key].items():
                    if ax != axis:
                        wb = _take(wb, perm[other], ax, spec.sizes[other])
                cost += _rows(la[key], axis, n) @ _rows(wb, axis, n).T
            _, cols = linear_sum_assignment(cost, maximize=True)
            old, new = cost[np.arange(n), perm[name]].sum(), cost[np.arange(n), cols].sum()
            if not new > old + tol * max(abs(old), 1.0):
                continue
            if name in tied:
                cols = _tied_move(spec, perm, name, cols, cost, la, lb, tol)
                if cols is None:
                    continue
            perm[name], progress = cols, True
        if not progress:
            break
    return perm, sweep + 1

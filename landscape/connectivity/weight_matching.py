"""Weight matching: align model B's hidden units to model A's by their weights.

Ainsworth, Hayase, Srinivasa 2023 ("Git Re-Basin", Algorithm 1). Maximise the inner product
``<theta_A, pi(theta_B)>`` over the permutations of a :class:`PermutationSpec` by coordinate
descent: visit the permutations in a random order; for permutation ``p`` hold all others fixed,
and the objective is linear in ``P_p``, ``sum_ij C_ij [P_p]_ij`` with

    C = sum over (leaf, axis) of p:  A_leaf(axis -> rows) @ pi_except_axis(B_leaf)(axis -> rows)^T

a linear assignment problem solved exactly by ``scipy.optimize.linear_sum_assignment``. Sweep
until a whole sweep improves nothing. Each step cannot decrease the objective, so it converges to
a coordinate-wise optimum; random restarts (the first from the identity, later ones from random
permutations) pick the best. Cost matrices are jit-compiled JAX (HIGHEST precision); the LAPs
are solved in float64 on the host.

**Tied axes.** A permutation that acts on two axes of one leaf (a recurrent matrix permuted as
``P W P^T``, as :func:`infer_spec` finds it, or the residual stream of a residual MLP) enters
the objective quadratically, ``<A, P B P^T>``. ``C`` above, built with the other occurrence held
at the current ``P_0``, is then the gradient of the objective at ``P_0``, and its assignment
maximises only a linearisation; taken blindly, such steps can lower the objective and the
descent cycles without converging. For these permutations the assignment is a *proposal*: it is
kept if :func:`matching_objective` grows by more than ``tol``; otherwise the move is split into
its independent cycles (each exchanges a few units among themselves), which are tried one at a
time, largest linearised gain first, each kept only if the objective grows. The objective
history is then non-decreasing and every run ends at the best permutation it visited: an ascent
to a point that no proposal or cycle of one improves, not a guaranteed coordinate-wise optimum
(the subproblem is a quadratic assignment problem, NP-hard in general). Untied permutations are
unaffected.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from landscape import reprs
from landscape.connectivity.spec import (
    PermutationSpec,
    apply_permutation,
    check_spec_fits,
    identity_permutation,
    random_permutation,
)
from landscape.validate import check_models

__all__ = ["MatchResult", "weight_matching", "matching_objective", "cost_matrix", "sweep_order"]

HIGHEST = jax.lax.Precision.HIGHEST


class MatchResult(NamedTuple):
    """Result of a permutation alignment.

    Attributes:
      perm: ``{name: int array (n,)}``; ``apply_permutation(spec, perm, params_b)`` is aligned.
      objective: final objective (``<theta_A, pi(theta_B)>`` for weight matching).
      history: ``(num_sweeps + 1,)`` objective at the start and after each sweep of the best
        restart (non-decreasing, up to float rounding of the untied steps' assignment gains).
      num_sweeps: sweeps run by the best restart.
      converged: the best restart stopped because a sweep improved nothing (not ``max_sweeps``).
      restart_objectives: ``(num_restarts,)`` final objective of every restart.
    """

    perm: dict
    objective: float
    history: np.ndarray
    num_sweeps: int
    converged: bool
    restart_objectives: np.ndarray

    @reprs.repr_method
    def __repr__(self) -> str:
        restarts = reprs.host(self.restart_objectives).reshape(-1)
        runs = (f"restarts={restarts.size} (best {reprs.num(restarts.max())}, worst "
                f"{reprs.num(restarts.min())})" if restarts.size > 1 else None)
        return reprs.line("MatchResult", [
            f"objective={reprs.num(self.objective)}", f"converged={self.converged}",
            f"num_sweeps={self.num_sweeps}", f"history={reprs.ends(self.history)}", runs,
            f"perm={reprs.perm_summary(self.perm)}"])


def _rows(x: jax.Array, axis: int, n: int) -> jax.Array:
    """Move the (block) axis of size n to the front and flatten the rest: ``(n, -1)``."""
    axis = axis % x.ndim
    if x.shape[axis] != n:
        x = x.reshape(x.shape[:axis] + (x.shape[axis] // n, n) + x.shape[axis + 1:])
        axis += 1
    return jnp.moveaxis(x, axis, 0).reshape(n, -1)


def cost_matrix(spec: PermutationSpec, name: str, perm: Mapping, params_a, params_b):
    """The ``(n, n)`` LAP weights ``C`` for permutation ``name`` given the others in ``perm``."""
    leaves_a = {jax.tree_util.keystr(p): x
                for p, x in jax.tree_util.tree_flatten_with_path(params_a)[0]}
    n = spec.sizes[name]
    total = jnp.zeros((n, n), jnp.result_type(*jax.tree.leaves(params_a)))
    for key, axis in spec.perm_to_axes[name]:
        b_perm = apply_permutation(spec, perm, params_b, except_axis=(key, axis))
        wb = _leaf(b_perm, key)
        total = total + jnp.matmul(_rows(leaves_a[key], axis, n), _rows(wb, axis, n).T,
                                   precision=HIGHEST)
    return total


def _leaf(params, key):
    for p, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jax.tree_util.keystr(p) == key:
            return x
    raise KeyError(key)


def matching_objective(spec: PermutationSpec, perm: Mapping, params_a, params_b) -> jax.Array:
    """``<theta_A, pi(theta_B)>`` summed over every leaf (in HIGHEST precision)."""
    pb = apply_permutation(spec, perm, params_b)
    parts = jax.tree.map(lambda a, b: jnp.vdot(a.ravel(), b.ravel(), precision=HIGHEST),
                         params_a, pb)
    return sum(jax.tree.leaves(parts))


def sweep_order(key: jax.Array, restart: int, sweep: int, num_perms: int) -> np.ndarray:
    """The order in which sweep ``sweep`` of restart ``restart`` visits the permutations."""
    k = jax.random.fold_in(jax.random.fold_in(key, restart), sweep)
    return np.asarray(jax.random.permutation(k, num_perms))


def _spec_params(spec, params):
    """Only the leaves the spec touches (others do not enter any cost matrix)."""
    used = set(spec.axes_to_perm)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(p): x for p, x in flat if jax.tree_util.keystr(p) in used}


def _tied_permutations(spec: PermutationSpec) -> frozenset:
    """Names of the permutations that act on two or more axes of one leaf (``P W P^T``)."""
    return frozenset(n for n, _, axes in spec.entries if len({k for k, _ in axes}) < len(axes))


def _cycles(old: np.ndarray, new: np.ndarray) -> list[np.ndarray]:
    """The move ``old -> new`` of one permutation split into independent cycles.

    Position ``i`` takes unit ``new[i]``, which sat at the position ``j`` with ``old[j] ==
    new[i]``; following ``i -> j`` closes a cycle of positions that exchange units among
    themselves, so ``old`` with only one cycle's positions set to ``new`` is a permutation.
    Cycles are listed by their smallest position; fixed positions are left out.
    """
    where = np.empty_like(old)
    where[old] = np.arange(len(old))
    seen = old == new
    out = []
    for i in range(len(old)):
        if seen[i]:
            continue
        cycle, j = [], i
        while not seen[j]:
            seen[j] = True
            cycle.append(j)
            j = int(where[new[j]])
        out.append(np.asarray(cycle))
    return out


def _tied_step(objective, perm, name, cols, c, current, tol, pa, pb):
    """Accept the proposal ``cols`` for tied permutation ``name``, or some of its cycles.

    The whole proposal is kept if it raises the objective by more than ``tol`` (relative);
    otherwise its cycles are tried one at a time, largest linearised gain ``sum_i c[i, new] -
    c[i, old]`` first, each kept if it raises the objective. Returns the new permutation of
    ``name`` (None if nothing was kept) and its objective.
    """
    better = lambda v, ref: v > ref + tol * max(abs(ref), 1.0)
    value = float(objective({**perm, name: cols}, pa, pb))
    if better(value, current):
        return cols, value
    old, kept = perm[name], None
    cycles = _cycles(old, cols)
    if len(cycles) == 1:  # the whole proposal, already rejected
        return kept, current
    gains = np.array([c[cy, cols[cy]].sum() - c[cy, old[cy]].sum() for cy in cycles])
    for k in np.argsort(-gains, kind="stable"):
        trial = (old if kept is None else kept).copy()
        trial[cycles[k]] = cols[cycles[k]]
        value = float(objective({**perm, name: trial}, pa, pb))
        if better(value, current):
            kept, current = trial, value
    return kept, current


def _run_restart(spec, costs, objective, pa, pb, perm, order_fn, max_sweeps, tol):
    names, tied = spec.names, _tied_permutations(spec)
    perm = {k: np.asarray(v) for k, v in perm.items()}
    history = [float(objective(perm, pa, pb))]
    current = history[0]  # objective of `perm`; None once an untied step has moved it
    converged = False
    for sweep in range(max_sweeps):
        progress = False
        for i in order_fn(sweep):
            name = names[i]
            c = np.asarray(costs[name](perm, pa, pb), dtype=np.float64)
            _, cols = linear_sum_assignment(c, maximize=True)
            old = c[np.arange(len(cols)), perm[name]].sum()
            new = c[np.arange(len(cols)), cols].sum()
            if not new > old + tol * max(abs(old), 1.0):
                continue
            if name in tied:  # the LAP maximised a linearisation: check the true objective
                if current is None:
                    current = float(objective(perm, pa, pb))
                cols, current = _tied_step(objective, perm, name, cols, c, current, tol, pa, pb)
                if cols is None:
                    continue
            else:
                current = None
            perm[name], progress = cols, True
        history.append(float(objective(perm, pa, pb)) if current is None else current)
        current = history[-1]
        if not progress:
            converged = True
            break
    return perm, np.asarray(history), sweep + 1, converged


def weight_matching(spec: PermutationSpec, params_a, params_b, *, key: jax.Array,
                    num_restarts: int = 1, max_sweeps: int = 100, init_perm: Mapping | None = None,
                    tol: float = 1e-12) -> MatchResult:
    """Permutations of ``params_b`` that maximise ``<params_a, pi(params_b)>`` (Git Re-Basin).

    Args:
      spec: the permutation spec (it must fit both models).
      key: drives the sweep orders and the random starts of restarts after the first.
      num_restarts: independent coordinate-descent runs; the best objective wins.
      max_sweeps: cap on sweeps per restart.
      init_perm: start of the first restart (default: identity); warm starts for STE.
      tol: relative improvement needed to accept a new assignment (for a tied permutation,
        of the objective itself; see the module docstring).

    Exact recovery: if ``params_b = pi(params_a)``, the result undoes ``pi`` (see the planted
    tests). Objective values are float64 sums of float32/float64 products.
    """
    check_spec_fits(spec, params_a, "params_a")
    check_models(params_a, params_b)
    if num_restarts < 1 or max_sweeps < 1:
        raise ValueError("num_restarts and max_sweeps must be >= 1")
    pa, pb = _spec_params(spec, params_a), _spec_params(spec, params_b)
    costs, objective = _compiled(_subspec(spec))
    best = None
    finals = []
    for r in range(num_restarts):
        if r == 0:
            start = init_perm if init_perm is not None else identity_permutation(spec)
        else:
            start = random_permutation(spec, jax.random.fold_in(key, 10_000 + r))
        out = _run_restart(spec, costs, objective, pa, pb, start,
                           lambda s, r=r: sweep_order(key, r, s, len(spec.names)),
                           max_sweeps, tol)
        finals.append(out[1][-1])
        if best is None or out[1][-1] > best[1][-1]:
            best = out
    perm, history, sweeps, converged = best
    return MatchResult({k: jnp.asarray(v) for k, v in perm.items()}, float(history[-1]),
                       history, sweeps, converged, np.asarray(finals))


@functools.lru_cache(maxsize=32)
def _compiled(sub: PermutationSpec):
    """Jitted cost-matrix and objective functions per spec (cached: no recompiles on reuse)."""
    costs = {n: jax.jit(functools.partial(cost_matrix, sub, n)) for n in sub.names}
    objective = jax.jit(functools.partial(matching_objective, sub))
    return costs, objective


def _subspec(spec: PermutationSpec) -> PermutationSpec:
    """The same spec with leaf keys rewritten for the flat ``{keystr: leaf}`` dict."""
    entries = tuple((n, s, tuple((f"[{k!r}]", a) for k, a in axes)) for n, s, axes in spec.entries)
    return PermutationSpec(entries)

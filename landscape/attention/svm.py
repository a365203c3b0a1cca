"""Att-SVM: the max-margin token-selection problems of Tarzanagh et al. (2023).

For tokens ``X`` ``(n, T, d)``, queries ``Z`` ``(n, d)`` and a selected token ``alpha_i`` per
example, the attention SVM is

    min ||W||  s.t.  (x_{i,alpha_i} - x_{it})^T W z_i >= 1   for all i and t != alpha_i,

with the Frobenius norm (the limit direction of gradient descent on ``W``; "Att-SVM") or the
nuclear norm (the limit of gradient descent on ``(K, Q)`` with ``W = K Q^T``; "Att-SVM*").
The *general* problem selects a set ``O_i`` of tokens per example (a boolean mask ``(n, T)``):
every selected token must beat every unselected one by a margin of one, and the selected tokens
of an example must tie, ``(x_it - x_it')^T W z_i = 0`` (Tarzanagh et al., "Transformers as SVMs",
Sec. 6). The Frobenius solution is then found in the orthogonal complement of the tie
constraints.

Solvers. ``norm="fro"``: the dual QP in JAX (``landscape.attention.qp``), run in float64 through
``jax.enable_x64(True)`` whatever the global flag; on n=6, T=8, d=10 instances it agrees with
Clarabel (gaps tightened to 1e-11) to 2e-8 relative in ``W`` (median 4e-11).
``norm="nuc"``: an SDP through cvxpy with Clarabel (``solver="CLARABEL"``, default) or SCS;
Clarabel reaches ~1e-7 relative. ``solver="cvxpy"`` solves the Frobenius problem with Clarabel as
an independent reference. Before solving, an LP (SciPy HiGHS) checks feasibility; an infeasible
problem raises ``InfeasibleSVMError`` (a ``ValueError``), or, with ``on_infeasible="flag"``,
returns a solution with ``feasible=False`` and ``W`` filled with NaN: never a bogus ``W``.

``att_svm`` is a host-level function (it validates concrete inputs). For many instances of one
shape inside ``jit``/``vmap`` use ``fro_svm_jax``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from landscape.attention.qp import svm_from_rows
from landscape.data.tokens import check_token_inputs, constraint_rows, selection_feasible

__all__ = [
    "AttSVMSolution", "InfeasibleSVMError", "att_svm", "fro_svm_jax", "svm_margins",
    "tie_projector",
]


class InfeasibleSVMError(ValueError):
    """Raised by ``att_svm`` when no ``W`` separates the selected tokens."""


class AttSVMSolution(NamedTuple):
    """Solution of an attention SVM (host-side numpy arrays, float64).

    Fields:
      W: ``(d, d)`` the max-margin matrix (NaN when infeasible).
      support: ``(n, T)`` bool, unselected tokens whose margin constraint is tight (margin within
        ``support_tol`` of 1): the support tokens of Tarzanagh et al.
      margins: ``(n, T)`` ``min_{s selected} (x_is - x_it)^T W z_i`` for unselected ``t``;
        ``+inf`` at selected tokens.
      selected: ``(n, T)`` bool, the selected index set.
      norm: ``"fro"`` or ``"nuc"``. objective: ``||W||`` in that norm.
      feasible: bool. status: solver status string. solver: solver name.
      max_violation: ``max(0, 1 - min margin)`` plus the largest tie residual (0 if exact).
      num_iterations: solver iterations. kkt_residual: dual KKT residual (JAX solver), else NaN.
      feasibility: message of the LP feasibility check.
    """

    W: np.ndarray
    support: np.ndarray
    margins: np.ndarray
    selected: np.ndarray
    norm: str
    objective: float
    feasible: bool
    status: str
    solver: str
    max_violation: float
    num_iterations: int
    kkt_residual: float
    feasibility: str


def svm_margins(X, Z, selected, W) -> np.ndarray:
    """Margins ``(n, T)``: ``min_{s in O_i} (x_is - x_it)^T W z_i`` (``+inf`` where selected)."""
    X, Z, mask = check_token_inputs(X, Z, selected, name_sel="selected")
    s = np.einsum("ntd,de,ne->nt", X.astype(np.float64), np.asarray(W, np.float64), Z)
    best_sel = np.where(mask, s, np.inf).min(axis=1, keepdims=True)
    return np.where(mask, np.inf, best_sel - s)


def fro_svm_jax(X, Z, opt_index, *, tol: float = 1e-11, max_iter: int = 50_000):
    """Frobenius Att-SVM for one selected token per example, pure JAX (jit/vmap-able).

    Args: X ``(n,T,d)``, Z ``(n,d)``, opt_index ``(n,)`` int. Returns ``(W, DualQPResult)``.
    Runs in the dtype of ``X`` (call it under ``jax.enable_x64(True)`` with float64 inputs for
    1e-10 accuracy). No input validation and no feasibility check: see ``att_svm``.
    """
    n, T, d = X.shape
    x_opt = jnp.take_along_axis(X, opt_index[:, None, None], axis=1)
    rows = jnp.einsum("ntd,ne->ntde", x_opt - X, Z).reshape(n * T, d * d)
    mask = (jnp.arange(T)[None, :] != opt_index[:, None]).reshape(-1)
    w, sol = svm_from_rows(rows, mask, tol=tol, max_iter=max_iter)
    return w.reshape(d, d), sol


_SVM_JIT = jax.jit(svm_from_rows, static_argnames="max_iter")


def tie_projector(A_eq: np.ndarray, dd: int) -> np.ndarray:
    """Orthogonal projector ``(dd, dd)`` onto the complement of span(rows of ``A_eq``).

    With ``A_eq`` from ``constraint_rows`` this projects ``vec(W)`` onto the matrices that give
    every selected token of an example the same score (``S_fin`` complement in Tarzanagh et al.).
    """
    if len(A_eq) == 0:
        return np.eye(dd)
    u, s, _ = np.linalg.svd(A_eq.T, full_matrices=False)
    basis = u[:, s > 1e-12 * max(s.max(), 1.0)]
    return np.eye(dd) - basis @ basis.T


def _solve_fro_jax(A_ub, A_eq, tol, max_iter):
    P = tie_projector(A_eq, A_ub.shape[1])
    with jax.enable_x64(True):
        w, sol = _SVM_JIT(
            jnp.asarray(A_ub @ P, jnp.float64), tol=tol, max_iter=max_iter)
        ok = bool(sol.converged)
        status = "optimal" if ok else "not converged (raise max_iter)"
        d = int(round(np.sqrt(A_ub.shape[1])))
        W = np.asarray(w).reshape(d, d)
        return W, status, int(sol.num_iterations), float(sol.kkt_residual), "jax-dual-qp"


def _solve_cvxpy(A_ub, A_eq, d, norm, solver):
    import cvxpy as cp

    W = cp.Variable((d, d))
    w = cp.reshape(W, (d * d,), order="C")
    cons = [A_ub @ w >= 1] + ([A_eq @ w == 0] if len(A_eq) else [])
    obj = cp.sum_squares(w) if norm == "fro" else cp.normNuc(W)
    prob = cp.Problem(cp.Minimize(obj), cons)
    if solver == "SCS":
        opts = {"max_iters": 200_000, "eps": 1e-9}
    else:  # Clarabel's default 1e-8 gaps leave ~1e-5 relative error in W; tighten them
        tol = 1e-11 if norm == "fro" else 1e-9  # the SDP stalls before 1e-11
        opts = {"tol_gap_abs": tol, "tol_gap_rel": tol, "tol_feas": tol}
    prob.solve(solver=solver, **opts)
    if W.value is None:
        return np.full((d, d), np.nan), str(prob.status), -1, np.nan, f"cvxpy-{solver}"
    iters = int(getattr(prob.solver_stats, "num_iters", None) or -1)
    return np.asarray(W.value), str(prob.status), iters, np.nan, f"cvxpy-{solver}"


def att_svm(
    X, Z, opt_index, *, norm: str = "fro", solver: str | None = None, on_infeasible: str = "raise",
    support_tol: float | None = None, tol: float = 1e-11, max_iter: int = 50_000,
) -> AttSVMSolution:
    """Solve Att-SVM (``norm="fro"``) or Att-SVM* (``norm="nuc"``); see the module docstring.

    Args:
      X: ``(n, T, d)`` tokens. Z: ``(n, d)`` queries.
      opt_index: ``(n,)`` int selected token per example, or a bool mask ``(n, T)`` (general SVM).
      norm: ``"fro"`` or ``"nuc"``.
      solver: ``"jax"`` (fro only, default for fro), ``"CLARABEL"`` (default for nuc), ``"SCS"``,
        or ``"cvxpy"`` (= Clarabel).
      on_infeasible: ``"raise"`` (``InfeasibleSVMError``) or ``"flag"``.
      support_tol: tolerance on ``margin - 1`` for the support tokens (default 1e-7 for the JAX
        solver, 1e-5 for cvxpy solvers).
      tol, max_iter: settings of the JAX dual solver.
    """
    if norm not in ("fro", "nuc"):
        raise ValueError(f"norm must be 'fro' or 'nuc'; got {norm!r}")
    if on_infeasible not in ("raise", "flag"):
        raise ValueError(f"on_infeasible must be 'raise' or 'flag'; got {on_infeasible!r}")
    solver = solver or ("jax" if norm == "fro" else "CLARABEL")
    solver = "CLARABEL" if solver == "cvxpy" else solver
    if solver not in ("jax", "CLARABEL", "SCS") or (solver == "jax" and norm == "nuc"):
        raise ValueError(
            f"solver must be 'jax' (fro only), 'CLARABEL', 'SCS' or 'cvxpy'; got {solver!r}")
    X, Z, mask = check_token_inputs(X, Z, opt_index)
    X, Z = X.astype(np.float64), Z.astype(np.float64)
    n, T, d = X.shape
    feasible, message = selection_feasible(X, Z, mask)
    if not feasible:
        if on_infeasible == "raise":
            raise InfeasibleSVMError(
                f"att_svm: no W meets the margin constraints of opt_index ({message})")
        nan = np.full((d, d), np.nan)
        return AttSVMSolution(nan, np.zeros((n, T), bool), np.full((n, T), np.nan), mask, norm,
                              np.nan, False, "infeasible", solver, np.nan, 0, np.nan, message)
    A_ub, A_eq = constraint_rows(X, Z, mask)
    if solver == "jax":
        W, status, iters, kkt, name = _solve_fro_jax(A_ub, A_eq, tol, max_iter)
    else:
        W, status, iters, kkt, name = _solve_cvxpy(A_ub, A_eq, d, norm, solver)
    return _finish(X, Z, mask, W, norm, status, name, iters, kkt, message, A_eq, support_tol)


def _finish(X, Z, mask, W, norm, status, name, iters, kkt, message, A_eq, support_tol):
    margins = svm_margins(X, Z, mask, W)
    tie = float(np.abs(A_eq @ W.ravel()).max()) if len(A_eq) else 0.0
    violation = max(0.0, 1.0 - float(margins.min())) + tie
    stol = support_tol if support_tol is not None else (1e-7 if name == "jax-dual-qp" else 1e-5)
    support = ~mask & (np.abs(margins - 1.0) <= stol)
    obj = float(np.linalg.norm(W) if norm == "fro" else np.linalg.svd(W, compute_uv=False).sum())
    ok = status.startswith("optimal")
    return AttSVMSolution(W, support, margins, mask, norm, obj, ok, status, name, violation,
                          iters, kkt, message)

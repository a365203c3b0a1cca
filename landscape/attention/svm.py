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
constraints. The constraint rows, margins and the LP feasibility check are in
``landscape.attention.constraints``.

Solvers. ``norm="fro"``: the dual QP in JAX (``landscape.attention.qp``), run in float64 through
``jax.enable_x64(True)`` whatever the global flag; on n=6, T=8, d=10 instances it agrees with
Clarabel (gaps tightened to 1e-11) to 2e-8 relative in ``W`` (median 4e-11). When it does not
reach its tolerance (for example on nearly degenerate data, two tokens ``1e-8`` apart, where the
dual Gram matrix has condition number ~1e16 and ``||W|| ~ 1e8``), ``att_svm`` falls back to
Clarabel through cvxpy. ``norm="nuc"``: an SDP through cvxpy with Clarabel
(``solver="CLARABEL"``, default) or SCS; Clarabel reaches ~1e-7 relative. ``solver="cvxpy"``
solves the Frobenius problem with Clarabel as an independent reference. Every cvxpy solve works
in the variable ``V = W / sigma`` with ``sigma = 1 / min_k ||a_k||``, a lower bound of ``||W||``
(``a_k`` the margin rows projected on the tie complement), so that the solver's absolute
tolerances and its infeasibility test act on a problem of unit scale.

Three separate answers come back. ``feasible``: the LP check (SciPy HiGHS) says some ``W`` meets
the constraints. ``converged``: the solver reported success *and* the measured constraint
violation ``max_violation`` is at most ``violation_tol``. ``kkt_residual``: the natural residual
of the dual (see ``AttSVMSolution``). An infeasible problem raises
``InfeasibleSVMError`` (a ``ValueError``) or, with ``on_infeasible="flag"``, returns
``feasible=False`` and ``W`` filled with NaN. A feasible problem that no solver solved to
tolerance raises ``UnconvergedSVMError`` (a ``RuntimeError``) or, with ``on_unconverged="flag"``,
returns ``converged=False`` with the best ``W`` found and its measured violation. A ``W`` that
breaks the constraints by more than ``violation_tol`` never comes back unflagged.

``att_svm`` is a host-level function (it validates concrete inputs). For many instances of one
shape inside ``jit``/``vmap`` use ``fro_svm_jax``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from landscape import reprs
from landscape.attention.constraints import (
    check_token_inputs,
    constraint_rows,
    onehot_constraint_rows,
    selection_feasible,
    svm_margins,
    tie_projector,
)
from landscape.attention.qp import svm_from_rows

__all__ = [
    "AttSVMSolution", "InfeasibleSVMError", "UnconvergedSVMError", "att_svm", "fro_svm_jax",
]


class InfeasibleSVMError(ValueError):
    """Raised by ``att_svm`` when no ``W`` separates the selected tokens (per the LP check)."""


class UnconvergedSVMError(RuntimeError):
    """Raised by ``att_svm`` when the SVM is feasible but no solver met its tolerances."""


class AttSVMSolution(NamedTuple):
    """Solution of an attention SVM (host-side numpy arrays, float64).

    Fields:
      W: ``(d, d)`` the max-margin matrix (NaN when infeasible, or when no solver returned one).
      support: ``(n, T)`` bool, unselected tokens whose margin constraint is tight (margin within
        ``support_tol`` of 1): the support tokens of Tarzanagh et al.
      margins: ``(n, T)`` ``min_{s selected} (x_is - x_it)^T W z_i`` for unselected ``t``;
        ``+inf`` at selected tokens.
      selected: ``(n, T)`` bool, the selected index set.
      norm: ``"fro"`` or ``"nuc"``. objective: ``||W||`` in that norm.
      feasible: the LP feasibility check found some ``W`` meeting every constraint.
      converged: the solver reported success and ``max_violation <= violation_tol`` (False
        whenever ``feasible`` is False).
      status: solver status string (``"optimal"`` on success; otherwise what each solver tried
        reported). solver: the solver that produced ``W`` (``"jax-dual-qp"``,
        ``"cvxpy-CLARABEL"``, ``"cvxpy-SCS"``, or ``"cvxpy-CLARABEL (fallback from
        jax-dual-qp)"``).
      max_violation: measured ``max(0, 1 - min margin)`` plus the largest tie residual
        ``|(x_it - x_it0)^T W z_i|`` (0 if exact).
      num_iterations: iterations of that solver.
      kkt_residual: Frobenius norm only (NaN otherwise, or when the solver returned no duals):
        ``max_k |lam_k - max(lam_k - s_k, 0)|`` with ``lam`` the duals of the margin constraints
        (for ``min ||W||_F^2 / 2``), ``w = A^T lam`` and ``s = A w - 1``, ``A`` the margin rows
        projected on the tie complement: the natural residual of the dual QP, zero exactly at
        the optimum; in margin units where a constraint is tight (``s_k``), so it stays
        meaningful when ``lam`` is huge.
      feasibility: message of the LP feasibility check.
    """

    W: np.ndarray
    support: np.ndarray
    margins: np.ndarray
    selected: np.ndarray
    norm: str
    objective: float
    feasible: bool
    converged: bool
    status: str
    solver: str
    max_violation: float
    num_iterations: int
    kkt_residual: float
    feasibility: str

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.line("AttSVMSolution", [
            f"feasible={self.feasible}", f"converged={self.converged}",
            f"objective={reprs.num(self.objective)} ({self.norm})", f"W={reprs.shape(self.W)}",
            f"support={int(np.count_nonzero(self.support))} tokens",
            f"max_violation={reprs.num(self.max_violation)}",
            f"kkt_residual={reprs.num(self.kkt_residual)}", f"solver={self.solver!r}",
            f"status={self.status!r}", f"num_iterations={self.num_iterations}"])


def fro_svm_jax(X, Z, opt_index, *, tol: float = 1e-11, max_iter: int = 50_000):
    """Frobenius Att-SVM for one selected token per example, pure JAX (jit/vmap-able).

    Args: X ``(n,T,d)``, Z ``(n,d)``, opt_index ``(n,)`` int. Returns ``(W, DualQPResult)``.
    Runs in the dtype of ``X`` (call it under ``jax.enable_x64(True)`` with float64 inputs for
    1e-10 accuracy). No input validation, no feasibility check and no fallback: check
    ``DualQPResult.converged`` (``att_svm`` does all three).
    """
    d = X.shape[2]
    rows, mask = onehot_constraint_rows(X, Z, opt_index)
    w, sol = svm_from_rows(rows, mask, tol=tol, max_iter=max_iter)
    return w.reshape(d, d), sol


_SVM_JIT = jax.jit(svm_from_rows, static_argnames="max_iter")


class _Attempt(NamedTuple):
    W: np.ndarray
    status: str
    solved: bool  # the solver's own verdict
    iterations: int
    kkt: float
    solver: str


def _dual_kkt(R: np.ndarray, lam: np.ndarray) -> float:
    """Natural residual of the SVM dual at ``lam`` (see ``AttSVMSolution.kkt_residual``)."""
    lam = np.asarray(lam, np.float64).ravel()
    if lam.shape != (R.shape[0],) or not np.all(np.isfinite(lam)):
        return float("nan")
    slack = R @ (lam @ R) - 1.0
    return float(np.abs(lam - np.maximum(lam - slack, 0.0)).max())


def _violation(A_ub: np.ndarray, A_eq: np.ndarray, W: np.ndarray) -> float:
    w = np.asarray(W, np.float64).ravel()
    if not np.all(np.isfinite(w)):
        return float("nan")
    tie = float(np.abs(A_eq @ w).max()) if len(A_eq) else 0.0
    return max(0.0, 1.0 - float((A_ub @ w).min())) + tie


def _solve_fro_jax(R: np.ndarray, tol: float, max_iter: int) -> _Attempt:
    d = math.isqrt(R.shape[1])
    with jax.enable_x64(True):
        w, sol = _SVM_JIT(jnp.asarray(R, jnp.float64), tol=tol, max_iter=max_iter)
        W = np.asarray(w, np.float64).reshape(d, d)
        ok, iters, kkt = bool(sol.converged), int(sol.num_iterations), float(sol.kkt_residual)
    status = "optimal" if ok else (f"stopped after {iters} iterations at dual KKT residual "
                                   f"{kkt:.1e} > tol max(1, max lam), tol = {tol:.0e}")
    return _Attempt(W, status, ok, iters, kkt, "jax-dual-qp")


def _solve_cvxpy(A_ub, A_eq, R, d, norm, solver, name=None) -> _Attempt:
    import cvxpy as cp

    name = name or f"cvxpy-{solver}"
    nan = np.full((d, d), np.nan)
    # ||W|| >= 1 / ||a_k|| for every feasible W: solve for V = W / sigma, a problem of unit scale
    sigma = 1.0 / max(float(np.linalg.norm(R, axis=1).min()), np.finfo(np.float64).tiny)
    W = cp.Variable((d, d))
    w = cp.reshape(W, (d * d,), order="C")
    margins = A_ub @ w >= 1.0 / sigma
    cons = [margins] + ([A_eq @ w == 0] if len(A_eq) else [])
    obj = cp.sum_squares(w) if norm == "fro" else cp.normNuc(W)
    prob = cp.Problem(cp.Minimize(obj), cons)
    if solver == "SCS":
        opts = {"max_iters": 200_000, "eps": 1e-9}
    else:  # Clarabel's default 1e-8 gaps leave ~1e-5 relative error in W; tighten them
        tol = 1e-11 if norm == "fro" else 1e-9  # the SDP stalls before 1e-11
        opts = {"tol_gap_abs": tol, "tol_gap_rel": tol, "tol_feas": tol}
    try:
        prob.solve(solver=solver, **opts)
    except cp.error.SolverError as exc:
        return _Attempt(nan, f"solver error: {exc}", False, -1, float("nan"), name)
    status = str(prob.status)
    iters = int(getattr(prob.solver_stats, "num_iters", None) or -1)
    if W.value is None:
        return _Attempt(nan, status, False, iters, float("nan"), name)
    kkt = float("nan")
    if norm == "fro" and margins.dual_value is not None:
        # duals of min ||V||^2 (no 1/2) in V = W / sigma -> duals of min ||W||^2 / 2
        kkt = _dual_kkt(R, sigma * np.asarray(margins.dual_value, np.float64) / 2.0)
    # "optimal_inaccurate" is accepted like "optimal": att_svm measures the constraint violation
    # of every candidate itself and accepts only W within violation_tol (its status is kept).
    solved = status in ("optimal", "optimal_inaccurate")
    return _Attempt(sigma * np.asarray(W.value, np.float64), status, solved, iters, kkt, name)


def att_svm(
    X, Z, opt_index, *, norm: str = "fro", solver: str | None = None, on_infeasible: str = "raise",
    on_unconverged: str = "raise", fallback: bool = True, violation_tol: float = 1e-6,
    support_tol: float | None = None, tol: float = 1e-11, max_iter: int = 50_000,
) -> AttSVMSolution:
    """Solve Att-SVM (``norm="fro"``) or Att-SVM* (``norm="nuc"``); see the module docstring.

    Args:
      X: ``(n, T, d)`` tokens. Z: ``(n, d)`` queries.
      opt_index: ``(n,)`` int selected token per example, or a bool mask ``(n, T)`` (general SVM).
      norm: ``"fro"`` or ``"nuc"``.
      solver: ``"jax"`` (fro only, default for fro), ``"CLARABEL"`` (default for nuc), ``"SCS"``,
        or ``"cvxpy"`` (= Clarabel).
      on_infeasible: ``"raise"`` (``InfeasibleSVMError``) or ``"flag"`` (``feasible=False``, NaN
        ``W``) when the LP check finds no feasible ``W``.
      on_unconverged: ``"raise"`` (``UnconvergedSVMError``) or ``"flag"`` (``converged=False``,
        the best ``W`` found, its ``max_violation``) when the problem is feasible but no solver
        met its tolerance with ``max_violation <= violation_tol``.
      fallback: with ``solver="jax"``, re-solve with Clarabel when the JAX dual QP does not
        converge.
      violation_tol: largest accepted constraint violation (absolute, on margins normalised to 1).
      support_tol: tolerance on ``margin - 1`` for the support tokens (default 1e-7 for the JAX
        solver, 1e-5 for cvxpy solvers).
      tol, max_iter: settings of the JAX dual solver.
    """
    if norm not in ("fro", "nuc"):
        raise ValueError(f"norm must be 'fro' or 'nuc'; got {norm!r}")
    if on_infeasible not in ("raise", "flag"):
        raise ValueError(f"on_infeasible must be 'raise' or 'flag'; got {on_infeasible!r}")
    if on_unconverged not in ("raise", "flag"):
        raise ValueError(f"on_unconverged must be 'raise' or 'flag'; got {on_unconverged!r}")
    if not isinstance(fallback, (bool, np.bool_)):
        raise TypeError(f"fallback must be a bool; got {fallback!r}")
    if isinstance(violation_tol, bool) or not (
            isinstance(violation_tol, (int, float, np.integer, np.floating))
            and 0.0 < float(violation_tol) < np.inf):
        raise ValueError(f"violation_tol must be a positive finite number; got {violation_tol!r}")
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
                              np.nan, False, False, "infeasible", solver, np.nan, 0, np.nan,
                              message)
    A_ub, A_eq = constraint_rows(X, Z, mask)
    R = A_ub @ tie_projector(A_eq, d * d)

    def accepted(att: _Attempt) -> bool:
        return att.solved and _violation(A_ub, A_eq, att.W) <= violation_tol

    if solver == "jax":
        attempts = [_solve_fro_jax(R, tol, max_iter)]
        if fallback and not accepted(attempts[0]):
            attempts.append(_solve_cvxpy(A_ub, A_eq, R, d, norm, "CLARABEL",
                                         name="cvxpy-CLARABEL (fallback from jax-dual-qp)"))
    else:
        attempts = [_solve_cvxpy(A_ub, A_eq, R, d, norm, solver)]
    good = [a for a in attempts if accepted(a)]
    if good:
        return _finish(X, Z, mask, norm, good[0], True, message, A_ub, A_eq, support_tol)
    report = "; ".join(
        f"{a.solver}: {a.status}, max violation {_violation(A_ub, A_eq, a.W):.2e}"
        for a in attempts)
    if on_unconverged == "raise":
        raise UnconvergedSVMError(
            f"att_svm: the LP check says the selection is feasible, but no solver met the "
            f"constraints within violation_tol={violation_tol:.0e} ({report}). Nearly "
            f"degenerate data (two tokens almost equal, so ||W|| must be huge) do this; so do "
            f"too small a max_iter or too loose a tol. Pass on_unconverged='flag' to get the "
            f"best W with its measured violation.")
    viol = [_violation(A_ub, A_eq, a.W) for a in attempts]
    best = attempts[int(np.argmin([np.inf if np.isnan(v) else v for v in viol]))]
    return _finish(X, Z, mask, norm, best._replace(status=f"not converged ({report})"), False,
                   message, A_ub, A_eq, support_tol)


def _finish(X, Z, mask, norm, att: _Attempt, converged, message, A_ub, A_eq, support_tol):
    W = att.W
    margins = svm_margins(X, Z, mask, W)
    violation = _violation(A_ub, A_eq, W)
    stol = support_tol if support_tol is not None else (
        1e-7 if att.solver == "jax-dual-qp" else 1e-5)
    support = ~mask & (np.abs(margins - 1.0) <= stol)
    if not np.all(np.isfinite(W)):
        obj = float("nan")
    elif norm == "fro":
        obj = float(np.linalg.norm(W))
    else:
        obj = float(np.linalg.svd(W, compute_uv=False).sum())
    return AttSVMSolution(W, support, margins, mask, norm, obj, True, bool(converged), att.status,
                          att.solver, violation, att.iterations, att.kkt, message)

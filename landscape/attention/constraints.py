"""Constraint algebra of the attention SVM (Tarzanagh, Li, Zhang, Oymak 2023; Tarzanagh, Li,
Thrampoulidis, Oymak 2023).

For tokens ``X`` ``(n, T, d)``, queries ``Z`` ``(n, d)`` and a selected set ``O_i`` of tokens per
example (one token, ``opt_index`` ``(n,)``, or a boolean mask ``(n, T)``), the score of token ``t``
under ``W`` ``(d, d)`` is ``x_it^T W z_i = <x_it z_i^T, W>``. The attention SVM constrains

    margins:  (x_it - x_is)^T W z_i >= 1    for t in O_i, s not in O_i,
    ties:     (x_it - x_it0)^T W z_i  = 0    for t in O_i, t0 the first token of O_i,

both linear in ``vec(W)``: a row ``vec((x_it - x_is) z_i^T)`` (row-major ``vec``, so that
``rows @ W.ravel()`` are the margins) per constraint. With a single selected token there are no
ties and the rows are ``(x_{i,opt_i} - x_it) (x) z_i`` for ``t != opt_i``.

This module holds that algebra: input validation (``check_token_inputs``), the rows in numpy
(``constraint_rows``) and in JAX (``onehot_constraint_rows``, jit/vmap-able), the margins of a
given ``W`` (``svm_margins``), the projector onto the complement of the tie space
(``tie_projector``), and the LP feasibility check (``selection_feasible``: by Gordan's
alternative the margins are infeasible exactly when a non-negative, non-zero combination of the
rows vanishes on the tie space). The data generators (``landscape.data.tokens``) do not depend on
it; it depends on nothing in ``landscape`` but JAX and NumPy.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_token_inputs",
    "constraint_rows",
    "onehot_constraint_rows",
    "svm_margins",
    "tie_projector",
    "selection_feasible",
]


def check_token_inputs(X, Z, selected=None, *, name_sel: str = "opt_index"):
    """Validate ``X (n,T,d)``, ``Z (n,d)`` and a selection; return numpy ``(X, Z, mask)``.

    ``selected`` is either an int array ``(n,)`` of token indices or a boolean mask ``(n, T)``
    with at least one selected and one unselected token per row (``mask`` is ``None`` when
    ``selected`` is). Raises ``ValueError`` naming the argument on mismatched shapes,
    out-of-range indices or non-finite data, and ``TypeError`` on non-float tokens or a
    selection that is neither int nor bool.
    """
    X, Z = np.asarray(X), np.asarray(Z)
    if X.ndim != 3:
        raise ValueError(f"X must have shape (n, T, d); got shape {X.shape}")
    n, T, d = X.shape
    if T < 2:
        raise ValueError(f"X must hold at least 2 tokens per example; got T={T}")
    if Z.shape != (n, d):
        raise ValueError(f"Z must have shape (n, d) = {(n, d)} to match X; got {Z.shape}")
    for nm, arr in (("X", X), ("Z", Z)):
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"{nm} must be a floating array; got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{nm} contains non-finite values (NaN or inf)")
    if selected is None:
        return X, Z, None
    sel = np.asarray(selected)
    if sel.dtype == bool:
        if sel.shape != (n, T):
            raise ValueError(
                f"{name_sel} as a mask must have shape (n, T) = {(n, T)}; got {sel.shape}")
        if not (sel.any(axis=1).all() and (~sel).any(axis=1).all()):
            raise ValueError(f"{name_sel} must select at least one and not all tokens in every row")
        return X, Z, sel
    if not np.issubdtype(sel.dtype, np.integer):
        raise TypeError(
            f"{name_sel} must be an int array (n,) or a bool mask (n, T); got {sel.dtype}")
    if sel.shape != (n,):
        raise ValueError(f"{name_sel} must have shape (n,) = ({n},); got {sel.shape}")
    if sel.min() < 0 or sel.max() >= T:
        raise ValueError(
            f"{name_sel} entries must lie in [0, T) = [0, {T}); got {sel.min()}..{sel.max()}")
    return X, Z, np.arange(T)[None, :] == sel[:, None]


def constraint_rows(X: np.ndarray, Z: np.ndarray, mask: np.ndarray):
    """Constraint rows of the (general) attention SVM as numpy float arrays.

    Args: X ``(n, T, d)``, Z ``(n, d)``, mask ``(n, T)`` bool (validated inputs, see
    ``check_token_inputs``).

    Returns ``(A_ub, A_eq)``: ``A_ub`` ``(K, d*d)`` holds ``vec((x_it - x_is) z_i^T)`` for every
    selected ``t`` and unselected ``s`` of every example (row-major ``vec``, so that
    ``A_ub @ W.ravel()`` are the margins); ``A_eq`` ``(E, d*d)`` holds ``vec((x_it - x_it0) z_i^T)``
    tying the selected tokens of an example to its first selected token ``t0``.
    """
    ub, eq = [], []
    for i in range(X.shape[0]):
        sel, rest = np.flatnonzero(mask[i]), np.flatnonzero(~mask[i])
        for t in sel:
            for s in rest:
                ub.append(np.outer(X[i, t] - X[i, s], Z[i]).ravel())
        for t in sel[1:]:
            eq.append(np.outer(X[i, t] - X[i, sel[0]], Z[i]).ravel())
    dd = X.shape[2] ** 2
    return np.asarray(ub).reshape(-1, dd), np.asarray(eq).reshape(-1, dd)


def onehot_constraint_rows(X, Z, opt_index):
    """Margin rows for one selected token per example, in JAX (jit- and vmap-able).

    Args: X ``(n, T, d)``, Z ``(n, d)``, opt_index ``(n,)`` int.

    Returns ``(rows, mask)``: ``rows`` ``(n*T, d*d)`` with row ``i*T + t`` equal to
    ``vec((x_{i,opt_i} - x_it) z_i^T)`` (row-major ``vec``), and ``mask`` ``(n*T,)`` bool, False
    at the ``t = opt_i`` rows (which are zero and are not constraints). No input validation.
    """
    n, T, d = X.shape
    x_opt = jnp.take_along_axis(X, opt_index[:, None, None], axis=1)
    rows = jnp.einsum("ntd,ne->ntde", x_opt - X, Z).reshape(n * T, d * d)
    mask = (jnp.arange(T)[None, :] != opt_index[:, None]).reshape(-1)
    return rows, mask


def svm_margins(X, Z, selected, W) -> np.ndarray:
    """Margins ``(n, T)``: ``min_{s in O_i} (x_is - x_it)^T W z_i`` (``+inf`` where selected).

    Args: X ``(n, T, d)``, Z ``(n, d)``, selected ``(n,)`` int or ``(n, T)`` bool, W ``(d, d)``.
    Computed in float64 on the host.
    """
    X, Z, mask = check_token_inputs(X, Z, selected, name_sel="selected")
    s = np.einsum("ntd,de,ne->nt", X.astype(np.float64), np.asarray(W, np.float64), Z)
    best_sel = np.where(mask, s, np.inf).min(axis=1, keepdims=True)
    return np.where(mask, np.inf, best_sel - s)


def tie_projector(A_eq: np.ndarray, dd: int) -> np.ndarray:
    """Orthogonal projector ``(dd, dd)`` onto the complement of span(rows of ``A_eq``).

    With ``A_eq`` from ``constraint_rows`` this projects ``vec(W)`` onto the matrices that give
    every selected token of an example the same score (the complement of ``S_fin`` in Tarzanagh,
    Li, Thrampoulidis, Oymak 2023, Sec. 6). Singular directions below ``1e-12`` relative are
    treated as zero.
    """
    if len(A_eq) == 0:
        return np.eye(dd)
    u, s, _ = np.linalg.svd(A_eq.T, full_matrices=False)
    basis = u[:, s > 1e-12 * max(s.max(), 1.0)]
    return np.eye(dd) - basis @ basis.T


def selection_feasible(X, Z, selected, *, tol: float = 1e-9) -> tuple[bool, str]:
    """Whether some ``W`` satisfies ``(x_it - x_is)^T W z_i >= 1`` for selected t, unselected s.

    Args: X ``(n, T, d)``, Z ``(n, d)``, selected ``(n,)`` int or ``(n, T)`` bool; ``tol``:
    HiGHS primal feasibility tolerance.

    Solves the feasibility LP ``min 0 s.t. A_ub vec(W) >= 1, A_eq vec(W) = 0`` with SciPy HiGHS
    in float64 (host side). Returns ``(feasible, message)``. By Gordan's alternative the problem
    is infeasible exactly when a non-negative, non-zero combination of the margin rows lies in
    the span of the tie rows, for example when two tokens of one example coincide or ``d`` is
    too small for ``n (T-1)`` constraints. When a selected set holds several tokens, the
    selected tokens are also constrained to share one score (``(x_it - x_it')^T W z_i = 0``),
    as in the general SVM of Tarzanagh, Li, Thrampoulidis, Oymak (2023).

    Feasible is not the same as well posed: two tokens ``eps`` apart are feasible, but need
    ``||W|| >= 1 / (eps ||z||)``; ``att_svm`` reports how well it solved such an instance.
    """
    from scipy.optimize import linprog

    X, Z, mask = check_token_inputs(X, Z, selected, name_sel="selected")
    A_ub, A_eq = constraint_rows(X.astype(np.float64), Z.astype(np.float64), mask)
    dd = A_ub.shape[1]
    res = linprog(
        np.zeros(dd), A_ub=-A_ub, b_ub=-np.ones(len(A_ub)),
        A_eq=A_eq if len(A_eq) else None, b_eq=np.zeros(len(A_eq)) if len(A_eq) else None,
        bounds=[(None, None)] * dd, method="highs", options={"primal_feasibility_tolerance": tol},
    )
    if res.status == 0:
        return True, "feasible (HiGHS found a W meeting every margin constraint)"
    if res.status == 2:
        return False, "infeasible: no W separates the selected tokens with a positive margin"
    return False, f"feasibility LP did not finish: {res.message}"


"""Token-selection data for the attention-as-SVM checks (Tarzanagh et al. 2023).

An example ``i`` is a sequence of ``T`` tokens ``X_i`` (shape ``(T, d)``), a query token ``z_i``
(shape ``(d,)``) and a label ``Y_i`` in ``{-1, +1}``. A fixed head ``v`` (shape ``(d,)``) scores
each token: ``gamma_it = Y_i v^T x_it``. The *optimal* token of example ``i`` is the one with the
highest score. A one-layer attention model ``f(X) = v^T X^T softmax(X W z)`` fits the data best by
putting all of its softmax mass on the optimal tokens, which is why gradient descent on ``W``
turns into a max-margin token selection problem (see ``landscape.attention.svm``).

Everything here is deterministic given the ``jax.random`` key. Arrays are created in JAX's
default float dtype (float32, or float64 under ``JAX_ENABLE_X64=1``) unless ``dtype`` is given.

``selection_feasible`` answers whether *some* ``W`` separates a chosen token of every example
from the others (``(x_sel - x_t)^T W z >= 1``); it solves a linear program with SciPy's HiGHS in
float64 and is a host-side (non-jit) check.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "TokenData",
    "token_selection_data",
    "token_scores",
    "optimal_tokens",
    "score_gap",
    "selection_mask",
    "selection_feasible",
    "check_token_inputs",
    "constraint_rows",
]


class TokenData(NamedTuple):
    """A token-selection dataset.

    Fields:
      X: ``(n, T, d)`` tokens. Z: ``(n, d)`` query tokens. Y: ``(n,)`` labels in ``{-1, +1}``.
      v: ``(d,)`` head. scores: ``(n, T)`` ``gamma_it = Y_i v^T x_it``.
      opt_index: ``(n,)`` int32, the highest-scoring token of each example.
    """

    X: jax.Array
    Z: jax.Array
    Y: jax.Array
    v: jax.Array
    scores: jax.Array
    opt_index: jax.Array


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def token_selection_data(key, n: int, T: int, d: int, *, dtype=None, unit_norm: bool = True):
    """Random token-selection data: tokens, queries and head on the unit sphere, random labels.

    Args:
      key: ``jax.random`` key.
      n, T, d: number of examples, tokens per example, embedding dimension (all >= 1, T >= 2).
      dtype: float dtype (default: JAX's default float).
      unit_norm: if False, entries are i.i.d. ``N(0, 1/d)`` instead of unit vectors.

    Returns a ``TokenData``. With continuous draws the optimal token is unique with probability 1.
    """
    for name, val, lo in (("n", n, 1), ("T", T, 2), ("d", d, 1)):
        if not isinstance(val, (int, np.integer)) or val < lo:
            raise ValueError(f"{name} must be an int >= {lo}; got {val!r}")
    dtype = dtype or jnp.result_type(float)
    kx, kz, kv, ky = jax.random.split(key, 4)
    X = jax.random.normal(kx, (n, T, d), dtype)
    Z = jax.random.normal(kz, (n, d), dtype)
    v = jax.random.normal(kv, (d,), dtype)
    if unit_norm:
        X, Z, v = _unit(X), _unit(Z), _unit(v)
    else:
        X, Z, v = X / np.sqrt(d), Z / np.sqrt(d), v / np.sqrt(d)
    Y = jnp.where(jax.random.bernoulli(ky, 0.5, (n,)), 1.0, -1.0).astype(dtype)
    scores = token_scores(X, Y, v)
    return TokenData(X, Z, Y, v, scores, optimal_tokens(scores))


def token_scores(X, Y, v) -> jax.Array:
    """Scores ``gamma_it = Y_i v^T x_it`` ``(n, T)`` for X ``(n,T,d)``, Y ``(n,)``, v ``(d,)``."""
    return Y[:, None] * jnp.einsum("ntd,d->nt", X, v)


def optimal_tokens(scores) -> jax.Array:
    """Index of the highest-scoring token of each example, shape ``(n,)`` int32."""
    return jnp.argmax(scores, axis=-1).astype(jnp.int32)


def score_gap(scores) -> jax.Array:
    """Gap between the best and the second-best score of each example, shape ``(n,)``.

    A gap of (numerically) zero means the optimal token is not unique.
    """
    top2 = jax.lax.top_k(scores, 2)[0]
    return top2[..., 0] - top2[..., 1]


def selection_mask(opt_index, T: int) -> jax.Array:
    """Boolean ``(n, T)`` mask that is True at ``opt_index[i]`` in row ``i`` (one-hot selection)."""
    return jnp.arange(T)[None, :] == jnp.asarray(opt_index)[:, None]


def check_token_inputs(X, Z, selected=None, *, name_sel: str = "opt_index"):
    """Validate ``X (n,T,d)``, ``Z (n,d)`` and a selection; return numpy ``(X, Z, mask)``.

    ``selected`` is either an int array ``(n,)`` of token indices or a boolean mask ``(n, T)``
    with at least one selected and one unselected token per row. Raises ``ValueError`` naming the
    argument on mismatched shapes, out-of-range indices or non-finite data.
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


def selection_feasible(X, Z, selected, *, tol: float = 1e-9) -> tuple[bool, str]:
    """Whether some ``W`` satisfies ``(x_it - x_is)^T W z_i >= 1`` for selected t, unselected s.

    Solves the feasibility LP ``min 0 s.t. A vec(W) >= 1`` with SciPy HiGHS in float64 (host
    side). Returns ``(feasible, message)``. By Gordan's alternative the problem is infeasible
    exactly when a non-negative combination of the constraint matrices vanishes, for example when
    two tokens of one example coincide or ``d`` is too small for ``n (T-1)`` constraints.
    When a selected set holds several tokens, the selected tokens are also constrained to share
    one score (``(x_it - x_it')^T W z_i = 0``), as in the general SVM of Tarzanagh et al.
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


def constraint_rows(X: np.ndarray, Z: np.ndarray, mask: np.ndarray):
    """Constraint rows of the (general) attention SVM as numpy float arrays.

    Returns ``(A_ub, A_eq)``: ``A_ub`` ``(K, d*d)`` holds ``vec((x_it - x_is) z_i^T)`` for every
    selected ``t`` and unselected ``s`` of every example (row-major ``vec``, so that
    ``A_ub @ W.ravel()`` are the margins); ``A_eq`` holds ``vec((x_it - x_it0) z_i^T)`` tying
    the selected tokens of an example to its first selected token ``t0``.
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

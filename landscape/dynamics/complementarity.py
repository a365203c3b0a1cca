"""The small semidefinite complementarity problem (SDCP) of a central flow, solved inside ``jit``.

Given a symmetric ``(k, k)`` matrix ``alpha`` and a positive semidefinite linear map ``B`` on
symmetric ``(k, k)`` matrices (a Gram operator ``B(X)_ij = sum_kl <beta_ij, beta_kl> X_kl``),
the problem SDCP(alpha, B) asks for ``X`` with

    X >= 0,    M(X) := alpha + 1/2 B(X) >= 0,    <X, M(X)> = 0,

(``>= 0`` in the semidefinite order). These are exactly the KKT conditions of the convex
quadratic program

    min_{X >= 0}  f(X) = <alpha, X> + 1/4 <X, B(X)>,      grad f(X) = M(X),

so :func:`solve_psd_complementarity` minimises ``f`` over the PSD cone by accelerated projected
gradient (FISTA; Beck & Teboulle 2009) with the gradient-based adaptive restart of O'Donoghue &
Candes (2015), step ``1 / Lip``, ``Lip = lambda_max(B) / 2`` on symmetric matrices; the
projection onto the cone is an ``eigh`` of a ``k x k`` matrix with the eigenvalues clipped at 0.
After the loop one *polishing* step solves the stationarity equations exactly on the face of the
cone the iterate has found (the range of ``X``), by least squares, and keeps the result when its
residual is smaller: on well-posed instances this gives the solution to working precision.

Where the problem comes from: the central flow of gradient descent (Cohen, Damian, Talwalkar,
Kolter, Lee, ICLR 2025, "Understanding optimization in deep learning with central flows") needs
at every time the covariance ``Sigma = U X U^T`` of the oscillations that keep the top Hessian
eigenvalues at ``2 / eta``; see :mod:`landscape.dynamics.central_flow`.

Degenerate cases. ``B = 0`` (up to rounding): ``X = 0`` when ``alpha >= 0`` (status 0), and no
solution exists otherwise (status 2, ``X = 0`` returned). A singular ``B`` is handled by the
iteration itself (the solution may then be non-unique; the least-squares polish picks the
minimum-norm one on the face); if the problem is unbounded (a direction ``D >= 0`` with
``B(D) = 0`` and ``<alpha, D> < 0``) the iterates grow and the status is 1.

Accuracy: relative natural residual (below) ~1e-12 in float64 and ~1e-6 in float32 on
instances with a well-conditioned ``B`` (k <= 8).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from landscape import validate

__all__ = ["ComplementarityResult", "solve_psd_complementarity", "psd_projection",
           "natural_residual"]


class ComplementarityResult(NamedTuple):
    """Result of :func:`solve_psd_complementarity`.

    Attributes:
      X: ``(k, k)`` symmetric PSD solution.
      M: ``(k, k)`` ``alpha + 1/2 B(X)`` at the solution (PSD at a solution).
      residual: ``()`` relative natural residual
        ``Lip ||X - Pi(X - M(X) / Lip)||_F / (||alpha||_F + Lip ||X||_F)``, zero exactly at a
        solution (``Pi`` the projection onto the PSD cone).
      complementarity: ``()`` ``<X, M(X)>`` (zero at a solution).
      num_iters: ``()`` FISTA iterations used.
      status: ``()`` int: 0 converged (``residual <= tol``), 1 iteration budget spent,
        2 ``B = 0`` and ``alpha`` not PSD (no solution).
    """

    X: jax.Array
    M: jax.Array
    residual: jax.Array
    complementarity: jax.Array
    num_iters: jax.Array
    status: jax.Array


def psd_projection(S: jax.Array) -> jax.Array:
    """Nearest PSD matrix to the symmetric part of ``S`` in Frobenius norm (eigenvalues clipped
    at 0)."""
    S = 0.5 * (S + S.T)
    w, Q = jnp.linalg.eigh(S)
    return (Q * jnp.maximum(w, 0)) @ Q.T


def _operator(gram, k, dtype):
    """``(k^2, k^2)`` symmetric matrix of ``B`` restricted to symmetric matrices (row-major
    ``vec``)."""
    G = jnp.asarray(gram, dtype).reshape(k * k, k * k)
    G = 0.5 * (G + G.T)
    # P vec(X) = vec((X + X^T) / 2): B acts on symmetric matrices only.
    perm = np.arange(k * k).reshape(k, k).T.reshape(-1)
    P = 0.5 * (jnp.eye(k * k, dtype=dtype) + jnp.eye(k * k, dtype=dtype)[perm])
    return P @ G @ P


def natural_residual(X, M, lip, scale):
    """``Lip ||X - Pi(X - M / Lip)||_F / scale``: zero iff ``X`` solves the SDCP."""
    return lip * jnp.linalg.norm(X - psd_projection(X - M / lip)) / scale


def _check(alpha, gram):
    alpha = jnp.asarray(alpha)
    if alpha.ndim != 2 or alpha.shape[0] != alpha.shape[1] or alpha.shape[0] < 1:
        raise ValueError(f"alpha must be a square (k, k) matrix; got shape {alpha.shape}")
    k = alpha.shape[0]
    gram = jnp.asarray(gram)
    if gram.shape not in ((k, k, k, k), (k * k, k * k)):
        raise ValueError(f"gram must have shape ({k}, {k}, {k}, {k}) or ({k * k}, {k * k}) for "
                         f"k = {k}; got {gram.shape}")
    for x, name in ((alpha, "alpha"), (gram, "gram")):
        if validate.is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
            raise ValueError(f"{name} contains non-finite values")
    return alpha, gram, k


def solve_psd_complementarity(alpha, gram, *, num_iters: int = 1000, tol: float | None = None,
                              polish: bool = True) -> ComplementarityResult:
    """Solve ``X >= 0, alpha + 1/2 B(X) >= 0, <X, alpha + 1/2 B(X)> = 0`` (module docstring).

    Args:
      alpha: ``(k, k)`` matrix (its symmetric part is used).
      gram: the PSD operator ``B`` as a ``(k, k, k, k)`` tensor, ``B(X)_ij = sum_kl
        gram[i, j, k, l] X_kl``, or its ``(k^2, k^2)`` matrix on row-major ``vec(X)``; it is
        symmetrised and restricted to symmetric ``X``.
      num_iters: FISTA iteration budget (a ``lax.while_loop`` stops earlier at ``tol``).
      tol: relative natural residual to stop at (default 1e-12 in float64, 1e-6 in float32).
      polish: finish with the exact solve on the face found (recommended).

    Returns:
      :class:`ComplementarityResult`. Traceable and jit-able (all loops are ``lax`` loops).

    Raises:
      ValueError: wrong shapes, non-finite inputs, an indefinite ``gram`` (concrete inputs
        only), ``num_iters < 1`` or ``tol <= 0``.
    """
    alpha, gram, k = _check(alpha, gram)
    num_iters = validate.check_int(num_iters, "num_iters", low=1)
    dtype = jnp.result_type(alpha, gram, jnp.float32)
    if tol is None:
        tol = 1e-12 if jnp.finfo(dtype).bits >= 64 else 1e-6
    tol = validate.check_positive(tol, "tol")
    G = _operator(gram, k, dtype)
    if validate.is_concrete(G):
        ev = np.linalg.eigvalsh(np.asarray(G, np.float64))
        if ev[0] < -1e-6 * max(abs(ev[-1]), 1e-300) and ev[0] < -1e-30:
            raise ValueError("gram must be positive semidefinite (a Gram operator); its smallest "
                             f"eigenvalue is {ev[0]:.3g} (largest {ev[-1]:.3g})")
    return _solve(jnp.asarray(alpha, dtype), G, num_iters=num_iters, tol=tol, polish=polish)


def _solve(alpha, G, *, num_iters, tol, polish):
    k = alpha.shape[0]
    dtype = alpha.dtype
    a = 0.5 * (alpha + alpha.T)
    lip = 0.5 * jnp.maximum(jnp.linalg.eigvalsh(G)[-1], 0)
    anorm = jnp.linalg.norm(a)
    degenerate = lip <= jnp.finfo(dtype).eps * anorm * 1e-3
    lip_s = jnp.where(degenerate | (lip <= 0), jnp.ones((), dtype), lip)
    M = lambda X: a + 0.5 * (G @ X.reshape(-1)).reshape(k, k)
    tiny = jnp.finfo(dtype).tiny

    def scale(X):
        return anorm + lip_s * jnp.linalg.norm(X) + tiny

    def res(X):
        return natural_residual(X, M(X), lip_s, scale(X))

    def cond(c):
        _, _, _, it, r = c
        return (it < num_iters) & (r > tol) & ~degenerate

    def body(c):
        X, X_prev, t, it, _ = c
        Y = X + ((t - 1) / (t + 2)) * (X - X_prev)
        X_new = psd_projection(Y - M(Y) / lip_s)
        restart = jnp.vdot(Y - X_new, X_new - X) > 0
        t_new = jnp.where(restart, 1.0, t + 1).astype(t.dtype)
        return X_new, X, t_new, it + 1, res(X_new)

    X0 = jnp.zeros((k, k), dtype)
    init = (X0, X0, jnp.ones((), dtype), jnp.zeros((), jnp.int32), res(X0))
    X, _, _, iters, r = jax.lax.while_loop(cond, body, init)
    if polish:
        Xp = _polish(a, G, X, k)
        rp = res(Xp)
        better = jnp.isfinite(rp) & (rp < r)
        X, r = jnp.where(better, Xp, X), jnp.where(better, rp, r)
    X = jnp.where(degenerate, X0, X)
    r = jnp.where(degenerate, jnp.zeros((), dtype), r)
    Mx = M(X)
    status = jnp.where(degenerate,
                       jnp.where(jnp.linalg.eigvalsh(a)[0] >= 0, 0, 2),
                       jnp.where(r <= tol, 0, 1)).astype(jnp.int32)
    return ComplementarityResult(X, Mx, r, jnp.vdot(X, Mx), iters, status)


def _polish(a, G, X, k):
    """Solve ``Q_r^T M(Q_r Y Q_r^T) Q_r = 0`` for ``Y`` on the face spanned by the range
    ``Q_r`` of ``X`` (least squares), and return ``Pi(Q_r Y Q_r^T)``."""
    d, Q = jnp.linalg.eigh(X)
    eps = jnp.finfo(X.dtype).eps
    active = d > jnp.sqrt(eps) * jnp.maximum(d[-1], jnp.finfo(X.dtype).tiny)
    K = jnp.kron(Q, Q)                       # vec(Q Y Q^T) = K vec(Y)  (row-major vec)
    Gt = K.T @ G @ K
    at = (Q.T @ a @ Q).reshape(-1)
    act = (active[:, None] & active[None, :]).reshape(-1)
    A = jnp.where(act[:, None], 0.5 * Gt, jnp.eye(k * k, dtype=X.dtype))
    rhs = jnp.where(act, -at, 0)
    y = jnp.linalg.lstsq(A, rhs)[0].reshape(k, k)
    return psd_projection(Q @ (0.5 * (y + y.T)) @ Q.T)

"""The Lanczos recurrence shared by ``eigsh`` and the spectral density (SLQ).

Given a symmetric operator ``A`` and a unit start vector ``q_0``, ``m`` Lanczos steps build an
orthonormal Krylov basis ``Q = [q_0, ..., q_{m-1}]`` and a tridiagonal ``T = Q^T A Q`` with
diagonal ``alpha`` and off-diagonal ``beta``:

    A q_j = beta_{j-1} q_{j-1} + alpha_j q_j + beta_j q_{j+1}.

In floating point the plain three-term recurrence loses orthogonality once Ritz values
converge, and spurious "ghost" copies of converged eigenvalues appear (Paige 1976; after about
100 steps on a Hessian). ``full_reorthogonalization`` removes that: each new vector is
orthogonalised against the whole stored basis by classical Gram-Schmidt applied twice
("twice is enough", Giraud et al. 2005). The basis lives in a fixed-size ``(m + 1, dim)``
buffer that starts at zero, so a product with the whole buffer touches only the vectors built
so far and the loop compiles once, whatever ``m`` is.

Breakdown (``beta_j = 0``: the Krylov space is invariant, e.g. after ``dim`` steps or when the
start vector lies in a few eigenspaces) is handled by continuing with a fresh random vector
orthogonal to the basis and recording ``beta_j = 0``, so ``T`` stays exact and block-diagonal.

**The recurrence as computed.** With full reorthogonalisation the state also keeps what the
three-term relation leaves out, so that every computed product is accounted for: step ``j``
forms ``p_j = fl(A q_j)`` and splits it as

    p_j = beta_{j-1} q_{j-1} + alpha_j q_j + sum_i c_ij q_i + beta_j q_{j+1} + d_j,

where ``c_ij`` (``coeffs``, ``(m + 1, m)``) are the Gram-Schmidt coefficients of both passes
(zero in exact arithmetic, of order ``eps ||A||`` in floating point) and ``d_j`` is the vector
discarded at a breakdown (``dropped[j] = ||d_j|| <= 10 eps ||A||``, zero otherwise). So
``P = Q_{m+1} H + D`` with ``H = T_ext + C`` the ``(m + 1) x m`` matrix of the computed
recurrence, exactly up to the rounding of the vector updates (a few ``eps ||A||``). ``eigsh``
certifies its Ritz pairs from this relation without further products (see its docstring).

Coefficients are accumulated in float64 when x64 is enabled (see ``_inputs.accumulation_dtype``)
with ``Precision.HIGHEST`` dot products. Norms (``beta_j``, the start vector) are taken after an
exact power-of-two rescaling (``safe_norm``) and ``T`` is rescaled the same way before its
eigendecomposition, so that scaling the operator by any factor (1e-18, 1e18) in float32 neither
underflows nor overflows and changes the coefficients only by that factor.

References: Lanczos (1950); Paige (1976); Golub & Van Loan, *Matrix Computations*, sec. 10.1.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from landscape.spectral._inputs import accumulation_dtype, dot

__all__ = ["LanczosState", "lanczos_init", "lanczos_steps", "tridiagonal", "ritz", "safe_norm",
           "recurrence_matrix", "recurrence_coefficients", "recurrence_residuals",
           "dropped_term"]


class LanczosState(NamedTuple):
    """Carry of the Lanczos loop.

    Attributes:
      basis: ``(m + 1, dim)`` rows ``q_0 .. q_m``; rows not yet built are zero. Only kept (and
        only used) with full reorthogonalisation; otherwise ``(2, dim)`` holding
        ``q_{j-1}, q_j``.
      alpha: ``(m,)`` diagonal of ``T`` (accumulation dtype).
      beta: ``(m,)`` off-diagonal: ``beta[j]`` couples ``q_j`` and ``q_{j+1}``.
      anorm: running estimate of ``||A||`` (max over steps of ``|alpha| + beta``), used to
        decide breakdown.
      key: PRNG key for restart vectors after breakdown.
      coeffs: ``(m + 1, m)`` Gram-Schmidt coefficients ``c_ij`` of step ``j`` against ``q_i``
        (accumulation dtype; module docstring); ``(0, m)`` without full reorthogonalisation.
      dropped: ``(m,)`` norm of the vector discarded at a breakdown of step ``j`` (else 0).
    """

    basis: jax.Array
    alpha: jax.Array
    beta: jax.Array
    anorm: jax.Array
    key: jax.Array
    coeffs: jax.Array
    dropped: jax.Array


def safe_norm(x, acc, axis=None):
    """Euclidean norm of ``x`` (``(dim,)``, or along ``axis`` of an array) accumulated in ``acc``.

    ``x`` is first multiplied by ``2^-e`` with ``2^(e-1) <= max|x| < 2^e``, which is exact in
    binary floating point, so the sum of squares can neither overflow nor underflow (a float32
    vector with entries ~1e20 or ~1e-20 has squares outside float32's range), and the result
    equals ``sqrt(sum x_i^2)`` computed without scaling whenever the latter does not over- or
    underflow. The sum is a ``Precision.HIGHEST`` dot product in dtype ``acc``.
    """
    _, e = jnp.frexp(jnp.max(jnp.abs(x), axis=axis, keepdims=axis is not None))
    xs = jnp.ldexp(x, -e)
    if axis is None:
        sq = dot(xs, xs, acc)
    else:
        sq = jnp.sum(jnp.square(xs.astype(acc)), axis=axis, keepdims=True)
    out = jnp.ldexp(jnp.sqrt(sq), e)
    return out if axis is None else jnp.squeeze(out, axis)


def lanczos_init(v0, num_steps: int, key, *, full_reorthogonalization: bool = True):
    """Start state for ``num_steps`` steps from the (nonzero) vector ``v0`` of shape ``(dim,)``."""
    acc = accumulation_dtype(v0.dtype)
    q0 = v0 / safe_norm(v0, acc).astype(v0.dtype)
    rows = num_steps + 1 if full_reorthogonalization else 2
    basis = jnp.zeros((rows, v0.shape[0]), v0.dtype)
    basis = basis.at[0 if full_reorthogonalization else 1].set(q0)
    zeros = jnp.zeros((num_steps,), acc)
    coeffs = jnp.zeros((rows if full_reorthogonalization else 0, num_steps), acc)
    return LanczosState(basis, zeros, zeros, jnp.zeros((), acc), key, coeffs, zeros)


def _orthogonalize(basis, w, acc):
    """Classical Gram-Schmidt against every row of ``basis``, applied twice: ``(w', c)`` with
    ``w = w' + basis^T c`` (``c`` the sum of both passes' coefficients, dtype ``acc``)."""
    total = jnp.zeros((basis.shape[0],), acc)
    for _ in range(2):
        coeffs = jnp.matmul(basis, w, precision=jax.lax.Precision.HIGHEST,
                            preferred_element_type=acc)
        w = w - jnp.matmul(coeffs.astype(w.dtype), basis, precision=jax.lax.Precision.HIGHEST)
        total = total + coeffs
    return w, total


def _step(op, state: LanczosState, j, full: bool) -> LanczosState:
    basis, alpha, beta, anorm, key, coeffs, dropped = state
    acc = alpha.dtype
    q = basis[j] if full else basis[1]
    q_prev = basis[jnp.maximum(j - 1, 0)] if full else basis[0]
    beta_prev = jnp.where(j > 0, beta[jnp.maximum(j - 1, 0)], 0.0)
    w = op.matvec(q)
    a_j = dot(q, w, acc)
    w = w - a_j.astype(w.dtype) * q - beta_prev.astype(w.dtype) * q_prev
    if full:
        w, c = _orthogonalize(basis, w, acc)
        coeffs = coeffs.at[:, j].set(c)
    b_j = safe_norm(w, acc)
    anorm = jnp.maximum(anorm, jnp.abs(a_j) + b_j + beta_prev)
    eps = jnp.finfo(w.dtype).eps
    broke = b_j <= 10 * eps * jnp.maximum(anorm, jnp.finfo(acc).tiny)
    def restart(_):
        fresh = jax.random.normal(jax.random.fold_in(key, j), w.shape, w.dtype)
        if full:
            fresh, _ = _orthogonalize(basis, fresh, acc)
        norm = safe_norm(fresh, acc)
        return fresh / jnp.maximum(norm, jnp.finfo(acc).tiny).astype(w.dtype)

    def proceed(_):
        return w / b_j.astype(w.dtype)

    q_next = jax.lax.cond(broke, restart, proceed, None)
    dropped = dropped.at[j].set(jnp.where(broke, b_j, 0.0))
    b_j = jnp.where(broke, 0.0, b_j)
    if full:
        basis = basis.at[j + 1].set(q_next)
    else:
        basis = jnp.stack([q, q_next])
    return LanczosState(basis, alpha.at[j].set(a_j), beta.at[j].set(b_j), anorm, key, coeffs,
                        dropped)


def lanczos_steps(op, state: LanczosState, start, stop, *, full_reorthogonalization=True):
    """Run Lanczos steps ``start <= j < stop`` (traced bounds allowed) inside a ``fori_loop``."""
    body = lambda j, s: _step(op, s, j, full_reorthogonalization)
    return jax.lax.fori_loop(start, stop, body, state)


def recurrence_matrix(state: LanczosState, size) -> jax.Array:
    """``H = T_ext + C``, the ``(m + 1) x m`` matrix of the computed recurrence (module
    docstring), with ``P = Q_{m+1} H + D`` for the products ``P`` of steps ``0 .. size - 1``;
    columns from ``size`` on are zero. Needs full reorthogonalisation (``coeffs``)."""
    alpha, beta, coeffs = state.alpha, state.beta, state.coeffs
    m = alpha.shape[0]
    H = coeffs + jnp.pad(jnp.diag(alpha) + jnp.diag(beta[:-1], 1), ((0, 1), (0, 0)))
    H = H + jnp.pad(jnp.diag(beta), ((1, 0), (0, 0)))
    return jnp.where(jnp.arange(m)[None, :] < size, H, 0.0)


def recurrence_coefficients(state: LanczosState, size, theta, S) -> jax.Array:
    """``X = H S - [S; 0] diag(theta)``, ``(m + 1, k)`` in the accumulation dtype: the residuals
    of the Ritz pairs ``(theta (k,), S (m, k))`` of the active ``size x size`` block in the
    coordinates of the basis ``Q_{m+1}`` (``H`` from :func:`recurrence_matrix`)."""
    acc = state.alpha.dtype
    S = S.astype(acc)
    X = jnp.matmul(recurrence_matrix(state, size), S, precision=jax.lax.Precision.HIGHEST)
    return X - jnp.pad(S * theta.astype(acc), ((0, 1), (0, 0)))


def recurrence_residuals(state: LanczosState, size, theta, S):
    """``(r, n)``, both ``(k,)`` in the accumulation dtype, for the Ritz pairs
    ``(theta (k,), S (m, k))`` of the active ``size x size`` block, from one product with the
    basis: ``r_i = ||Q_{m+1} (H s_i - theta_i s_i)|| + sum_j dropped_j |s_ij|``, the residual
    ``||P s_i - theta_i Q s_i||`` of the computed products to the rounding of the vector updates,
    measured without a product (:func:`recurrence_coefficients`), and ``n_i = ||fl(Q s_i)||``. In
    exact arithmetic ``r_i`` is the Lanczos estimate ``beta_{size-1} |s_{size-1,i}|``; the
    Gram-Schmidt coefficients add what the three-term relation leaves out."""
    acc = state.alpha.dtype
    X = recurrence_coefficients(state, size, theta, S)
    # exact power-of-two scaling per column, so that the product in the basis dtype cannot
    # under- or overflow at any operator scale
    _, e = jnp.frexp(jnp.max(jnp.abs(X), axis=0))
    k = S.shape[1]
    both = jnp.concatenate([jnp.ldexp(X, -e), jnp.pad(S.astype(acc), ((0, 1), (0, 0)))], axis=1)
    R = jnp.matmul(state.basis.T, both.astype(state.basis.dtype),
                   precision=jax.lax.Precision.HIGHEST)
    norms = safe_norm(R, acc, axis=0)
    return jnp.ldexp(norms[:k], e) + dropped_term(state, S), norms[k:]


def dropped_term(state: LanczosState, S) -> jax.Array:
    """``sum_j dropped_j |s_ij|``: what the vectors discarded at breakdowns add to the residuals
    of the Ritz vectors ``Q S`` (``(k,)``)."""
    return jnp.matmul(state.dropped, jnp.abs(S.astype(state.dropped.dtype)),
                      precision=jax.lax.Precision.HIGHEST)


def tridiagonal(alpha, beta, size=None):
    """Dense ``T`` of shape ``(m, m)`` from ``alpha`` and ``beta``.

    With ``size`` (possibly traced), only the leading ``size x size`` block is active: the
    couplings out of it are zeroed and the remaining diagonal is set to a value ``c`` strictly
    above the active block's Gershgorin bound, so those padded eigenpairs are exactly
    ``(c, e_i)`` and can be told apart by their support. Returns ``(T, active_mask)``.
    """
    m = alpha.shape[0]
    idx = jnp.arange(m)
    size = m if size is None else size
    active = idx < size
    a = jnp.where(active, alpha, 0.0)
    b = jnp.where(idx < size - 1, beta, 0.0)[: m - 1]
    bound = jnp.max(jnp.abs(a)) + 2 * jnp.max(jnp.abs(b), initial=0.0)
    a = jnp.where(active, a, 2 * bound + 1)
    T = jnp.diag(a) + jnp.diag(b, 1) + jnp.diag(b, -1)
    return T, active


def ritz(alpha, beta, size, k: int, which: str, *, with_norm: bool = False):
    """Ritz values/vectors of the active ``size x size`` block of ``T``, the ``k`` wanted ones.

    Returns ``(theta (k,), S (m, k), estimates (k,))`` where the columns of ``S`` are the
    eigenvectors of ``T`` (zero outside the active block) and ``estimates`` are the Lanczos
    residual estimates ``|beta_{size-1} * S[size-1, i]|`` (exact in exact arithmetic:
    ``||A Q s - theta Q s|| = beta_{size-1} |s_last|``). ``which``: "LA" descending, "SA"
    ascending, "LM" descending ``|theta|``. With ``with_norm=True`` a fourth output is added:
    ``max_i |theta_i|`` over *all* Ritz values of the active block, ``= ||T||_2``, a lower bound
    on ``||A||_2`` that reaches it as the extreme Ritz values converge (they converge first).

    ``T`` is multiplied by an exact power of two ``2^-e`` (``2^(e-1) <= max|T_ij| < 2^e``) before
    ``eigh`` and the eigenvalues by ``2^e`` after, so the eigensolver always sees entries of
    order one whatever the scale of the operator.
    """
    m = alpha.shape[0]
    # ``T`` is m x m but only its leading size x size block is active; solve the smallest
    # static block that holds it (the cost of a dense ``eigh`` grows like m^3, and a check of a
    # warm start that stops after a few steps would otherwise pay for the whole buffer)
    blocks = sorted({b for b in _BLOCKS if k <= b < m} | {m})
    if len(blocks) == 1 or not isinstance(size, jax.Array):
        return _ritz_block(alpha, beta, size, k, which, with_norm, m)
    branches = [functools.partial(_ritz_block, k=k, which=which, with_norm=with_norm, m=m,
                                  block=b) for b in blocks]
    index = jnp.searchsorted(jnp.asarray(blocks), size)
    return jax.lax.switch(jnp.minimum(index, len(blocks) - 1), branches, alpha, beta, size)


_BLOCKS = (8, 16, 32, 64)


def _ritz_block(alpha, beta, size, k, which, with_norm, m, block=None):
    """:func:`ritz` on the leading ``block x block`` part of the buffers (``size <= block``),
    with ``S`` padded back to ``m`` rows."""
    if block is not None and block < m:
        alpha, beta = alpha[:block], beta[:block]
    out = _ritz_dense(alpha, beta, size, k, which, with_norm)
    if block is None or block == m:
        return out
    S = jnp.pad(out[1], ((0, m - block), (0, 0)))
    return (out[0], S) + tuple(out[2:])


def _ritz_dense(alpha, beta, size, k: int, which: str, with_norm: bool):
    m = alpha.shape[0]
    live = jnp.arange(m) < size
    big = jnp.maximum(jnp.max(jnp.where(live, jnp.abs(alpha), 0.0)),
                      jnp.max(jnp.where(live, jnp.abs(beta), 0.0)))
    _, e = jnp.frexp(big)
    T, active = tridiagonal(jnp.ldexp(alpha, -e), jnp.ldexp(beta, -e), size)
    evals, evecs = jnp.linalg.eigh(T)
    evals = jnp.ldexp(evals, e)
    mass = jnp.sum(jnp.where(active[:, None], evecs**2, 0.0), axis=0)
    real = mass > 0.5
    score = {"LA": evals, "SA": -evals, "LM": jnp.abs(evals)}[which]
    score = jnp.where(real, score, -jnp.inf)
    order = jnp.argsort(-score)[:k]
    theta = evals[order]
    S = jnp.where(active[:, None], evecs[:, order], 0.0)
    last = jnp.maximum(size - 1, 0)
    estimates = jnp.abs(beta[last] * S[last])
    if not with_norm:
        return theta, S, estimates
    return theta, S, estimates, jnp.max(jnp.where(real, jnp.abs(evals), 0.0))

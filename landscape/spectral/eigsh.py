"""Extreme eigenpairs of a symmetric operator by Lanczos with full reorthogonalisation.

``eigsh`` runs the Lanczos recurrence (``landscape.spectral.lanczos``) in chunks of steps inside
a ``lax.while_loop``; after each chunk it computes the Ritz pairs of the tridiagonal ``T`` and
stops once every wanted pair has a Lanczos residual estimate below ``tol * max|theta|``, or at
``max_steps``. It then forms the Ritz vectors and checks every pair with one explicit product:
the reported residual is ``||A v - theta v||`` measured, not estimated, and certifies the
eigenvalue: some eigenvalue ``lambda`` of ``A`` satisfies ``|lambda - theta| <= ||r||``
(and ``<= ||r||^2 / gap`` once the pair is isolated by a gap; Parlett, *The Symmetric
Eigenvalue Problem*, thm 11.7.1).

Accuracy to expect on well-separated eigenvalues: relative error ~1e-12 in float64 and ~1e-6
in float32 (residuals bottom out near ``eps * ||A|| * sqrt(steps)``).

Limitation shared by every single-vector Krylov method: an eigenvalue of multiplicity ``r > 1``
is seen once until the Krylov space is exhausted (breakdown); the extra copies are then found
only by the restart vectors. So for exactly repeated eigenvalues inside the wanted set, ask for
``num_steps=dim`` or use a block method. Near-repeated (clustered) eigenvalues are resolved.

References: Lanczos (1950); Parlett (1998); Golub & Van Loan, *Matrix Computations* 10.1;
Ghorbani, Krishnan, Xiao (2019) for the use on neural-network Hessians.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from landscape.spectral import _inputs
from landscape.spectral.lanczos import lanczos_init, lanczos_steps, ritz

__all__ = ["EigshResult", "eigsh", "default_tol"]

_WHICH = ("LA", "SA", "LM")


class EigshResult(NamedTuple):
    """Result of ``eigsh``.

    Attributes:
      eigenvalues: ``(k,)`` Ritz values; "LA" descending, "SA" ascending, "LM" by descending
        magnitude.
      eigenvectors: ``(dim, k)`` unit Ritz vectors (columns), orthonormal to working precision.
      residuals: ``(k,)`` explicit ``||A v_i - theta_i v_i||``; bounds ``|lambda - theta_i|``.
      converged: ``(k,)`` bool, ``residuals <= tol * max|eigenvalues|``.
      residual_estimates: ``(k,)`` the Lanczos estimates ``beta_m |s_{m,i}|`` used to stop.
      num_matvecs: products with ``A`` spent (Lanczos steps plus ``k`` for the check).
      num_steps: Lanczos steps taken.
      tol: the relative tolerance that was used.
    """

    eigenvalues: jax.Array
    eigenvectors: jax.Array
    residuals: jax.Array
    converged: jax.Array
    residual_estimates: jax.Array
    num_matvecs: jax.Array
    num_steps: jax.Array
    tol: float


def default_tol(dtype) -> float:
    """Default relative residual tolerance: 1e-5 for float32 (and narrower), 1e-9 for float64."""
    return 1e-9 if jnp.finfo(dtype).bits >= 64 else 1e-5


def eigsh(op, k: int = 5, which: str = "LA", *, key=None, num_steps: int | None = None,
          tol: float | None = None, max_steps: int | None = None, chunk: int = 10,
          v0=None, warm_noise: float = 1e-3) -> EigshResult:
    """``k`` extreme eigenpairs of the symmetric operator ``op`` by Lanczos.

    Args:
      op: a ``LinearOperator`` (``op.dim``, ``op.dtype``, ``op.matvec``), e.g.
        ``curvature.hessian(...)`` or ``MatrixOperator(A)``.
      k: number of eigenpairs, ``1 <= k <= op.dim``.
      which: "LA" largest algebraic, "SA" smallest algebraic, "LM" largest magnitude.
      key: ``jax.random`` key for the start vector and breakdown restarts (required).
      num_steps: if given, run exactly this many steps (``k <= num_steps <= dim``) and skip
        the early stop.
      tol: relative residual tolerance; default ``default_tol(op.dtype)``.
      max_steps: cap on steps (default ``min(dim, max(10 k, 100))``); the basis buffer holds
        ``max_steps + 1`` vectors of length ``dim``.
      chunk: steps between convergence checks.
      v0: warm start. A ``(dim,)`` start vector, or a ``(dim, b)`` block of previous
        eigenvectors: the start vector is then the sum of the unit columns. Either way a random
        component of relative size ``warm_noise`` is added, so that eigenvectors that are not
        in the warm start (a new outlier rising during training) still have a component to
        grow from. The span of a block that moved little is recovered in about ``b`` steps,
        plus the steps needed to damp the noise (tracking during training).
      warm_noise: relative size of that random component (default 1e-3, ``>= 0``).

    Returns:
      ``EigshResult``. Wrap in ``jax.jit`` freely; ``op`` is passed as a pytree argument.
    """
    _inputs.check_operator(op)
    dim = op.dim
    k = _inputs.check_int(k, "k", low=1, high=dim)
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}; got {which!r}")
    _inputs.check_key(key)
    if num_steps is not None:
        steps = _inputs.check_int(num_steps, "num_steps", low=k, high=dim)
    else:
        default = min(dim, max(10 * k, 100))
        steps = default if max_steps is None else _inputs.check_int(
            max_steps, "max_steps", low=k, high=dim)
    tol = default_tol(op.dtype) if tol is None else _inputs.check_positive(tol, "tol")
    chunk = _inputs.check_int(chunk, "chunk", low=1)
    start = _start_vector(v0, dim, op.dtype)
    if not isinstance(warm_noise, int | float) or not warm_noise >= 0:
        raise ValueError(f"warm_noise must be a number >= 0; got {warm_noise!r}")
    return _eigsh_kernel(op, start, key, k=k, which=which, steps=steps, tol=tol,
                         chunk=chunk, fixed=num_steps is not None, noise=float(warm_noise))


def _start_vector(v0, dim, dtype):
    """Validate ``v0`` and turn it into a single start vector or ``None`` (random)."""
    if v0 is None:
        return None
    v0 = jnp.asarray(v0, dtype)
    if v0.ndim == 2:
        if v0.shape[0] != dim or v0.shape[1] < 1:
            raise ValueError(f"v0 must have shape ({dim},) or ({dim}, b); got {v0.shape}")
        _inputs.check_concrete_values(v0, "v0")
        norms = jnp.linalg.norm(v0, axis=0)
        if not isinstance(norms, jax.core.Tracer) and not bool(jnp.all(norms > 0)):
            raise ValueError("v0 has an all-zero column; warm-start vectors must be nonzero")
        return jnp.sum(v0 / norms, axis=1)
    _inputs.check_vector(v0, dim, "v0")
    return v0


@partial(jax.jit, static_argnames=("k", "which", "steps", "tol", "chunk", "fixed", "noise"))
def _eigsh_kernel(op, start, key, *, k, which, steps, tol, chunk, fixed, noise):
    dtype = op.dtype
    key_start, key_loop = jax.random.split(key)
    rand = jax.random.normal(key_start, (op.dim,), dtype)
    if start is None:
        start = rand
    else:
        scale = noise * jnp.linalg.norm(start) / jnp.linalg.norm(rand)
        start = start + scale * rand
    state = lanczos_init(start, steps, key_loop)

    def cond(carry):
        _, j, done = carry
        return jnp.logical_and(jnp.logical_not(done), j < steps)

    def body(carry):
        state, j, _ = carry
        stop = jnp.minimum(jnp.maximum(j + chunk, k), steps)
        state = lanczos_steps(op, state, j, stop)
        theta, _, est = ritz(state.alpha, state.beta, stop, k, which)
        done = jnp.all(est <= tol * jnp.max(jnp.abs(theta))) & (not fixed)
        return state, stop, done

    state, size, _ = jax.lax.while_loop(cond, body, (state, jnp.asarray(0), False))
    return _finish(op, state, size, k, which, tol)


def _finish(op, state, size, k, which, tol):
    theta, S, est = ritz(state.alpha, state.beta, size, k, which)
    basis = state.basis[:-1]
    V = jnp.matmul(basis.T, S.astype(basis.dtype), precision=jax.lax.Precision.HIGHEST)
    V = V / jnp.linalg.norm(V, axis=0)
    AV = _inputs.map_matvec(op, V)
    residuals = jnp.linalg.norm(AV - V * theta.astype(V.dtype), axis=0)
    converged = residuals <= tol * jnp.max(jnp.abs(theta))
    return EigshResult(theta, V, residuals, converged, est, size + k, size, tol)

"""Deflated power iteration exactly as PyHessian does it: a BASELINE, not a recommendation.

PyHessian (Yao, Gholami, Keutzer, Mahoney 2020, ``PyHessian: Neural networks through the lens
of the Hessian``; ``hessian.eigenvalues``) finds the top eigenvalues one at a time. For each:

1. draw a Gaussian vector and normalise it;
2. repeat up to ``max_iter`` times: orthogonalise ``v`` against the eigenvectors found so far
   (Gram-Schmidt) and normalise, compute ``Hv``, the Rayleigh quotient ``theta = v^T H v``,
   and ``v <- Hv / ||Hv||``; stop when ``|theta_prev - theta| / (|theta_prev| + 1e-6) < tol``;
3. keep ``theta`` and the last ``v``.

It converges to the largest-*magnitude* eigenvalue left after deflation, at the rate
``|lambda_2 / lambda_1|`` per product, and its stopping rule tests the change of ``theta``,
not a residual, so it can stop early on a slowly converging pair. Lanczos (``eigsh``) reaches
a certified answer with several times fewer products. Kept for side-by-side comparisons; the
explicit residuals reported here cost ``k`` extra products that are not counted in
``num_matvecs``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from landscape import reprs, validate
from landscape.spectral import _inputs, _loop_operator

__all__ = ["PowerIterationResult", "power_iteration"]


class PowerIterationResult(NamedTuple):
    """Result of ``power_iteration``.

    Attributes:
      eigenvalues: ``(k,)`` final Rayleigh quotients, in the order found.
      eigenvectors: ``(dim, k)`` the final normalised ``Hv`` of each search (as PyHessian).
      residuals: ``(k,)`` explicit ``||H v - theta v||`` of the returned pairs.
      num_iterations: ``(k,)`` products spent on each eigenvalue.
      num_matvecs: total products of the method (excluding the residual check).
    """

    eigenvalues: jax.Array
    eigenvectors: jax.Array
    residuals: jax.Array
    num_iterations: jax.Array
    num_matvecs: jax.Array

    @reprs.repr_method
    def __repr__(self) -> str:
        lam = reprs.host(self.eigenvalues).reshape(-1)
        head = reprs.line("PowerIterationResult", [
            f"k={lam.size}", f"dim={self.eigenvectors.shape[0]}",
            f"num_matvecs={reprs.num(self.num_matvecs)}"])
        columns = [[str(i) for i in range(lam.size)], [reprs.num(v) for v in lam],
                   [reprs.num(v) for v in reprs.host(self.residuals).reshape(-1)],
                   [reprs.num(v) for v in reprs.host(self.num_iterations).reshape(-1)]]
        rows = reprs.table(["i", "eigenvalue", "residual", "iterations"], columns)
        return "\n".join([head, *rows])


def power_iteration(op, k: int = 1, *, key, tol: float = 1e-3, max_iter: int = 100,
                    dim: int | None = None, dtype=None,
                    rewrite_convs: bool | None = None) -> PowerIterationResult:
    """Top-``k`` (by magnitude) eigenpairs by PyHessian's deflated power iteration.

    Args:
      op: a ``LinearOperator``, or a bare callable ``matvec(v) -> A v`` on ``(dim,)`` vectors
        together with ``dim=``.
      k: number of eigenpairs (``1 <= k <= dim``).
      key: ``jax.random`` key for the Gaussian start vectors (required, keyword-only).
      tol: PyHessian's relative-change tolerance on the Rayleigh quotient (default 1e-3).
      max_iter: products per eigenvalue at most (default 100).
      dim: the dimension when ``op`` is a bare callable.
      dtype: the dtype of a bare callable's vectors (default: JAX's default float dtype).
      rewrite_convs: run the products with their convolutions in XLA:CPU's fast form
        (``landscape.conv_rewrite``); ``None`` (default): exactly when the backend is CPU and
        the product contains a ``lax.conv_general_dilated``, as in :func:`landscape.spectral.eigsh`.

    Returns:
      ``PowerIterationResult``: ``eigenvalues (k,)``, ``eigenvectors (dim, k)``,
      ``residuals (k,)``, ``num_iterations (k,)``, ``num_matvecs``.
    """
    op = _inputs.as_operator(op, dim=dim, dtype=dtype)
    k = validate.check_int(k, "k", low=1, high=op.dim)
    validate.check_key(key)
    tol = validate.check_positive(tol, "tol")
    max_iter = validate.check_int(max_iter, "max_iter", low=1)
    return _power_kernel(op, key, k=k, tol=tol, max_iter=max_iter,
                         rewrite=_loop_operator.wants_rewrite(op, rewrite_convs))


def _normalize(v):
    return v / jnp.linalg.norm(v)


def _deflate(v, found):
    """Gram-Schmidt of ``v`` against the (zero-padded) columns of ``found``, then normalise."""
    coeffs = jnp.matmul(found.T, v, precision=jax.lax.Precision.HIGHEST)
    return _normalize(v - jnp.matmul(found, coeffs, precision=jax.lax.Precision.HIGHEST))


@partial(jax.jit, static_argnames=("k", "tol", "max_iter", "rewrite"))
def _power_kernel(op, key, *, k, tol, max_iter, rewrite=False):
    op = _loop_operator.loop_operator(op, rewrite)
    dim, dtype = op.dim, op.dtype

    def one(i, carry):
        found, thetas, iters = carry
        v = _normalize(jax.random.normal(jax.random.fold_in(key, i), (dim,), dtype))

        def cond(c):
            _, _, it, done = c
            return jnp.logical_and(it < max_iter, jnp.logical_not(done))

        def body(c):
            v, theta_prev, it, _ = c
            v = _deflate(v, found)
            hv = op.matvec(v)
            theta = jnp.vdot(hv, v)
            rel = jnp.abs(theta_prev - theta) / (jnp.abs(theta_prev) + 1e-6)
            done = jnp.logical_and(it > 0, rel < tol)
            return _normalize(hv), theta, it + 1, done

        init = (v, jnp.zeros((), dtype), jnp.asarray(0), False)
        v, theta, it, _ = jax.lax.while_loop(cond, body, init)
        return found.at[:, i].set(v), thetas.at[i].set(theta), iters.at[i].set(it)

    init = (jnp.zeros((dim, k), dtype), jnp.zeros((k,), dtype), jnp.zeros((k,), jnp.int32))
    found, thetas, iters = jax.lax.fori_loop(0, k, one, init)
    AV = _inputs.map_matvec(op, found)
    residuals = jnp.linalg.norm(AV - found * thetas, axis=0)
    return PowerIterationResult(thetas, found, residuals, iters, jnp.sum(iters))

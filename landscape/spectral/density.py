"""Spectral density by stochastic Lanczos quadrature (SLQ).

The spectral density of a symmetric ``n x n`` matrix is ``phi(t) = (1/n) sum_i delta(t -
lambda_i)``. For a random probe ``v`` with ``E[v v^T] = I`` and ``||v||^2 = n`` (Rademacher),
``(1/n) v^T f(A) v`` is an unbiased estimate of ``(1/n) tr f(A) = int f dphi``. Running ``m``
Lanczos steps from ``q_0 = v / ||v||`` gives ``T = S diag(theta) S^T``, and the Gauss quadrature

    q_0^T f(A) q_0  ~  sum_j  tau_j f(theta_j),     tau_j = S[0, j]^2,

is exact for polynomials ``f`` of degree ``<= 2m - 1``. So per probe, the nodes ``theta_j``
and weights ``tau_j`` (summing to 1) form a discrete measure whose average over probes
estimates ``phi``; smoothing each node with a Gaussian of width ``sigma`` gives a plottable
density. In particular the moments ``sum_j tau_j theta_j^p`` (``2p - 1 < 2m``) are Hutchinson
estimates of ``tr(A^p) / n``, unbiased, with a standard error over probes (``moment``).

With ``reorthogonalize=True`` the Krylov basis is kept orthogonal (classical Gram-Schmidt
twice), which stops ghost copies of outliers from stealing weight; memory is ``(m + 1) * n``
per probe and probes run one after another. ``False`` uses the three-term recurrence only.

References: Lin, Saad, Yang (2016), "Approximating spectral densities of large matrices";
Ghorbani, Krishnan, Xiao (2019), "An investigation into neural net optimization via Hessian
eigenvalue density"; Golub & Meurant (2010), *Matrices, Moments and Quadrature*.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from landscape import reprs, validate
from landscape.spectral import _inputs, _loop_operator
from landscape.spectral.lanczos import lanczos_init, lanczos_steps, tridiagonal

__all__ = ["SpectralDensity", "density"]


class SpectralDensity(NamedTuple):
    """SLQ estimate of the spectral density.

    Attributes:
      nodes: ``(num_probes, num_steps)`` Ritz values per probe.
      weights: ``(num_probes, num_steps)`` Gauss weights per probe, each row summing to 1.
      num_matvecs: products with ``A`` (``num_probes * num_steps``).
    """

    nodes: jax.Array
    weights: jax.Array
    num_matvecs: jax.Array

    @reprs.repr_method
    def __repr__(self) -> str:
        nodes, weights = reprs.host(self.nodes), reprs.host(self.weights)
        per_probe = (weights * nodes).sum(-1)  # tr(A) / n per probe
        p = per_probe.size
        mean = (reprs.pm(per_probe.mean(), per_probe.std(ddof=1) / p**0.5) if p > 1
                else reprs.num(per_probe.mean()))
        return reprs.line("SpectralDensity", [
            f"num_probes={nodes.shape[0]}", f"num_steps={nodes.shape[-1]}",
            f"support=[{reprs.num(nodes.min())}, {reprs.num(nodes.max())}]",
            f"mean_eigenvalue={mean}", f"num_matvecs={reprs.num(self.num_matvecs)}"])

    def pdf(self, grid, sigma) -> jax.Array:
        """Gaussian-smoothed density on ``grid``: ``mean_probes sum_j tau_j N(grid; theta_j,
        sigma^2)``. Integrates to 1 over the real line (so the Hessian bulk is visible as
        mass, not as a count)."""
        grid = jnp.asarray(grid, self.nodes.dtype)
        z = (grid[:, None, None] - self.nodes[None]) / sigma
        kern = jnp.exp(-0.5 * z**2) / (sigma * jnp.sqrt(2 * jnp.pi))
        return jnp.mean(jnp.sum(kern * self.weights[None], axis=-1), axis=-1)

    def moment(self, p: int):
        """Estimate of ``tr(A^p) / n`` and its standard error over probes (exact per probe
        for ``p <= 2 num_steps - 1``)."""
        per_probe = jnp.sum(self.weights * self.nodes**p, axis=-1)
        num = per_probe.shape[0]
        stderr = jnp.std(per_probe, ddof=1) / jnp.sqrt(num) if num > 1 else jnp.nan
        return jnp.mean(per_probe), stderr

    def cdf(self, grid) -> jax.Array:
        """Unsmoothed cumulative distribution ``mean_probes sum_j tau_j [theta_j <= grid]``."""
        grid = jnp.asarray(grid, self.nodes.dtype)
        below = self.nodes[None] <= grid[:, None, None]
        return jnp.mean(jnp.sum(jnp.where(below, self.weights[None], 0.0), axis=-1), axis=-1)


def density(op, *, key, num_probes: int = 10, num_steps: int = 80,
            reorthogonalize: bool = True, dim: int | None = None,
            dtype=None, rewrite_convs: bool | None = None) -> SpectralDensity:
    """Stochastic Lanczos quadrature estimate of the spectral density of ``op``.

    Args:
      op: a ``LinearOperator`` of dimension ``n``, or a bare ``matvec`` callable
        ``v -> A v`` on ``(n,)`` vectors together with ``dim=n``.
      key: ``jax.random`` key for the Rademacher probes (required, keyword-only).
      num_probes: independent probes (>= 1; >= 2 for standard errors).
      num_steps: Lanczos steps per probe, ``1 <= num_steps <= n``.
      reorthogonalize: full reorthogonalisation (recommended; see module docstring).
      dim: dimension of a bare ``matvec`` callable (required then).
      dtype: dtype of a bare callable's vectors (default: JAX's default float dtype).
      rewrite_convs: run the products with their convolutions in XLA:CPU's fast form
        (``landscape.conv_rewrite``); ``None`` (default): exactly when the backend is CPU and
        the product contains a ``lax.conv_general_dilated``, as in :func:`eigsh`.

    Accuracy: the quadrature is exact for polynomial moments up to degree ``2 num_steps - 1``
    per probe, so the error of any moment is the probe (Hutchinson) error, reported by
    ``moment``. Ritz nodes of outliers match the eigenvalues to the dtype's precision; nodes
    inside the bulk are quadrature points, not eigenvalues.
    """
    op = _inputs.as_operator(op, dim=dim, dtype=dtype)
    validate.check_key(key)
    num_probes = validate.check_int(num_probes, "num_probes", low=1)
    num_steps = validate.check_int(num_steps, "num_steps", low=1, high=op.dim)
    rewrite = _loop_operator.wants_rewrite(op, rewrite_convs)
    return _slq(op, key, num_probes=num_probes, num_steps=num_steps, full=bool(reorthogonalize),
                rewrite=rewrite)


@partial(jax.jit, static_argnames=("num_probes", "num_steps", "full", "rewrite"))
def _slq(op, key, *, num_probes, num_steps, full, rewrite=False):
    op = _loop_operator.loop_operator(op, rewrite)
    keys = jax.random.split(key, num_probes)

    def one(k):
        k_probe, k_loop = jax.random.split(k)
        v = jax.random.rademacher(k_probe, (op.dim,), op.dtype)
        state = lanczos_init(v, num_steps, k_loop, full_reorthogonalization=full)
        state = lanczos_steps(op, state, 0, num_steps, full_reorthogonalization=full)
        T, _ = tridiagonal(state.alpha, state.beta)
        theta, S = jnp.linalg.eigh(T)
        return theta, S[0] ** 2

    nodes, weights = jax.lax.map(one, keys)
    return SpectralDensity(nodes, weights, jnp.asarray(num_probes * num_steps))

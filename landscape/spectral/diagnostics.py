"""Scalar curvature diagnostics built on the spectral routines.

* ``directional_curvature(op, g) = g^T A g / ||g||^2``: the curvature along ``g`` (with ``A``
  the Hessian and ``g`` the gradient, the quantity that decides whether a gradient step of
  size ``eta`` is stable: ``eta < 2 / (g^T H g / ||g||^2)``; Cohen et al. 2021).
* ``gradient_fraction_in_topk(g, V) = ||V^T g||^2 / ||g||^2`` for orthonormal columns ``V``:
  the share of the gradient's squared norm in the top-k eigenspace (Gur-Ari, Roberts, Dyer
  2018, "Gradient descent happens in a tiny subspace").
* ``negative_positive_ratio``: the ratio of negative to positive curvature. We define the
  *mass* ratio ``sum_{lambda<0} |lambda| / sum_{lambda>0} lambda = (tr|A| - tr A) / (tr|A| +
  tr A)`` (0 for a PSD matrix, 1 for a spectrum symmetric about 0), estimated from an SLQ
  density by the same quadrature (``E_probe sum_j tau_j |theta_j| [theta_j < 0]`` over the
  positive counterpart), or computed exactly from a vector of eigenvalues. ``kind="count"``
  gives the ratio of spectral *weight* instead (fraction of eigenvalues below zero over the
  fraction above). Ghorbani et al. (2019) and Gabdullin (loss-landscape criteria) use such
  ratios to track how much negative curvature remains.
* ``topk_condition_number(eigenvalues) = max|lambda| / min|lambda|`` over the given (top-k)
  eigenvalues: the conditioning inside the outlier subspace, not of the whole matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from landscape import validate
from landscape.spectral import _inputs
from landscape.spectral.density import SpectralDensity

__all__ = [
    "directional_curvature",
    "gradient_fraction_in_topk",
    "negative_positive_ratio",
    "topk_condition_number",
]


def _flat(g, name):
    g = jnp.asarray(g)
    if g.ndim != 1:
        raise ValueError(f"{name} must be a flat vector (ravel the pytree); got shape {g.shape}")
    return g


def directional_curvature(op, g, *, dim: int | None = None, dtype=None) -> jax.Array:
    """``g^T A g / ||g||^2`` with one product (``g``: flat ``(dim,)`` nonzero vector).

    ``op`` is a ``LinearOperator`` or a bare ``matvec`` callable together with ``dim`` (and
    optionally ``dtype``). Returns a scalar.
    """
    op = _inputs.as_operator(op, dim=dim, dtype=dtype)
    validate.check_vector(_flat(g, "g"), op.dim, "g")
    g = jnp.asarray(g, op.dtype)
    acc = _inputs.accumulation_dtype(op.dtype)
    return _inputs.dot(g, op.matvec(g), acc) / _inputs.dot(g, g, acc)


def gradient_fraction_in_topk(g, eigenvectors) -> jax.Array:
    """``||V^T g||^2 / ||g||^2`` in ``[0, 1]`` for ``V = eigenvectors`` of shape ``(dim, k)``
    with orthonormal columns (e.g. ``eigsh(...).eigenvectors``)."""
    g = _flat(g, "g")
    V = jnp.asarray(eigenvectors)
    if V.ndim != 2 or V.shape[0] != g.shape[0]:
        raise ValueError(f"eigenvectors must have shape ({g.shape[0]}, k); got {V.shape}")
    validate.check_concrete_values(g, "g")
    acc = _inputs.accumulation_dtype(jnp.result_type(g, V))
    proj = jnp.matmul(V.T, g, precision=_inputs.HIGHEST, preferred_element_type=acc)
    return jnp.sum(proj**2) / _inputs.dot(g, g, acc)


def negative_positive_ratio(spectrum, kind: str = "mass") -> jax.Array:
    """Negative-to-positive curvature ratio from a ``SpectralDensity`` or an eigenvalue array.

    ``kind="mass"``: ``sum_{lambda<0} |lambda| / sum_{lambda>0} lambda``;
    ``kind="count"``: ``#{lambda < 0} / #{lambda > 0}`` (spectral weights for a density).
    Returns ``inf`` when there is no positive part.
    """
    if kind not in ("mass", "count"):
        raise ValueError(f"kind must be 'mass' or 'count'; got {kind!r}")
    if isinstance(spectrum, SpectralDensity):
        vals, w = spectrum.nodes, spectrum.weights
    else:
        vals = jnp.asarray(spectrum)
        if vals.ndim != 1 or vals.shape[0] == 0:
            raise ValueError("spectrum must be a SpectralDensity or a non-empty 1-D array of "
                             f"eigenvalues; got shape {vals.shape}")
        w = jnp.ones_like(vals)
    size = jnp.abs(vals) if kind == "mass" else jnp.ones_like(vals)
    neg = jnp.sum(jnp.where(vals < 0, w * size, 0.0))
    pos = jnp.sum(jnp.where(vals > 0, w * size, 0.0))
    return jnp.where(pos > 0, neg / jnp.where(pos > 0, pos, 1.0), jnp.inf)


def topk_condition_number(eigenvalues) -> jax.Array:
    """``max|lambda| / min|lambda|`` over ``eigenvalues`` (``inf`` if one is zero)."""
    lam = jnp.abs(jnp.asarray(eigenvalues))
    if lam.ndim != 1 or lam.shape[0] == 0:
        raise ValueError(f"eigenvalues must be a non-empty 1-D array; got shape {lam.shape}")
    if not isinstance(lam, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(lam))):
        raise ValueError("eigenvalues contains non-finite values")
    lo = jnp.min(lam)
    return jnp.where(lo > 0, jnp.max(lam) / jnp.where(lo > 0, lo, 1.0), jnp.inf)

"""Sanity probes for curvature computations, run on request.

* :func:`symmetry_probe`: ``u . A v`` against ``v . A u`` for random ``u, v``; a curvature matrix
  is symmetric, so a large asymmetry means the operator is wrong (or the loss non-deterministic).
* :func:`determinism_probe`: raises when ``loss_fn`` gives different values on repeated calls
  (dropout keys drawn inside, BatchNorm in train mode, Python-side randomness or state).
* :func:`finite_difference_check`: compares ``hvp`` with central differences of the gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from landscape import reprs, validate
from landscape import tree as T
from landscape.curvature.hessian import hvp
from landscape.linop import LinearOperator

__all__ = [
    "symmetry_probe",
    "SymmetryProbe",
    "determinism_probe",
    "DeterminismProbe",
    "finite_difference_check",
    "FiniteDifferenceCheck",
]


class SymmetryProbe(NamedTuple):
    """Result of :func:`symmetry_probe`.

    Fields: ``asymmetry`` = ``|u.Av - v.Au| / (||u|| ||Av|| + ||v|| ||Au||) * 2`` (scalar; ~1e-7
    in float32 and ~1e-16 in float64 for a correct symmetric operator), ``u_Av``, ``v_Au`` (the
    two bilinear forms) and ``num_matvecs`` (= 2).
    """

    asymmetry: jax.Array
    u_Av: jax.Array
    v_Au: jax.Array
    num_matvecs: int

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.namedtuple_repr(self)


def symmetry_probe(op: LinearOperator, key: jax.Array) -> SymmetryProbe:
    """Relative asymmetry of ``op`` from one pair of Gaussian probes (2 products)."""
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be a LinearOperator; got {type(op).__name__}")
    return _symmetry_probe(op, key)


@jax.jit
def _symmetry_probe(op, key):
    ku, kv = jax.random.split(key)
    u = jax.random.normal(ku, (op.dim,), op.dtype)
    v = jax.random.normal(kv, (op.dim,), op.dtype)
    av, au = op.matvec(v), op.matvec(u)
    hi = jax.lax.Precision.HIGHEST
    uav, vau = jnp.vdot(u, av, precision=hi), jnp.vdot(v, au, precision=hi)
    scale = jnp.linalg.norm(u) * jnp.linalg.norm(av) + jnp.linalg.norm(v) * jnp.linalg.norm(au)
    asym = 2 * jnp.abs(uav - vau) / jnp.maximum(scale, jnp.finfo(op.dtype).tiny)
    return SymmetryProbe(asym, uav, vau, 2)


class DeterminismProbe(NamedTuple):
    """Result of a passed :func:`determinism_probe`: the loss ``value`` and the relative
    difference ``jit_vs_eager`` between the jitted and eager evaluations (rounding only)."""

    value: jax.Array
    jit_vs_eager: float

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.namedtuple_repr(self)


def determinism_probe(loss_fn, params, batch, *, rtol: float | None = None) -> DeterminismProbe:
    """Check that ``loss_fn(params, batch)`` is a deterministic function of its arguments.

    Calls the Python-level ``loss_fn`` twice (must agree bit for bit: hidden randomness or state
    shows up here) and compares it with ``jax.jit(loss_fn)`` (must agree up to ``rtol``, default
    ``1e-4`` in float32 and ``1e-10`` in float64, since XLA may fuse differently). A jitted pure
    function is deterministic by construction, so the eager calls are the real probe. The
    gradient is probed the same way (twice, bit for bit).

    Raises:
      ValueError: naming what differed, with the two values.
    """
    validate.check_scalar_loss(loss_fn, params, batch)
    first, second = loss_fn(params, batch), loss_fn(params, batch)
    a, b = np.asarray(first), np.asarray(second)
    if not np.array_equal(a, b, equal_nan=True):
        raise ValueError(
            f"loss_fn is not deterministic: two calls with the same params and batch gave {a} "
            f"and {b} (dropout/BatchNorm in train mode or hidden state? use an eval-mode loss)"
        )
    g1 = T.ravel(jax.grad(loss_fn)(params, batch))[0]
    g2 = T.ravel(jax.grad(loss_fn)(params, batch))[0]
    if not np.array_equal(np.asarray(g1), np.asarray(g2), equal_nan=True):
        raise ValueError("loss_fn is not deterministic: two gradient evaluations differ")
    jitted = np.asarray(jax.jit(loss_fn)(params, batch))
    if rtol is None:
        rtol = 1e-10 if a.dtype == np.float64 else 1e-4
    rel = float(np.abs(jitted - a) / max(float(np.abs(a)), np.finfo(np.float64).tiny))
    if not rel <= rtol:
        raise ValueError(
            f"loss_fn differs between eager ({a}) and jitted ({jitted}) evaluation: relative "
            f"difference {rel:.2e} > rtol={rtol:.1e} (hidden state or Python-side randomness?)"
        )
    return DeterminismProbe(first, rel)


class FiniteDifferenceCheck(NamedTuple):
    """Result of :func:`finite_difference_check`.

    Fields: ``relative_error`` = ``||Hv - fd|| / max(||Hv||, ||fd||)``; ``hvp`` and
    ``finite_difference`` (flat vectors); ``eps`` (the step used).
    """

    relative_error: jax.Array
    hvp: jax.Array
    finite_difference: jax.Array
    eps: float

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.namedtuple_repr(self, ["relative_error", "eps", "hvp", "finite_difference"])


def finite_difference_check(loss_fn, params, batch, v, eps: float | None = None):
    """Compare ``hvp`` with ``(grad(theta + eps v) - grad(theta - eps v)) / (2 eps)``.

    The central difference has truncation error ``O(eps^2)`` and rounding error
    ``O(eps_machine / eps)``; the default step ``eps = eps_machine^(1/3) * max(1, ||theta||) /
    ||v||`` balances them, giving a relative error of ~1e-2 to 1e-3 in float32 and ~1e-9 in
    float64 for smooth losses. A much larger error means the HVP (or the loss) is broken.
    """
    validate.check_params(params)
    validate.check_vector_like(params, v)
    hv = T.ravel(hvp(loss_fn, params, batch, v))[0]
    flat, unravel = T.ravel(params)
    vflat = T.ravel(v)[0].astype(flat.dtype)
    if eps is None:
        cbrt = float(jnp.finfo(flat.dtype).eps) ** (1 / 3)
        vnorm = max(float(jnp.linalg.norm(vflat)), float(jnp.finfo(flat.dtype).tiny))
        eps = cbrt * max(1.0, float(jnp.linalg.norm(flat))) / vnorm
    grad = lambda x: T.ravel(jax.grad(loss_fn)(unravel(x), batch))[0]
    fd = (grad(flat + eps * vflat) - grad(flat - eps * vflat)) / (2 * eps)
    denom = jnp.maximum(jnp.maximum(jnp.linalg.norm(hv), jnp.linalg.norm(fd)), 1e-30)
    return FiniteDifferenceCheck(jnp.linalg.norm(hv - fd) / denom, hv, fd, float(eps))

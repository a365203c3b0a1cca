"""Stochastic trace and diagonal estimators with standard errors.

* **Hutchinson** (Hutchinson 1989): ``tr(A) ~ (1/m) sum_i z_i^T A z_i`` with Rademacher
  ``z_i``. Unbiased; variance ``2 (||A||_F^2 - sum_i A_ii^2) / m``. The standard error is the
  sample standard deviation over probes divided by ``sqrt(m)``. Optional sequential stopping:
  stop as soon as at least ``min_samples`` probes were used and ``stderr <= rtol * |estimate|``.
  (PyHessian instead stops when the running mean moves by less than 0.1%, which can stop after
  a handful of probes with a few percent error; that rule is deliberately not offered.)
* **Hutch++** (Meyer, Musco, Musco, Woodruff 2021, "Hutch++: optimal stochastic trace
  estimation"): spend m/3 products to sketch ``Q = orth(A S)``, take ``tr(Q^T A Q)`` exactly
  (m/3 products) and Hutchinson on the deflated ``(I - QQ^T) A (I - QQ^T)`` (m/3 probes).
  Error ``O(1/m)`` instead of ``O(1/sqrt m)`` for matrices with decaying spectra; exact when
  ``rank(A) <= m/3``. The stderr is that of the Hutchinson part.
* **XTrace** (Epperly, Tropp, Webber 2024, "XTrace: making the most of every sample in
  stochastic trace estimation"): with ``s = m/2`` probes ``Omega`` and ``Y = A Omega``, average
  over ``i`` the exchangeable estimates ``tr(P_i A) + w_i^T (I - P_i) A (I - P_i) w_i`` where
  ``P_i`` projects onto ``span(Y_{-i})`` (the sketch without probe ``i``). Each is unbiased
  because ``w_i`` is independent of ``P_i``; the stderr is their standard deviation over
  ``sqrt(s)``. Everything comes from ``Y`` and ``Z = A Q`` by downdating the QR of ``Y``, so
  the cost is ``m`` products. (We use Rademacher probes and omit the paper's optional
  probe-normalisation refinement.) Exact when ``rank(A) < s``.

All estimates accumulate in float64 when x64 is on. Accuracy is set by the estimator variance,
not the dtype: the stderr is the number to read.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from landscape.spectral import _inputs

__all__ = ["TraceEstimate", "DiagonalEstimate", "trace", "diagonal"]

_METHODS = ("hutchinson", "hutch++", "xtrace")
HI = jax.lax.Precision.HIGHEST


class TraceEstimate(NamedTuple):
    """A stochastic trace estimate.

    Attributes:
      estimate: scalar estimate of ``tr(A)``.
      stderr: its estimated standard error.
      num_matvecs: products with ``A`` used.
    """

    estimate: jax.Array
    stderr: jax.Array
    num_matvecs: jax.Array


class DiagonalEstimate(NamedTuple):
    """Hutchinson estimate of ``diag(A)``: ``estimate (dim,)``, ``stderr (dim,)``, matvecs."""

    estimate: jax.Array
    stderr: jax.Array
    num_matvecs: jax.Array


def trace(op, *, key=None, num_matvecs: int = 99, method: str = "hutchinson",
          rtol: float | None = None, min_samples: int = 10) -> TraceEstimate:
    """Estimate ``tr(A)`` with at most ``num_matvecs`` products.

    Args:
      op: a ``LinearOperator``.
      key: ``jax.random`` key for the probes.
      num_matvecs: budget of products (Hutch++ needs >= 3, XTrace >= 4).
      method: "hutchinson", "hutch++" or "xtrace".
      rtol: Hutchinson only: stop once ``stderr <= rtol * |estimate|`` (after ``min_samples``).
      min_samples: minimum probes before the sequential rule may stop (>= 2).
    """
    _inputs.check_operator(op)
    _inputs.check_key(key)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}")
    low = {"hutchinson": 2, "hutch++": 3, "xtrace": 4}[method]
    m = _inputs.check_int(num_matvecs, "num_matvecs", low=low)
    if rtol is not None:
        if method != "hutchinson":
            raise ValueError(f"rtol (sequential stopping) is only for method='hutchinson'; "
                             f"got method={method!r}")
        rtol = _inputs.check_positive(rtol, "rtol")
        min_samples = _inputs.check_int(min_samples, "min_samples", low=2, high=m)
        return _hutchinson_sequential(op, key, m=m, rtol=rtol, min_samples=min_samples)
    if method == "hutchinson":
        return _hutchinson(op, key, m=m)
    if method == "hutch++":
        return _hutchpp(op, key, m=m)
    return _xtrace(op, key, m=m)


def _acc(op):
    return _inputs.accumulation_dtype(op.dtype)


def _quad(op, z):
    return _inputs.dot(z, op.matvec(z), _acc(op))


def _mean_stderr(samples):
    n = samples.shape[0]
    return jnp.mean(samples), jnp.std(samples, ddof=1) / jnp.sqrt(n)


@partial(jax.jit, static_argnames=("m",))
def _hutchinson(op, key, *, m):
    Z = _inputs.sample_probes(key, op.dim, m, op.dtype)
    samples = jax.lax.map(lambda z: _quad(op, z), Z.T)
    est, se = _mean_stderr(samples)
    return TraceEstimate(est, se, jnp.asarray(m))


@partial(jax.jit, static_argnames=("m", "rtol", "min_samples"))
def _hutchinson_sequential(op, key, *, m, rtol, min_samples):
    acc = _acc(op)

    def cond(c):
        n, mean, m2 = c
        se = jnp.sqrt(m2 / jnp.maximum(n - 1, 1) / jnp.maximum(n, 1))
        stop = (n >= min_samples) & (se <= rtol * jnp.abs(mean))
        return (n < m) & jnp.logical_not(stop)

    def body(c):  # Welford's running mean and sum of squared deviations
        n, mean, m2 = c
        z = jax.random.rademacher(jax.random.fold_in(key, n), (op.dim,), op.dtype)
        x = _quad(op, z)
        delta = x - mean
        mean = mean + delta / (n + 1)
        return n + 1, mean, m2 + delta * (x - mean)

    zero = jnp.zeros((), acc)
    n, mean, m2 = jax.lax.while_loop(cond, body, (jnp.asarray(0), zero, zero))
    se = jnp.sqrt(m2 / (n - 1) / n)
    return TraceEstimate(mean, se, n)


@partial(jax.jit, static_argnames=("m",))
def _hutchpp(op, key, *, m):
    s = m // 3
    g = m - 2 * s
    k1, k2 = jax.random.split(key)
    S = _inputs.sample_probes(k1, op.dim, s, op.dtype)
    Q, _ = jnp.linalg.qr(_inputs.map_matvec(op, S))
    AQ = _inputs.map_matvec(op, Q)
    top = jnp.trace(jnp.matmul(Q.T, AQ, precision=HI, preferred_element_type=_acc(op)))
    G = _inputs.sample_probes(k2, op.dim, g, op.dtype)
    G = G - jnp.matmul(Q, jnp.matmul(Q.T, G, precision=HI), precision=HI)
    samples = jax.lax.map(lambda z: _quad(op, z), G.T)
    est, se = _mean_stderr(samples)
    return TraceEstimate(top + est, se, jnp.asarray(2 * s + g))


@partial(jax.jit, static_argnames=("m",))
def _xtrace(op, key, *, m):
    s = m // 2
    acc = _acc(op)
    W = _inputs.sample_probes(key, op.dim, s, op.dtype)
    Y = _inputs.map_matvec(op, W)
    Q, R = jnp.linalg.qr(Y)
    Z = _inputs.map_matvec(op, Q)
    H = jnp.matmul(Q.T, Z, precision=HI, preferred_element_type=acc)
    # u_i: unit vector orthogonal to R e_j (j != i): P_i = Q (I - u_i u_i^T) Q^T.
    U = _unit_columns(_inverse_transpose(R)).astype(acc)
    C = jnp.matmul(Q.T, W, precision=HI, preferred_element_type=acc)   # Q^T w_i
    c = jnp.sum(U * C, axis=0)                                          # u_i^T Q^T w_i
    # x_i = (I - P_i) w_i = w_i - Q C_i + Q u_i c_i ;  A x_i = y_i - Z C_i + Z u_i c_i
    coef = (C - U * c).astype(op.dtype)
    X = W - jnp.matmul(Q, coef, precision=HI)
    AX = Y - jnp.matmul(Z, coef, precision=HI)
    quad = jnp.sum(X.astype(acc) * AX.astype(acc), axis=0)
    uhu = jnp.sum(U * jnp.matmul(H, U, precision=HI), axis=0)
    samples = jnp.trace(H) - uhu + quad
    est, se = _mean_stderr(samples)
    return TraceEstimate(est, se, jnp.asarray(2 * s))


def _inverse_transpose(R):
    """``R^{-T}`` with exactly-zero pivots nudged to ``eps * max|diag R|`` (rank-deficient
    sketches: the nudged columns then point along the null space, which keeps ``P_i`` a
    projector containing ``range(A)``)."""
    d = jnp.diag(R)
    floor = jnp.finfo(R.dtype).eps * jnp.maximum(jnp.max(jnp.abs(d)), jnp.finfo(R.dtype).tiny)
    d_safe = jnp.where(jnp.abs(d) < floor, jnp.where(d < 0, -floor, floor), d)
    R = R + jnp.diag(d_safe - d)
    eye = jnp.eye(R.shape[0], dtype=R.dtype)
    return jax.scipy.linalg.solve_triangular(R, eye, lower=False, trans="T")


def _unit_columns(M):
    return M / jnp.linalg.norm(M, axis=0)


def diagonal(op, key=None, num_matvecs: int = 100) -> DiagonalEstimate:
    """Hutchinson estimate of ``diag(A)``: mean over Rademacher ``z`` of ``z * (A z)``.

    Unbiased; per-entry variance ``sum_{j != i} A_ij^2 / m`` (Bekas, Kokiopoulou, Saad 2007).
    The stderr is the per-entry sample standard deviation over ``sqrt(m)``.
    """
    _inputs.check_operator(op)
    _inputs.check_key(key)
    m = _inputs.check_int(num_matvecs, "num_matvecs", low=2)
    return _diagonal(op, key, m=m)


@partial(jax.jit, static_argnames=("m",))
def _diagonal(op, key, *, m):
    acc = _acc(op)

    def body(c, i):
        mean, m2 = c
        z = jax.random.rademacher(jax.random.fold_in(key, i), (op.dim,), op.dtype)
        x = (z * op.matvec(z)).astype(acc)
        delta = x - mean
        mean = mean + delta / (i + 1)
        return (mean, m2 + delta * (x - mean)), None

    zero = jnp.zeros((op.dim,), acc)
    (mean, m2), _ = jax.lax.scan(body, (zero, zero), jnp.arange(m))
    return DiagonalEstimate(mean, jnp.sqrt(m2 / (m - 1) / m), jnp.asarray(m))

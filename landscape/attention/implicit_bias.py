"""The classical case: gradient descent on separable logistic regression (Soudry et al. 2018).

On linearly separable data ``(x_i, y_i)`` (no bias), GD on the logistic loss
``L(w) = mean_i log(1 + exp(-y_i w^T x_i))`` with a small enough step drives ``||w|| -> inf`` while
``w_t / ||w_t||`` converges to the hard-margin SVM direction ``w_hat / ||w_hat||``, where
``w_hat = argmin ||w|| s.t. y_i w^T x_i >= 1``. The convergence is slow: the direction gap decays
like ``1 / log t`` (``w_t = w_hat log t + rho_t`` with bounded ``rho_t``), while the loss decays
like ``1 / t``. Symmetric data (every point mirrored) can hide the slow rate, so
``asymmetric_separable_2d`` draws two clusters of different size, spread and distance.

This is the attention SVM's simplest relative: the token-selection SVM of
``landscape.attention.svm`` is the same bias-free hard-margin problem on matrices.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from landscape.attention.qp import svm_from_rows

__all__ = [
    "asymmetric_separable_2d",
    "hard_margin_svm",
    "logistic_gd",
    "ImplicitBiasMetrics",
    "implicit_bias_metrics",
    "RateFit",
    "fit_inverse_log_rate",
]


def asymmetric_separable_2d(key, n_pos: int = 12, n_neg: int = 6, *, min_margin: float = 0.3,
                            dtype=None) -> tuple[jax.Array, jax.Array]:
    """Separable 2-D data through the origin, deliberately asymmetric.

    Positives ~ N((2, 1), 0.5^2 I), negatives ~ N((-0.5, -2), 0.3^2 I); candidates whose signed
    distance to the line ``0.4 x_1 + x_2 = 0`` is below ``min_margin`` are rejected, which makes
    the data separable by a line through the origin. Returns ``(X (n, 2), y (n,))``, ``y`` in
    ``{-1, +1}``, positives first. Host-level (raises if too few candidates survive).
    """
    dtype = dtype or jnp.result_type(float)
    kp, kn = jax.random.split(key)
    normal = np.array([0.4, 1.0]) / np.sqrt(1.16)

    def draw(k, n, mean, std, sign):
        cand = np.asarray(jnp.asarray(mean, dtype) + std * jax.random.normal(k, (16 * n, 2), dtype))
        ok = cand[sign * (cand @ normal) >= min_margin]
        if len(ok) < n:
            raise ValueError(f"min_margin={min_margin} rejects too many points; lower it")
        return ok[:n]

    X = np.concatenate([draw(kp, n_pos, [2.0, 1.0], 0.5, 1.0),
                        draw(kn, n_neg, [-0.5, -2.0], 0.3, -1.0)])
    y = np.concatenate([np.ones(n_pos), -np.ones(n_neg)])
    return jnp.asarray(X, dtype), jnp.asarray(y, dtype)


def hard_margin_svm(X, y, *, tol: float = 1e-12, max_iter: int = 50_000):
    """Bias-free hard-margin SVM ``argmin ||w|| s.t. y_i w^T x_i >= 1`` via the JAX dual QP.

    Returns ``(w_hat, DualQPResult)``. Runs in the dtype of ``X`` (float64 recommended). jit-able.
    """
    return svm_from_rows(jnp.asarray(y)[:, None] * jnp.asarray(X), tol=tol, max_iter=max_iter)


def _logistic_loss(w, X, y):
    return jnp.mean(jax.nn.softplus(-y * (X @ w)))


def logistic_gd(X, y, record_steps, *, learning_rate: float = 1.0, w0=None):
    """Full-batch GD on the logistic loss, recording ``w_t`` at the sorted ints ``record_steps``.

    Returns ``(ws (R, D), losses (R,))``: the iterate after ``record_steps[r]`` steps (``w_0 = 0``
    by default). Only the records are stored, so millions of steps cost no memory. jit-able.
    """
    record_steps = jnp.asarray(record_steps, jnp.int32)
    w0 = jnp.zeros(X.shape[1], X.dtype) if w0 is None else jnp.asarray(w0, X.dtype)
    grad = jax.grad(_logistic_loss)

    def advance(carry, t_next):
        w, t = carry
        w = lax.fori_loop(t, t_next, lambda _, w: w - learning_rate * grad(w, X, y), w)
        return (w, t_next), (w, _logistic_loss(w, X, y))

    _, (ws, losses) = lax.scan(advance, (w0, jnp.int32(0)), record_steps)
    return ws, losses


class ImplicitBiasMetrics(NamedTuple):
    """Metrics at the steps ``t`` (all ``(R,)``, numpy float64).

    Fields: steps; direction_gap ``||w_t/||w_t|| - w_hat/||w_hat|| ||``; margin_gap
    ``1/||w_hat|| - min_i y_i x_i^T w_t / ||w_t||`` (>= 0); norm_over_log ``||w_t|| / log t``
    (tends to ``||w_hat||``); gap_times_log ``direction_gap * log t``; angle: angle from
    ``w_hat`` to ``w_t`` (signed, in radians, for 2-D data; unsigned otherwise); loss.
    """

    steps: np.ndarray
    direction_gap: np.ndarray
    margin_gap: np.ndarray
    norm_over_log: np.ndarray
    gap_times_log: np.ndarray
    angle: np.ndarray
    loss: np.ndarray


def implicit_bias_metrics(ws, losses, steps, X, y, w_hat) -> ImplicitBiasMetrics:
    """Metrics of ``logistic_gd`` records ``ws`` ``(R, D)`` taken at ``steps`` (ints >= 2)."""
    steps = np.asarray(steps, np.int64)
    if steps.min() < 2:
        raise ValueError("steps must be >= 2 (log t must be positive)")
    w = np.asarray(ws, np.float64)
    if w.shape[0] != steps.shape[0]:
        raise ValueError(f"ws has {w.shape[0]} records but steps has {steps.shape[0]}")
    X, y, w_hat = (np.asarray(a, np.float64) for a in (X, y, w_hat))
    nw = np.linalg.norm(w, axis=1)
    direction = np.linalg.norm(w / nw[:, None] - w_hat / np.linalg.norm(w_hat), axis=1)
    margin = 1.0 / np.linalg.norm(w_hat) - ((y[:, None] * X) @ w.T).min(axis=0) / nw
    logt = np.log(steps)
    u, u_hat = w / nw[:, None], w_hat / np.linalg.norm(w_hat)
    if w.shape[1] == 2:
        angle = np.arctan2(u[:, 1], u[:, 0]) - np.arctan2(u_hat[1], u_hat[0])
    else:
        angle = np.arccos(np.clip(u @ u_hat, -1.0, 1.0))
    return ImplicitBiasMetrics(steps, direction, margin, nw / logt, direction * logt, angle,
                               np.asarray(losses, np.float64))


class RateFit(NamedTuple):
    """Least-squares fit ``gap ~ a / log t + b``: fields a, b, r2 (coefficient of determination)."""

    a: float
    b: float
    r2: float


def fit_inverse_log_rate(steps, gap) -> RateFit:
    """Fit ``gap = a / log t + b``; a clean ``1/log t`` decay gives ``b ~ 0`` and ``r2 ~ 1``."""
    u = 1.0 / np.log(np.asarray(steps, np.float64))
    g = np.asarray(gap, np.float64)
    A = np.stack([u, np.ones_like(u)], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, g, rcond=None)
    resid = g - A @ np.array([a, b])
    r2 = 1.0 - resid @ resid / max(((g - g.mean()) ** 2).sum(), 1e-300)
    return RateFit(float(a), float(b), float(r2))

"""The classical case: gradient descent on separable logistic regression (Soudry et al. 2018).

On linearly separable data ``(x_i, y_i)`` (no bias), GD on the logistic loss
``L(w) = mean_i log(1 + exp(-y_i w^T x_i))`` with a small enough step drives ``||w|| -> inf`` while
``w_t / ||w_t||`` converges to the hard-margin SVM direction ``w_hat / ||w_hat||``, where
``w_hat = argmin ||w|| s.t. y_i w^T x_i >= 1``. The convergence is slow: the direction gap decays
like ``1 / log t`` (``w_t = w_hat log t + rho_t`` with bounded ``rho_t``), while the loss decays
like ``1 / t``. Symmetric data (every point mirrored) can hide the slow rate, so
``asymmetric_separable_2d`` draws two clusters of different size, spread and distance.

The asymptotics are exact enough to test, not only to plot (Soudry et al. 2018, Thm. 3). With
support vectors ``S`` (dual variables ``alpha_n > 0``, ``x~_n = y_n x_n``) that span the space,
GD with step ``eta`` on the *mean* loss follows ``w_t = w_hat log t + w~ + r_t`` with ``r_t -> 0``,
where ``w~`` solves ``x~_n^T w~ = log(eta / (N alpha_n))`` for ``n`` in ``S``. Hence
``gap_t * log t -> ||P_perp w~|| / ||w_hat||`` (``P_perp`` removes the ``w_hat`` direction),
``t * loss_t -> ||w_hat||^2 / eta`` (because ``sum_n alpha_n = ||w_hat||^2``), and the residual
decays like ``t^(-kappa)``. Linearising ``dr/dt = -(1/t) A r`` with
``A = sum_S alpha_n x~_n x~_n^T`` gives ``kappa = min(lambda_perp(A), theta - 1)``:
``lambda_perp`` is the smallest eigenvalue of ``A`` off the ``w_hat`` direction
(``A w_hat = w_hat``) and ``theta`` the smallest margin ``x~_n^T w_hat`` of a non-support
point, whose pull decays like ``t^(-theta)``. Points with ``theta`` close to 1 make the
transient arbitrarily slow; ``prune_near_support`` removes them without changing the SVM.
``asymptotic_prediction`` computes all of this from the data; ``implicit_bias_metrics`` compares
a run with it.

This is the attention SVM's simplest relative: the token-selection SVM of
``landscape.attention.svm`` is the same bias-free hard-margin problem on matrices.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from landscape import reprs
from landscape.attention.qp import svm_from_rows

__all__ = [
    "asymmetric_separable_2d",
    "hard_margin_svm",
    "logistic_gd",
    "prune_near_support",
    "AsymptoticPrediction",
    "asymptotic_prediction",
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


def _check_xy(X, y):
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (N, D) and y (N,); got {X.shape} and {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X and y must be finite")
    return X, y


def prune_near_support(X, y, w_hat, ratio: float, *, tol: float = 1e-6):
    """Drop the non-support points whose margin ``y_n x_n^T w_hat`` lies in ``(1 + tol, ratio)``.

    A removed point has a zero dual variable, so the hard-margin SVM ``w_hat`` of the pruned data
    is unchanged, while the non-support pull on GD now decays like ``t^(-ratio)`` or faster.
    Returns ``(X, y)`` (numpy float64). Host-level.
    """
    X, y = _check_xy(X, y)
    if not ratio > 1.0:
        raise ValueError(f"ratio must be > 1; got {ratio!r}")
    m = (y[:, None] * X) @ np.asarray(w_hat, np.float64)
    if np.any(m < 1 - tol):
        raise ValueError("w_hat violates the margin constraints of (X, y): pass the SVM of X, y")
    keep = (m <= 1 + tol) | (m >= ratio)
    return X[keep], y[keep]


class AsymptoticPrediction(NamedTuple):
    """Soudry et al.'s asymptotics of GD with step ``eta`` on the mean logistic loss.

    Fields:
      w_tilde: ``(D,)`` the offset in ``w_t = w_hat log t + w_tilde + r_t``.
      support: ``(N,)`` bool, the support vectors.
      gap_limit: ``lim gap_t log t = ||P_perp w_tilde|| / ||w_hat||``.
      loss_times_t: ``lim t L(w_t) = ||w_hat||^2 / eta``.
      exponent: ``kappa = min(lambda_perp, theta - 1)``, the predicted decay ``||r_t|| ~ t^-kappa``.
      lambda_perp: smallest eigenvalue of ``A = sum_S alpha_n x~_n x~_n^T`` off ``w_hat``.
      theta: smallest margin of a non-support point (``inf`` if every point is a support vector).
      spans: whether the support vectors span ``R^D``. If not, ``w_tilde`` is only determined
        inside their span (the rest is set by the transient) and the prediction is partial.
    """

    w_tilde: np.ndarray
    support: np.ndarray
    gap_limit: float
    loss_times_t: float
    exponent: float
    lambda_perp: float
    theta: float
    spans: bool

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.line("AsymptoticPrediction", [
            f"support={reprs.count(self.support)}",
            *reprs.fields(self, ["exponent", "gap_limit", "loss_times_t", "lambda_perp",
                                 "theta", "spans", "w_tilde"])])


def asymptotic_prediction(X, y, w_hat, alpha, learning_rate: float = 1.0, *,
                          support_tol: float = 1e-8) -> AsymptoticPrediction:
    """Predict the late phase of ``logistic_gd`` from the SVM and its dual variables ``alpha``.

    ``alpha`` ``(N,)`` is ``hard_margin_svm(X, y)[1].lam``; support vectors are the points with
    ``alpha_n > support_tol * max alpha``. Host-level (numpy float64).
    """
    X, y = _check_xy(X, y)
    w_hat, alpha = np.asarray(w_hat, np.float64), np.asarray(alpha, np.float64)
    if alpha.shape != y.shape:
        raise ValueError(f"alpha must have shape {y.shape}; got {alpha.shape}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0; got {learning_rate!r}")
    Xt, N = y[:, None] * X, X.shape[0]
    S = alpha > support_tol * alpha.max()
    w_tilde = np.linalg.lstsq(Xt[S], np.log(learning_rate / (N * alpha[S])), rcond=None)[0]
    nw = np.linalg.norm(w_hat)
    u = w_hat / nw
    perp = w_tilde - (w_tilde @ u) * u
    A = np.einsum("n,ni,nj->ij", alpha[S], Xt[S], Xt[S])
    Pp = np.eye(len(u)) - np.outer(u, u)
    basis = np.linalg.svd(Pp @ Xt[S].T, full_matrices=False)[0]
    rank = np.linalg.matrix_rank(Xt[S])
    basis = basis[:, :max(rank - 1, 0)]
    lam_perp = (float(np.linalg.eigvalsh(basis.T @ A @ basis).min()) if basis.shape[1]
                else float("inf"))
    theta = float((Xt[~S] @ w_hat).min()) if (~S).any() else float("inf")
    return AsymptoticPrediction(w_tilde, S, float(np.linalg.norm(perp) / nw),
                                float(nw**2 / learning_rate), min(lam_perp, theta - 1.0),
                                lam_perp, theta, bool(rank == X.shape[1]))


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
    ``w_hat`` to ``w_t`` (signed, in radians, for 2-D data; unsigned otherwise); loss;
    residual ``||w_t - w_hat log t - w_tilde||`` and predicted_gap, the direction gap of
    ``w_hat log t + w_tilde`` (both NaN without a ``prediction``).
    """

    steps: np.ndarray
    direction_gap: np.ndarray
    margin_gap: np.ndarray
    norm_over_log: np.ndarray
    gap_times_log: np.ndarray
    angle: np.ndarray
    loss: np.ndarray
    residual: np.ndarray
    predicted_gap: np.ndarray

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.line("ImplicitBiasMetrics", [f"num_records={np.size(self.steps)}"] + [
            f"{f}={reprs.ends(getattr(self, f))}" for f in self._fields])


def implicit_bias_metrics(ws, losses, steps, X, y, w_hat,
                          prediction: AsymptoticPrediction | None = None) -> ImplicitBiasMetrics:
    """Metrics of ``logistic_gd`` records ``ws`` ``(R, D)`` taken at ``steps`` (ints >= 2).

    With ``prediction`` (from ``asymptotic_prediction``) the run is also compared with
    ``w_hat log t + w_tilde``.
    """
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
    residual = predicted_gap = np.full(len(steps), np.nan)
    if prediction is not None:
        pred = logt[:, None] * w_hat[None] + prediction.w_tilde[None]
        residual = np.linalg.norm(w - pred, axis=1)
        predicted_gap = np.linalg.norm(
            pred / np.linalg.norm(pred, axis=1, keepdims=True) - u_hat, axis=1)
    return ImplicitBiasMetrics(steps, direction, margin, nw / logt, direction * logt, angle,
                               np.asarray(losses, np.float64), residual, predicted_gap)


class RateFit(NamedTuple):
    """Fit ``gap ~ a / (log t + c)``: fields a, c, r2 (coefficient of determination of the fit
    of ``1/gap``)."""

    a: float
    c: float
    r2: float

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.namedtuple_repr(self)


def fit_inverse_log_rate(steps, gap) -> RateFit:
    """Fit ``gap = a / (log t + c)`` by least squares on ``1/gap = (log t + c) / a``.

    This is the form of the asymptotics: ``w_t ~ w_hat log t + w_tilde`` gives
    ``gap ~ (||P_perp w_tilde|| / ||w_hat||) / (log t + <w_tilde, w_hat> / ||w_hat||^2)``, so ``a``
    estimates ``AsymptoticPrediction.gap_limit``. ``gap`` must be positive.
    """
    logt = np.log(np.asarray(steps, np.float64))
    g = np.asarray(gap, np.float64)
    if g.shape != logt.shape or g.size < 3:
        raise ValueError(f"steps and gap must be 1-D of equal length >= 3; got {logt.shape}, "
                         f"{g.shape}")
    if np.any(g <= 0) or not np.all(np.isfinite(g)):
        raise ValueError("gap must be positive and finite")
    inv = 1.0 / g
    slope, icpt = np.polyfit(logt, inv, 1)
    resid = inv - (slope * logt + icpt)
    r2 = 1.0 - resid @ resid / max(((inv - inv.mean()) ** 2).sum(), 1e-300)
    return RateFit(float(1.0 / slope), float(icpt / slope), float(r2))

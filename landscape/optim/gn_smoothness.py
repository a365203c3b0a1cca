"""Gradient-regularised Newton steps set by gradient-normalised smoothness.

Semenov, Jaggi, Doikov, "Gradient-Normalized Smoothness for Optimization with Approximate
Hessians", ICLR 2026 (arXiv:2506.13710). Reference code: github.com/epfml/grad-norm-smooth
(``src/methods.py``, ``grad_norm_smooth``: the paper's Algorithm 1).

With an approximate Hessian ``H(x) >= 0`` (GGN, Fisher, or the Hessian of a convex loss), the
*gradient-normalised smoothness* of ``f`` at ``x`` is the largest radius ``gamma`` on which the
linearised gradient field is accurate relative to the gradient::

    gamma(x) = max { gamma >= 0 :
                     ||grad f(x + h) - grad f(x) - H(x) h||_* <= ||grad f(x)||_* ||h|| / gamma
                     for all ||h|| <= gamma (in the paper, intersected with a region O_x) }

and the method takes the gradient-regularised Newton step with that radius::

    lambda_k = ||grad f(x_k)|| / gamma_k
    x_{k+1}  = x_k - (H(x_k) + lambda_k I)^{-1} grad f(x_k)        (so ||x_{k+1} - x_k|| <= gamma_k)

``gamma(x)`` is unknown, so Algorithm 1 searches for it: starting from the previous estimate,
it accepts the trial point when ``f(x_k) - f(x+) >= ||grad f(x+)||^2 / (8 lambda_k)`` and then
doubles the estimate for the next step (``gamma_{k+1} = max(2 gamma_k, gamma_min)``); otherwise
it halves ``gamma_k`` and tries again, at most ``max_tries`` times (after which the last trial
point is taken, as in the reference code). ``B = I`` (the Euclidean norm). The reference
computes ``lambda_k = ||g_k|| / (gamma_k + eps)`` with ``eps = 1e-8``; so does this module.

The linear system is solved matrix-free by conjugate gradients (:func:`cg_solve`) with the
curvature given as a ``landscape.linop.LinearOperator`` (``landscape.curvature.ggn``,
``fisher``, ``hessian``...) or a matvec on ``ravel_pytree(params)`` vectors, so only
curvature-vector products are needed. The method needs the loss (not only the gradient): use
:func:`gn_smoothness_step` with ``loss_fn(params, batch)`` and ``curvature_fn(params, batch)``,
or the optax form :func:`scale_by_gn_smoothness`, whose ``update`` takes the extra arguments
``value_fn`` (params -> loss) and ``curvature`` (the operator at the current params).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from landscape.linop import as_operator
from landscape.optim.base import chain_with_decay_and_lr

__all__ = ["GNSmoothnessState", "GNSmoothnessInfo", "CGResult", "cg_solve",
           "gn_smoothness_step", "scale_by_gn_smoothness", "gn_smoothness"]

_HIGHEST = jax.lax.Precision.HIGHEST


class CGResult(NamedTuple):
    """``x`` solving ``A x = b``; ``iterations`` (int32) and the final ``residual`` norm."""

    x: jax.Array
    iterations: jax.Array
    residual: jax.Array


def cg_solve(matvec: Callable, b: jax.Array, *, shift=0.0, tol=1e-6, maxiter: int = 100
             ) -> CGResult:
    """Conjugate gradients for ``(A + shift I) x = b`` with ``A`` symmetric PSD, from ``x = 0``.

    Stops when ``||r|| <= tol ||b||`` or after ``maxiter`` iterations (a ``lax.while_loop``;
    jit-able, ``shift`` and ``tol`` may be traced). Inner products at the highest precision.
    """
    dot = lambda a, c: jnp.vdot(a, c, precision=_HIGHEST)  # noqa: E731
    op = lambda v: matvec(v) + shift * v  # noqa: E731
    stop = (tol * jnp.sqrt(dot(b, b))) ** 2

    def cond(c):
        return (c[4] < maxiter) & (c[3] > stop)

    def body(c):
        x, r, p, rr, i = c
        ap = op(p)
        alpha = rr / dot(p, ap)
        x, r = x + alpha * p, r - alpha * ap
        rr_new = dot(r, r)
        return x, r, r + (rr_new / rr) * p, rr_new, i + 1

    init = (jnp.zeros_like(b), b, b, dot(b, b), jnp.zeros([], jnp.int32))
    x, _, _, rr, i = jax.lax.while_loop(cond, body, init)
    return CGResult(x=x, iterations=i, residual=jnp.sqrt(rr))


class GNSmoothnessInfo(NamedTuple):
    """Diagnostics of one step (scalars). ``gamma``: the radius of the step taken;
    ``next_gamma``: the estimate for the next step; ``lam``: ``||g|| / (gamma + eps)``;
    ``loss``/``new_loss`` and ``grad_norm``/``new_grad_norm`` before and after; ``accepted``:
    whether the descent test passed; ``tries``: trial steps (= linear solves);
    ``cg_iterations``/``cg_residual``: of the last solve."""

    gamma: jax.Array
    next_gamma: jax.Array
    lam: jax.Array
    loss: jax.Array
    new_loss: jax.Array
    grad_norm: jax.Array
    new_grad_norm: jax.Array
    accepted: jax.Array
    tries: jax.Array
    cg_iterations: jax.Array
    cg_residual: jax.Array


def _search(value_and_grad, matvec, f0, g0, gamma, *, adaptive, max_tries, gamma_min, eps,
            cg_tol, cg_maxiter):
    """Algorithm 1's inner loop on flat vectors: returns ``(delta, f_new, g_new, info)``."""
    dtype = g0.dtype
    gnorm = jnp.sqrt(jnp.vdot(g0, g0, precision=_HIGHEST))
    gamma = jnp.asarray(gamma, dtype)

    def trial(gam):
        lam = gnorm / (gam + eps)
        sol = cg_solve(matvec, -g0, shift=lam, tol=cg_tol, maxiter=cg_maxiter)
        f_new, g_new = value_and_grad(sol.x)
        g_new_sq = jnp.vdot(g_new, g_new, precision=_HIGHEST)
        ok = f0 - f_new >= g_new_sq / (8 * lam)
        return sol, lam, f_new, g_new, g_new_sq, ok

    def body(c):
        gam = c[0]
        sol, lam, f_new, g_new, g_new_sq, ok = trial(gam)
        if adaptive:
            nxt = jnp.where(ok, jnp.maximum(2 * gam, gamma_min), gam / 2)
        else:
            nxt, ok = gam, jnp.ones_like(ok)
        return (nxt, gam, lam, sol, f_new, g_new, g_new_sq, ok, c[-1] + 1)

    zero = jnp.zeros([], dtype)
    init = (gamma, gamma, zero, CGResult(jnp.zeros_like(g0), jnp.zeros([], jnp.int32), zero),
            jnp.asarray(f0, dtype), g0, zero, jnp.zeros([], bool), jnp.zeros([], jnp.int32))
    tries_cap = max_tries if adaptive else 1
    out = jax.lax.while_loop(lambda c: (~c[7]) & (c[8] < tries_cap), body, init)
    nxt, gam, lam, sol, f_new, g_new, g_new_sq, ok, tries = out
    info = GNSmoothnessInfo(gamma=gam, next_gamma=nxt, lam=lam, loss=jnp.asarray(f0, dtype),
                            new_loss=f_new, grad_norm=gnorm, new_grad_norm=jnp.sqrt(g_new_sq),
                            accepted=ok, tries=tries, cg_iterations=sol.iterations,
                            cg_residual=sol.residual)
    return sol.x, f_new, g_new, info


def _flat_problem(value_fn, params, curvature):
    """Flat vectors (float32 or wider) for ``params``, the value-and-grad at ``x + delta`` and
    the curvature matvec."""
    flat, unravel = ravel_pytree(params)
    dtype = jnp.promote_types(flat.dtype, jnp.float32)
    x0 = flat.astype(dtype)

    def shifted(delta):  # value and gradient at x0 + delta, differentiating w.r.t. params
        f, g = jax.value_and_grad(value_fn)(unravel((x0 + delta).astype(flat.dtype)))
        return jnp.asarray(f, dtype), ravel_pytree(g)[0].astype(dtype)

    op = as_operator(curvature, dim=flat.shape[0], dtype=flat.dtype, name="curvature")
    matvec = lambda v: op.matvec(v.astype(op.dtype)).astype(dtype)  # noqa: E731
    return x0, unravel, flat.dtype, shifted, matvec


def gn_smoothness_step(loss_fn: Callable, params, batch, curvature_fn: Callable, gamma, *,
                       adaptive: bool = True, max_tries: int = 40, gamma_min: float = 1e-9,
                       eps: float = 1e-8, cg_tol: float = 1e-6, cg_maxiter: int = 100):
    """One step of Algorithm 1 (module docstring) from ``params`` with the estimate ``gamma``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, the objective (the paper's method is
        deterministic: use the full dataset, or the same batch throughout a step).
      params: pytree of floating arrays.
      batch: passed to ``loss_fn`` and ``curvature_fn``.
      curvature_fn: ``curvature_fn(params, batch)`` -> the approximate Hessian at ``params``:
        a ``landscape.linop.LinearOperator`` over ``ravel_pytree(params)`` (e.g.
        ``lambda p, b: curvature.ggn(apply_fn, "cross_entropy", p, b, check=False)``) or a
        matvec on those flat vectors. It must be symmetric PSD (CG).
      gamma: the current estimate of the gradient-normalised smoothness (``gamma_0`` first;
        then ``info.next_gamma``).
      adaptive: search ``gamma`` (Algorithm 1); ``False`` takes one step with ``gamma`` as is.
      max_tries, gamma_min, eps: as in the reference code (40, 1e-9, 1e-8).
      cg_tol, cg_maxiter: relative residual tolerance and iteration cap of each CG solve.

    Returns:
      ``(new_params, info)`` with :class:`GNSmoothnessInfo` (``info.next_gamma`` feeds the
      next call; ``info.new_loss``, ``info.new_grad_norm`` are at ``new_params``). Jit-able
      (``loss_fn`` and ``curvature_fn`` static); costs ``info.tries`` CG solves and
      ``info.tries + 1`` gradient evaluations.
    """
    value_fn = lambda p: loss_fn(p, batch)  # noqa: E731
    x0, unravel, pdtype, shifted, matvec = _flat_problem(value_fn, params,
                                                         curvature_fn(params, batch))
    f0, g0 = shifted(jnp.zeros_like(x0))
    delta, _, _, info = _search(shifted, matvec, f0, g0, gamma, adaptive=adaptive,
                                max_tries=max_tries, gamma_min=gamma_min, eps=eps,
                                cg_tol=cg_tol, cg_maxiter=cg_maxiter)
    return unravel((x0 + delta).astype(pdtype)), info


class GNSmoothnessState(NamedTuple):
    """State of :func:`scale_by_gn_smoothness`: ``count`` (int32) and ``gamma``, the current
    estimate of the gradient-normalised smoothness (float32 or wider)."""

    count: jax.Array
    gamma: jax.Array


def scale_by_gn_smoothness(gamma_0: float = 1.0, *, adaptive: bool = True,
                           max_tries: int = 40, gamma_min: float = 1e-9, eps: float = 1e-8,
                           cg_tol: float = 1e-6, cg_maxiter: int = 100
                           ) -> optax.GradientTransformationExtraArgs:
    r"""Algorithm 1 as an optax transformation (module docstring for the equations).

    The output is ``d_k = (H(x_k) + lambda_k I)^{-1} grad f(x_k)`` with ``lambda_k`` from the
    accepted trial of the adaptive search, so that ``x_{k+1} = x_k - d_k``: the paper's method
    is :func:`gn_smoothness` with ``learning_rate=1`` (or this transformation followed by
    ``optax.scale(-1)``). The state carries the estimate ``gamma`` to the next step.

    ``update(grads, state, params, *, value_fn, curvature, value=None)``: ``grads`` is
    ``grad f(x_k)``; ``value_fn(params) -> f`` evaluates the objective (the adaptive test needs
    ``f`` and ``grad f`` at the trial points); ``curvature`` is the approximate Hessian at
    ``params`` (a ``LinearOperator`` over ``ravel_pytree(params)``, e.g.
    ``landscape.curvature.ggn(apply_fn, "cross_entropy", params, data, check=False)``, or a
    flat matvec); ``value`` (optional) is ``f(x_k)``, else computed. Every numeric argument
    may be traced (``optax.inject_hyperparams``; ``max_tries`` and ``cg_maxiter`` only bound
    while loops); ``adaptive`` is static. Computations run in float32 or
    wider; the output has the gradient's dtypes. Each update costs ``tries`` CG solves and
    ``tries`` gradient evaluations (plus one loss evaluation when ``value`` is not given).
    """

    def init(params):
        dtype = jnp.promote_types(ravel_pytree(params)[0].dtype, jnp.float32)
        return GNSmoothnessState(count=jnp.zeros([], jnp.int32),
                                 gamma=jnp.asarray(gamma_0, dtype))

    def update(updates, state, params=None, *, value_fn=None, curvature=None, value=None,
               **extra_args):
        del extra_args
        if params is None or value_fn is None or curvature is None:
            raise ValueError("scale_by_gn_smoothness.update needs params and the extra "
                             "arguments value_fn= (params -> loss) and curvature= (the "
                             "approximate Hessian at params)")
        x0, unravel, pdtype, shifted, matvec = _flat_problem(value_fn, params, curvature)
        g0 = ravel_pytree(updates)[0].astype(x0.dtype)
        f0 = shifted(jnp.zeros_like(x0))[0] if value is None else jnp.asarray(value, x0.dtype)
        delta, _, _, info = _search(shifted, matvec, f0, g0, state.gamma, adaptive=adaptive,
                                    max_tries=max_tries, gamma_min=gamma_min, eps=eps,
                                    cg_tol=cg_tol, cg_maxiter=cg_maxiter)
        step = jax.tree.map(lambda d, u: -d.astype(u.dtype), unravel(delta.astype(pdtype)),
                            updates)
        return step, GNSmoothnessState(count=optax.safe_increment(state.count),
                                       gamma=info.next_gamma.astype(state.gamma.dtype))

    return optax.GradientTransformationExtraArgs(init, update)


def gn_smoothness(learning_rate: optax.ScalarOrSchedule = 1.0, gamma_0: float = 1.0, *,
                  adaptive: bool = True, max_tries: int = 40, gamma_min: float = 1e-9,
                  eps: float = 1e-8, cg_tol: float = 1e-6, cg_maxiter: int = 100,
                  weight_decay: float = 0.0, mask: Any = None
                  ) -> optax.GradientTransformationExtraArgs:
    """:func:`scale_by_gn_smoothness`, then decoupled weight decay and ``-learning_rate``:
    ``x_{k+1} = x_k - eta_k (d_k + weight_decay x_k)``.

    The paper's method is ``learning_rate=1``, ``weight_decay=0``. Other values scale or shift
    the step *after* the adaptive test, which then no longer certifies it.
    """
    return chain_with_decay_and_lr(
        scale_by_gn_smoothness(gamma_0, adaptive=adaptive, max_tries=max_tries,
                               gamma_min=gamma_min, eps=eps, cg_tol=cg_tol,
                               cg_maxiter=cg_maxiter),
        learning_rate, weight_decay, mask)

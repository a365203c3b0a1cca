"""Per-example curvature of output losses, used by the Gauss-Newton and Fisher operators.

For a batch of network outputs ``F`` (shape ``(b, ...)``) and targets ``Y``, each function
returns ``U`` shaped like ``F`` whose row ``i`` is ``M_i t_i`` for a per-example ``(k x k)``
matrix ``M_i`` in output space and a tangent ``T = J v`` (rows ``t_i``). Rows are NOT divided
by ``b``: callers sum rows over the dataset and divide by ``n`` once.

* ``ggn``:       ``M_i = H_i = d^2 l(f_i, y_i) / d f_i^2``. Analytic for MSE
  (``l = 0.5 ||f - y||^2``, ``H = I``) and softmax cross-entropy (``H = diag(p) - p p^T``,
  ``p = softmax(f)``); autodiff (a Hessian-vector product in output space) for a callable.
* ``fisher``:    ``M_i = (1/S) sum_s r_is r_is^T`` with ``r_is = d l(f_i, y_is) / d f_i`` and
  ``y_is`` sampled from the model's predictive distribution (categorical for cross-entropy,
  ``N(f_i, I)`` for MSE).
* ``fisher_exact``: ``M_i = E_{y ~ p(.|f_i)} r r^T`` summed over all classes (cross-entropy) or
  ``I`` (MSE). For these two losses it equals ``H_i``, so the exact Fisher equals the GGN
  (Martens 2020, section 9.2).
* ``empirical_fisher``: ``M_i = r_i r_i^T`` with the TRUE label ``y_i``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from landscape import losses

__all__ = ["NAMED", "canonical", "output_product"]

NAMED = {"cross_entropy": "cross_entropy", "softmax_cross_entropy": "cross_entropy", "mse": "mse"}


def canonical(output_loss):
    """Map a loss name to its canonical name; pass a callable through; else raise."""
    if callable(output_loss):
        return output_loss
    if isinstance(output_loss, str) and output_loss in NAMED:
        return NAMED[output_loss]
    raise ValueError(
        f"output_loss must be one of {sorted(NAMED)} or a callable "
        f"output_loss(outputs, targets) -> mean scalar; got {output_loss!r}"
    )


def mean_output_loss(kind):
    """The mean-over-batch loss function ``(outputs, targets) -> scalar`` for ``kind``."""
    return kind if callable(kind) else losses.get(kind)


def _rowdot(a, b):
    return jnp.sum((a * b).reshape(a.shape[0], -1), axis=-1)


def _bcast(w, like):
    return w.reshape((w.shape[0],) + (1,) * (like.ndim - 1))


def _residual(kind, F, Y):
    """Per-example output gradients ``r_i = d l(f_i, y_i) / d f_i`` (rows not divided by b)."""
    if kind == "cross_entropy":
        p = jax.nn.softmax(F, axis=-1)
        return p - jax.nn.one_hot(Y, F.shape[-1], dtype=F.dtype)
    if kind == "mse":
        return F - Y.astype(F.dtype)
    # callable mean loss: the batch gradient has rows r_i / b
    return jax.grad(lambda f: kind(f, Y))(F) * F.shape[0]


def _ggn_rows(kind, F, Y, T):
    if kind == "mse":
        return T
    if kind == "cross_entropy":
        p = jax.nn.softmax(F, axis=-1)
        return p * T - p * jnp.sum(p * T, axis=-1, keepdims=True)
    grad_f = lambda f: jax.grad(lambda g: kind(g, Y))(f)
    return jax.jvp(grad_f, (F,), (T,))[1] * F.shape[0]


def _fisher_exact_rows(kind, F, Y, T):
    if kind == "mse":
        return T
    # sum over classes c of p_c r_c (r_c . t) with r_c = p - e_c: an independent route to H t
    p = jax.nn.softmax(F, axis=-1)
    eye = jnp.eye(F.shape[-1], dtype=F.dtype)
    r = p[:, None, :] - eye[None, :, :]  # (b, C, C): r[i, c] = p_i - e_c
    coef = p * jnp.einsum("icj,ij->ic", r, T)  # p_c (r_c . t)
    return jnp.einsum("ic,icj->ij", coef, r)


def _sample_residuals(kind, F, idx, key, num_samples):
    """Residuals ``(S, b, ...)`` for labels drawn from the model; key folded per example."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    if kind == "cross_entropy":
        p = jax.nn.softmax(F, axis=-1)
        draw = lambda k, f: jax.random.categorical(k, f, shape=(num_samples,))
        y = jax.vmap(draw)(keys, F)  # (b, S)
        onehot = jax.nn.one_hot(y, F.shape[-1], dtype=F.dtype)  # (b, S, C)
        return jnp.moveaxis(p[:, None, :] - onehot, 1, 0)
    if kind == "mse":
        draw = lambda k: jax.random.normal(k, (num_samples,) + F.shape[1:], F.dtype)
        return -jnp.moveaxis(jax.vmap(draw)(keys), 1, 0)  # r = f - y = -eps
    raise ValueError("the Monte Carlo Fisher needs a named output_loss ('cross_entropy' or 'mse')")


def output_product(mode, kind, F, Y, T, idx=None, key=None, num_samples=1):
    """Rows ``M_i t_i`` for ``mode`` in {"ggn", "fisher", "fisher_exact", "empirical_fisher"}."""
    if mode == "ggn":
        return _ggn_rows(kind, F, Y, T)
    if mode == "fisher_exact":
        return _fisher_exact_rows(kind, F, Y, T)
    if mode == "empirical_fisher":
        r = _residual(kind, F, Y)
        return r * _bcast(_rowdot(r, T), r)
    if mode == "fisher":
        R = _sample_residuals(kind, F, idx, key, num_samples)
        w = jax.vmap(_rowdot, in_axes=(0, None))(R, T)  # (S, b)
        return jnp.mean(R * jax.vmap(_bcast, in_axes=(0, None))(w, F), axis=0)
    raise ValueError(f"unknown curvature mode {mode!r}")

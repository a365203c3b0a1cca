"""Per-example output-space curvature products, used by the Gauss-Newton and Fisher operators.

The losses themselves (values, output gradients, output Hessian products, samplers) live in one
registry, :mod:`landscape.losses`; this module only combines them into the matrix ``M_i`` each
curvature operator needs. For a batch of network outputs ``F`` (shape ``(b, ...)``), targets
``Y`` and a tangent ``T = J v`` (rows ``t_i``), :func:`output_product` returns ``U`` shaped like
``F`` whose row ``i`` is ``M_i t_i`` for a per-example ``(k x k)`` matrix ``M_i`` in output
space. Rows are NOT divided by ``b``: callers sum rows over the dataset and divide by ``n`` once.

* ``ggn``:       ``M_i = H_i = d^2 l(f_i, y_i) / d f_i^2`` (``OutputLoss.hessian_product``:
  analytic for the registered losses, autodiff for a callable).
* ``fisher``:    ``M_i = (1/S) sum_s r_is r_is^T`` with ``r_is = d l(f_i, y_is) / d f_i`` and
  ``y_is`` sampled from the model's predictive distribution (``OutputLoss.sample``: categorical
  for cross-entropy, ``N(f_i, I)`` for MSE).
* ``fisher_exact``: ``M_i = E_{y ~ p(.|f_i)} r r^T`` (``OutputLoss.fisher_product``). For the
  registered losses it equals ``H_i``, so the exact Fisher equals the GGN (Martens 2020,
  "New insights and perspectives on the natural gradient method", section 9.2).
* ``empirical_fisher``: ``M_i = r_i r_i^T`` with the TRUE label ``y_i`` (Kunstner, Balles,
  Hennig 2019, "Limitations of the empirical Fisher approximation for natural gradient descent").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from landscape import losses

__all__ = ["NAMED", "canonical", "output_product"]

# accepted name -> canonical name, derived from the registry in landscape.losses
NAMED = {name: losses.lookup(name).name for name in losses.names()}


def canonical(output_loss):
    """Map a loss name to its canonical name; pass a callable through; else raise."""
    if callable(output_loss):
        return output_loss
    return losses.lookup(output_loss, "output_loss").name


def mean_output_loss(kind):
    """The mean-over-batch loss function ``(outputs, targets) -> scalar`` for ``kind``."""
    return losses.get(kind)


def _rowdot(a, b):
    return jnp.sum((a * b).reshape(a.shape[0], -1), axis=-1)


def _bcast(w, like):
    return w.reshape((w.shape[0],) + (1,) * (like.ndim - 1))


def _sample_residuals(loss, F, idx, key, num_samples):
    """Residuals ``(S, b, ...)`` at targets drawn from the model; key folded per example."""
    if loss.sample is None:
        raise ValueError(
            "the Monte Carlo Fisher needs a named output_loss with a predictive distribution "
            f"(one of {losses.names()})"
        )
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    Y = jax.vmap(lambda k, f: loss.sample(k, f, num_samples))(keys, F)  # (b, S, ...)
    return jax.vmap(loss.gradient, in_axes=(None, 0))(F, jnp.moveaxis(Y, 1, 0))


def output_product(mode, kind, F, Y, T, idx=None, key=None, num_samples=1):
    """Rows ``M_i t_i`` for ``mode`` in {"ggn", "fisher", "fisher_exact", "empirical_fisher"}.

    ``kind`` is a loss name, a callable mean loss or a :class:`landscape.losses.OutputLoss`.
    """
    loss = losses.resolve(kind)
    if mode == "ggn":
        return loss.hessian_product(F, Y, T)
    if mode == "fisher_exact":
        if loss.fisher_product is None:
            raise ValueError("the exact Fisher needs a named output_loss")
        return loss.fisher_product(F, T)
    if mode == "empirical_fisher":
        r = loss.gradient(F, Y)
        return r * _bcast(_rowdot(r, T), r)
    if mode == "fisher":
        R = _sample_residuals(loss, F, idx, key, num_samples)
        w = jax.vmap(_rowdot, in_axes=(0, None))(R, T)  # (S, b)
        return jnp.mean(R * jax.vmap(_bcast, in_axes=(0, None))(w, F), axis=0)
    raise ValueError(f"unknown curvature mode {mode!r}")

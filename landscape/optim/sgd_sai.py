"""SGD-SaI: SGD with momentum and learning-rate Scaling at Initialization (Xu et al. 2024).

Minghao Xu, Lichuan Xiang, Xu Cai, Hongkai Wen, "No More Adam: Learning Rate Scaling at
Initialization is All You Need" (arXiv:2412.11768, 2024). Each parameter block ``i`` (here: each
leaf of the params pytree, the reference's per-tensor grouping) gets a learning-rate scale from
the gradient signal-to-noise ratio of its *first* gradient, held fixed for the rest of training:

    t = 1:  G_i = ||g_1^i||_2 / (std(g_1^i) + eps),      m_1^i = g_1^i
    t > 1:  m_t^i = mu m_{t-1}^i + (1 - mu) g_t^i
    d_t^i = G_i m_t^i                                      (the output of ``scale_by_sgd_sai``)

with ``std`` the unbiased (``n - 1``) standard deviation of the leaf's ``n`` entries. The alias
:func:`sgd_sai` chains this with decoupled weight decay and the learning rate, so
``w_t = w_{t-1} - eta_t (G_i m_t + lambda w_{t-1})``, which is the reference's
``w <- (1 - eta lambda) w - eta G_i m_t``.

Reference code: ``sgd-sai`` 1.0.3 on PyPI (class ``SGD_sai``, the authors' package), tested
equal to 1e-10 in float64. Where it and the paper differ:

* **Normalisation.** The paper's Algorithm 1 (line 14) divides every block's g-SNR by the
  largest one, ``G~_i = G_i / max_k G_k``; the reference code does not. ``normalize=False``
  (default) follows the code, ``normalize=True`` the paper. The two differ by one constant
  factor ``1 / max_k G_k`` on the learning rate, fixed at the first step.
* **One-element leaves.** The unbiased std of a single number is undefined; the reference maps
  it (and any NaN std) to 0, so such a leaf (and any leaf whose first gradient is constant)
  gets ``G = ||g|| / eps``, a huge scale. We do the same; a leaf whose first gradient is zero
  gets ``G = 0`` and never moves, also as in the reference. (``pytorch_optimizer.SGDSaI``, a
  third-party port, instead uses ``G = ||g||`` for vectors and constant gradients and starts
  the momentum at zero; it is not followed here.)
* ``momentum=0`` raises a ``NameError`` in the reference; here it gives ``d_t = G_i g_t``.

The g-SNR is computed in at least float32 and stored per leaf in that dtype; the momentum is
stored in the params' dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from landscape.optim.base import chain_with_decay_and_lr

__all__ = ["SGDSaIState", "scale_by_sgd_sai", "sgd_sai", "gradient_snr"]


class SGDSaIState(NamedTuple):
    """State of :func:`scale_by_sgd_sai`.

    Attributes:
      count: int32 scalar, the number of updates so far.
      momentum: pytree like params, ``m_t``.
      gsnr: pytree like params with scalar leaves, the (possibly normalised) g-SNR of each
        leaf fixed at the first update (zeros before it).
    """

    count: jax.Array
    momentum: Any
    gsnr: Any


def _stat_dtype(x):
    return jnp.promote_types(jnp.result_type(x), jnp.float32)


def gradient_snr(grads, eps: float = 1e-8, normalize: bool = False):
    """Per-leaf g-SNR ``||g|| / (std(g) + eps)`` (unbiased std; 0 for one-element leaves).

    With ``normalize=True`` every leaf's value is divided by the largest one (the paper's
    Algorithm 1, line 14); a zero maximum leaves the values at zero. Returns a pytree like
    ``grads`` with scalar leaves in at least float32.
    """

    def one(g):
        g = jnp.asarray(g, _stat_dtype(g))
        n = g.size
        if n > 1:
            sigma = jnp.nan_to_num(jnp.std(g, ddof=1))
        else:
            sigma = jnp.zeros((), g.dtype)
        return jnp.linalg.norm(g.ravel()) / (sigma + eps)

    snr = jax.tree.map(one, grads)
    if normalize:
        leaves = jax.tree.leaves(snr)
        top = jnp.max(jnp.stack([jnp.asarray(x, leaves[0].dtype) for x in leaves]))
        snr = jax.tree.map(
            lambda s: jnp.where(top > 0, s / jnp.where(top > 0, top, 1), 0).astype(s.dtype), snr)
    return snr


def scale_by_sgd_sai(momentum: float = 0.9, eps: float = 1e-8,
                     normalize: bool = False) -> optax.GradientTransformation:
    """SGD-SaI's direction ``d_t = G_i m_t`` (module docstring), without decay or learning rate.

    Args:
      momentum: ``mu`` in ``[0, 1)``, the EMA coefficient of the momentum (the first step
        uses ``m_1 = g_1``, as in the paper and the reference).
      eps: added to the std in the g-SNR's denominator.
      normalize: divide each leaf's g-SNR by the largest (the paper) instead of not (the
        reference code).
    """

    def init(params):
        return SGDSaIState(
            count=jnp.zeros((), jnp.int32),
            momentum=jax.tree.map(jnp.zeros_like, params),
            gsnr=jax.tree.map(lambda p: jnp.zeros((), _stat_dtype(p)), params))

    def update(updates, state, params=None):
        del params
        first = state.count == 0
        gsnr = jax.lax.cond(first, lambda g: gradient_snr(g, eps, normalize),
                            lambda g: state.gsnr, updates)
        mom = jax.tree.map(
            lambda m, g: jnp.where(first, g, momentum * m + (1 - momentum) * g).astype(m.dtype),
            state.momentum, updates)
        out = jax.tree.map(lambda s, m: (s * m).astype(m.dtype), gsnr, mom)
        return out, SGDSaIState(optax.safe_int32_increment(state.count), mom, gsnr)

    return optax.GradientTransformation(init, update)


def sgd_sai(learning_rate: optax.ScalarOrSchedule = 1e-2, momentum: float = 0.9,
            eps: float = 1e-8, normalize: bool = False, weight_decay: float = 0.0,
            mask=None) -> optax.GradientTransformationExtraArgs:
    """SGD-SaI (Xu et al. 2024): :func:`scale_by_sgd_sai`, decoupled weight decay, learning rate.

    ``w_t = w_{t-1} - eta_t (G_i m_t + weight_decay * w_{t-1})`` per leaf ``i`` (the module
    docstring). The reference's defaults are ``lr=1e-2, momentum=0.9, eps=1e-8,
    weight_decay=1e-2``; ``weight_decay`` defaults to 0 here, as in every alias of
    ``landscape.optim``.
    """
    return chain_with_decay_and_lr(scale_by_sgd_sai(momentum, eps, normalize), learning_rate,
                                   weight_decay, mask)

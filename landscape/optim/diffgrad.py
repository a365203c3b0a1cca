"""diffGrad (Dubey et al. 2020): Adam with a friction coefficient on the first moment.

Dubey, Chakraborty, Roy, Mukherjee, Singh, Chaudhuri, "diffGrad: An Optimization Method for
Convolutional Neural Networks", IEEE TNNLS 31(11), 2020 (arXiv:1909.11015). Reference code:
github.com/shivram1987/diffGrad, ``diffGrad_v2.py`` (the corrected version).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from landscape.optim.base import chain_with_decay_and_lr

__all__ = ["DiffGradState", "scale_by_diffgrad", "diffgrad"]


class DiffGradState(NamedTuple):
    """State of ``scale_by_diffgrad``: the step count (int32), the first and second moments
    ``mu``/``nu`` and the previous gradient ``prev_grad`` (all in the params' dtype)."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    prev_grad: optax.Updates


def scale_by_diffgrad(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                      eps_root: float = 0.0, *,
                      paper_eps: bool = False) -> optax.GradientTransformation:
    r"""diffGrad's direction: Adam's step damped elementwise by the friction coefficient.

    With ``g_t`` the gradient at step ``t = 1, 2, ...`` and ``g_0 = 0``::

        m_t  = b1 m_{t-1} + (1 - b1) g_t,        v_t = b2 v_{t-1} + (1 - b2) g_t^2
        xi_t = sigmoid(|g_{t-1} - g_t|)          (elementwise, in [1/2, 1))
        d_t  = sqrt(1 - b2^t) / (1 - b1^t) * xi_t m_t / (sqrt(v_t + eps_root) + eps)

    This is the authors' corrected code (``diffGrad_v2.py``, also torch-optimizer 0.3.0's and
    pytorch_optimizer 4.1.0's ``DiffGrad``; the latter puts ``eps_root = 1e-15``): the bias
    correction sits in the step size and ``eps`` is added to the *uncorrected* ``sqrt(v_t)``,
    and the previous gradient starts at zero, so ``xi_1 = sigmoid(|g_1|)``. The paper's update
    (arXiv:1909.11015, Sec. 3) is ``xi_t mhat_t / (sqrt(vhat_t) + eps)`` with ``mhat_t = m_t /
    (1 - b1^t)``, ``vhat_t = v_t / (1 - b2^t)``, i.e. ``eps`` after the correction (optax's
    ``scale_by_adam`` convention); ``paper_eps=True`` gives that form, ``xi_t mhat_t /
    (sqrt(vhat_t + eps_root) + eps)``. The two differ only through ``eps``: the code's
    equals the paper's with ``eps / sqrt(1 - b2^t)``.

    The first published code (``diffGrad.py``) stored a reference to the gradient buffer as
    the previous gradient; PyTorch then overwrote that buffer in place with the next gradient,
    so ``|g_{t-1} - g_t| = 0`` and ``xi_t = 1/2`` from the second step on: from then on that
    version was Adam at half the learning rate (``optax.adam(lr / 2, eps=0)`` with its own
    ``eps`` placement), its first step scaled by ``2 sigmoid(|g_1|)`` instead (the previous
    gradient was still a separate zero buffer then; tested in ``tests/test_optim_diffgrad.py``).

    The moments and the previous gradient are kept in the params' dtype; the scalar bias
    corrections are computed in the default float dtype. The output has the updates' dtype.
    """

    def init(params):
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return DiffGradState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros(),
                             prev_grad=zeros())

    def update(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        t = count.astype(jnp.result_type(float))
        bc1 = 1 - jnp.asarray(b1, t.dtype) ** t
        bc2 = 1 - jnp.asarray(b2, t.dtype) ** t
        mu = jax.tree.map(lambda m, g: (b1 * m + (1 - b1) * g).astype(m.dtype),
                          state.mu, updates)
        nu = jax.tree.map(lambda v, g: (b2 * v + (1 - b2) * g * g).astype(v.dtype),
                          state.nu, updates)

        def direction(m, v, g, g_prev):
            xi = jax.nn.sigmoid(jnp.abs(g_prev - g))
            if paper_eps:
                d = xi * (m / bc1) / (jnp.sqrt(v / bc2 + eps_root) + eps)
            else:
                d = jnp.sqrt(bc2) / bc1 * (xi * m / (jnp.sqrt(v + eps_root) + eps))
            return d.astype(g.dtype)

        out = jax.tree.map(direction, mu, nu, updates, state.prev_grad)
        prev = jax.tree.map(lambda g, p: g.astype(p.dtype), updates, state.prev_grad)
        return out, DiffGradState(count=count, mu=mu, nu=nu, prev_grad=prev)

    return optax.GradientTransformation(init, update)


def diffgrad(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
             eps: float = 1e-8, eps_root: float = 0.0, *, paper_eps: bool = False,
             weight_decay: float = 0.0, mask: Any = None) -> optax.GradientTransformationExtraArgs:
    """diffGrad with decoupled weight decay: ``u_t = -eta_t (d_t + weight_decay * w_t)`` with
    ``d_t`` from ``scale_by_diffgrad`` (see there for the equations and ``paper_eps``).

    With ``weight_decay`` this is pytorch_optimizer's ``DiffGrad`` (``weight_decouple=True``,
    its default); the authors' code and torch-optimizer add an L2 term ``weight_decay * w`` to
    the gradient instead, which is ``optax.chain(optax.add_decayed_weights(wd),
    scale_by_diffgrad(...), optax.scale_by_learning_rate(lr))``.
    """
    return chain_with_decay_and_lr(
        scale_by_diffgrad(b1, b2, eps, eps_root, paper_eps=paper_eps),
        learning_rate, weight_decay, mask)

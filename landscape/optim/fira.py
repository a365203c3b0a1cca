"""Fira: full-rank training under a low-rank (GaLore-style) optimizer state.

Chen, Feng, Wang, Zhang, Zhou, Wang, "Fira: Can We Achieve Full-rank Training of LLMs Under
Low-rank Constraint?" (arXiv:2410.01623, 2024). Reference code: the ``fira`` package (1.0.2,
``FiraAdamW`` with its ``GradientProjector``), which follows GaLore's projector.
"""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from landscape.optim.base import chain_with_decay_and_lr
from landscape.optim.projection import Projector, svd_projector

__all__ = ["FiraState", "scale_by_fira", "fira"]

_TINY = 1e-8  # the reference's constant in the scaling factor and the limiter


class FiraState(NamedTuple):
    """State of :func:`scale_by_fira`.

    Attributes:
      count: int32 number of updates taken.
      mu, nu: Adam moments; of ``R`` (the projected gradient's shape) on projected leaves,
        of the gradient elsewhere.
      basis: the projector's basis per projected leaf (a ``(0,)`` placeholder elsewhere).
      prev_norm: per leaf, ``||S_{t-1}||`` of the norm-growth limiter (unused on unprojected
        leaves).
    """

    count: jax.Array
    mu: Any
    nu: Any
    basis: Any
    prev_norm: Any


def _static_rank(rank):
    try:
        return operator.index(rank)
    except (TypeError, jax.errors.ConcretizationTypeError) as err:
        raise ValueError("rank must be a static int (under optax.inject_hyperparams pass "
                         "static_args=('rank',))") from err


def _scaling_factor(psi, low, scaling: str):
    """``||psi|| / (||R|| + 1e-8)``: per row or column of ``R`` (``"column"``, the reference:
    norms along ``R``'s shorter axis, one factor per index of its longer axis) or one number
    (``"matrix"``, the paper's equation)."""
    if scaling == "matrix":
        return jnp.linalg.norm(psi) / (jnp.linalg.norm(low) + _TINY)
    axis = 0 if low.shape[0] < low.shape[1] else 1
    return (jnp.linalg.norm(psi, axis=axis, keepdims=True)
            / (jnp.linalg.norm(low, axis=axis, keepdims=True) + _TINY))


def scale_by_fira(
    rank: int = 128,
    update_proj_gap: int = 200,
    alpha: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    gamma: float = 1.01,
    side: str = "std",
    scaling: str = "column",
    projector: Projector | None = None,
) -> optax.GradientTransformation:
    r"""Rescale updates by Fira (GaLore-Adam plus the norm-scaled full-rank residual).

    On every 2-D leaf with gradient ``G`` (``m x n``) at the 1-based step ``t``, with ``P`` the
    projector (:func:`landscape.optim.projection.svd_projector` by default, its basis refreshed
    from ``G`` when ``(t - 1) mod update_proj_gap == 0``):

    - ``R = P^T G`` (low rank), Adam moments ``m <- b1 m + (1-b1) R``, ``v <- b2 v + (1-b2) R^2``,
      ``psi(R) = m / (sqrt(v) + eps)``;
    - norm-based scaling ``phi = ||psi(R)|| / (||R|| + 1e-8)``, per column of ``R`` along its
      longer axis (``scaling="column"``, the reference code) or for the whole matrix
      (``scaling="matrix"``, the paper's Eq.), and the residual ``S = phi (G - alpha P R)``;
    - norm-growth limiter (from the second step): if ``||S_t|| / ||S_{t-1}|| > gamma`` then
      ``S_t <- gamma ||S_{t-1}|| S_t / ||S_t||``, with ``||S_{t-1}||`` the limited norm
      (the reference adds ``1e-8`` to ``||S_{t-1}||``);
    - output ``sqrt(1 - b2^t) / (1 - b1^t) (alpha P psi(R) + S_t)``.

    Other leaves get the same Adam on the full gradient (as the reference's unprojected
    parameter group). The moments of ``R`` are kept across basis refreshes (as GaLore).
    ``alpha`` is GaLore's scale; ``gamma`` the limiter's bound (1.01 in the reference).

    ``rank``, ``side``, ``scaling`` and ``projector`` are static; a given ``projector`` (for
    example an SVD-free one) replaces ``svd_projector(rank, side)``. The other numeric
    arguments may be traced (``optax.inject_hyperparams(..., static_args=("rank",))``).
    Differences from the reference code: the SVD runs in float64 for float64 gradients (the
    reference casts to float32) and singular vectors get a fixed sign (see
    :mod:`landscape.optim.projection`); the residual uses ``alpha P R`` as the reference does.
    """
    if scaling not in ("column", "matrix"):
        raise ValueError(f"scaling must be 'column' or 'matrix', got {scaling!r}")
    if projector is None:
        projector = svd_projector(_static_rank(rank), side)

    def init_fn(params):
        def basis(p):
            return projector.init(p) if jnp.ndim(p) == 2 else jnp.zeros((0,), jnp.result_type(p))

        def moment(p):
            if jnp.ndim(p) == 2:
                return jnp.zeros(projector.low_rank_shape(jnp.shape(p)), jnp.result_type(p))
            return jnp.zeros_like(p)

        return FiraState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(moment, params), nu=jax.tree.map(moment, params),
            basis=jax.tree.map(basis, params),
            prev_norm=jax.tree.map(lambda p: jnp.zeros([], jnp.result_type(p)), params))

    def update_fn(updates, state, params=None):
        del params
        t = optax.safe_increment(state.count)
        refresh = state.count % update_proj_gap == 0
        first = state.count == 0
        bias = jnp.sqrt(1 - b2**t) / (1 - b1**t)

        def adam(x, m, v):
            m = (b1 * m + (1 - b1) * x).astype(m.dtype)
            v = (b2 * v + (1 - b2) * x * x).astype(v.dtype)
            return m, v, m / (jnp.sqrt(v) + eps)

        def leaf(g, m, v, q, prev):
            if g.ndim != 2:
                m, v, d = adam(g, m, v)
                return (bias * d).astype(g.dtype), m, v, q, prev
            q = jax.lax.cond(refresh, lambda: projector.update(g), lambda: q)
            low = projector.project(g, q)
            m, v, psi = adam(low, m, v)
            residual = g - alpha * projector.project_back(low, q, g.shape)
            s = _scaling_factor(psi, low, scaling) * residual
            norm = jnp.linalg.norm(s)
            limiter = jnp.where(first, 1.0, jnp.maximum(norm / (prev + _TINY), gamma) / gamma)
            s = s / limiter
            d = alpha * projector.project_back(psi, q, g.shape) + s
            return ((bias * d).astype(g.dtype), m, v, q,
                    (norm / limiter).astype(prev.dtype))

        g_leaves, treedef = jax.tree.flatten(updates)
        fields = (treedef.flatten_up_to(x) for x in state[1:])  # a basis may be a pytree
        out = [leaf(*a) for a in zip(g_leaves, *fields, strict=True)]
        d, mu, nu, basis, prev = (jax.tree.unflatten(treedef, [o[i] for o in out])
                                  for i in range(5))
        return d, FiraState(t, mu, nu, basis, prev)

    return optax.GradientTransformation(init_fn, update_fn)


def fira(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    alpha: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    gamma: float = 1.01,
    side: str = "std",
    scaling: str = "column",
    projector: Projector | None = None,
    weight_decay: float = 0.0,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Fira (:func:`scale_by_fira`), then decoupled weight decay and ``-learning_rate``.

    The reference decays after the step (``w <- (w - lr d)(1 - lr wd)``); here
    ``u = -lr (d + wd w)`` (optax's AdamW order), which differs by ``lr^2 wd d``.
    """
    return chain_with_decay_and_lr(
        scale_by_fira(rank, update_proj_gap, alpha, b1, b2, eps, gamma, side, scaling,
                      projector),
        learning_rate, weight_decay, mask)

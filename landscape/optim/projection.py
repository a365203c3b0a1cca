"""Low-rank gradient projectors for the GaLore-style optimizers (Fira, and later FRUGAL, DCT).

A projector maps the gradient ``G`` of one 2-D leaf (``m x n``) to a low-rank coordinate
``R`` and back. It is four pure, jit-able functions of arrays (a :class:`Projector`):

- ``init(param) -> basis``: a placeholder basis (any pytree of arrays) with the shapes and
  dtypes that ``update`` returns, so that an optimizer state keeps a fixed structure;
- ``update(grad) -> basis``: a fresh basis computed from the current gradient (the optimizer
  calls it under ``lax.cond`` every ``T`` steps and keeps the old basis otherwise);
- ``project(grad, basis) -> R``;
- ``project_back(R, basis, shape) -> P R``, the image in the leaf's ``shape`` (``m x n``;
  the shape is passed because ``R`` and the basis alone do not always tell the side).

:func:`svd_projector` is the projector of GaLore (Zhao et al. 2024, "GaLore: Memory-Efficient
LLM Training by Gradient Low-Rank Projection") as the GaLore and Fira reference code implements
it: with ``G = U S V^T`` (thin SVD) and the ``side`` rule ``"std"``, a leaf with ``m >= n`` is
projected on the right, ``R = G Q`` with ``Q = V[:, :r]`` (``n x r``, so ``R`` is ``m x r``)
and ``P R = R Q^T``; a leaf with ``m < n`` on the left, ``R = Q^T G`` with ``Q = U[:, :r]``
(``m x r``, ``R`` is ``r x n``) and ``P R = Q R``. In both cases ``P R`` is the orthogonal
projection of ``G`` on the span of its top ``r`` singular vectors on that side. ``r`` is
``min(rank, m, n)``.

Two choices differ from the reference code, neither changes the algorithm in exact arithmetic:
the SVD runs in the gradient's dtype promoted to at least float32 (the reference always casts to
float32, also for float64 gradients), and each singular vector is given a deterministic sign
(its entry of largest magnitude is positive), because the sign LAPACK returns is arbitrary and
matters once the Adam moments of ``R`` are carried across a basis refresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp

__all__ = ["Projector", "svd_projector", "fix_signs", "projects_right"]

SIDES = ("std", "reverse_std", "left", "right")


class Projector(NamedTuple):
    """A low-rank projector of 2-D gradients (see the module docstring).

    Attributes:
      init: ``param (m, n) -> basis`` placeholder with the structure of ``update``'s output.
      update: ``grad (m, n) -> basis``.
      project: ``(grad (m, n), basis) -> R`` (the low-rank coordinates).
      project_back: ``(R, basis, (m, n)) -> (m, n)``.
      low_rank_shape: ``(m, n) -> R.shape``.
    """

    init: Callable[[Any], Any]
    update: Callable[[Any], Any]
    project: Callable[[Any, Any], Any]
    project_back: Callable[[Any, Any], Any]
    low_rank_shape: Callable[[tuple], tuple]


def projects_right(shape: tuple, side: str) -> bool:
    """Whether a leaf of 2-D ``shape`` is projected on the right (``R = G Q``) under ``side``:
    ``"std"`` (GaLore's default) projects the smaller dimension, ``"reverse_std"`` the larger,
    ``"left"``/``"right"`` always that side."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    m, n = shape
    return {"std": m >= n, "reverse_std": m < n, "right": True, "left": False}[side]


def fix_signs(q):
    """Flip each column of ``q`` so that its entry of largest magnitude is positive (the
    first such entry on ties): a deterministic sign for singular vectors."""
    idx = jnp.argmax(jnp.abs(q), axis=0)
    pivot = jnp.take_along_axis(q, idx[None, :], axis=0)
    return q * jnp.where(pivot < 0, -1, 1).astype(q.dtype)


def svd_projector(rank: int, side: str = "std") -> Projector:
    """GaLore's SVD projector onto the top-``rank`` singular vectors of the gradient.

    ``rank`` is a static positive int (it fixes the state's shapes); the effective rank of an
    ``m x n`` leaf is ``min(rank, m, n)``. ``side`` is ``"std"`` (GaLore's rule: right when
    ``m >= n``), ``"reverse_std"``, ``"left"`` or ``"right"``. The basis is the ``(k, r)``
    matrix ``Q`` with orthonormal columns (``k = n`` on the right, ``m`` on the left), in the
    gradient's dtype.
    """
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise ValueError(f"rank must be a positive int, got {rank!r}")
    projects_right((1, 1), side)  # validates side

    def basis_shape(shape):
        m, n = shape
        r = min(rank, m, n)
        return (n, r) if projects_right(shape, side) else (m, r)

    def init(param):
        return jnp.zeros(basis_shape(jnp.shape(param)), jnp.result_type(param))

    def update(grad):
        dtype = jnp.result_type(grad)
        work = jnp.promote_types(dtype, jnp.float32)
        u, _, vt = jnp.linalg.svd(grad.astype(work), full_matrices=False)
        r = basis_shape(grad.shape)[1]
        q = vt[:r].T if projects_right(grad.shape, side) else u[:, :r]
        return fix_signs(q).astype(dtype)

    def project(grad, q):
        return grad @ q if projects_right(grad.shape, side) else q.T @ grad

    def project_back(low, q, shape):
        return low @ q.T if projects_right(shape, side) else q @ low

    def low_rank_shape(shape):
        m, n = shape
        r = basis_shape(shape)[1]
        return (m, r) if projects_right(shape, side) else (r, n)

    return Projector(init, update, project, project_back, low_rank_shape)

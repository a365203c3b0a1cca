"""Restriction of a curvature operator to a subset of the parameters (per-layer spectra).

For a selection of coordinates ``S`` (of size ``k``) of the ravelled parameters, the restricted
operator is the principal submatrix ``A[S, S] = P^T A P``, where ``P`` embeds a ``k``-vector into
the full space with zeros elsewhere. Its spectrum is the layer-wise (block-diagonal) curvature,
e.g. the Hessian of the loss with respect to one layer with every other layer held fixed.
Each product costs one full product of the base operator.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from landscape import tree as T
from landscape.linop import LinearOperator, operator_dataclass, static

__all__ = ["restrict", "RestrictedOperator", "mask_indices", "block_masks"]


def _leaf_mask(path, leaf, value):
    shape = np.shape(leaf)
    m = np.asarray(value)
    if m.dtype != np.bool_:
        raise TypeError(
            f"mask leaves must be bool or bool arrays; got dtype {m.dtype} at "
            f"{jax.tree_util.keystr(path) or '<root>'}"
        )
    try:
        return np.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(
            f"mask at {jax.tree_util.keystr(path) or '<root>'} has shape {m.shape}, which does "
            f"not broadcast to the parameter shape {shape}"
        ) from None


def mask_indices(params, mask) -> np.ndarray:
    """Indices (into ``ravel_pytree(params)``) of the coordinates selected by ``mask``.

    ``mask`` is either
      * a pytree *prefix* of ``params`` whose leaves are bools or bool arrays broadcastable to the
        parameter leaves below them (``{"layer1": True, "layer2": False}`` selects all of
        ``layer1``; a full boolean pytree selects individual entries), or
      * a callable ``mask(path: str, leaf) -> bool | bool array`` called on every parameter leaf
        with its ``jax.tree_util.keystr`` path (e.g. ``lambda path, _: "layer1" in path``).
    Returns a sorted int array; raises if nothing is selected.
    """
    leaves_with_path, _ = jax.tree_util.tree_flatten_with_path(params)
    if callable(mask):
        parts = [_leaf_mask(p, x, mask(jax.tree_util.keystr(p), x)) for p, x in leaves_with_path]
    else:
        try:
            full = jax.tree.map(
                lambda m, sub: jax.tree.map(lambda x: m, sub),
                mask,
                params,
                is_leaf=lambda m: isinstance(m, (bool, np.bool_, np.ndarray, jax.Array)),
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"mask must be a pytree prefix of params: {exc}") from exc
        mleaves = jax.tree.leaves(full)
        parts = [_leaf_mask(p, x, m) for (p, x), m in zip(leaves_with_path, mleaves)]
    flat = np.concatenate([p.ravel() for p in parts]) if parts else np.zeros(0, bool)
    idx = np.flatnonzero(flat)
    if idx.size == 0:
        raise ValueError("mask selects no parameters")
    return idx


def block_masks(params) -> dict[str, object]:
    """One mask per top-level entry of ``params`` (e.g. per layer): ``{name: prefix_mask}``.

    Names are the ``keystr`` of the top-level keys (``"['layer1']"``, ``"[0]"``). Use with
    :func:`restrict` to get one operator per block.
    """
    children = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: x is not params)[0]
    out = {}
    for path, _ in children:
        name = jax.tree_util.keystr(path)
        out[name] = (lambda target: lambda p, _: p.startswith(target))(name)
    return out


@operator_dataclass
class RestrictedOperator(LinearOperator):
    """``P^T A P``: the principal submatrix of ``base`` on coordinates ``indices``.

    Attributes: ``base`` (the full operator), ``indices`` (int array ``(k,)`` into the ravelled
    params), ``dim = k``, ``dtype = base.dtype``.
    """

    base: LinearOperator
    indices: jax.Array
    dim: int = static()
    dtype: Any = static()

    def _matvec(self, v):
        full = jnp.zeros((self.base.dim,), self.dtype).at[self.indices].set(v)
        return self.base._matvec(full)[self.indices]


def _restricted(base, indices) -> RestrictedOperator:
    indices = jnp.asarray(indices, jnp.int32)
    return RestrictedOperator(base=base, indices=indices, dim=int(indices.shape[0]),
                              dtype=base.dtype)


def restrict(op: LinearOperator, mask, params=None) -> RestrictedOperator:
    """Restrict ``op`` (over ravelled params) to the parameters selected by ``mask``.

    Args:
      op: a curvature operator over ``ravel_pytree(params)``; dataset operators carry their
        ``params``, so ``params`` may be omitted for them.
      mask: a boolean prefix pytree or a callable (see :func:`mask_indices`), or an int array of
        flat indices.
      params: the parameter pytree defining the ravel order (default ``op.params``).

    Returns:
      A :class:`RestrictedOperator` with ``dim`` = number of selected coordinates, whose
      eigenvalues are those of the diagonal block ``A[S, S]`` (interlacing the full spectrum).
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be a LinearOperator; got {type(op).__name__}")
    if isinstance(mask, (np.ndarray, jax.Array)) and jnp.issubdtype(mask.dtype, jnp.integer):
        idx = np.unique(np.asarray(mask))
        if idx.size == 0 or idx[0] < 0 or idx[-1] >= op.dim:
            raise ValueError(f"mask indices must be non-empty and in [0, {op.dim}); got {idx}")
        return _restricted(op, idx)
    params = getattr(op, "params", None) if params is None else params
    if params is None:
        raise ValueError("params is required to interpret a pytree/callable mask for this op")
    if T.ravel(params)[0].shape[0] != op.dim:
        raise ValueError(f"params ravel to {T.ravel(params)[0].shape[0]} values; op.dim={op.dim}")
    return _restricted(op, mask_indices(params, mask))

"""Conversions between operators and dense matrices (for tests and tiny models)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from landscape import validate
from landscape.batching import check_batch_size
from landscape.linop import LinearOperator, MatrixOperator

__all__ = ["dense", "from_matrix"]


def dense(op: LinearOperator, *, chunk_size: int | None = 64) -> jax.Array:
    """Materialise ``op`` as a ``(dim, dim)`` array by multiplying the identity, column by column.

    Costs ``dim`` products and ``dim^2`` memory, so it is for tests and tiny models only
    (``dim`` up to a few thousand). ``chunk_size`` columns are multiplied at once
    (``lax.map`` with batching); ``None`` multiplies all columns in one vmapped call.
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be a LinearOperator; got {type(op).__name__}")
    if chunk_size is not None:
        chunk_size = check_batch_size(chunk_size, "chunk_size", allow_none=False)
    return _dense(op, chunk_size)


def _dense_impl(op, chunk_size):
    eye = jnp.eye(op.dim, dtype=op.dtype)
    cols = jax.lax.map(op._matvec, eye, batch_size=chunk_size)  # row j = A e_j
    return cols.T


_dense = jax.jit(_dense_impl, static_argnums=1)


def from_matrix(matrix, *, rtol: float | None = None) -> MatrixOperator:
    """Wrap a dense symmetric matrix as a ``LinearOperator``, checking symmetry.

    Args:
      matrix: ``(dim, dim)`` real floating array.
      rtol: allowed ``max|A - A^T| / max|A|``; default ``100 * eps`` of the dtype. Raises
        ``ValueError`` when exceeded (symmetrise with ``(A + A.T) / 2`` first if intended).
    """
    arr = jnp.asarray(matrix)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"matrix must be square (dim, dim); got shape {arr.shape}")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(f"matrix must be a real floating array; got dtype {arr.dtype}")
    if validate.is_concrete(arr):
        a = np.asarray(arr, np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError("matrix contains non-finite values")
        tol = 100 * float(jnp.finfo(arr.dtype).eps) if rtol is None else float(rtol)
        scale = max(float(np.max(np.abs(a))), np.finfo(np.float64).tiny)
        asym = float(np.max(np.abs(a - a.T))) / scale
        if asym > tol:
            raise ValueError(
                f"matrix is not symmetric: max|A - A^T| / max|A| = {asym:.3e} > rtol={tol:.1e}"
            )
    return MatrixOperator(arr)

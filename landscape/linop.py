"""The linear-operator contract beneath ``landscape.curvature`` and ``landscape.spectral``.

A linear operator here is a symmetric ``dim x dim`` matrix available only through products
``matvec(v)`` on flat vectors of shape ``(dim,)``. Every concrete operator is a frozen dataclass
registered as a JAX pytree with :func:`jax.tree_util.register_dataclass`: the arrays it reads
(parameters, a dataset, a dense matrix, a PRNG key) are *data* fields and the functions and
static sizes are *metadata* fields (declared with :func:`static`). So an operator passes into a
jitted function as an argument (``jax.jit(f)(op, v)``) without its dataset being baked into the
compiled program, and one compiled Lanczos serves every operator of the same shapes.

Spectral routines accept either an operator or a bare ``matvec`` callable together with its
``dim`` (and optionally ``dtype``), as matfree does; :func:`as_operator` is the one place that
turns the second form into the first.

Subclasses implement ``_matvec(v)``; :meth:`LinearOperator.matvec` adds the shape check and the
dtype cast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "LinearOperator",
    "MatrixOperator",
    "FunctionOperator",
    "as_operator",
    "operator_dataclass",
    "static",
]


def static(**kwargs) -> Any:
    """A dataclass field stored as pytree metadata (functions, sizes, dtypes; hashable)."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


def operator_dataclass(cls):
    """Make ``cls`` a frozen, keyword-only dataclass registered as a pytree.

    Fields declared with :func:`static` become metadata (part of the jit cache key); every other
    field is a data child (traced). Construction runs no validation, because JAX rebuilds
    operators from abstract leaves while tracing: builders validate before constructing.
    """
    cls = dataclasses.dataclass(frozen=True, kw_only=True, repr=False, eq=False)(cls)
    fields = dataclasses.fields(cls)
    meta = [f.name for f in fields if f.metadata.get("static")]
    data = [f.name for f in fields if not f.metadata.get("static")]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


class LinearOperator:
    """Base class: a symmetric linear operator on flat vectors of length ``dim``.

    Attributes (provided by each subclass, as a field or a property):
      dim: number of rows (= columns), a static Python int.
      dtype: the dtype of the vectors the operator consumes and produces.
      shape: ``(dim, dim)``.
    """

    dim: int
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    def matvec(self, v: jax.Array) -> jax.Array:
        """Return ``A @ v`` for ``v`` of shape ``(dim,)``."""
        if jnp.ndim(v) != 1 or jnp.shape(v)[0] != self.dim:
            raise ValueError(
                f"v must be a flat vector of shape ({self.dim},); got shape {jnp.shape(v)}"
            )
        return self._matvec(jnp.asarray(v, self.dtype))

    def __call__(self, v: jax.Array) -> jax.Array:
        return self.matvec(v)

    def matmat(self, V: jax.Array) -> jax.Array:
        """Return ``A @ V`` for ``V`` of shape ``(dim, m)`` (vmapped matvec)."""
        if jnp.ndim(V) != 2 or jnp.shape(V)[0] != self.dim:
            raise ValueError(f"V must have shape ({self.dim}, m); got {jnp.shape(V)}")
        return jax.vmap(self._matvec, in_axes=1, out_axes=1)(jnp.asarray(V, self.dtype))

    def _matvec(self, v: jax.Array) -> jax.Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, dtype={np.dtype(self.dtype).name})"


@operator_dataclass
class MatrixOperator(LinearOperator):
    """A dense symmetric matrix ``A`` of shape ``(dim, dim)`` as a ``LinearOperator``.

    Used for tests against planted spectra and for small problems. Symmetry is the caller's
    responsibility (``landscape.curvature.from_matrix`` checks it).
    """

    matrix: jax.Array

    def __init__(self, matrix: jax.Array):
        # JAX also calls this with abstract or placeholder leaves when it rebuilds the pytree.
        if isinstance(matrix, np.ndarray | jax.Array | list | tuple):
            matrix = jnp.asarray(matrix)
            if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
                raise ValueError(f"matrix must be square (dim, dim); got shape {matrix.shape}")
        object.__setattr__(self, "matrix", matrix)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.matrix.dtype)

    def _matvec(self, v):
        return jnp.matmul(self.matrix, v, precision=jax.lax.Precision.HIGHEST)


@operator_dataclass
class FunctionOperator(LinearOperator):
    """A bare ``matvec`` callable with its ``dim`` and ``dtype``, as a ``LinearOperator``.

    Built by :func:`as_operator`. The callable is metadata, so jitted spectral code compiles
    once per callable; a closure over large arrays bakes them into the program as constants
    (pass an operator whose arrays are data fields to avoid that).
    """

    fn: Callable = static()
    dim: int = static()
    dtype: Any = static()

    def _matvec(self, v):
        return jnp.asarray(self.fn(v), self.dtype)


def as_operator(op, *, dim: int | None = None, dtype=None, name: str = "op") -> LinearOperator:
    """Return ``op`` as a :class:`LinearOperator`.

    Args:
      op: a ``LinearOperator``; or any object with ``.dim``, ``.dtype`` and ``.matvec(v)``
        (returned unchanged); or a bare callable ``matvec(v) -> A v`` on ``(dim,)`` vectors, in
        which case ``dim`` is required.
      dim: the dimension of a bare callable (ignored for operators, except that it must agree).
      dtype: the dtype of a bare callable's vectors (default: JAX's default float dtype).
      name: the argument name used in error messages.

    Raises:
      TypeError: ``op`` is neither an operator nor callable, or its dtype is not real floating.
      ValueError: ``dim`` is missing for a callable, not a positive int, or disagrees with
        ``op.dim``.
    """
    if hasattr(op, "matvec") and hasattr(op, "dim"):
        if dim is not None and int(dim) != op.dim:
            raise ValueError(f"dim={dim} disagrees with {name}.dim={op.dim}")
        _check_dim_dtype(op.dim, getattr(op, "dtype", None), name)
        return op
    if not callable(op):
        raise TypeError(
            f"{name} must be a linear operator (.dim, .dtype, .matvec) or a matvec callable; "
            f"got {type(op).__name__}"
        )
    if dim is None:
        raise ValueError(f"{name} is a bare matvec callable: pass its dimension as dim=")
    dtype = jnp.result_type(float) if dtype is None else dtype
    _check_dim_dtype(dim, dtype, name)
    return FunctionOperator(fn=op, dim=int(dim), dtype=np.dtype(dtype))


def _check_dim_dtype(dim, dtype, name: str) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise ValueError(f"{name}.dim must be a positive int; got {dim!r}")
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name}.dtype must be a real floating dtype; got {dtype!r}")

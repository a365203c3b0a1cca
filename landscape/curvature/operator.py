"""The linear-operator protocol shared by ``landscape.curvature`` and ``landscape.spectral``.

A curvature operator is a symmetric ``dim x dim`` matrix available only through products
``matvec(v)`` on flat vectors of shape ``(dim,)``. Operators are registered JAX pytrees: the
arrays they read (parameters, the dataset, a dense matrix) are pytree *children*, and the
functions and static sizes are *auxiliary data*. So an operator can be passed as an argument to
a jitted function (``jax.jit(f)(op, v)``) and its dataset is not baked into the compiled program
as a constant, and the same compiled Lanczos serves every operator of the same shapes.

Subclasses implement ``_matvec(v)`` and the pytree methods; ``matvec`` adds shape checks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["LinearOperator", "MatrixOperator"]


class LinearOperator:
    """Base class: a symmetric linear operator on flat vectors of length ``dim``.

    Attributes:
      dim: number of rows (= columns), a static Python int.
      dtype: the dtype of vectors the operator consumes and produces.
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


@jax.tree_util.register_pytree_node_class
class MatrixOperator(LinearOperator):
    """A dense symmetric matrix ``A`` of shape ``(dim, dim)`` as a ``LinearOperator``.

    Used for tests against planted spectra and for small problems. Symmetry is the caller's
    responsibility (``from_matrix`` in ``landscape.curvature`` can check it).
    """

    def __init__(self, matrix: jax.Array):
        matrix = jnp.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square (dim, dim); got shape {matrix.shape}")
        self.matrix = matrix
        self.dim = int(matrix.shape[0])
        self.dtype = np.dtype(matrix.dtype)

    def _matvec(self, v):
        return jnp.matmul(self.matrix, v, precision=jax.lax.Precision.HIGHEST)

    def tree_flatten(self):
        return (self.matrix,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        (obj.matrix,) = children
        # Shapes may be abstract while tracing; ShapeDtypeStruct-like leaves still have them.
        obj.dim = int(obj.matrix.shape[0]) if hasattr(obj.matrix, "shape") else aux
        obj.dtype = np.dtype(obj.matrix.dtype) if hasattr(obj.matrix, "dtype") else None
        return obj

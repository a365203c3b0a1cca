"""The base class of the curvature operators: exact full-dataset means of per-example matrices.

A dataset operator represents ``A = (1/n) sum_i A_i`` where ``A_i`` is a per-example curvature
matrix (Hessian, Gauss-Newton or Fisher term). Its product with a vector is computed batch by
batch with :func:`landscape.batching.sum_over_batches`: each batch contributes its *sum* over
examples and the total is divided by ``n`` once, so the result is the exact mean for every
``batch_size`` and for a padded :class:`landscape.batching.ShardedDataset` on any number of
devices. Peak memory is that of one batch of ``batch_size`` examples.

Operators are frozen dataclasses registered as pytrees (``landscape.linop``): the parameters,
the dataset and any extra arrays (a PRNG key) are data children, the functions and static sizes
metadata. Products are jit-compiled once per operator structure, and an operator can be passed
into jitted spectral code as an argument.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from landscape import batching, validate
from landscape import tree as T
from landscape.linop import LinearOperator, operator_dataclass, static

__all__ = ["DatasetOperator"]


@jax.jit
def _jitted_product(op, v):
    return op._product(v)


@operator_dataclass
class DatasetOperator(LinearOperator):
    """Base class of the curvature operators over ravelled parameters.

    Subclasses are ``@operator_dataclass``es that add their own fields and implement
    ``_batch_sum(batch, idx, v_tree) -> flat``, the sum over the batch's examples of ``A_i v``
    as a flat vector of length ``dim``.

    Attributes (common to all subclasses):
      params: the parameter pytree (point of linearisation).
      dataset: the dataset (a pytree with a leading example axis, or a ``ShardedDataset``).
      dim: number of parameters (length of ``ravel_pytree(params)``).
      dtype: dtype of the ravelled parameters; products are returned in this dtype.
      num_examples: ``n``, number of real examples in the dataset.
      batch_size: examples per batch in the product loop (memory knob; results do not depend
        on it beyond floating-point summation order).
    """

    params: Any
    dataset: Any
    dim: int = static()
    dtype: Any = static()
    num_examples: int = static()
    batch_size: int = static()

    def _product(self, v: jax.Array) -> jax.Array:
        _, unravel = T.ravel(self.params)
        v_tree = unravel(v)
        fn = lambda batch, idx: self._batch_sum(batch, idx, v_tree).astype(self.dtype)
        init = jnp.zeros((self.dim,), self.dtype)
        total = batching.sum_over_batches(fn, self.dataset, self.batch_size, init)
        return total / jnp.asarray(self.num_examples, self.dtype)

    def _matvec(self, v: jax.Array) -> jax.Array:
        return _jitted_product(self, v)

    def _batch_sum(self, batch, idx, v_tree) -> jax.Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def matvec_tree(self, v_tree):
        """Product with a vector given as a pytree shaped like ``params``; returns a pytree."""
        validate.check_same_structure(self.params, v_tree, "params", "v_tree")
        flat, unravel = T.ravel(self.params)
        v = T.ravel(v_tree)[0]
        return unravel(self.matvec(v.astype(flat.dtype)))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dim={self.dim}, dtype={np.dtype(self.dtype).name}, "
            f"num_examples={self.num_examples}, batch_size={self.batch_size})"
        )

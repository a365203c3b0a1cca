"""Exact full-dataset averaging of per-batch products, and the operator base class built on it.

A dataset operator represents ``A = (1/n) sum_i A_i`` where ``A_i`` is a per-example curvature
matrix (Hessian, Gauss-Newton or Fisher term). Its product with a vector is computed batch by
batch: the dataset is cut into ``n // batch_size`` full batches, looped over with ``lax.scan``,
plus one remainder batch of size ``n % batch_size`` handled by a separate (statically shaped)
call. Each batch contributes its *sum* over examples, and the total is divided by ``n`` once, so
the result is the exact mean for every ``batch_size`` (no padding, no masking, no dropped
examples). Peak memory is that of one batch of ``batch_size`` examples.

The operator is a registered pytree whose children are the parameters, the dataset and any
extra arrays (a PRNG key); the functions and static sizes are auxiliary data. Products are
jit-compiled once per operator structure, and the operator can be passed into jitted spectral
code as an argument.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from landscape import tree as T
from landscape.curvature.operator import LinearOperator

__all__ = ["DatasetOperator", "sum_over_batches"]


def sum_over_batches(
    fn: Callable, dataset, num_examples: int, batch_size: int, init: jax.Array
) -> jax.Array:
    """Return ``init + sum_batches fn(batch, idx)`` over consecutive batches of ``dataset``.

    ``idx`` holds the global example indices of the batch (shape ``(b,)``), so per-example
    randomness can be made independent of ``batch_size`` (``fold_in(key, idx)``). ``fn`` must
    return an array shaped like ``init``. Full batches run under ``lax.scan``; a remainder batch
    (``num_examples % batch_size`` examples) is one extra call with its own static shape.
    """
    b = min(batch_size, num_examples)
    nb, rem = divmod(num_examples, b)
    if nb == 1:
        acc = init + fn(T.take(dataset, slice(0, b)), jnp.arange(b))
    else:
        main = jax.tree.map(lambda x: x[: nb * b].reshape((nb, b) + x.shape[1:]), dataset)
        idx = jnp.arange(nb * b).reshape(nb, b)

        def body(carry, xs):
            batch, i = xs
            return carry + fn(batch, i), None

        acc, _ = jax.lax.scan(body, init, (main, idx))
    if rem:
        acc = acc + fn(
            T.take(dataset, slice(nb * b, num_examples)), jnp.arange(nb * b, num_examples)
        )
    return acc


@jax.jit
def _jitted_product(op, v):
    return op._product(v)


class DatasetOperator(LinearOperator):
    """Base class of the curvature operators over ravelled parameters.

    Subclasses set ``_CHILDREN`` / ``_AUX`` (attribute names stored as pytree children and as
    static auxiliary data) and implement ``_batch_sum(batch, idx, v_tree) -> flat`` returning the
    sum over the batch's examples of ``A_i v`` as a flat vector of length ``dim``.

    Attributes (common to all subclasses):
      dim: number of parameters (length of ``ravel_pytree(params)``).
      dtype: dtype of the ravelled parameters; products are returned in this dtype.
      num_examples: ``n``, number of examples in the dataset.
      batch_size: examples per batch in the product loop (memory knob; results do not depend
        on it beyond floating-point summation order).
      params: the parameter pytree (point of linearisation).
      dataset: the dataset pytree (leading example axis).
    """

    _CHILDREN: tuple[str, ...] = ("params", "dataset")
    _AUX: tuple[str, ...] = ("dim", "dtype", "num_examples", "batch_size")

    def _product(self, v: jax.Array) -> jax.Array:
        _, unravel = T.ravel(self.params)
        v_tree = unravel(v)
        fn = lambda batch, idx: self._batch_sum(batch, idx, v_tree).astype(self.dtype)
        init = jnp.zeros((self.dim,), self.dtype)
        total = sum_over_batches(fn, self.dataset, self.num_examples, self.batch_size, init)
        return total / jnp.asarray(self.num_examples, self.dtype)

    def _matvec(self, v: jax.Array) -> jax.Array:
        return _jitted_product(self, v)

    def _batch_sum(self, batch, idx, v_tree) -> jax.Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def matvec_tree(self, v_tree):
        """Product with a vector given as a pytree shaped like ``params``; returns a pytree."""
        T.check_same_structure(self.params, v_tree, "params", "v_tree")
        flat, unravel = T.ravel(self.params)
        v = T.ravel(v_tree)[0]
        return unravel(self.matvec(v.astype(flat.dtype)))

    def tree_flatten(self):
        children = tuple(getattr(self, name) for name in self._CHILDREN)
        aux = tuple(getattr(self, name) for name in self._AUX)
        return children, aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        for name, value in zip(cls._CHILDREN, children):
            setattr(obj, name, value)
        for name, value in zip(cls._AUX, aux):
            setattr(obj, name, value)
        return obj

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dim={self.dim}, dtype={np.dtype(self.dtype).name}, "
            f"num_examples={self.num_examples}, batch_size={self.batch_size})"
        )

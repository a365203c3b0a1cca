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

**Mixed precision** (``compute_dtype``, e.g. ``jnp.bfloat16``): each batch's forward and backward
pass runs on the parameters, the vector and the floating batch leaves rounded to
``compute_dtype``; the batch's product is cast back to the operator's ``dtype`` (that of the
params) before it enters the sum over batches, so the accumulation over batches and everything
downstream (Lanczos, SLQ, trace estimators) stays in the params dtype, as Ghorbani, Krishnan and
Xiao (2019), "An investigation into neural net optimization via Hessian eigenvalue density",
accumulate float32 products in float64. See :func:`check_compute_dtype` for the error to expect.

**Convolutions on CPU.** The sum over batches is a ``lax.scan``, a loop body in which XLA:CPU
runs the derivative convolutions of a ``lax.conv`` model in a slow generic form; on the CPU
backend each batch's product is therefore evaluated with its convolutions rewritten into the
canonical form (``landscape.conv_rewrite``; bit-identical values in float32, and products
without convolutions are left exactly as they are).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from landscape import batching, conv_rewrite, validate
from landscape import tree as T
from landscape.linop import LinearOperator, operator_dataclass, static

__all__ = ["DatasetOperator", "check_compute_dtype", "to_compute_dtype"]


def check_compute_dtype(compute_dtype, params_dtype, name: str = "compute_dtype"):
    """The dtype the per-batch passes run in, or ``None`` for the params dtype (no rounding).

    ``compute_dtype`` must be ``None`` or a floating dtype no wider than ``params_dtype`` (e.g.
    ``jnp.bfloat16``, ``jnp.float16``, or ``jnp.float32`` for float64 params); ``TypeError`` for
    anything that is not a floating dtype, ``ValueError`` for a wider one. A dtype equal to
    ``params_dtype`` returns ``None``: the products are then the full-precision ones, bit for bit.

    Expected error of a product, relative to its norm: each rounding to a format with ``p`` bits
    of mantissa costs up to ``u = 2^-p`` (bfloat16: ``p = 8``, ``u ~ 3.9e-3``; float16: ``p = 11``,
    ``u ~ 4.9e-4``; float32: ``u ~ 6e-8``), and a Hessian-vector product chains a few dozen such
    operations per layer, with partial cancellation, so the error grows with depth. Measured
    against float32 products (2-norm, random vectors): 0.7-3e-2 for bfloat16 and 0.6-3e-3 for
    float16 on a one-hidden-layer tanh MLP (tests), 6-8e-2 for bfloat16 on ResNet-20 (272k
    parameters, 8x8 digits). Eigenvalues from a narrow operator are measured by
    ``benchmarks/curvature_scale.py``.
    float16 has a narrow exponent range (``6e-5`` to ``65504``): products of very small or very
    large entries under- or overflow, which bfloat16 (float32's range) avoids.
    """
    if compute_dtype is None:
        return None
    try:
        dt = np.dtype(compute_dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be None or a floating dtype (e.g. jnp.bfloat16); "
                        f"got {compute_dtype!r}") from exc
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{name} must be None or a floating dtype (e.g. jnp.bfloat16); "
                        f"got {dt.name}")
    wide = np.dtype(params_dtype)
    if dt.itemsize > wide.itemsize:
        raise ValueError(f"{name} ({dt.name}) must be no wider than the params dtype "
                         f"({wide.name}): the products are returned and summed in the params "
                         "dtype")
    return None if dt == wide else dt


def to_compute_dtype(tree, compute_dtype):
    """``tree`` with every floating leaf cast to ``compute_dtype`` (others unchanged)."""
    cast = lambda x: (x.astype(compute_dtype)
                      if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x)
    return jax.tree.map(cast, tree)


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
      compute_dtype: ``None`` (default: full precision) or the narrower floating dtype of each
        batch's forward/backward pass (mixed precision; see the module docstring). Subclasses
        implement it in ``_batch_sum`` with :meth:`_rounded`.
    """

    params: Any
    dataset: Any
    dim: int = static()
    dtype: Any = static()
    num_examples: int = static()
    batch_size: int = static()
    compute_dtype: Any = static(default=None)

    def _rounded(self, batch, v_tree):
        """``(params, batch, v_tree)`` as a batch's passes see them: unchanged when
        ``compute_dtype`` is None, else with every floating leaf cast to ``compute_dtype``."""
        if self.compute_dtype is None:
            return self.params, batch, v_tree
        c = self.compute_dtype
        return (to_compute_dtype(self.params, c), to_compute_dtype(batch, c),
                to_compute_dtype(v_tree, c))

    def _product(self, v: jax.Array) -> jax.Array:
        _, unravel = T.ravel(self.params)
        v_tree = unravel(v)
        fn = lambda batch, idx: self._batch_sum(batch, idx, v_tree).astype(self.dtype)
        if jax.default_backend() == "cpu":
            # the sum over batches is a lax.scan, where XLA:CPU runs convolutions in a slow
            # generic form: rewrite them (a function without convolutions is left as it is)
            fn = conv_rewrite.rewrite_convs(fn)
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
        mixed = ("" if self.compute_dtype is None
                 else f", compute_dtype={np.dtype(self.compute_dtype).name}")
        return (
            f"{type(self).__name__}(dim={self.dim}, dtype={np.dtype(self.dtype).name}, "
            f"num_examples={self.num_examples}, batch_size={self.batch_size}{mixed})"
        )

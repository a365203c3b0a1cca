"""The generalised Gauss-Newton (GGN) operator ``G = (1/n) sum_i J_i^T H_i J_i``.

``J_i`` is the Jacobian of the network outputs ``f(theta; x_i)`` with respect to the parameters and
``H_i`` the Hessian of the output loss in output space (Schraudolph 2002, "Fast curvature
matrix-vector products for second-order gradient descent"). ``G`` drops the term of the Hessian
that involves the second derivatives of the network, so it is positive semi-definite whenever
the output loss is convex in the outputs (MSE, softmax cross-entropy).

A product ``G v`` costs one linearisation of the network (a forward pass plus a
Jacobian-vector product) and one transposed product (a backward pass) per batch, about the cost
of two gradient passes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from landscape import tree as T
from landscape.curvature import _checks as C
from landscape.curvature import output_losses as O
from landscape.curvature.dataset_operator import DatasetOperator, sum_over_batches

__all__ = ["ggn", "OutputCurvatureOperator"]


@jax.tree_util.register_pytree_node_class
class OutputCurvatureOperator(DatasetOperator):
    """``(1/n) sum_i J_i^T M_i J_i`` for an output-space matrix ``M_i`` chosen by ``mode``.

    ``mode`` is "ggn" (``M_i = H_i``), "fisher" (Monte Carlo), "fisher_exact" or
    "empirical_fisher"; see ``landscape.curvature.output_losses``. Built by :func:`ggn`,
    :func:`landscape.curvature.fisher` and :func:`landscape.curvature.empirical_fisher`.
    Extra attributes: ``apply_fn``, ``output_loss`` (canonical name or callable), ``mode``,
    ``num_samples``, ``key`` (PRNG key for "fisher", else ``None``).
    """

    _CHILDREN = DatasetOperator._CHILDREN + ("key",)
    _AUX = DatasetOperator._AUX + ("apply_fn", "output_loss", "mode", "num_samples")

    def _batch_sum(self, batch, idx, v_tree):
        x, y = batch["x"], batch["y"]
        F, f_jvp = jax.linearize(lambda p: self.apply_fn(p, x), self.params)
        U = O.output_product(
            self.mode, self.output_loss, F, y, f_jvp(v_tree), idx, self.key, self.num_samples
        )
        (g,) = jax.linear_transpose(f_jvp, self.params)(U.astype(F.dtype))
        return T.ravel(g)[0]


def _check_outputs(kind, out, y, name="output_loss"):
    """Shape/dtype compatibility of network outputs with targets for the named losses."""
    if kind == "cross_entropy":
        if out.ndim != 2 or y.shape != out.shape[:1]:
            raise ValueError(
                f"{name}='cross_entropy' needs outputs (b, C) and integer labels (b,); got "
                f"outputs {out.shape} and labels {y.shape}"
            )
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise TypeError(f"{name}='cross_entropy' needs integer labels; got dtype {y.dtype}")
    elif kind == "mse" and tuple(y.shape) != tuple(out.shape):
        raise ValueError(
            f"{name}='mse' needs targets shaped like the outputs; got outputs {out.shape} "
            f"and targets {y.shape}"
        )


def _dataset_loss(apply_fn, kind, params, dataset, batch_size):
    n = C.check_dataset(dataset)
    loss = O.mean_output_loss(kind)
    dtype = jnp.result_type(*jax.tree.leaves(params))
    fn = lambda b, idx: (loss(apply_fn(params, b["x"]), b["y"]) * idx.shape[0]).astype(dtype)
    return sum_over_batches(fn, dataset, n, batch_size, jnp.zeros((), dtype)) / n


_dataset_loss_jit = jax.jit(_dataset_loss, static_argnums=(0, 1, 4))


def build(
    apply_fn, output_loss, params, dataset, batch_size, mode, key=None, num_samples=1, check=True
):
    """Validate inputs and construct an :class:`OutputCurvatureOperator` (shared builder)."""
    kind = O.canonical(output_loss)
    b = C.check_batch_size(batch_size)
    n = C.check_supervised(dataset)
    C.check_params(params)
    first = T.take(dataset, slice(0, min(b, n)))
    try:
        out = jax.eval_shape(apply_fn, params, first["x"])
    except Exception as exc:
        raise TypeError(f"apply_fn(params, x) failed to evaluate: {exc}") from exc
    if not hasattr(out, "shape") or out.ndim < 1 or out.shape[0] != first["x"].shape[0]:
        raise ValueError(f"apply_fn must return one output row per example; got {out}")
    _check_outputs(kind, out, first["y"])
    loss = O.mean_output_loss(kind)
    C.check_scalar_loss(loss, out, first["y"], "output_loss", "(outputs, targets)")
    if check and C.is_concrete((params, dataset)):
        loss = _dataset_loss_jit(apply_fn, kind, params, dataset, b)
        C.check_finite_value(loss, "the dataset loss")
    op = object.__new__(OutputCurvatureOperator)
    op.params, op.dataset, op.key = params, dataset, key
    op.apply_fn, op.output_loss, op.mode, op.num_samples = apply_fn, kind, mode, num_samples
    op.dim, op.dtype = C.flat_dim_dtype(params)
    op.num_examples, op.batch_size = n, b
    return op


def ggn(apply_fn, output_loss, params, dataset, batch_size: int = 256, *, check: bool = True):
    """Generalised Gauss-Newton matrix ``G = (1/n) sum_i J_i^T H_i J_i`` as a ``LinearOperator``.

    Args:
      apply_fn: ``apply_fn(params, x) -> outputs`` with one output row per example,
        ``(b, C)`` logits for cross-entropy or ``(b, ...)`` for MSE.
      output_loss: ``"cross_entropy"`` (softmax CE with integer labels; analytic
        ``H_i = diag(p_i) - p_i p_i^T``), ``"mse"`` (``0.5 ||f - y||^2``, ``H_i = I``, so
        ``G = (1/n) J^T J``), or a callable ``output_loss(outputs, targets) -> scalar`` giving the
        MEAN loss over the batch, whose output Hessian is then taken by autodiff.
      params: pytree of floating arrays.
      dataset: ``{"x": inputs (n, ...), "y": targets (n, ...)}``.
      batch_size: positive int, examples per batch in the product loop (exact for any value).
      check: evaluate the dataset loss once and raise if it is not finite.

    Returns:
      An operator over ``ravel_pytree(params)`` coordinates (``dim``, ``dtype``, ``matvec``,
      ``matmat``, ``matvec_tree``). ``G`` is symmetric PSD for convex output losses. Accuracy
      against an explicit ``J^T H J`` (``jax.jacrev``): ~1e-6 relative in float32, ~1e-14 in
      float64.

    References: Schraudolph (2002); Martens (2020), "New insights and perspectives on the
    natural gradient method" (GGN = Fisher for exponential-family output losses).
    """
    return build(apply_fn, output_loss, params, dataset, batch_size, "ggn", check=check)

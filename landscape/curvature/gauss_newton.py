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

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from landscape import batching, losses, validate
from landscape import tree as T
from landscape.batching import check_batch_size
from landscape.curvature import output_losses as O
from landscape.curvature.dataset_operator import DatasetOperator, check_compute_dtype
from landscape.linop import operator_dataclass, static

__all__ = ["ggn", "OutputCurvatureOperator"]


@operator_dataclass
class OutputCurvatureOperator(DatasetOperator):
    """``(1/n) sum_i J_i^T M_i J_i`` for an output-space matrix ``M_i`` chosen by ``mode``.

    ``mode`` is "ggn" (``M_i = H_i``), "fisher" (Monte Carlo), "fisher_exact" or
    "empirical_fisher"; see ``landscape.curvature.output_losses`` (the losses themselves are
    registered in ``landscape.losses``). Built by :func:`ggn`,
    :func:`landscape.curvature.fisher` and :func:`landscape.curvature.empirical_fisher`.
    Extra attributes: ``apply_fn``, ``output_loss`` (canonical name or callable), ``mode``,
    ``num_samples``, ``key`` (PRNG key for "fisher", else ``None``).
    """

    key: jax.Array | None
    apply_fn: Callable = static()
    output_loss: Any = static()
    mode: str = static()
    num_samples: int = static()

    def _batch_sum(self, batch, idx, v_tree):
        x, y = batch["x"], batch["y"]
        if self.compute_dtype is None:
            F, f_jvp = jax.linearize(lambda p: self.apply_fn(p, x), self.params)
            U = O.output_product(
                self.mode, self.output_loss, F, y, f_jvp(v_tree), idx, self.key, self.num_samples
            )
            (g,) = jax.linear_transpose(f_jvp, self.params)(U.astype(F.dtype))
            return T.ravel(g)[0]
        # mixed precision: the network's linearisation and transpose in compute_dtype, the
        # (cheap, output-space) loss curvature in the params dtype on the true targets
        params, rounded, v_tree = self._rounded(batch, v_tree)
        F, f_jvp = jax.linearize(lambda p: self.apply_fn(p, rounded["x"]), params)
        wide = lambda a: a.astype(self.dtype)
        U = O.output_product(self.mode, self.output_loss, wide(F), y, wide(f_jvp(v_tree)), idx,
                             self.key, self.num_samples)
        (g,) = jax.linear_transpose(f_jvp, params)(U.astype(F.dtype))
        return T.ravel(g)[0].astype(self.dtype)


def _dataset_loss(apply_fn, kind, params, dataset, batch_size):
    loss = O.mean_output_loss(kind)
    dtype = jnp.result_type(*jax.tree.leaves(params))
    return batching.dataset_mean(lambda b: loss(apply_fn(params, b["x"]), b["y"]), dataset,
                                 batch_size, dtype=dtype)


_dataset_loss_jit = jax.jit(_dataset_loss, static_argnums=(0, 1, 4))


def build(
    apply_fn, output_loss, params, dataset, batch_size, mode, key=None, num_samples=1, check=True,
    compute_dtype=None,
):
    """Validate inputs and construct an :class:`OutputCurvatureOperator` (shared builder)."""
    kind = O.canonical(output_loss)
    b = check_batch_size(batch_size, allow_none=False)
    n = batching.check_supervised(dataset)
    validate.check_params(params)
    dim, dtype = validate.flat_dim_dtype(params)
    compute = check_compute_dtype(compute_dtype, dtype)
    first = batching.first_batch(dataset, b)
    try:
        out = jax.eval_shape(apply_fn, params, first["x"])
    except Exception as exc:
        raise TypeError(f"apply_fn(params, x) failed to evaluate: {exc}") from exc
    if not hasattr(out, "shape") or out.ndim < 1 or out.shape[0] != first["x"].shape[0]:
        raise ValueError(f"apply_fn must return one output row per example; got {out}")
    # shapes against one batch of outputs; label values over the whole dataset (when concrete)
    data = dataset.data if isinstance(dataset, batching.ShardedDataset) else dataset
    losses.resolve(kind).check_targets(out, data["y"], "output_loss", "dataset['y']")
    loss = O.mean_output_loss(kind)
    validate.check_scalar_loss(loss, out, first["y"], "output_loss", "(outputs, targets)")
    if check and validate.is_concrete((params, dataset)):
        loss = _dataset_loss_jit(apply_fn, kind, params, dataset, b)
        validate.check_finite_value(loss, "the dataset loss")
    return OutputCurvatureOperator(
        params=params, dataset=dataset, key=key, apply_fn=apply_fn, output_loss=kind, mode=mode,
        num_samples=num_samples, dim=dim, dtype=dtype, num_examples=n, batch_size=b,
        compute_dtype=compute)


def ggn(apply_fn, output_loss, params, dataset, batch_size: int = 256, *, check: bool = True,
        compute_dtype=None):
    """Generalised Gauss-Newton matrix ``G = (1/n) sum_i J_i^T H_i J_i`` as a ``LinearOperator``.

    Args:
      apply_fn: ``apply_fn(params, x) -> outputs`` with one output row per example,
        ``(b, C)`` logits for cross-entropy or ``(b, ...)`` for MSE.
      output_loss: ``"cross_entropy"`` (softmax CE with integer labels; analytic
        ``H_i = diag(p_i) - p_i p_i^T``), ``"mse"`` (``0.5 ||f - y||^2``, ``H_i = I``, so
        ``G = (1/n) J^T J``), or a callable ``output_loss(outputs, targets) -> scalar`` giving the
        MEAN loss over the batch, whose output Hessian is then taken by autodiff. Named losses
        come from the registry in :mod:`landscape.losses`.
      params: pytree of floating arrays.
      dataset: ``{"x": inputs (n, ...), "y": targets (n, ...)}``. For cross-entropy, concrete
        labels must lie in ``[0, C)`` with ``C`` the last axis of the model output, else
        ``ValueError`` naming ``dataset['y']`` (skipped when the labels are traced).
      batch_size: positive int, examples per batch in the product loop (exact for any value).
      check: evaluate the dataset loss once and raise if it is not finite.
      compute_dtype: ``None`` (full precision) or a narrower floating dtype such as
        ``jnp.bfloat16`` (mixed precision): each batch's network linearisation (forward pass,
        ``J v``) and transposed product (``J^T u``) run on params, vector and inputs rounded to
        it, while the output-space curvature ``H_i`` (cheap) is applied in the params dtype to
        the true targets, and the batch's product is cast back to the params dtype before the
        sum over batches. Details and expected error as in :func:`landscape.curvature.hessian`.

    Returns:
      An operator over ``ravel_pytree(params)`` coordinates (``dim``, ``dtype``, ``matvec``,
      ``matmat``, ``matvec_tree``). ``G`` is symmetric PSD for convex output losses. Accuracy
      against an explicit ``J^T H J`` (``jax.jacrev``): ~1e-6 relative in float32, ~1e-14 in
      float64.

    References: Schraudolph (2002); Martens (2020), "New insights and perspectives on the
    natural gradient method" (GGN = Fisher for exponential-family output losses).
    """
    return build(apply_fn, output_loss, params, dataset, batch_size, "ggn", check=check,
                 compute_dtype=compute_dtype)

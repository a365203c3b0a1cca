"""Output losses on network outputs: one registry for training and for the curvature operators.

Every named loss is defined once, as an :class:`OutputLoss`, with

* its value: a per-example form ``per_example(outputs, targets) -> (b,)`` and the mean over the
  batch (``mean``, also what calling the entry does);
* its per-example output gradient ``r_i = d l(f_i, y_i) / d f_i`` (``gradient``);
* its per-example output-space Hessian product ``H_i t_i`` with
  ``H_i = d^2 l(f_i, y_i) / d f_i^2`` (``hessian_product``), the matrix inside the generalised
  Gauss-Newton ``J^T H J`` (Schraudolph 2002, "Fast curvature matrix-vector products for
  second-order gradient descent");
* its predictive distribution ``p(y | f)``, the likelihood whose negative log is the loss: a
  sampler of targets (``sample``, for the Monte Carlo Fisher) and the exact Fisher product
  ``E_{y ~ p(.|f_i)} [r_i(y) r_i(y)^T] t_i`` (``fisher_product``). For both registered losses
  the exact Fisher equals ``H_i`` (Martens 2020, "New insights and perspectives on the natural
  gradient method", section 9.2).

Registered losses (``names()`` lists every accepted name, aliases included):

* ``"cross_entropy"`` (alias ``"softmax_cross_entropy"``): outputs are logits ``(b, C)``, targets
  integer labels ``(b,)`` in ``[0, C)``. ``l = logsumexp(f) - f_y``, ``r = p - e_y`` with
  ``p = softmax(f)``, ``H = diag(p) - p p^T``, ``y ~ Categorical(p)``.
* ``"mse"``: targets shaped like the outputs ``(b, ...)``. ``l = 0.5 ||f - y||^2`` summed over
  output dimensions, ``r = f - y``, ``H = I`` (so the GGN of MSE is ``J^T J``), ``y ~ N(f, I)``.

Rows of ``gradient``, ``hessian_product`` and ``fisher_product`` are per example and NOT divided
by the batch size ``b``. :func:`resolve` also wraps a callable mean loss
``fn(outputs, targets) -> scalar`` as an :class:`OutputLoss` whose derivatives come from autodiff
(it has no sampler: an arbitrary loss has no known predictive distribution).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "OutputLoss",
    "softmax_cross_entropy",
    "softmax_cross_entropy_per_example",
    "mse",
    "mse_per_example",
    "accuracy",
    "error",
    "get",
    "lookup",
    "resolve",
    "names",
    "from_mean",
]


def softmax_cross_entropy_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``-log softmax(logits)[label]`` for logits ``(n, C)`` and integer labels ``(n,)``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over the batch."""
    return jnp.mean(softmax_cross_entropy_per_example(logits, labels))


def mse_per_example(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """``0.5 * ||f(x) - y||^2`` per example (summed over output dims)."""
    diff = (outputs - targets).reshape(outputs.shape[0], -1)
    return 0.5 * jnp.sum(diff * diff, axis=-1)


def mse(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over examples of ``0.5 * ||f(x) - y||^2``."""
    return jnp.mean(mse_per_example(outputs, targets))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of examples whose argmax logit equals the label."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def error(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Classification error, ``1 - accuracy``."""
    return 1.0 - accuracy(logits, labels)


@dataclasses.dataclass(frozen=True)
class OutputLoss:
    """One output loss with its derivatives in output space and its predictive distribution.

    Shapes: ``outputs`` ``F`` is ``(b, ...)`` (``(b, C)`` logits for classification), ``targets``
    ``Y`` has ``b`` rows, ``tangents`` ``T`` is shaped like ``F``.

    Attributes:
      name: canonical name (``None`` for a wrapped callable).
      mean: ``(F, Y) -> scalar``, the mean over the batch of the per-example losses.
      per_example: ``(F, Y) -> (b,)`` losses ``l(f_i, y_i)`` (``None`` for a wrapped callable).
      gradient: ``(F, Y) -> `` rows ``r_i = d l(f_i, y_i) / d f_i``, shaped like ``F``.
      hessian_product: ``(F, Y, T) ->`` rows ``H_i t_i``, ``H_i = d^2 l(f_i, y_i) / d f_i^2``.
      fisher_product: ``(F, T) ->`` rows ``E_{y ~ p(.|f_i)} [r_i(y) r_i(y)^T] t_i``, the exact
        expectation under the model's predictive distribution (``None`` when unknown).
      sample: ``(key, f_i, num_samples) -> (num_samples, ...)`` targets of ONE example drawn
        from ``p(. | f_i)`` (``None`` when unknown).
      check_targets: ``(outputs, targets, loss_arg, targets_arg) -> None``; raises when the
        targets do not fit the outputs (``outputs`` may be a ``jax.ShapeDtypeStruct`` of one
        batch; only trailing shapes are compared). Value checks run on concrete targets only.
    """

    name: str | None
    mean: Callable
    per_example: Callable | None
    gradient: Callable
    hessian_product: Callable
    fisher_product: Callable | None = None
    sample: Callable | None = None
    check_targets: Callable = lambda outputs, targets, loss_arg, targets_arg: None

    def __call__(self, outputs, targets):
        """The mean loss over the batch."""
        return self.mean(outputs, targets)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


# ---------------------------------------------------------------------------- cross-entropy


def _ce_gradient(logits, labels):
    p = jax.nn.softmax(logits, axis=-1)
    return p - jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)


def _ce_hessian_product(logits, labels, tangents):
    del labels  # H = diag(p) - p p^T does not depend on the label
    p = jax.nn.softmax(logits, axis=-1)
    return p * tangents - p * jnp.sum(p * tangents, axis=-1, keepdims=True)


def _ce_fisher_product(logits, tangents):
    # sum over classes c of p_c r_c (r_c . t) with r_c = p - e_c: an independent route to H t
    p = jax.nn.softmax(logits, axis=-1)
    eye = jnp.eye(logits.shape[-1], dtype=logits.dtype)
    r = p[:, None, :] - eye[None, :, :]  # (b, C, C): r[i, c] = p_i - e_c
    coef = p * jnp.einsum("icj,ij->ic", r, tangents)  # p_c (r_c . t)
    return jnp.einsum("ic,icj->ij", coef, r)


def _ce_sample(key, logits_row, num_samples):
    return jax.random.categorical(key, logits_row, shape=(num_samples,))


def _ce_check_targets(outputs, labels, loss_arg, targets_arg):
    out_shape, y_shape = tuple(outputs.shape), tuple(np.shape(labels))
    if len(out_shape) != 2 or len(y_shape) != 1:
        raise ValueError(
            f"{loss_arg}='cross_entropy' needs outputs (b, C) and integer labels (b,); got "
            f"outputs {out_shape} and labels {y_shape}"
        )
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise TypeError(
            f"{loss_arg}='cross_entropy' needs integer labels; {targets_arg} has dtype "
            f"{jnp.result_type(labels)}"
        )
    if _is_concrete(labels) and y_shape[0] > 0:
        num_classes = out_shape[-1]
        lo, hi = int(jnp.min(labels)), int(jnp.max(labels))  # two scalars leave the device
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{targets_arg} holds labels outside [0, {num_classes}): min {lo}, max {hi} "
                f"(the model has {num_classes} outputs per example)"
            )


# ---------------------------------------------------------------------------- mean squared error


def _mse_gradient(outputs, targets):
    return outputs - targets.astype(outputs.dtype)


def _mse_hessian_product(outputs, targets, tangents):
    del outputs, targets  # H = I
    return tangents


def _mse_fisher_product(outputs, tangents):
    del outputs  # E_{y ~ N(f, I)} (f - y)(f - y)^T = I
    return tangents


def _mse_sample(key, output_row, num_samples):
    noise = jax.random.normal(key, (num_samples,) + output_row.shape, output_row.dtype)
    return output_row + noise


def _mse_check_targets(outputs, targets, loss_arg, targets_arg):
    if tuple(np.shape(targets))[1:] != tuple(outputs.shape)[1:]:
        raise ValueError(
            f"{loss_arg}='mse' needs targets shaped like the outputs; got outputs "
            f"{tuple(outputs.shape)} and {targets_arg} {tuple(np.shape(targets))}"
        )


_REGISTRY: dict[str, OutputLoss] = {
    "cross_entropy": OutputLoss(
        name="cross_entropy",
        mean=softmax_cross_entropy,
        per_example=softmax_cross_entropy_per_example,
        gradient=_ce_gradient,
        hessian_product=_ce_hessian_product,
        fisher_product=_ce_fisher_product,
        sample=_ce_sample,
        check_targets=_ce_check_targets,
    ),
    "mse": OutputLoss(
        name="mse",
        mean=mse,
        per_example=mse_per_example,
        gradient=_mse_gradient,
        hessian_product=_mse_hessian_product,
        fisher_product=_mse_fisher_product,
        sample=_mse_sample,
        check_targets=_mse_check_targets,
    ),
}
_ALIASES = {"softmax_cross_entropy": "cross_entropy"}


def names() -> list[str]:
    """Every accepted loss name, aliases included, sorted."""
    return sorted([*_REGISTRY, *_ALIASES])


def lookup(name, argname: str = "output_loss") -> OutputLoss:
    """The registered :class:`OutputLoss` called ``name`` (an alias resolves to its loss).

    Raises ``ValueError`` naming ``argname`` and listing the known names for anything else.
    """
    if isinstance(name, str):
        canonical = _ALIASES.get(name, name)
        if canonical in _REGISTRY:
            return _REGISTRY[canonical]
    raise ValueError(
        f"{argname} must be one of {names()} or a callable (outputs, targets) -> mean scalar; "
        f"got {name!r}"
    )


def from_mean(fn: Callable) -> OutputLoss:
    """Wrap a mean loss ``fn(outputs, targets) -> scalar`` as an :class:`OutputLoss`.

    Per-example derivatives come from autodiff of the batch mean: ``r_i = b * d fn / d f_i`` and
    ``H_i t_i = b * (d^2 fn / d F^2) T`` (row ``i``), which is exact when ``fn`` is a mean of
    per-example terms. No sampler and no exact Fisher (the predictive distribution is unknown).
    """

    def gradient(outputs, targets):
        return jax.grad(lambda f: fn(f, targets))(outputs) * outputs.shape[0]

    def hessian_product(outputs, targets, tangents):
        grad_f = lambda f: jax.grad(lambda g: fn(g, targets))(f)
        return jax.jvp(grad_f, (outputs,), (tangents,))[1] * outputs.shape[0]

    return OutputLoss(
        name=None, mean=fn, per_example=None, gradient=gradient, hessian_product=hessian_product
    )


def resolve(name_or_fn, argname: str = "output_loss") -> OutputLoss:
    """An :class:`OutputLoss` for a registered name (:func:`lookup`) or a callable mean loss
    (:func:`from_mean`); an :class:`OutputLoss` passes through."""
    if isinstance(name_or_fn, OutputLoss):
        return name_or_fn
    if callable(name_or_fn):
        return from_mean(name_or_fn)
    return lookup(name_or_fn, argname)


def get(name_or_fn):
    """Resolve a loss given by name (``"cross_entropy"``, ``"mse"``) to its mean function
    ``(outputs, targets) -> scalar``, or pass a callable through."""
    if callable(name_or_fn):
        return name_or_fn
    return lookup(name_or_fn).mean

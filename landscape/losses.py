"""Output losses and metrics on network outputs.

Every loss has a per-example form ``*_per_example(outputs, targets) -> (n,)`` and a mean form.
Conventions: classification targets are integer labels ``(n,)``; regression targets have the
shape of the outputs. ``mse`` is ``0.5 * ||f - y||^2`` summed over output dimensions, so that its
output Hessian is the identity (the GGN of MSE is then ``J^T J``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "softmax_cross_entropy",
    "softmax_cross_entropy_per_example",
    "mse",
    "mse_per_example",
    "accuracy",
    "error",
    "get",
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


_LOSSES = {
    "cross_entropy": softmax_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
    "mse": mse,
}


def get(name_or_fn):
    """Resolve a loss given by name (``"cross_entropy"``, ``"mse"``) or pass a callable through."""
    if callable(name_or_fn):
        return name_or_fn
    try:
        return _LOSSES[name_or_fn]
    except KeyError:
        raise ValueError(
            f"unknown output loss {name_or_fn!r}; expected one of {sorted(_LOSSES)} or a callable"
        ) from None

"""Multilayer perceptron, optionally with normalisation and residual (skip) connections."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from landscape.models.init import lecun_normal
from landscape.models.layers import (
    activation_fn,
    apply_norm,
    check_ghost_batch_size,
    check_norm,
    make_norm,
    param_dtype_or_default,
    rngs_from,
)
from landscape.validate import check_positive_int

__all__ = ["MLP"]


class MLP(nnx.Module):
    """Fully connected network ``x -> [Linear -> norm -> act] * depth -> Linear``.

    Inputs of shape ``(n, *trailing)`` are flattened to ``(n, in_features)``; the output is
    ``(n, num_classes)`` logits. ``depth`` is the number of hidden layers (``depth=0`` gives a
    linear model). Hidden layer ``l`` computes ``z_l = act(norm(h_{l-1} W_l + b_l))`` and sets
    ``h_l = z_l``; with ``residual=True`` every hidden layer after the first adds a skip
    connection, ``h_l = h_{l-1} + z_l``, so that all hidden layers share one residual stream (one
    permutation acts on all of them, as in Git Re-Basin's residual-stream specs).

    Parameter count (``norm=None``): ``in*w + w + (depth-1)*(w*w + w) + w*C + C`` for
    ``depth >= 1``; ``norm="layer"``/``"batch"`` adds ``2*w`` scale/bias parameters per hidden
    layer (BatchNorm's running mean/variance are ``nnx.BatchStat`` state, not parameters).

    Param paths (for permutation specs): ``hidden/<l>/kernel`` ``(fan_in, width)``,
    ``hidden/<l>/bias``, ``norms/<l>/{scale,bias}`` (if ``norm``), ``head/kernel``
    ``(width, num_classes)``, ``head/bias``.

    Args:
      in_features: number of input features after flattening (product of the trailing shape).
      width: hidden width. depth: number of hidden layers (>= 0). num_classes: outputs.
      activation: name in ``landscape.models.ACTIVATIONS`` or a callable.
      norm: ``None``, ``"layer"`` or ``"batch"``.
      ghost_batch_size: with ``norm="batch"``, compute train-mode statistics over consecutive
        virtual batches of this many examples (ghost batch norm, Hoffer et al. 2017; see
        ``landscape.models.layers.GhostBatchNorm``); ``None`` (default): the whole batch.
      residual: add skip connections between hidden layers.
      param_dtype: parameter dtype; ``None`` means the default float (float64 under x64).
      rngs: ``nnx.Rngs`` for initialisation (LeCun-normal kernels, zero biases).
    """

    def __init__(self, in_features: int, width: int, depth: int, num_classes: int, *,
                 activation="relu", norm: str | None = None, residual: bool = False,
                 ghost_batch_size: int | None = None, param_dtype=None,
                 rngs: nnx.Rngs | None = None, key=None):
        rngs = rngs_from(rngs, key, "MLP")
        in_features = check_positive_int(in_features, "in_features")
        width = check_positive_int(width, "width")
        depth = check_positive_int(depth, "depth", allow_zero=True)
        num_classes = check_positive_int(num_classes, "num_classes")
        check_norm(norm)
        ghost = check_ghost_batch_size(ghost_batch_size, norm)
        dtype = param_dtype_or_default(param_dtype)
        self.in_features, self.width, self.depth = in_features, width, depth
        self.num_classes, self.residual, self.norm = num_classes, bool(residual), norm
        self.ghost_batch_size = ghost
        self.activation = activation_fn(activation)
        fan_ins = [in_features] + [width] * max(depth - 1, 0)
        self.hidden = nnx.List(
            [nnx.Linear(f, width, param_dtype=dtype, kernel_init=lecun_normal, rngs=rngs)
             for f in fan_ins[:depth]]
        )
        self.norms = nnx.List(
            [make_norm(norm, width, param_dtype=dtype, rngs=rngs, ghost_batch_size=ghost)
             for _ in range(depth)]
            if norm is not None else []
        )
        head_in = width if depth > 0 else in_features
        self.head = nnx.Linear(head_in, num_classes, param_dtype=dtype,
                               kernel_init=lecun_normal, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Last hidden representation ``h_depth``, shape ``(n, width)`` (``(n, in)`` if depth=0)."""
        if jnp.ndim(x) < 1:
            raise ValueError(f"MLP: x must have a leading example axis; got shape {jnp.shape(x)}")
        n = jnp.shape(x)[0]
        size = math.prod(jnp.shape(x)[1:])
        if size != self.in_features:
            raise ValueError(
                f"MLP: x must have {self.in_features} features per example (trailing shape "
                f"flattened); got shape {jnp.shape(x)} with {size}"
            )
        h = jnp.reshape(x, (n, self.in_features))
        for l, layer in enumerate(self.hidden):
            norm = self.norms[l] if self.norm is not None else None
            z = self.activation(apply_norm(norm, layer(h)))
            h = h + z if (self.residual and l > 0) else z
        return h

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(n, num_classes)`` for inputs ``(n, *trailing)``."""
        return self.head(self.features(x))

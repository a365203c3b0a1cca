"""Building blocks shared by the models: activations, norm layers, dtypes and input checks.

Private to :mod:`landscape.models`; the public names are re-exported from the package.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from landscape.validate import check_key

__all__ = ["ACTIVATIONS", "NORMS", "activation_fn", "make_norm", "param_dtype_or_default",
           "check_input", "count_params", "Constant", "GhostBatchNorm"]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda x: x,
    "linear": lambda x: x,
}
NORMS = (None, "layer", "batch")

BATCHNORM_MOMENTUM = 0.9
"""Running-average decay of BatchNorm statistics (PyTorch's ``momentum=0.1``)."""


class Constant(nnx.Variable):
    """A fixed, non-trainable array (e.g. a frozen head). The NNX adapter puts it in ``state``."""


def activation_fn(name: str | Callable) -> Callable[[jax.Array], jax.Array]:
    """Resolve an activation given by name (see ``ACTIVATIONS``) or pass a callable through."""
    if callable(name):
        return name
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)} or a callable; got {name!r}"
        ) from None


def check_norm(norm) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")


def check_ghost_batch_size(ghost_batch_size, norm) -> int | None:
    """``None`` or a positive int, and only with ``norm="batch"``."""
    if ghost_batch_size is None:
        return None
    if norm != "batch":
        raise ValueError(f"ghost_batch_size needs norm='batch'; got norm={norm!r}")
    if (isinstance(ghost_batch_size, bool) or not isinstance(ghost_batch_size, int)
            or ghost_batch_size < 1):
        raise ValueError(f"ghost_batch_size must be a positive int or None; got "
                         f"{ghost_batch_size!r}")
    return int(ghost_batch_size)


def make_norm(norm: str | None, features: int, *, param_dtype, rngs: nnx.Rngs,
              ghost_batch_size: int | None = None):
    """``nnx.BatchNorm``/``nnx.LayerNorm`` over the last (feature/channel) axis, or ``None``.

    LayerNorm here normalises each position over its channels only, so it is independent of
    the spatial size and commutes with permutations of the channels. BatchNorm starts in train
    mode (batch statistics, updates its ``nnx.BatchStat``); ``model.eval()`` or the adapter in
    ``landscape.nnx`` switches it to the running averages. ``ghost_batch_size=g`` (with
    ``norm="batch"`` only) gives a :class:`GhostBatchNorm`: train-mode statistics over
    consecutive virtual batches of ``g`` examples.
    """
    check_norm(norm)
    ghost = check_ghost_batch_size(ghost_batch_size, norm)
    if norm is None:
        return None
    if norm == "layer":
        return nnx.LayerNorm(features, epsilon=1e-5, param_dtype=param_dtype, rngs=rngs)
    kwargs = dict(momentum=BATCHNORM_MOMENTUM, epsilon=1e-5, param_dtype=param_dtype, rngs=rngs)
    bn = (nnx.BatchNorm(features, **kwargs) if ghost is None
          else GhostBatchNorm(features, ghost_batch_size=ghost, **kwargs))
    # flax keeps running statistics in float32 whatever param_dtype is; match the params so
    # that float64 models stay float64 throughout (and state updates keep their dtype).
    bn.mean = nnx.BatchStat(jnp.asarray(bn.mean[...], param_dtype))
    bn.var = nnx.BatchStat(jnp.asarray(bn.var[...], param_dtype))
    return bn


class GhostBatchNorm(nnx.BatchNorm):
    """BatchNorm whose train-mode statistics come from virtual ("ghost") batches.

    Hoffer, Hubara, Soudry 2017, "Train longer, generalize better: closing the generalization
    gap in large batch training of neural networks", section 4 (Ghost Batch Normalization).

    In train mode a batch ``x`` of shape ``(n, ..., C)`` (features on the last axis) is cut
    into ``k = n / g`` consecutive blocks of ``g = ghost_batch_size`` examples
    (``x[j g:(j + 1) g]``); block ``j`` is normalised with its own statistics over its examples
    and every non-feature axis,
    ``y = (x - mu_j) / sqrt(var_j + eps) * scale + bias`` (``var_j`` biased, as in BatchNorm),
    so its output equals plain BatchNorm applied to that block alone. ``n`` must be a multiple
    of ``g`` (a ``ValueError`` otherwise, at trace time).

    Running statistics are updated once per call with the mean over the ``k`` blocks of their
    statistics: ``mean <- m mean + (1 - m) (1/k) sum_j mu_j`` and
    ``var <- m var + (1 - m) (1/k) sum_j var_j`` (``m = momentum``). The first is the
    batch mean; the second is the average *within-block* variance, the variance the blocks were
    actually normalised with (it is smaller than the full batch's variance by the spread of
    the block means). With ``g = n`` this is exactly ``nnx.BatchNorm``.

    Eval mode (``use_running_average=True``, ``model.eval()``) is unchanged: the running
    statistics, any batch size. The variables (``scale``, ``bias``, ``mean``, ``var``) are
    those of ``nnx.BatchNorm``, so checkpoints and permutation specs carry over.
    """

    def __init__(self, num_features: int, *, ghost_batch_size: int, **kwargs):
        super().__init__(num_features, **kwargs)
        if (isinstance(ghost_batch_size, bool) or not isinstance(ghost_batch_size, int)
                or ghost_batch_size < 1):
            raise ValueError(f"ghost_batch_size must be a positive int; got "
                             f"{ghost_batch_size!r}")
        if self.axis not in (-1,):
            raise ValueError(f"GhostBatchNorm normalises the last axis only; got axis="
                             f"{self.axis!r}")
        self.ghost_batch_size = int(ghost_batch_size)

    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        """Normalise ``x`` ``(n, ..., C)``: ghost-batch statistics in train mode."""
        use_ra = self.use_running_average if use_running_average is None else use_running_average
        if use_ra or mask is not None or self.axis_name is not None:
            if not use_ra:
                raise ValueError("GhostBatchNorm supports neither mask= nor axis_name")
            return super().__call__(x, use_running_average=True)
        g = self.ghost_batch_size
        n = x.shape[0] if x.ndim else 0
        if x.ndim < 2 or n % g:
            raise ValueError(f"GhostBatchNorm: the batch size ({n}, shape {x.shape}) must be a "
                             f"multiple of ghost_batch_size={g}")
        scale = self.scale[...] if self.scale is not None else None
        bias = self.bias[...] if self.bias is not None else None
        x, mean, var, scale, bias = self.promote_dtype(
            (x, self.mean[...], self.var[...], scale, bias), dtype=self.dtype)
        stat_dtype = jnp.promote_types(jnp.result_type(x), jnp.float32)
        blocks = jnp.reshape(x, (n // g, g) + x.shape[1:]).astype(stat_dtype)
        axes = tuple(range(1, blocks.ndim - 1))
        mu = jnp.mean(blocks, axis=axes, keepdims=True)
        if self.use_fast_variance:
            v = jnp.maximum(0.0, jnp.mean(blocks * blocks, axis=axes, keepdims=True) - mu * mu)
        else:
            v = jnp.mean(jnp.square(blocks - mu), axis=axes, keepdims=True)
        sg = jax.lax.stop_gradient
        flat = lambda a: jnp.mean(jnp.reshape(a, (n // g, -1)), axis=0)  # noqa: E731
        self.mean[...] = sg(self.momentum * mean + (1 - self.momentum) * flat(mu))
        self.var[...] = sg(self.momentum * var + (1 - self.momentum) * flat(v))
        mul = jax.lax.rsqrt(v + self.epsilon)
        if scale is not None:
            mul = mul * scale
        y = (blocks - mu) * mul
        if bias is not None:
            y = y + bias
        out_dtype = self.dtype or jnp.result_type(x)
        return jnp.reshape(y, x.shape).astype(out_dtype)


def apply_norm(norm_layer, x: jax.Array) -> jax.Array:
    return x if norm_layer is None else norm_layer(x)


def param_dtype_or_default(param_dtype):
    """``param_dtype`` or, when ``None``, the default float dtype (float64 under x64)."""
    if param_dtype is None:
        return jax.dtypes.canonicalize_dtype(jnp.float64)
    dtype = jnp.dtype(param_dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"param_dtype must be a floating dtype; got {dtype}")
    return dtype


def rngs_from(rngs, key, model: str) -> nnx.Rngs:
    """The ``nnx.Rngs`` of a model built with ``rngs=`` or with a ``jax.random`` ``key=``.

    ``key=k`` is the same as ``rngs=nnx.Rngs(params=k)``, so callers need not import flax to
    build a model. Exactly one of the two must be given.
    """
    if (rngs is None) == (key is None):
        raise TypeError(f"{model} needs exactly one of rngs=nnx.Rngs(...) or "
                        "key=jax.random.key(...)")
    if rngs is not None:
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"{model}: rngs must be an nnx.Rngs; got {type(rngs).__name__}")
        return rngs
    check_key(key, "key")
    return nnx.Rngs(params=key)


def check_input(x, name: str, trailing: Sequence[int | None], *, model: str) -> None:
    """Raise ``ValueError`` unless ``x`` has shape ``(n, *trailing)`` (``None`` = any size).

    Works on static shapes, so it runs at trace time under ``jit``.
    """
    shape = tuple(jnp.shape(x))
    expected = "(n, " + ", ".join("*" if t is None else str(t) for t in trailing) + ")"
    if len(shape) != len(trailing) + 1 or any(
        t is not None and s != t for s, t in zip(shape[1:], trailing)
    ):
        raise ValueError(f"{model}: {name} must have shape {expected}; got {shape}")


def check_floating(x, name: str, *, model: str) -> None:
    dtype = jnp.result_type(x)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{model}: {name} must be a real array; got dtype {dtype}")


def count_params(model: nnx.Module) -> int:
    """Number of scalar entries in the model's ``nnx.Param`` variables (BatchStat excluded)."""
    state = nnx.state(model, nnx.Param)
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(state))

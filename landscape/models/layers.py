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
           "check_input", "count_params", "Constant"]

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


def make_norm(norm: str | None, features: int, *, param_dtype, rngs: nnx.Rngs):
    """``nnx.BatchNorm``/``nnx.LayerNorm`` over the last (feature/channel) axis, or ``None``.

    LayerNorm here normalises each position over its channels only, so it is independent of
    the spatial size and commutes with permutations of the channels. BatchNorm starts in train
    mode (batch statistics, updates its ``nnx.BatchStat``); ``model.eval()`` or the adapter in
    ``landscape.nnx`` switches it to the running averages.
    """
    check_norm(norm)
    if norm is None:
        return None
    if norm == "layer":
        return nnx.LayerNorm(features, epsilon=1e-5, param_dtype=param_dtype, rngs=rngs)
    bn = nnx.BatchNorm(features, momentum=BATCHNORM_MOMENTUM, epsilon=1e-5,
                       param_dtype=param_dtype, rngs=rngs)
    # flax keeps running statistics in float32 whatever param_dtype is; match the params so
    # that float64 models stay float64 throughout (and state updates keep their dtype).
    bn.mean = nnx.BatchStat(jnp.asarray(bn.mean[...], param_dtype))
    bn.var = nnx.BatchStat(jnp.asarray(bn.var[...], param_dtype))
    return bn


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

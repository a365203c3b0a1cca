"""Parameter initialisers that compile once, not once per parameter shape.

Flax's default initialisers call ``jax.random`` with the parameter's shape, and every new shape
compiles a new threefry program (about 0.5-1 s of CPU each). A ResNet-20 has ~30 distinct
shapes, so building one took ~7 s of CPU, almost all compilation. Here every draw is assembled
from fixed-size chunks ``chunk_i = draw(fold_in(key, i), (4096,))``, so one compiled program
serves every shape; the chunks are concatenated, cut to size and reshaped.

The distributions are the standard ones: ``lecun_normal`` is flax's default kernel init
(variance scaling 1/fan_in, normal truncated to [-2, 2] and rescaled to the target variance).
Values depend only on ``(key, shape, dtype)``. Under a trace (``nnx.jit``/``nnx.eval_shape`` of
a constructor) the same chunks are built with ``jnp`` ops; values then agree with the eager
path up to floating-point rounding.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["standard_draws", "lecun_normal", "normal"]

CHUNK = 4096
TRUNCATED_STD = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2]


@functools.partial(jax.jit, static_argnums=(1, 2))
def _chunk(key, dtype, truncated: bool):
    if truncated:
        return jax.random.truncated_normal(key, -2.0, 2.0, (CHUNK,), dtype)
    return jax.random.normal(key, (CHUNK,), dtype)


def standard_draws(key, shape, dtype, *, truncated: bool = False, scale: float = 1.0):
    """``scale`` times iid ``N(0, 1)`` draws (truncated to [-2, 2] if ``truncated``)."""
    shape = tuple(int(s) for s in shape)
    dtype = jnp.dtype(dtype)
    n = math.prod(shape)
    num_chunks = max(-(-n // CHUNK), 1)
    chunks = [_chunk(jax.random.fold_in(key, i), dtype, truncated) for i in range(num_chunks)]
    if isinstance(key, jax.core.Tracer):
        return (jnp.concatenate(chunks)[:n].reshape(shape) * scale).astype(dtype)
    flat = np.concatenate([np.asarray(c) for c in chunks])[:n] * np.asarray(scale, dtype)
    return jnp.asarray(flat.reshape(shape), dtype)  # numpy on the eager path: no compiles


def _fan_in(shape) -> int:
    # kernels are (..., in, out): fan_in = receptive field * in (flax's in_axis=-2, out_axis=-1)
    return math.prod(shape[:-1]) if len(shape) > 1 else shape[0]


def lecun_normal(key, shape, dtype=jnp.float32, out_sharding=None) -> jax.Array:
    """Flax/JAX ``lecun_normal``: truncated normal with variance ``1 / fan_in``."""
    std = (1.0 / _fan_in(shape)) ** 0.5 / TRUNCATED_STD
    return standard_draws(key, shape, dtype, truncated=True, scale=std)


def normal(std: float):
    """Initialiser drawing iid ``N(0, std^2)`` entries."""

    def init(key, shape, dtype=jnp.float32, out_sharding=None) -> jax.Array:
        return standard_draws(key, shape, dtype, scale=std)

    return init

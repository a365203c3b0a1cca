"""In-context linear regression tasks (von Oswald et al. 2023, "Transformers learn in-context by
gradient descent").

A task draws a weight vector ``w ~ N(0, I_d)``, ``N`` context inputs and one query input
``x ~ U(-r, r)^d`` and targets ``y = w^T x (+ noise)``. The sequence fed to a (linear)
self-attention layer stacks the tokens ``e_j = (x_j, y_j)`` of the context and the query token
``(x_q, 0)`` whose target slot the model fills in.

Every function is deterministic given its ``jax.random`` key and jit-able (sizes are static).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["linear_regression_tasks", "icl_tokens"]


def linear_regression_tasks(
    key, num_tasks: int, num_context: int, dim: int, *, noise_std: float = 0.0,
    x_range: float = 1.0, dtype=None,
) -> dict:
    """A batch of in-context linear-regression tasks.

    Args:
      key: ``jax.random`` key.
      num_tasks (B), num_context (N), dim (d): ints >= 1.
      noise_std: standard deviation of Gaussian target noise (context and query).
      x_range: inputs are uniform on ``[-x_range, x_range]^d``.
      dtype: float dtype (default: JAX's default float).

    Returns a dict ``{"x": (B,N,d), "y": (B,N), "x_query": (B,d), "y_query": (B,), "w": (B,d)}``.
    """
    for name, val in (("num_tasks", num_tasks), ("num_context", num_context), ("dim", dim)):
        if not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"{name} must be an int >= 1; got {val!r}")
    if not (np.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std must be finite and >= 0; got {noise_std!r}")
    if not (np.isfinite(x_range) and x_range > 0):
        raise ValueError(f"x_range must be finite and > 0; got {x_range!r}")
    dtype = dtype or jnp.result_type(float)
    kw, kx, kn = jax.random.split(key, 3)
    w = jax.random.normal(kw, (num_tasks, dim), dtype)
    xs = jax.random.uniform(kx, (num_tasks, num_context + 1, dim), dtype, -x_range, x_range)
    ys = jnp.einsum("bnd,bd->bn", xs, w)
    ys = ys + noise_std * jax.random.normal(kn, ys.shape, dtype)
    return {"x": xs[:, :-1], "y": ys[:, :-1], "x_query": xs[:, -1], "y_query": ys[:, -1], "w": w}


def icl_tokens(tasks: dict) -> jax.Array:
    """Stack tasks into tokens ``(B, N+1, d+1)``: context ``(x_j, y_j)``, then ``(x_q, 0)``."""
    x, y, xq = tasks["x"], tasks["y"], tasks["x_query"]
    context = jnp.concatenate([x, y[..., None]], axis=-1)
    query = jnp.concatenate([xq, jnp.zeros_like(xq[..., :1])], axis=-1)
    return jnp.concatenate([context, query[:, None, :]], axis=1)

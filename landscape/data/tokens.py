"""Token-selection data for the attention-as-SVM checks (Tarzanagh et al. 2023).

An example ``i`` is a sequence of ``T`` tokens ``X_i`` (shape ``(T, d)``), a query token ``z_i``
(shape ``(d,)``) and a label ``Y_i`` in ``{-1, +1}``. A fixed head ``v`` (shape ``(d,)``) scores
each token: ``gamma_it = Y_i v^T x_it``. The *optimal* token of example ``i`` is the one with the
highest score. A one-layer attention model ``f(X) = v^T X^T softmax(X W z)`` fits the data best by
putting all of its softmax mass on the optimal tokens, which is why gradient descent on ``W``
turns into a max-margin token selection problem (see ``landscape.attention.svm``).

Everything here is deterministic given the ``jax.random`` key. Arrays are created in JAX's
default float dtype (float32, or float64 under ``JAX_ENABLE_X64=1``) unless ``dtype`` is given.

The constraint algebra of the attention SVM built on these data (validation of ``(X, Z,
selection)``, the constraint rows, margins and the LP feasibility check) lives in
``landscape.attention.constraints``; this module stays a leaf that imports nothing from
``landscape``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "TokenData",
    "token_selection_data",
    "token_scores",
    "optimal_tokens",
    "score_gap",
    "selection_mask",
]


class TokenData(NamedTuple):
    """A token-selection dataset.

    Fields:
      X: ``(n, T, d)`` tokens. Z: ``(n, d)`` query tokens. Y: ``(n,)`` labels in ``{-1, +1}``.
      v: ``(d,)`` head. scores: ``(n, T)`` ``gamma_it = Y_i v^T x_it``.
      opt_index: ``(n,)`` int32, the highest-scoring token of each example.
    """

    X: jax.Array
    Z: jax.Array
    Y: jax.Array
    v: jax.Array
    scores: jax.Array
    opt_index: jax.Array


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def token_selection_data(key, n: int, T: int, d: int, *, dtype=None, unit_norm: bool = True):
    """Random token-selection data: tokens, queries and head on the unit sphere, random labels.

    Args:
      key: ``jax.random`` key.
      n, T, d: number of examples, tokens per example, embedding dimension (all >= 1, T >= 2).
      dtype: float dtype (default: JAX's default float).
      unit_norm: if False, entries are i.i.d. ``N(0, 1/d)`` instead of unit vectors.

    Returns a ``TokenData``. With continuous draws the optimal token is unique with probability 1.
    """
    for name, val, lo in (("n", n, 1), ("T", T, 2), ("d", d, 1)):
        if not isinstance(val, (int, np.integer)) or val < lo:
            raise ValueError(f"{name} must be an int >= {lo}; got {val!r}")
    dtype = dtype or jnp.result_type(float)
    kx, kz, kv, ky = jax.random.split(key, 4)
    X = jax.random.normal(kx, (n, T, d), dtype)
    Z = jax.random.normal(kz, (n, d), dtype)
    v = jax.random.normal(kv, (d,), dtype)
    if unit_norm:
        X, Z, v = _unit(X), _unit(Z), _unit(v)
    else:
        X, Z, v = X / np.sqrt(d), Z / np.sqrt(d), v / np.sqrt(d)
    Y = jnp.where(jax.random.bernoulli(ky, 0.5, (n,)), 1.0, -1.0).astype(dtype)
    scores = token_scores(X, Y, v)
    return TokenData(X, Z, Y, v, scores, optimal_tokens(scores))


def token_scores(X, Y, v) -> jax.Array:
    """Scores ``gamma_it = Y_i v^T x_it`` ``(n, T)`` for X ``(n,T,d)``, Y ``(n,)``, v ``(d,)``."""
    return Y[:, None] * jnp.einsum("ntd,d->nt", X, v)


def optimal_tokens(scores) -> jax.Array:
    """Index of the highest-scoring token of each example, shape ``(n,)`` int32."""
    return jnp.argmax(scores, axis=-1).astype(jnp.int32)


def score_gap(scores) -> jax.Array:
    """Gap between the best and the second-best score of each example, shape ``(n,)``.

    A gap of (numerically) zero means the optimal token is not unique.
    """
    top2 = jax.lax.top_k(scores, 2)[0]
    return top2[..., 0] - top2[..., 1]


def selection_mask(opt_index, T: int) -> jax.Array:
    """Boolean ``(n, T)`` mask that is True at ``opt_index[i]`` in row ``i`` (one-hot selection)."""
    return jnp.arange(T)[None, :] == jnp.asarray(opt_index)[:, None]

"""Single-layer linear self-attention for in-context linear regression (von Oswald et al. 2023,
"Transformers learn in-context by gradient descent")."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from landscape.models.init import standard_draws
from landscape.models.layers import (
    check_input,
    param_dtype_or_default,
    rngs_from,
)
from landscape.validate import check_positive_int

__all__ = ["LinearSelfAttention"]

HIGHEST = jax.lax.Precision.HIGHEST


class LinearSelfAttention(nnx.Module):
    """One linear self-attention layer on tokens ``e_j = (x_j, y_j)``, ``D = d_in + d_out``.

    Input ``tokens`` ``(n, N + 1, D)``: ``N`` context tokens followed by the query token
    ``e_q = (x_q, 0)`` (build it with ``tokens(x, y, x_query)``). The layer updates the query
    token with the softmax-free attention over the context,

        e_q' = e_q + P W_V sum_{i<=N} e_i (e_i^T W_K^T W_Q e_q),

    (matrices act on column vectors; the query does not attend to itself) and the prediction is
    the query token's y slot, ``e_q'[d_in:]``, shape ``(n, d_out)``. Parameters ``W_K``,
    ``W_Q``, ``W_V``, ``P`` are ``(D, D)`` ``nnx.Param``s with entries ``N(0, init_std^2)``.
    There is no 1/N normalisation: as in the paper, ``P`` absorbs it.

    ``gd_construction(d_in, d_out, lr, num_context)`` gives the weights for which the layer's
    prediction equals one gradient-descent step from ``W_0 = 0`` with learning rate ``lr`` on
    ``L(W) = (1/2N) sum_i ||W x_i - y_i||^2``, i.e. ``(lr/N) sum_i y_i x_i^T x_q``. (The
    paper's ``W_V = [[0, 0], [W_0, -I]]`` puts minus that prediction in the y slot; we read the
    prediction off the y slot directly, so the sign of the ``I`` block is flipped.)
    """

    def __init__(self, d_in: int, d_out: int = 1, *, init_std: float = 0.02, param_dtype=None,
                 rngs: nnx.Rngs | None = None, key=None):
        rngs = rngs_from(rngs, key, "LinearSelfAttention")
        d_in, d_out = check_positive_int(d_in, "d_in"), check_positive_int(d_out, "d_out")
        dtype = param_dtype_or_default(param_dtype)
        self.d_in, self.d_out, self.dim = d_in, d_out, d_in + d_out
        shape = (self.dim, self.dim)
        draw = lambda: nnx.Param(standard_draws(rngs.params(), shape, dtype, scale=init_std))
        self.W_K, self.W_Q, self.W_V, self.P = draw(), draw(), draw(), draw()

    @staticmethod
    def tokens(x: jax.Array, y: jax.Array, x_query: jax.Array) -> jax.Array:
        """Stack context ``x`` ``(n, N, d_in)``, ``y`` ``(n, N, d_out)`` and ``x_query``
        ``(n, d_in)`` into tokens ``(n, N + 1, d_in + d_out)`` with a zero query y slot."""
        if jnp.ndim(x) != 3 or jnp.ndim(y) != 3 or jnp.shape(x)[:2] != jnp.shape(y)[:2]:
            raise ValueError(
                f"x must be (n, N, d_in) and y (n, N, d_out) with matching n, N; got "
                f"{jnp.shape(x)} and {jnp.shape(y)}"
            )
        if jnp.shape(x_query) != (jnp.shape(x)[0], jnp.shape(x)[2]):
            raise ValueError(f"x_query must have shape {(jnp.shape(x)[0], jnp.shape(x)[2])}; "
                             f"got {jnp.shape(x_query)}")
        query = jnp.concatenate([x_query, jnp.zeros_like(y[:, 0])], axis=-1)[:, None]
        return jnp.concatenate([jnp.concatenate([x, y], axis=-1), query], axis=1)

    @staticmethod
    def gd_construction(d_in: int, d_out: int, lr: float, num_context: int, dtype=None) -> dict:
        """Weights ``{"W_K", "W_Q", "W_V", "P"}`` implementing one GD step from ``W_0 = 0``:
        ``W_K = W_Q = [[I, 0], [0, 0]]``, ``W_V = [[0, 0], [0, I]]``, ``P = (lr / N) I``."""
        dtype = param_dtype_or_default(dtype)
        D = d_in + d_out
        wkq = jnp.zeros((D, D), dtype).at[:d_in, :d_in].set(jnp.eye(d_in, dtype=dtype))
        wv = jnp.zeros((D, D), dtype).at[d_in:, d_in:].set(jnp.eye(d_out, dtype=dtype))
        p = (lr / num_context) * jnp.eye(D, dtype=dtype)
        return {"W_K": wkq, "W_Q": wkq, "W_V": wv, "P": p}

    def update(self, tokens: jax.Array) -> jax.Array:
        """The attention update ``e_q' - e_q`` of the query token, shape ``(n, D)``."""
        check_input(tokens, "tokens", (None, self.dim), model="LinearSelfAttention")
        if jnp.shape(tokens)[1] < 2:
            raise ValueError("LinearSelfAttention: tokens need at least one context token and "
                             f"the query token; got shape {jnp.shape(tokens)}")
        ctx, e_q = tokens[:, :-1, :], tokens[:, -1, :]
        q = jnp.einsum("ab,nb->na", self.W_Q[...], e_q, precision=HIGHEST)      # W_Q e_q
        k = jnp.einsum("ab,nib->nia", self.W_K[...], ctx, precision=HIGHEST)    # W_K e_i
        scores = jnp.einsum("nia,na->ni", k, q, precision=HIGHEST)
        mixed = jnp.einsum("ni,nib->nb", scores, ctx, precision=HIGHEST)         # sum_i a_i e_i
        pv = jnp.matmul(self.P[...], self.W_V[...], precision=HIGHEST)
        return jnp.einsum("ab,nb->na", pv, mixed, precision=HIGHEST)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Prediction for the query: the y slot of the updated query token, ``(n, d_out)``."""
        delta = self.update(tokens)
        return (tokens[:, -1, :] + delta)[:, self.d_in:]

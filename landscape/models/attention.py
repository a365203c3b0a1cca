"""One-layer softmax attention of Tarzanagh, Li, Thrampoulidis, Oymak (2023), "Transformers as
Support Vector Machines" / "Max-margin token selection in attention mechanism"."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from landscape.models.init import standard_draws
from landscape.models.layers import (
    Constant,
    check_input,
    param_dtype_or_default,
    rngs_from,
)
from landscape.validate import check_positive_int

__all__ = ["Attention"]

HIGHEST = jax.lax.Precision.HIGHEST
PARAMS = ("W", "KQ")


class Attention(nnx.Module):
    """``f(X, z) = v^T X^T softmax(X W z)``: tokens ``X`` ``(n, T, d)``, query ``z`` ``(n, d)``.

    The attention scores of input ``i`` are ``s_i = X_i W z_i`` (length ``T``); the output is
    the head ``v`` applied to the attention-weighted token average, one scalar per example,
    shape ``(n,)``. Two parameterisations of the same function:

    * ``param="W"``: one ``(d, d)`` matrix ``W`` (an ``nnx.Param``). Gradient descent on ``W``
      converges in direction to the Frobenius-norm Att-SVM solution.
    * ``param="KQ"``: ``K``, ``Q`` of shape ``(d, m)`` (``m`` defaults to ``d``) with
      ``W = K Q^T``; the scores are computed as ``(X K)(Q^T z)``. GD on ``(K, Q)`` converges in
      direction to the nuclear-norm Att-SVM* solution.

    ``weight()`` returns the effective ``W`` in both cases. The head ``v`` ``(d,)`` is a
    ``Constant`` (frozen, lands in the non-parameter state) unless ``train_v=True``, then an
    ``nnx.Param``. If ``v`` is not given it is drawn ``N(0, I/d)``. Entries of ``W`` (or of
    ``K`` and ``Q``) are drawn ``N(0, init_std^2)`` with ``init_std`` default ``1/sqrt(d)``.

    ``__call__(X, z=None)``: when ``z`` is omitted the query is the first token, ``z_i = X_i[0]``
    (self-attention read out at the first position).

    Reference: Tarzanagh, Li, Zhang, Oymak (2023); Tarzanagh, Li, Thrampoulidis, Oymak (2023).
    """

    def __init__(self, d: int, *, param: str = "W", m: int | None = None, v=None,
                 train_v: bool = False, init_std: float | None = None, param_dtype=None,
                 rngs: nnx.Rngs | None = None, key=None):
        rngs = rngs_from(rngs, key, "Attention")
        d = check_positive_int(d, "d")
        if param not in PARAMS:
            raise ValueError(f"param must be one of {PARAMS}; got {param!r}")
        if param == "W" and m is not None:
            raise ValueError("m (the K/Q width) only applies to param='KQ'")
        m = d if m is None else check_positive_int(m, "m")
        dtype = param_dtype_or_default(param_dtype)
        std = 1.0 / d**0.5 if init_std is None else float(init_std)
        self.d, self.m, self.param, self.train_v = d, m, param, bool(train_v)
        draw = lambda shape: standard_draws(rngs.params(), shape, dtype, scale=std)
        if param == "W":
            self.W = nnx.Param(draw((d, d)))
        else:
            self.K = nnx.Param(draw((d, m)))
            self.Q = nnx.Param(draw((d, m)))
        if v is None:
            v = standard_draws(rngs.params(), (d,), dtype, scale=d**-0.5)
        v = jnp.asarray(v, dtype)
        if v.shape != (d,):
            raise ValueError(f"v must have shape ({d},); got {v.shape}")
        self.v = nnx.Param(v) if train_v else Constant(v)

    def weight(self) -> jax.Array:
        """Effective attention matrix ``W`` ``(d, d)`` (``K Q^T`` in the KQ parameterisation)."""
        if self.param == "W":
            return self.W[...]
        return jnp.matmul(self.K[...], self.Q[...].T, precision=HIGHEST)

    def _inputs(self, X, z):
        check_input(X, "X", (None, self.d), model="Attention")
        if z is None:
            return X, X[:, 0, :]
        check_input(z, "z", (self.d,), model="Attention")
        if jnp.shape(z)[0] != jnp.shape(X)[0]:
            raise ValueError(
                f"Attention: X and z must hold the same number of examples; got "
                f"{jnp.shape(X)[0]} and {jnp.shape(z)[0]}"
            )
        return X, z

    def scores(self, X: jax.Array, z: jax.Array | None = None) -> jax.Array:
        """Attention logits ``X_i W z_i``, shape ``(n, T)``."""
        X, z = self._inputs(X, z)
        if self.param == "W":
            Wz = jnp.einsum("de,ne->nd", self.W[...], z, precision=HIGHEST)
        else:
            qz = jnp.einsum("em,ne->nm", self.Q[...], z, precision=HIGHEST)
            Wz = jnp.einsum("dm,nm->nd", self.K[...], qz, precision=HIGHEST)
        return jnp.einsum("ntd,nd->nt", X, Wz, precision=HIGHEST)

    def attention(self, X: jax.Array, z: jax.Array | None = None) -> jax.Array:
        """Softmax attention weights over the tokens, shape ``(n, T)``, rows summing to 1."""
        return jax.nn.softmax(self.scores(X, z), axis=-1)

    def __call__(self, X: jax.Array, z: jax.Array | None = None) -> jax.Array:
        """Outputs ``v^T X_i^T softmax(X_i W z_i)``, shape ``(n,)``."""
        a = self.attention(X, z)
        token_scores = jnp.einsum("ntd,d->nt", X, self.v[...], precision=HIGHEST)
        return jnp.sum(a * token_scores, axis=-1)

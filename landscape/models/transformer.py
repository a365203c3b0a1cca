"""Small decoder-only transformer (pre-LN, causal, learned positions) with the qk-layernorm option
and z-loss of Wortsman et al. (2023), "Small-scale proxies for large-scale Transformer training
instabilities"."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from landscape.models.init import lecun_normal, normal
from landscape.models.layers import param_dtype_or_default, rngs_from
from landscape.validate import check_positive_int

__all__ = ["Transformer", "CausalSelfAttention", "z_loss"]

HIGHEST = jax.lax.Precision.HIGHEST


def z_loss(logits: jax.Array) -> jax.Array:
    """Mean over all positions of ``log(Z)^2``, ``Z = sum_j exp(logits_j)`` (last axis = vocab).

    Wortsman et al. (2023) add ``1e-4 * z_loss(logits)`` to the cross-entropy to keep the
    output logits from drifting (output-logit divergence); the coefficient is the caller's.
    """
    if jnp.ndim(logits) < 1:
        raise ValueError(f"logits must have a class axis; got shape {jnp.shape(logits)}")
    log_z = jax.nn.logsumexp(logits, axis=-1)
    return jnp.mean(log_z * log_z)


class CausalSelfAttention(nnx.Module):
    """Multi-head causal self-attention; ``qk_layernorm`` applies a LayerNorm over the head
    dimension (shared across heads) to queries and keys before their dot product."""

    def __init__(self, d_model: int, n_heads: int, *, qk_layernorm: bool, param_dtype,
                 rngs: nnx.Rngs):
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        kw = dict(use_bias=False, param_dtype=param_dtype, kernel_init=lecun_normal, rngs=rngs)
        self.qkv = nnx.Linear(d_model, 3 * d_model, **kw)
        self.out = nnx.Linear(d_model, d_model, **kw)
        self.qk_layernorm = bool(qk_layernorm)
        ln = lambda: nnx.LayerNorm(self.head_dim, epsilon=1e-5, param_dtype=param_dtype,
                                   rngs=rngs)
        self.q_norm = nnx.data(ln() if qk_layernorm else None)
        self.k_norm = nnx.data(ln() if qk_layernorm else None)

    def _qkv(self, x):
        n, t, _ = x.shape
        q, k, v = jnp.split(self.qkv(x).reshape(n, t, 3, self.n_heads, self.head_dim), 3, axis=2)
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]  # (n, T, H, hd)
        if self.qk_layernorm:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v

    def logits(self, x: jax.Array) -> jax.Array:
        """Raw attention logits ``q_i . k_j / sqrt(head_dim)``, ``(n, H, T, T)``, unmasked."""
        q, k, _ = self._qkv(x)
        return jnp.einsum("nihd,njhd->nhij", q, k, precision=HIGHEST) / self.head_dim**0.5

    def __call__(self, x: jax.Array) -> jax.Array:
        n, t, d = x.shape
        q, k, v = self._qkv(x)
        logits = jnp.einsum("nihd,njhd->nhij", q, k, precision=HIGHEST) / self.head_dim**0.5
        mask = jnp.tril(jnp.ones((t, t), bool))
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        mixed = jnp.einsum("nhij,njhd->nihd", weights, v, precision=HIGHEST)
        return self.out(mixed.reshape(n, t, d))


class _Block(nnx.Module):
    """Pre-LN block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))`` (GELU MLP)."""

    def __init__(self, d_model, n_heads, mlp_ratio, *, qk_layernorm, param_dtype, rngs):
        ln = lambda: nnx.LayerNorm(d_model, epsilon=1e-5, param_dtype=param_dtype, rngs=rngs)
        self.ln1, self.ln2 = ln(), ln()
        self.attn = CausalSelfAttention(d_model, n_heads, qk_layernorm=qk_layernorm,
                                        param_dtype=param_dtype, rngs=rngs)
        hidden = mlp_ratio * d_model
        kw = dict(param_dtype=param_dtype, kernel_init=lecun_normal, rngs=rngs)
        self.fc1 = nnx.Linear(d_model, hidden, **kw)
        self.fc2 = nnx.Linear(hidden, d_model, **kw)

    def __call__(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))


class Transformer(nnx.Module):
    """Decoder-only transformer: token + learned position embeddings, ``n_layers`` pre-LN blocks
    (causal multi-head attention, GELU MLP of width ``mlp_ratio * d_model``), final LayerNorm
    and an untied linear head to ``vocab`` logits.

    ``__call__(tokens)``: integer tokens ``(n, T)`` with ``T <= seq_len`` -> logits
    ``(n, T, vocab)``; position ``t`` only sees tokens ``<= t``. Token ids outside
    ``[0, vocab)`` cannot be checked under ``jit`` and must be avoided by the caller.

    Instability diagnostics (Wortsman et al. 2023): ``attention_logits(tokens)`` returns every
    layer's raw attention logits ``(n_layers, n, n_heads, T, T)`` and
    ``max_attention_logit(tokens)`` the largest ``|logit|`` over causal positions per layer
    ``(n_layers,)`` (attention-logit growth); ``z_loss(logits)`` is the output-logit
    regulariser. ``qk_layernorm=True`` adds LayerNorms on queries and keys (a
    ``2 * 2 * head_dim`` parameter increase per layer).

    Parameters: ``vocab*d + seq_len*d`` embeddings, per layer ``4 d^2`` attention +
    ``2 r d^2 + r d + d`` MLP + ``4 d`` LayerNorm (``r = mlp_ratio``), ``2 d`` final LN,
    ``d * vocab`` head. Embeddings start ``N(0, 0.02^2)``, kernels LeCun-normal.
    """

    def __init__(self, vocab: int, d_model: int, n_layers: int, n_heads: int, seq_len: int, *,
                 qk_layernorm: bool = False, mlp_ratio: int = 4, param_dtype=None,
                 rngs: nnx.Rngs | None = None, key=None):
        rngs = rngs_from(rngs, key, "Transformer")
        vocab, d_model, n_layers, n_heads, seq_len, mlp_ratio = (
            check_positive_int(value, arg) for value, arg in (
                (vocab, "vocab"), (d_model, "d_model"), (n_layers, "n_layers"),
                (n_heads, "n_heads"), (seq_len, "seq_len"), (mlp_ratio, "mlp_ratio")))
        dtype = param_dtype_or_default(param_dtype)
        self.vocab, self.d_model, self.n_layers = vocab, d_model, n_layers
        self.n_heads, self.seq_len, self.qk_layernorm = n_heads, seq_len, bool(qk_layernorm)
        self.embed = nnx.Embed(vocab, d_model, param_dtype=dtype, embedding_init=normal(0.02),
                               rngs=rngs)
        self.pos = nnx.Param(normal(0.02)(rngs.params(), (seq_len, d_model), dtype))
        self.blocks = nnx.List([
            _Block(d_model, n_heads, mlp_ratio, qk_layernorm=qk_layernorm, param_dtype=dtype,
                   rngs=rngs)
            for _ in range(n_layers)
        ])
        self.ln_f = nnx.LayerNorm(d_model, epsilon=1e-5, param_dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(d_model, vocab, use_bias=False, param_dtype=dtype,
                               kernel_init=lecun_normal, rngs=rngs)

    def _embed(self, tokens):
        shape = jnp.shape(tokens)
        if len(shape) != 2 or not 1 <= shape[1] <= self.seq_len:
            raise ValueError(f"Transformer: tokens must have shape (n, T) with 1 <= T <= "
                             f"seq_len={self.seq_len}; got {shape}")
        if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
            raise TypeError(f"Transformer: tokens must be integers; got dtype "
                            f"{jnp.result_type(tokens)}")
        return self.embed(tokens) + self.pos[...][: shape[1]]

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Next-token logits ``(n, T, vocab)``."""
        x = self._embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def attention_logits(self, tokens: jax.Array) -> jax.Array:
        """Raw (unmasked) attention logits of every layer, ``(n_layers, n, n_heads, T, T)``."""
        x, out = self._embed(tokens), []
        for block in self.blocks:
            out.append(block.attn.logits(block.ln1(x)))
            x = block(x)
        return jnp.stack(out)

    def max_attention_logit(self, tokens: jax.Array) -> jax.Array:
        """Per layer, max ``|q_i . k_j| / sqrt(head_dim)`` over ``j <= i``, ``(n_layers,)``."""
        logits = self.attention_logits(tokens)
        t = logits.shape[-1]
        causal = jnp.tril(jnp.ones((t, t), bool))
        return jnp.max(jnp.where(causal, jnp.abs(logits), 0), axis=(1, 2, 3, 4))

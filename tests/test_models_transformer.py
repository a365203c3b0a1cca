"""The small transformer: shapes, causality, qk-layernorm, logit readout, z-loss, errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models_common import TOL, _normal, _params, _tiny_transformer
from flax import nnx

from landscape import models
from landscape.models import count_params

# ---------------------------------------------------------------- transformer


def test_transformer_shapes_and_param_count():
    vocab, d, L, S, r = 7, 8, 2, 6, 4
    for qk in (False, True):
        model = _tiny_transformer(qk_layernorm=qk)
        tokens = jnp.asarray([[1, 2, 3, 4, 5], [0, 6, 6, 1, 2]])
        chex.assert_shape(model(tokens), (2, 5, vocab))
        chex.assert_shape(model.attention_logits(tokens), (L, 2, 2, 5, 5))
        per_layer = 4 * d * d + 2 * r * d * d + r * d + d + 4 * d + (4 * (d // 2) if qk else 0)
        assert count_params(model) == vocab * d + S * d + L * per_layer + 2 * d + d * vocab


def test_transformer_is_causal():
    model = _tiny_transformer()
    tokens = np.array([[1, 2, 3, 4, 5, 6]] * 2)
    changed = tokens.copy()
    changed[:, 3] = 0
    a, b = model(tokens), model(changed)
    np.testing.assert_allclose(a[:, :3], b[:, :3], rtol=TOL, atol=TOL)
    assert np.max(np.abs(a[:, 3:] - b[:, 3:])) > 1e-3


def test_qk_layernorm_changes_params_and_bounds_logits():
    """qk-layernorm adds q/k LayerNorms; at init (scale 1, bias 0) |logit| <= sqrt(head_dim)
    however large the q/k projections grow, while without it the logits grow with them."""
    plain, qkln = _tiny_transformer(), _tiny_transformer(qk_layernorm=True)
    paths = lambda m: {jax.tree_util.keystr(p) for p, _ in
                       jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(_params(m)))[0]}
    extra = paths(qkln) - paths(plain)
    assert extra and all("q_norm" in p or "k_norm" in p for p in extra)
    assert paths(plain) <= paths(qkln)
    tokens = jnp.asarray([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]])
    for model in (plain, qkln):
        for block in model.blocks:
            block.attn.qkv.kernel[...] = 30.0 * block.attn.qkv.kernel[...]
    bound = np.sqrt(8 // 2)
    assert np.all(np.asarray(qkln.max_attention_logit(tokens)) <= bound * (1 + 1e-4))
    assert np.all(np.asarray(plain.max_attention_logit(tokens)) > bound)


def test_max_attention_logit_matches_masked_logits():
    model = _tiny_transformer()
    tokens = jnp.asarray([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]])
    logits = np.asarray(model.attention_logits(tokens))
    ref = [max(np.abs(logits[l, :, :, i, j]).max() for i in range(6) for j in range(i + 1))
           for l in range(2)]
    np.testing.assert_allclose(model.max_attention_logit(tokens), ref, rtol=TOL)


def test_z_loss_matches_scipy():
    from scipy.special import logsumexp

    logits = np.asarray(_normal(0, (2, 3, 7))) * 5
    np.testing.assert_allclose(models.z_loss(logits), np.mean(logsumexp(logits, -1) ** 2),
                               rtol=10 * TOL)
    with pytest.raises(ValueError, match="class axis"):
        models.z_loss(jnp.ones(()))


def test_transformer_bad_inputs():
    model = _tiny_transformer()
    with pytest.raises(ValueError, match="seq_len=6"):
        model(jnp.zeros((2, 7), jnp.int32))
    with pytest.raises(TypeError, match="integers"):
        model(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="divisible"):
        models.Transformer(7, 8, 1, 3, 6, rngs=nnx.Rngs(0))

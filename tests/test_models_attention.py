"""One-layer attention and linear self-attention: formulas, the GD construction, errors."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from _models_common import FLOAT, TOL, _normal
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from landscape import models
from landscape.models import count_params

# ---------------------------------------------------------------- one-layer attention


def test_attention_matches_formula_and_kq_equals_w():
    d, n, t = 5, 3, 4
    kq = models.Attention(d, param="KQ", m=3, rngs=nnx.Rngs(0))
    K, Q, v = (np.asarray(a[...]) for a in (kq.K, kq.Q, kq.v))
    w_model = models.Attention(d, param="W", v=v, rngs=nnx.Rngs(1))
    w_model.W[...] = jnp.asarray(K @ Q.T, FLOAT)
    X, z = np.asarray(_normal(2, (n, t, d))), np.asarray(_normal(3, (n, d)))
    np.testing.assert_allclose(kq.weight(), K @ Q.T, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(kq(X, z), w_model(X, z), rtol=10 * TOL, atol=10 * TOL)
    np.testing.assert_allclose(kq.scores(X, z), w_model.scores(X, z), rtol=10 * TOL,
                               atol=10 * TOL)
    # explicit formula v^T X^T softmax(X W z), with numpy
    s = np.einsum("ntd,de,ne->nt", X, K @ Q.T, z)
    a = np.exp(s - s.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    np.testing.assert_allclose(kq(X, z), np.einsum("nt,ntd,d->n", a, X, v),
                               rtol=10 * TOL, atol=10 * TOL)
    # the default query is the first token
    np.testing.assert_allclose(kq(X), kq(X, X[:, 0]), rtol=TOL, atol=TOL)


def test_attention_head_frozen_or_trainable():
    frozen = models.Attention(4, rngs=nnx.Rngs(0))
    trainable = models.Attention(4, param="KQ", m=2, train_v=True, rngs=nnx.Rngs(0))
    assert count_params(frozen) == 16  # W only; v is a Constant in the non-param state
    assert isinstance(frozen.v, models.Constant)
    assert count_params(trainable) == 4 * 2 * 2 + 4
    _, params, rest = nnx.split(frozen, nnx.Param, ...)
    assert "v" not in params and "v" in rest


def test_attention_bad_inputs():
    model = models.Attention(4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"X must have shape \(n, \*, 4\)"):
        model(jnp.ones((2, 3, 5)))
    with pytest.raises(ValueError, match="same number of examples"):
        model(jnp.ones((2, 3, 4)), jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="z must have shape"):
        model(jnp.ones((2, 3, 4)), jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="param"):
        models.Attention(4, param="QK", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="v must have shape"):
        models.Attention(4, v=jnp.ones(3), rngs=nnx.Rngs(0))


# ---------------------------------------------------------------- linear self-attention


def test_lsa_matches_explicit_formula():
    d_in, d_out, n, N = 3, 2, 2, 5
    model = models.LinearSelfAttention(d_in, d_out, init_std=0.5, rngs=nnx.Rngs(0))
    x, y = np.asarray(_normal(1, (n, N, d_in))), np.asarray(_normal(2, (n, N, d_out)))
    xq = np.asarray(_normal(3, (n, d_in)))
    tokens = np.asarray(models.LinearSelfAttention.tokens(x, y, xq))
    np.testing.assert_array_equal(tokens[:, -1, d_in:], 0)
    WK, WQ, WV, P = (np.asarray(getattr(model, k)[...]) for k in ("W_K", "W_Q", "W_V", "P"))
    ref = []
    for i in range(n):
        E = np.concatenate([x[i], y[i]], axis=1)  # (N, D) context rows e_j^T
        e_q = np.concatenate([xq[i], np.zeros(d_out)])
        delta = sum(P @ WV @ E[j] * (E[j] @ WK.T @ WQ @ e_q) for j in range(N))
        ref.append((e_q + delta)[d_in:])
    np.testing.assert_allclose(model(tokens), np.stack(ref), rtol=100 * TOL, atol=100 * TOL)


@pytest.mark.parametrize("d_in, d_out, N", [(3, 1, 5), (2, 2, 1)])
@settings(max_examples=10, deadline=None)
@given(lr=st.floats(0.01, 2.0), seed=st.integers(0, 1000))
def test_lsa_gd_construction_is_one_gd_step(d_in, d_out, N, lr, seed):
    """von Oswald et al.: the constructed weights predict W_1 x_q, W_1 = W_0 - lr grad L(W_0)."""
    rng = np.random.default_rng(seed)
    x, y, xq = rng.normal(size=(2, N, d_in)), rng.normal(size=(2, N, d_out)), rng.normal(
        size=(2, d_in))
    model = models.LinearSelfAttention(d_in, d_out, rngs=nnx.Rngs(0))
    for name, value in models.LinearSelfAttention.gd_construction(d_in, d_out, lr, N).items():
        getattr(model, name)[...] = value
    pred = model(models.LinearSelfAttention.tokens(x.astype(FLOAT), y.astype(FLOAT),
                                                   xq.astype(FLOAT)))
    for i in range(2):
        W0 = np.zeros((d_out, d_in))
        grad = (W0 @ x[i].T - y[i].T) @ x[i] / N  # dL/dW for L = (1/2N) sum ||W x - y||^2
        np.testing.assert_allclose(pred[i], (W0 - lr * grad) @ xq[i], rtol=1e3 * TOL,
                                   atol=1e3 * TOL)


def test_lsa_bad_inputs():
    model = models.LinearSelfAttention(3, 1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"tokens must have shape \(n, \*, 4\)"):
        model(jnp.ones((2, 5, 3)))
    with pytest.raises(ValueError, match="at least one context token"):
        model(jnp.ones((2, 1, 4)))
    with pytest.raises(ValueError, match="x_query"):
        models.LinearSelfAttention.tokens(jnp.ones((2, 5, 3)), jnp.ones((2, 5, 1)),
                                          jnp.ones((2, 2)))

"""Tests for landscape.models: shapes, parameter counts, norm behaviour, equivalences, errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from landscape import models
from landscape.models import CNN1D, CNN2D, MLP, count_params

FLOAT = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32, or float64 under x64
TOL = 1e-10 if FLOAT == jnp.float64 else 1e-5


def _params(model):
    return nnx.state(model, nnx.Param)


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def _normal(key, shape):
    return jax.random.normal(jax.random.key(key), shape, FLOAT)


# ---------------------------------------------------------------- MLP


@pytest.mark.parametrize("depth", [0, 1, 3])
@pytest.mark.parametrize("norm", [None, "layer", "batch"])
def test_mlp_shapes_and_param_count(depth, norm):
    d, w, c = 12, 7, 4
    model = MLP(d, w, depth, c, norm=norm, rngs=nnx.Rngs(0))
    out = model(_normal(1, (5, 3, 4)))  # trailing shape (3, 4) flattens to 12 features
    chex.assert_shape(out, (5, c))
    chex.assert_type(out, FLOAT)
    if depth == 0:
        expected = d * c + c
    else:
        expected = d * w + w + (depth - 1) * (w * w + w) + w * c + c
        expected += 2 * w * depth if norm is not None else 0
    assert count_params(model) == expected


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_mlp_matches_numpy_forward(residual, activation):
    """The forward pass equals the formula computed by hand from the parameter arrays."""
    model = MLP(6, 5, 3, 3, activation=activation, residual=residual, rngs=nnx.Rngs(2))
    x = np.asarray(_normal(3, (4, 6)))
    p = _np(nnx.to_pure_dict(_params(model)))
    act = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
           "gelu": lambda z: np.asarray(jax.nn.gelu(z))}[activation]
    h = x
    for l in range(3):
        z = act(h @ p["hidden"][l]["kernel"] + p["hidden"][l]["bias"])
        h = h + z if (residual and l > 0) else z
    ref = h @ p["head"]["kernel"] + p["head"]["bias"]
    np.testing.assert_allclose(model(x), ref, rtol=10 * TOL, atol=10 * TOL)


def test_mlp_residual_shares_one_permutation():
    """Permuting every hidden layer by one permutation (the residual stream) keeps f unchanged."""
    model = MLP(4, 6, 3, 2, residual=True, norm="layer", rngs=nnx.Rngs(0))
    x = _normal(1, (5, 4))
    ref = model(x)
    perm = np.random.default_rng(0).permutation(6)
    p = nnx.to_pure_dict(_params(model))
    for l in range(3):
        p["hidden"][l]["kernel"] = p["hidden"][l]["kernel"][:, perm]
        if l > 0:
            p["hidden"][l]["kernel"] = p["hidden"][l]["kernel"][perm, :]
        p["hidden"][l]["bias"] = p["hidden"][l]["bias"][perm]
        p["norms"][l]["scale"] = p["norms"][l]["scale"][perm]
        p["norms"][l]["bias"] = p["norms"][l]["bias"][perm]
    p["head"]["kernel"] = p["head"]["kernel"][perm, :]
    state = _params(model)
    nnx.replace_by_pure_dict(state, p)
    nnx.update(model, state)
    np.testing.assert_allclose(model(x), ref, rtol=100 * TOL, atol=100 * TOL)


def test_mlp_bad_inputs():
    model = MLP(6, 5, 2, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="6 features"):
        model(jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="norm"):
        MLP(6, 5, 2, 3, norm="group", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="activation"):
        MLP(6, 5, 2, 3, activation="relu6x", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="width"):
        MLP(6, 0, 2, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="depth"):
        MLP(6, 5, -1, 3, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="param_dtype"):
        MLP(6, 5, 1, 3, param_dtype=jnp.int32, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="width"):
        MLP(6, 2.0, 1, 3, rngs=nnx.Rngs(0))
    # numpy integers (e.g. from a width sweep) are accepted and stored as Python ints
    assert MLP(np.int64(6), np.int64(5), 1, 3, rngs=nnx.Rngs(0)).width == 5


# ---------------------------------------------------------------- CNNs


def _cnn_count(c_in, channels, k, classes, norm):
    total, prev = 0, c_in
    for c in channels:
        total += k * prev * c + c + (2 * c if norm else 0)
        prev = c
    return total + prev * classes + classes


@pytest.mark.parametrize("norm", [None, "layer", "batch"])
def test_cnn2d_shapes_and_param_count(norm):
    model = CNN2D(10, in_channels=1, width=4, num_layers=3, norm=norm, rngs=nnx.Rngs(0))
    chex.assert_shape(model(_normal(0, (3, 8, 8))), (3, 10))
    if norm is None:
        chex.assert_shape(model(_normal(0, (3, 8, 8, 1))), (3, 10))
        chex.assert_shape(model(_normal(0, (2, 5, 7, 1))), (2, 10))  # any spatial size
    assert count_params(model) == _cnn_count(1, [4, 8, 16], 9, 10, norm)
    assert count_params(model) == models.cnn_num_params(1, 4, 3, 10, 9, norm)


def test_cnn2d_digits_size_for_curvature_benchmark():
    """A BatchNorm-free digits CNN with 20k-60k parameters is buildable (default config)."""
    model = nnx.eval_shape(lambda: CNN2D(rngs=nnx.Rngs(0)))
    assert 20_000 <= count_params(model) <= 60_000
    assert count_params(model) == _cnn_count(1, [16, 32, 64], 9, 10, None)
    assert not jax.tree.leaves(nnx.state(model, nnx.BatchStat))


@pytest.mark.parametrize("norm", [None, "batch"])
def test_cnn1d_shapes_and_param_count(norm):
    model = CNN1D(10, width=4, num_layers=3, norm=norm, rngs=nnx.Rngs(0))
    chex.assert_shape(model(_normal(0, (3, 40))), (3, 10))
    if norm is None:
        chex.assert_shape(model(_normal(0, (3, 40, 1))), (3, 10))
    assert count_params(model) == _cnn_count(1, [4, 8, 16], 5, 10, norm)


def test_cnn_forward_matches_scipy_convolution():
    """One-layer CNN1D equals scipy's cross-correlation + ReLU + mean + linear head."""
    from scipy.signal import correlate

    model = CNN1D(3, in_channels=2, width=4, num_layers=1, kernel_size=3, rngs=nnx.Rngs(1))
    x = np.asarray(_normal(2, (2, 9, 2)))
    p = _np(nnx.to_pure_dict(_params(model)))
    k, b = p["convs"][0]["kernel"], p["convs"][0]["bias"]  # (3, 2, 4), (4,)
    feats = []
    for xi in x:
        maps = [sum(correlate(xi[:, ci], k[:, ci, co], mode="same") for ci in range(2)) + b[co]
                for co in range(4)]
        feats.append(np.maximum(np.stack(maps, -1), 0).mean(0))
    ref = np.stack(feats) @ p["head"]["kernel"] + p["head"]["bias"]
    np.testing.assert_allclose(model(x), ref, rtol=100 * TOL, atol=100 * TOL)


def test_cnn_bad_inputs():
    model = CNN2D(10, in_channels=3, width=2, num_layers=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must have shape \(n, \*, \*, 3\)"):
        model(jnp.ones((2, 8, 8, 1)))
    with pytest.raises(ValueError, match="CNN2D"):
        model(jnp.ones((2, 8, 8)))  # channel axis required when in_channels > 1
    with pytest.raises(ValueError, match="CNN1D"):
        CNN1D(rngs=nnx.Rngs(0))(jnp.ones((2, 40, 2)))
    with pytest.raises(ValueError, match="pool"):
        CNN1D(pool="median", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_layers"):
        CNN2D(num_layers=0, rngs=nnx.Rngs(0))


# ---------------------------------------------------------------- norms, modes, determinism


def _bn_models():
    return [
        MLP(6, 5, 2, 3, norm="batch", rngs=nnx.Rngs(0)),
        CNN2D(4, width=2, num_layers=2, norm="batch", rngs=nnx.Rngs(0)),
    ]


def _bn_input(model):
    return _normal(5, (8, 6)) if isinstance(model, MLP) else _normal(5, (8, 6, 6, 1))


@pytest.mark.parametrize("idx", [0, 1])
def test_batchnorm_train_updates_stats_eval_does_not(idx):
    model = _bn_models()[idx]
    x = _bn_input(model)
    before = _np(nnx.state(model, nnx.BatchStat))
    model.train()
    model(x)
    after_train = _np(nnx.state(model, nnx.BatchStat))
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before, after_train)
    assert all(jax.tree.leaves(changed)), "train mode must update every BatchStat"
    model.eval()
    out1 = model(x)
    out2 = model(x)
    after_eval = _np(nnx.state(model, nnx.BatchStat))
    chex.assert_trees_all_equal(after_train, after_eval)
    np.testing.assert_array_equal(out1, out2)
    # eval mode normalises each example independently of the rest of the batch
    np.testing.assert_allclose(model(x[:3]), out1[:3], rtol=TOL, atol=TOL)


def test_batchnorm_train_uses_batch_statistics():
    """In train mode, the first norm's output has zero mean/unit variance over the batch."""
    model = MLP(6, 5, 1, 3, norm="batch", activation="identity", rngs=nnx.Rngs(0))
    x = _normal(1, (64, 6))
    model.train()
    z = model.norms[0](model.hidden[0](x))
    np.testing.assert_allclose(jnp.mean(z, 0), 0, atol=1e-4)
    np.testing.assert_allclose(jnp.var(z, 0), 1, atol=1e-3)


def test_layernorm_variant_normalises_each_example():
    model = MLP(6, 8, 2, 3, norm="layer", rngs=nnx.Rngs(0))
    assert not jax.tree.leaves(nnx.state(model, nnx.BatchStat))
    x = _normal(1, (4, 6))
    z = model.norms[0](model.hidden[0](x))
    np.testing.assert_allclose(jnp.mean(z, -1), 0, atol=1e-5)
    np.testing.assert_allclose(jnp.var(z, -1), 1, atol=1e-3)
    # no batch dependence, in either mode
    np.testing.assert_allclose(model(x)[:2], model(x[:2]), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("make", [
    lambda r: MLP(5, 4, 2, 3, norm="layer", rngs=r),
    lambda r: CNN2D(3, width=2, num_layers=2, rngs=r),
    lambda r: CNN1D(3, width=2, num_layers=2, norm="batch", rngs=r),
])
def test_determinism_given_seed(make):
    a, b, c = make(nnx.Rngs(7)), make(nnx.Rngs(7)), make(nnx.Rngs(8))
    chex.assert_trees_all_equal(_np(nnx.state(a)), _np(nnx.state(b)))
    leaves_a, leaves_c = jax.tree.leaves(_params(a)), jax.tree.leaves(_params(c))
    assert any(not np.array_equal(u, v) for u, v in zip(leaves_a, leaves_c))
    for leaf in jax.tree.leaves(nnx.state(a)):
        assert leaf.dtype == FLOAT  # params and BatchNorm statistics alike


def test_split_merge_jit_roundtrip():
    """The models work as pure functions via nnx.split/merge under jit (what landscape.nnx does)."""
    model = CNN1D(3, width=2, num_layers=2, norm="batch", rngs=nnx.Rngs(0))
    model.eval()
    graphdef, params, state = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def apply(params, x):
        return nnx.merge(graphdef, params, state)(x)

    x = _normal(2, (4, 40))
    np.testing.assert_allclose(apply(params, x), model(x), rtol=TOL, atol=TOL)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 4), depth=st.integers(0, 3), width=st.integers(1, 6))
def test_mlp_output_shape_property(n, depth, width):
    model = MLP(3, width, depth, 2, rngs=nnx.Rngs(0))
    chex.assert_shape(model(jnp.ones((n, 3), FLOAT)), (n, 2))


# ---------------------------------------------------------------- ResNet-20


def _modules(model, cls):
    return [m for _, m in nnx.iter_modules(model) if isinstance(m, cls)]


@pytest.mark.parametrize("mult", [1, 2])
@pytest.mark.parametrize("shortcut", ["projection", "padding"])
def test_resnet20_layout(mult, shortcut):
    """19 3x3 convs (stem + 3 stages x 3 blocks x 2), 1x1 projections, one linear head."""
    model = nnx.eval_shape(lambda: models.ResNet20(10, mult, norm="batch", in_channels=3,
                                                   shortcut=shortcut, rngs=nnx.Rngs(0)))
    convs = _modules(model, nnx.Conv)
    k3 = [c for c in convs if c.kernel.shape[:2] == (3, 3)]
    k1 = [c for c in convs if c.kernel.shape[:2] == (1, 1)]
    assert len(k3) == 1 + 3 * 3 * 2
    assert len(k1) == (2 if shortcut == "projection" else 0)
    assert len(convs) == len(k3) + len(k1)
    assert len(_modules(model, nnx.Linear)) == 1
    assert model.head.kernel.shape == (64 * mult, 10)
    assert model.stem.kernel.shape == (3, 3, 3, 16 * mult)
    for s, width in enumerate([16, 32, 64]):
        for block in model.stages[s]:
            assert block.conv1.kernel.shape[-1] == block.conv2.kernel.shape[-1] == width * mult
    # every conv is followed by a BatchNorm (stem, 2 per block, each projection)
    assert len(_modules(model, nnx.BatchNorm)) == len(convs)


@pytest.mark.parametrize("mult", [1, 2])
def test_resnet20_param_count(mult):
    """No norm, padding shortcuts: 3x3 convs with biases + linear head (hand formula)."""
    model = nnx.eval_shape(
        lambda: models.ResNet20(10, mult, norm=None, shortcut="padding", rngs=nnx.Rngs(0)))
    w = [16 * mult, 32 * mult, 64 * mult]
    conv = lambda a, b: 9 * a * b + b
    expected = conv(3, w[0])
    c_in = w[0]
    for c in w:
        expected += conv(c_in, c) + 5 * conv(c, c)
        c_in = c
    expected += w[2] * 10 + 10
    assert count_params(model) == expected
    if mult == 1:
        assert abs(expected - 0.27e6) < 0.01e6  # He et al. 2016, Table 6: 0.27M


@pytest.mark.parametrize("norm", ["layer", None])  # "batch": see the nnx-adapter test
def test_resnet20_forward_on_digits(norm):
    model = models.ResNet20(10, norm=norm, in_channels=1, rngs=nnx.Rngs(0))
    x = _normal(0, (2, 8, 8, 1))
    out = model(x)
    chex.assert_shape(out, (2, 10))
    chex.assert_tree_all_finite(out)
    model.eval()
    chex.assert_shape(model(x[..., 0]), (2, 10))  # (n, H, W) accepted for one channel


def test_resnet_padding_shortcut_is_option_a():
    """With zero residual branch, a padding block returns relu(zero-padded subsampled x)."""
    block = models.BasicBlock(2, 4, 2, norm=None, shortcut="padding",
                              param_dtype=FLOAT, rngs=nnx.Rngs(0))
    block.conv2.kernel[...] = jnp.zeros_like(block.conv2.kernel[...])
    x = np.asarray(_normal(1, (2, 5, 5, 2)))
    ref = np.zeros((2, 3, 3, 4), x.dtype)
    ref[..., 1:3] = x[:, ::2, ::2, :]
    np.testing.assert_allclose(block(x), np.maximum(ref, 0), rtol=TOL, atol=TOL)


def test_resnet_bad_inputs():
    model = models.ResNet20(10, norm=None, in_channels=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"ResNet20: x must have shape \(n, \*, \*, 3\)"):
        model(jnp.ones((2, 8, 8, 1)))
    with pytest.raises(ValueError, match="shortcut"):
        models.ResNet20(10, shortcut="B", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="width_multiplier"):
        models.ResNet20(10, 0, rngs=nnx.Rngs(0))


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


# ---------------------------------------------------------------- transformer


def _tiny_transformer(seed=0, **kw):
    return models.Transformer(7, 8, 2, 2, 6, rngs=nnx.Rngs(seed), **kw)


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


# ---------------------------------------------------------------- all models


ALL_MODELS = {
    "mlp": (lambda r: MLP(4, 3, 2, 2, norm="batch", rngs=r), lambda: _normal(0, (3, 4))),
    "resnet": (lambda r: models.ResNet20(3, norm="batch", in_channels=1, rngs=r),
               lambda: _normal(0, (2, 4, 4, 1))),
    "attention": (lambda r: models.Attention(3, param="KQ", rngs=r),
                  lambda: _normal(0, (2, 4, 3))),
    "lsa": (lambda r: models.LinearSelfAttention(2, 1, rngs=r), lambda: _normal(0, (2, 4, 3))),
    "transformer": (lambda r: _tiny_transformer(), lambda: jnp.asarray([[1, 2, 3, 4, 5, 6]] * 2)),
}


@pytest.mark.parametrize("name", sorted(ALL_MODELS))
def test_models_through_nnx_adapter_and_determinism(name):
    """Same seed -> identical state; landscape.nnx's eval-mode pure apply (jitted) reproduces
    the module in eval mode; train mode returns updated BatchNorm statistics."""
    from landscape import nnx as lnnx

    make, data = ALL_MODELS[name]
    a, b = make(nnx.Rngs(3)), make(nnx.Rngs(3))
    chex.assert_trees_all_equal(_np(nnx.state(a)), _np(nnx.state(b)))
    x = data()
    fm = lnnx.functional(a, mode="eval")
    out = jax.jit(fm.apply)(fm.params, x)
    a.eval()
    np.testing.assert_allclose(out, a(x), rtol=10 * TOL, atol=10 * TOL)
    assert out.dtype == FLOAT
    for leaf in jax.tree.leaves(nnx.state(a)):
        assert leaf.dtype == FLOAT
    if fm.state:  # BatchNorm models: train mode must hand back new statistics
        tm = lnnx.functional(b, mode="train")
        _, new_state = jax.jit(tm.apply_with_state)(tm.params, tm.state, x)
        changed = jax.tree.map(lambda u, v: not np.allclose(u, v), tm.state, new_state)
        assert all(jax.tree.leaves(changed))


# ---------------------------------------------------------------- initialisers


def test_lecun_normal_distribution_and_trace_consistency():
    """Chunked draws follow the truncated normal of flax's lecun_normal (KS test vs scipy), are
    deterministic in the key, and agree between the eager and the traced path."""
    from scipy import stats

    from landscape.models import init

    shape = (50, 3, 70)  # 10,500 entries: three chunks; fan_in = 150
    a = np.asarray(init.lecun_normal(jax.random.key(0), shape, FLOAT))
    assert a.shape == shape and a.dtype == FLOAT
    std = (1 / 150) ** 0.5 / init.TRUNCATED_STD
    ks = stats.kstest(a.ravel() / std, stats.truncnorm(-2, 2).cdf)
    assert ks.pvalue > 1e-3
    np.testing.assert_allclose(a.std(), (1 / 150) ** 0.5, rtol=0.03)
    np.testing.assert_array_equal(a, init.lecun_normal(jax.random.key(0), shape, FLOAT))
    assert not np.array_equal(a, init.lecun_normal(jax.random.key(1), shape, FLOAT))
    traced = jax.jit(lambda k: init.lecun_normal(k, shape, FLOAT))(jax.random.key(0))
    np.testing.assert_allclose(traced, a, rtol=1e-5, atol=1e-6)
    b = np.asarray(init.normal(0.5)(jax.random.key(2), (5000,), FLOAT))
    assert stats.kstest(b / 0.5, "norm").pvalue > 1e-3

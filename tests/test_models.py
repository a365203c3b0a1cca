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
    chex.assert_shape(model(_normal(0, (3, 8, 8, 1))), (3, 10))
    chex.assert_shape(model(_normal(0, (2, 5, 7, 1))), (2, 10))  # any spatial size
    assert count_params(model) == _cnn_count(1, [4, 8, 16], 9, 10, norm)
    assert count_params(model) == models.cnn_num_params(1, 4, 3, 10, 9, norm)


def test_cnn2d_digits_size_for_curvature_benchmark():
    """A BatchNorm-free digits CNN with 20k-60k parameters is buildable (default config)."""
    model = CNN2D(rngs=nnx.Rngs(0))
    assert 20_000 <= count_params(model) <= 60_000
    assert count_params(model) == _cnn_count(1, [16, 32, 64], 9, 10, None)
    assert not jax.tree.leaves(nnx.state(model, nnx.BatchStat))


@pytest.mark.parametrize("norm", [None, "batch"])
def test_cnn1d_shapes_and_param_count(norm):
    model = CNN1D(10, width=4, num_layers=3, norm=norm, rngs=nnx.Rngs(0))
    chex.assert_shape(model(_normal(0, (3, 40))), (3, 10))
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

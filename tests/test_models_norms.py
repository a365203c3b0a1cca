"""Norm layers, train/eval modes, determinism, the nnx adapter over every model, initialisers."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models_common import FLOAT, TOL, _normal, _np, _params, _tiny_transformer
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from landscape import models
from landscape.models import CNN1D, CNN2D, MLP

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

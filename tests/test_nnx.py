"""The NNX adapter: pure functions equal the stateful model, and state is never dropped."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import landscape.nnx as lnnx
from landscape import models


class _Net(nnx.Module):
    def __init__(self, rngs, rate=0.0):
        self.lin = nnx.Linear(5, 6, rngs=rngs)
        self.bn = nnx.BatchNorm(6, rngs=rngs)
        self.drop = nnx.Dropout(rate, rngs=rngs)
        self.out = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.bn(self.lin(x)))))


def _batch(n=16):
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"x": jax.random.normal(k1, (n, 5)), "y": jax.random.randint(k2, (n,), 0, 3)}


def test_eval_loss_equals_the_model_and_leaves_it_untouched():
    model = _Net(nnx.Rngs(0))
    batch = _batch()
    loss_fn, params, state = lnnx.loss_fn(model, "cross_entropy", mode="eval")
    assert model.bn.use_running_average is False  # the caller's model keeps its mode
    model.eval()
    want = optax.softmax_cross_entropy_with_integer_labels(model(batch["x"]), batch["y"]).mean()
    np.testing.assert_allclose(loss_fn(params, batch), want, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(loss_fn)(params, batch), want, rtol=1e-6)
    chex.assert_trees_all_equal_structs(jax.grad(loss_fn)(params, batch), params)


def test_train_mode_returns_updated_batchnorm_statistics():
    model = _Net(nnx.Rngs(0))
    batch = _batch()
    loss_fn, params, state = lnnx.loss_fn(model, "cross_entropy", mode="train")
    loss, new_state = jax.jit(loss_fn)(params, batch, state)
    reference = nnx.clone(model)
    reference.train()
    out = reference(batch["x"])
    want = optax.softmax_cross_entropy_with_integer_labels(out, batch["y"]).mean()
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_allclose(new_state["bn"]["mean"], reference.bn.mean[...], rtol=1e-6)
    assert not np.allclose(new_state["bn"]["mean"], state["bn"]["mean"])
    np.testing.assert_array_equal(model.bn.mean[...], state["bn"]["mean"])  # not mutated


def test_apply_refuses_to_drop_train_mode_statistics():
    fm = lnnx.functional(_Net(nnx.Rngs(0)), mode="train")
    with pytest.raises(ValueError, match="apply_with_state"):
        fm.apply(fm.params, _batch()["x"])


def test_dropout_needs_an_explicit_key_and_is_deterministic_given_it():
    loss_fn, params, state = lnnx.loss_fn(_Net(nnx.Rngs(0), rate=0.5), mode="train")
    batch = _batch()
    with pytest.raises(ValueError, match="key"):
        loss_fn(params, batch, state)
    a = loss_fn(params, batch, state, jax.random.key(1))[0]
    b = loss_fn(params, batch, state, jax.random.key(1))[0]
    c = loss_fn(params, batch, state, jax.random.key(2))[0]
    assert a == b and a != c


def test_merge_round_trips_and_checks_structure():
    model = models.MLP(4, 8, 2, 3, rngs=nnx.Rngs(1))
    fm = lnnx.functional(model)
    x = jnp.ones((2, 4))
    rebuilt = fm.merge(jax.tree.map(lambda p: 2 * p, fm.params))
    twice = lnnx.functional(rebuilt).params
    chex.assert_trees_all_close(twice, jax.tree.map(lambda p: 2 * p, fm.params))
    np.testing.assert_allclose(fm.apply(fm.params, x), model(x), rtol=1e-6)
    with pytest.raises(ValueError, match="params"):
        fm.apply({"oops": jnp.zeros(3)}, x)


def test_bad_mode_and_model_are_named():
    with pytest.raises(ValueError, match="mode"):
        lnnx.functional(_Net(nnx.Rngs(0)), mode="inference")
    with pytest.raises(TypeError, match="model"):
        lnnx.functional(lambda x: x)


def test_models_take_a_key_instead_of_rngs():
    """``key=k`` builds the same weights as ``rngs=nnx.Rngs(params=k)``; one of them is required."""
    import jax
    import numpy as np
    import pytest
    from flax import nnx

    from landscape import models

    k = jax.random.key(7)
    for build in (lambda **kw: models.MLP(4, 8, 1, 3, **kw),
                  lambda **kw: models.CNN1D(width=4, num_layers=2, **kw),
                  lambda **kw: models.ResNet20(norm="batch", **kw)):
        a = nnx.state(build(key=k), nnx.Param)
        b = nnx.state(build(rngs=nnx.Rngs(params=k)), nnx.Param)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(TypeError, match="exactly one of rngs"):
        models.MLP(4, 8, 1, 3)
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        models.MLP(4, 8, 1, 3, key=3)

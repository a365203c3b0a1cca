"""Permutation specs: builders and infer_spec against the real models, by random permutations."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from landscape import connectivity as C
from landscape import nnx as lnnx
from landscape.models.cnn import CNN1D, CNN2D
from landscape.models.mlp import MLP
from landscape.models.resnet import ResNet20

KEY = jax.random.key(0)


@functools.cache
def _model(kind, norm, residual=False):
    if kind == "mlp":
        m = MLP(6, 8, 3, 3, norm=norm, residual=residual, rngs=nnx.Rngs(0))
        x = jax.random.normal(KEY, (5, 6))
    elif kind == "cnn1d":
        m = CNN1D(3, width=4, num_layers=2, norm=norm, rngs=nnx.Rngs(0))
        x = jax.random.normal(KEY, (5, 12))
    elif kind == "cnn2d":
        m = CNN2D(3, width=4, num_layers=2, norm=norm, rngs=nnx.Rngs(0))
        x = jax.random.normal(KEY, (5, 6, 6))
    else:
        m = ResNet20(3, norm=norm, in_channels=1, rngs=nnx.Rngs(0))
        x = jax.random.normal(KEY, (3, 8, 8))
    fm = lnnx.functional(m, mode="eval")
    tree = {"params": fm.params, "state": fm.state}
    # BatchNorm running statistics start at (0, 1); make them generic so permuting them matters
    tree = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(KEY, v.shape, v.dtype), tree)
    return (lambda t, x: fm.apply(t["params"], x, state=t["state"])), tree, x


CASES = [("mlp", None, False), ("mlp", "layer", True), ("mlp", "batch", False),
         ("mlp", "batch", True), ("cnn1d", "batch", False), ("cnn2d", None, False),
         ("resnet20", "batch", False)]


@pytest.mark.parametrize("kind,norm,residual", CASES)
def test_builtin_and_inferred_specs_are_symmetries(kind, norm, residual):
    f, tree, x = _model(kind, norm, residual)
    builders = {"mlp": lambda t: C.mlp_spec(t, residual=residual), "resnet20": C.resnet_spec}
    built = builders.get(kind, C.cnn_spec)(tree)
    inferred = C.infer_spec(f, tree, x)
    for spec in (built, inferred):
        assert C.check_spec(spec, f, tree, x, key=jax.random.key(1), num_trials=2).passed
    # the inferred spec finds the same groups of axes as the hand-written builder
    as_sets = lambda s: {frozenset(ax) for ax in s.perm_to_axes.values()}
    assert as_sets(built) == as_sets(inferred)
    if residual:
        assert len(built.names) == 1  # one residual stream


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_check_spec_by_hypothesis_over_permutations(seed):
    f, tree, x = _model("mlp", "layer", residual=True)
    spec = C.mlp_spec(tree, residual=True)
    perm = C.random_permutation(spec, jax.random.key(seed))
    ref = f(tree, x)
    out = f(C.apply_permutation(spec, perm, tree), x)
    tol = 1e-10 if ref.dtype == jnp.float64 else 2e-5
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


def test_check_spec_rejects_incomplete_spec():
    f, tree, x = _model("mlp", None)
    spec = C.mlp_spec(tree)
    name, size, axes = spec.entries[0]
    broken = C.make_spec({name: axes[:-1], **{n: a for n, _, a in spec.entries[1:]}},
                         spec.sizes)
    with pytest.raises(ValueError, match="not a symmetry"):
        C.check_spec(broken, f, tree, x, key=jax.random.key(2))
    assert not C.check_spec(broken, f, tree, x, key=jax.random.key(2),
                            raise_on_failure=False).passed


def test_apply_inverse_and_compose():
    _, tree, _ = _model("cnn1d", "batch")
    spec = C.cnn_spec(tree)
    p, q = C.random_permutation(spec, jax.random.key(3)), C.random_permutation(spec, KEY)
    moved = C.apply_permutation(spec, p, tree)
    chex.assert_trees_all_equal(C.apply_inverse_permutation(spec, p, moved), tree)
    both = C.apply_permutation(spec, p, C.apply_permutation(spec, q, tree))
    chex.assert_trees_all_equal(C.apply_permutation(spec, C.compose_permutations(p, q), tree),
                                both)
    chex.assert_trees_all_equal(C.apply_permutation(spec, C.identity_permutation(spec), tree),
                                tree)


def test_apply_permutation_is_jittable():
    _, tree, _ = _model("mlp", None)
    spec = C.mlp_spec(tree)
    perm = C.random_permutation(spec, KEY)
    out = jax.jit(lambda p, t: C.apply_permutation(spec, p, t))(perm, tree)
    chex.assert_trees_all_equal(out, C.apply_permutation(spec, perm, tree))


def test_block_axis_from_channel_last_flatten():
    def f(p, x):
        h = jax.nn.relu(jax.lax.conv_general_dilated(x, p["conv"], (1,), "SAME",
                                                     dimension_numbers=("NWC", "WIO", "NWC")))
        h = h.reshape(h.shape[0], -1)
        return jax.nn.relu(h @ p["dense"]) @ p["out"]

    k1, k2, k3, k4 = jax.random.split(KEY, 4)
    p = {"conv": jax.random.normal(k1, (3, 1, 4)), "dense": jax.random.normal(k2, (40, 5)),
         "out": jax.random.normal(k3, (5, 2))}
    x = jax.random.normal(k4, (3, 10, 1))
    spec = C.infer_spec(f, p, x)
    assert spec.sizes == {"P_0": 4, "P_1": 5}
    assert ("['dense']", 0) in spec.perm_to_axes["P_0"]  # block axis of size 10 * 4
    assert C.check_spec(spec, f, p, x, key=k4).passed


def test_concatenate_keeps_other_axes_and_fixes_its_own():
    # Hidden units survive a concatenation along the example axis (one permutation), while a
    # concatenation along the feature axis fixes the joined units (no permutation through it).
    k1, k2, k3 = jax.random.split(KEY, 3)
    p = {"w1": jax.random.normal(k1, (6, 5)), "w2": jax.random.normal(k2, (5, 3))}
    x = jax.random.normal(k3, (4, 6))

    def along_examples(p, x):
        h = jax.nn.relu(x @ p["w1"])
        return jnp.concatenate([h, 2.0 * h], axis=0) @ p["w2"]

    spec = C.infer_spec(along_examples, p, x)
    assert spec.sizes == {"P_0": 5}
    assert set(spec.perm_to_axes["P_0"]) == {("['w1']", 1), ("['w2']", 0)}
    assert C.check_spec(spec, along_examples, p, x, key=k3).passed

    q = {"w1": p["w1"], "w2": jax.random.normal(k2, (11, 3))}

    def along_features(p, x):
        h = jax.nn.relu(x @ p["w1"])
        return jnp.concatenate([h, x], axis=1) @ p["w2"]

    with pytest.raises(ValueError, match="no hidden-unit permutation"):
        C.infer_spec(along_features, q, x)


def test_spec_errors_are_clear():
    _, tree, _ = _model("mlp", None)
    spec = C.mlp_spec(tree)
    other = MLP(6, 5, 3, 3, rngs=nnx.Rngs(0))
    small = lnnx.functional(other).params
    with pytest.raises(ValueError, match="size"):
        C.apply_permutation(spec, C.identity_permutation(spec), {"params": small, "state": {}})
    with pytest.raises(ValueError, match="not in params"):
        C.apply_permutation(spec, C.identity_permutation(spec), {"params": {}, "state": {}})
    with pytest.raises(ValueError, match="keys"):
        C.apply_permutation(spec, {"P_0": jnp.arange(8)}, tree)
    with pytest.raises(ValueError, match="shape"):
        bad = {**C.identity_permutation(spec), "P_0": jnp.arange(7)}
        C.apply_permutation(spec, bad, tree)
    with pytest.raises(TypeError, match="PermutationSpec"):
        C.check_spec_fits({"P_0": ()}, tree)
    with pytest.raises(ValueError, match="two permutations"):
        C.make_spec({"a": (("k", 0),), "b": (("k", 0),)}, {"a": 2, "b": 2})
    with pytest.raises(ValueError, match="no 'kernel'"):
        C.mlp_spec({"w": jnp.ones(3)})


def test_infer_spec_in_batchnorm_train_mode():
    # train mode updates running statistics on the side; dead-code elimination keeps those
    # updates from pinning the hidden axes
    m = MLP(6, 8, 2, 3, norm="batch", rngs=nnx.Rngs(0))
    fm = lnnx.functional(m, mode="train")
    f = lambda p, x: fm.apply_with_state(p, fm.state, x)[0]
    x = jax.random.normal(KEY, (16, 6))
    spec = C.infer_spec(f, fm.params, x)
    assert C.check_spec(spec, f, fm.params, x, key=jax.random.key(1), num_trials=2).passed
    as_sets = lambda s: {frozenset(ax) for ax in s.perm_to_axes.values()}
    assert as_sets(spec) == as_sets(C.mlp_spec(fm.params))

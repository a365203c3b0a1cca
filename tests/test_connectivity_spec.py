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


# --- infer_spec on merges whose unit axis is not the fastest factor, and on loops -------------

def _normal(i, shape):
    return jax.random.normal(jax.random.fold_in(KEY, i), shape)


def _assert_symmetry(spec, f, p, x, num_trials=2):
    """check_spec, plus an explicit f(pi(theta)) == f(theta) with independent NumPy draws of
    every permutation of the spec."""
    assert C.check_spec(spec, f, p, x, key=jax.random.key(7), num_trials=num_trials).passed
    f = jax.jit(f)
    ref = np.asarray(f(p, x))
    tol = 1e-10 if ref.dtype == np.float64 else 1e-4
    rng = np.random.default_rng(0)
    for _ in range(num_trials):
        perm = {name: jnp.asarray(rng.permutation(size)) for name, size in spec.sizes.items()}
        assert any(not np.array_equal(v, np.arange(v.size)) for v in perm.values())
        out = np.asarray(f(C.apply_permutation(spec, perm, p), x))
        np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * max(1.0, np.abs(ref).max()))


def _axis_sets(spec):
    return {frozenset(ax) for ax in spec.perm_to_axes.values()}


def _nchw_flatten(p, x):  # PyTorch-style: channels are the slow factor of the flattened axis
    h = jax.nn.relu(jax.lax.conv_general_dilated(x, p["conv"], (1, 1), "SAME"))  # NCHW, OIHW
    return jax.nn.relu(h.reshape(h.shape[0], -1) @ p["dense"]) @ p["out"]


def _repeat(p, x):  # each unit becomes 3 adjacent features: the unit is the slow factor
    h = jnp.repeat(jax.nn.relu(x @ p["w1"]), 3, axis=1)
    return jax.nn.relu(h @ p["dense"]) @ p["out"]


def _tiled_twice(p, x):  # (n, 2, 2, C) -> (n, 2, 2C) -> (n, 4C): C stays the fastest factor
    h = jax.nn.relu(x @ p["w1"])
    h = jnp.broadcast_to(h[:, None, None, :], (h.shape[0], 2, 2, h.shape[1]))
    h = h.reshape(h.shape[0], 2, -1).reshape(h.shape[0], -1)
    return jax.nn.relu(h @ p["dense"]) @ p["out"]


def _two_inner_classes(p, x):  # one flat axis, block of a 6-unit and of a 4-unit layer
    a, b = jax.nn.relu(x @ p["wa"]), jax.nn.relu(x @ p["wb"])
    fa = jnp.broadcast_to(a[:, None, :], (a.shape[0], 4, 6)).reshape(a.shape[0], 24)
    fb = jnp.broadcast_to(b[:, None, :], (b.shape[0], 6, 4)).reshape(b.shape[0], 24)
    return jax.nn.relu((fa + fb) @ p["dense"]) @ p["out"]


MERGES = [
    # name, f, {leaf: shape}, input shape, the permutable groups (by hand)
    ("nchw_flatten", _nchw_flatten, {"conv": (4, 2, 3, 3), "dense": (100, 5)}, (3, 2, 5, 5),
     {frozenset({("['dense']", 1), ("['out']", 0)})}),
    ("repeat", _repeat, {"w1": (4, 6), "dense": (18, 5)}, (3, 4),
     {frozenset({("['dense']", 1), ("['out']", 0)})}),
    ("tiled_twice", _tiled_twice, {"w1": (4, 6), "dense": (24, 5)}, (3, 4),
     {frozenset({("['w1']", 1), ("['dense']", 0)}), frozenset({("['dense']", 1), ("['out']", 0)})}),
    ("two_inner_classes", _two_inner_classes, {"wa": (4, 6), "wb": (4, 4), "dense": (24, 5)},
     (3, 4), {frozenset({("['dense']", 1), ("['out']", 0)})}),
]


@pytest.mark.parametrize("name,f,shapes,x_shape,groups", MERGES, ids=[m[0] for m in MERGES])
def test_infer_spec_merges_permute_only_the_fastest_factor(name, f, shapes, x_shape, groups):
    # A unit axis merged as the fast factor is a block axis; merged as a slow factor (NCHW
    # flatten, repeat) it would move contiguous blocks, which a spec cannot express: fixed.
    # Two different unit classes sharing one flat axis cannot both be followed: fixed.
    shapes = {**shapes, "out": (5, 2)}
    p = {k: _normal(i, s) for i, (k, s) in enumerate(shapes.items())}
    x = _normal(99, x_shape)
    spec = C.infer_spec(f, p, x)
    _assert_symmetry(spec, f, p, x)
    assert _axis_sets(spec) == groups


def _rnn_params():
    return {"whh": _normal(0, (5, 5)), "wxh": _normal(1, (4, 5)), "out": _normal(2, (5, 2))}


def _rnn_fori(p, x):  # static trip count: lowered to scan with no xs
    h0 = jnp.zeros((x.shape[0], p["whh"].shape[0]), x.dtype)
    h = jax.lax.fori_loop(0, 3, lambda i, h: jnp.tanh(h @ p["whh"] + x @ p["wxh"]), h0)
    return h @ p["out"]


def _rnn_while(p, x):  # traced trip count: lowered to while
    h0 = jnp.zeros((x.shape[0], p["whh"].shape[0]), x.dtype)
    h = jax.lax.fori_loop(0, p["steps"], lambda i, h: jnp.tanh(h @ p["whh"] + x @ p["wxh"]),
                          h0)
    return h @ p["out"]


def _rnn_sequence(p, xs):  # scan over time, xs (T, n, d): outputs stacked and summed
    def step(h, x_t):
        h = jnp.tanh(h @ p["whh"] + x_t @ p["wxh"])
        return h, h @ p["out"]
    h0 = jnp.zeros((xs.shape[1], p["whh"].shape[0]), xs.dtype)
    h, ys = jax.lax.scan(step, h0, xs, reverse=True)
    return ys.sum(0) + h @ p["out"]


@pytest.mark.parametrize("f,x_shape", [(_rnn_fori, (3, 4)), (_rnn_while, (3, 4)),
                                       (_rnn_sequence, (6, 3, 4))],
                         ids=["fori_scan", "fori_while", "scan_over_time"])
def test_infer_spec_ties_recurrent_carry(f, x_shape):
    # h_{t+1} = tanh(W_hh h_t + W_xh x): the hidden permutation acts on both axes of W_hh
    p = _rnn_params()
    if f is _rnn_while:
        p["steps"] = jnp.asarray(3)
    x = _normal(9, x_shape)
    spec = C.infer_spec(f, p, x)
    _assert_symmetry(spec, f, p, x)
    a2p = spec.axes_to_perm
    assert set(a2p["['whh']"]) == {0, 1}
    assert a2p["['whh']"][0] == a2p["['whh']"][1]
    assert _axis_sets(spec) == {frozenset({("['whh']", 0), ("['whh']", 1), ("['wxh']", 1),
                                           ("['out']", 0)})}


def test_infer_spec_scan_over_stacked_layers():
    # params with a leading layer axis, lax.scan over them: the layer axis is never permuted;
    # axis k of the per-layer slice is axis k + 1 of the stacked leaf; the residual carry is one
    # permutation for every layer, each layer's hidden units another (shared across layers)
    p = {"inp": _normal(0, (4, 5)), "out": _normal(1, (5, 2)),
         "layers": {"w1": _normal(2, (3, 5, 7)), "b1": _normal(3, (3, 7)),
                    "w2": _normal(4, (3, 7, 5))}}

    def f(p, x):
        def layer(h, w):
            return h + jax.nn.relu(h @ w["w1"] + w["b1"]) @ w["w2"], None
        h, _ = jax.lax.scan(layer, x @ p["inp"], p["layers"])
        return h @ p["out"]

    x = _normal(9, (3, 4))
    spec = C.infer_spec(f, p, x)
    _assert_symmetry(spec, f, p, x)
    L = "['layers']"
    assert _axis_sets(spec) == {
        frozenset({("['inp']", 1), (f"{L}['w1']", 1), (f"{L}['w2']", 2), ("['out']", 0)}),
        frozenset({(f"{L}['w1']", 2), (f"{L}['b1']", 1), (f"{L}['w2']", 1)})}


def test_infer_spec_nested_loops():
    # a fori_loop inside a scan over stacked layers: all carries tie into one permutation
    p = {"inp": _normal(0, (4, 5)), "out": _normal(1, (5, 2)),
         "layers": {"w": _normal(2, (3, 5, 5)), "b": _normal(3, (3, 5))}}

    def f(p, x):
        def layer(h, w):
            return jax.lax.fori_loop(0, 2, lambda i, g: jnp.tanh(g @ w["w"] + w["b"]), h), None
        return jax.lax.scan(layer, jax.nn.relu(x @ p["inp"]), p["layers"])[0] @ p["out"]

    x = _normal(9, (3, 4))
    spec = C.infer_spec(f, p, x)
    _assert_symmetry(spec, f, p, x)
    assert spec.axes_to_perm["['layers']['w']"].keys() == {1, 2}
    assert len(spec.names) == 1


def test_infer_spec_fixes_closed_over_constants():
    # a constant captured by the function is not a parameter, so it is never permuted: the
    # units it scales stay fixed, the next hidden layer is still found
    scale = jnp.linspace(0.5, 2.0, 6)
    p = {"w1": _normal(0, (4, 6)), "w2": _normal(1, (6, 5)), "w3": _normal(2, (5, 2))}

    def f(p, x):
        return jax.nn.relu((jnp.tanh(x @ p["w1"]) * scale) @ p["w2"]) @ p["w3"]

    x = _normal(9, (3, 4))
    spec = C.infer_spec(f, p, x)
    _assert_symmetry(spec, f, p, x)
    assert _axis_sets(spec) == {frozenset({("['w2']", 1), ("['w3']", 0)})}

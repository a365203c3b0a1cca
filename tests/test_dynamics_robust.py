"""Robust aggregation of per-example gradients (winsorised mean, median of means).

References: explicit float64 NumPy loops over coordinates (sort, clip to the (c+1)-th order
statistics, average; ``numpy.array_split`` groups, their means, ``numpy.median``), exact
invariances (c = 0 and k = 1 give the mean; permutations of the examples, inside groups for the
median of means), the optax chain against the aggregate followed by an SGD step, and errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from landscape.dynamics import gradient_stats as gs
from landscape.dynamics import robust

X64 = jax.config.jax_enable_x64
RTOL = 1e-12 if X64 else 2e-6
ATOL = 1e-12 if X64 else 2e-6
SHAPES = {"w": (3, 2), "b": (2,), "s": ()}


def _tree(n, seed=0, ties=False):
    """A pytree of per-example gradients ``(n, *s)`` (float64 NumPy) and its jnp version."""
    rng = np.random.default_rng(seed)
    tree = {}
    for name, s in SHAPES.items():
        x = rng.normal(size=(n,) + s)
        tree[name] = np.round(2 * x) if ties else x  # ties: repeated values per coordinate
    dtype = jnp.result_type(float)
    return tree, jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)


def _ref_winsorized(x, c):
    """Coordinate by coordinate: sort, clip to [x_(c+1), x_(n-c)], average (float64 loop)."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    out = np.empty(flat.shape[1])
    for j in range(flat.shape[1]):
        col = flat[:, j]
        srt = sorted(col)
        lo, hi = srt[c], srt[n - 1 - c]
        out[j] = sum(min(max(v, lo), hi) for v in col) / n
    return out.reshape(x.shape[1:])


def _ref_mom(x, k):
    """``numpy.array_split`` into k groups, group means, coordinate-wise ``numpy.median``."""
    means = np.stack([g.mean(axis=0) for g in np.array_split(x, k, axis=0)])
    return np.median(means, axis=0)


def _close(a, b):
    for name in SHAPES:
        np.testing.assert_allclose(np.asarray(a[name], np.float64), b[name], rtol=RTOL,
                                   atol=ATOL, err_msg=name)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n,c", [(9, 0), (9, 1), (9, 4), (10, 2), (3, 1), (19, 9)])
def test_winsorized_mean_matches_sorting_loop(n, c, ties):
    """c < 8 takes the max-and-remove path, (19, 9) the full sort."""
    ref, tree = _tree(n, seed=n + c, ties=ties)
    out = jax.jit(robust.winsorized_mean, static_argnums=1)(tree, c)
    _close(out, {k: _ref_winsorized(v, c) for k, v in ref.items()})
    assert jax.tree.map(jnp.shape, out) == SHAPES


@pytest.mark.parametrize("n,k", [(10, 1), (10, 2), (10, 3), (10, 4), (7, 7), (12, 3)])
def test_median_of_means_matches_group_loop(n, k):
    ref, tree = _tree(n, seed=3 * n + k)
    out = jax.jit(robust.median_of_means, static_argnums=1)(tree, k)
    _close(out, {key: _ref_mom(v, k) for key, v in ref.items()})
    assert robust.group_sizes(n, k).tolist() == [len(g) for g in np.array_split(np.arange(n), k)]


def test_c0_and_k1_are_the_mean_and_aggregate_dispatches():
    ref, tree = _tree(8, seed=1)
    mean = {k: v.mean(axis=0) for k, v in ref.items()}
    _close(robust.winsorized_mean(tree, 0), mean)
    _close(robust.median_of_means(tree, 1), mean)
    _close(robust.aggregate(tree, "mean"), mean)
    _close(robust.aggregate(tree, "winsorize", c=2),
           {k: _ref_winsorized(v, 2) for k, v in ref.items()})
    _close(robust.aggregate(tree, "median_of_means", num_groups=4),
           {k: _ref_mom(v, 4) for k, v in ref.items()})


def test_permutation_invariances():
    n, k = 12, 3
    _, tree = _tree(n, seed=2)
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)  # any order: the winsorised mean is symmetric in the examples
    within = np.concatenate([g[rng.permutation(len(g))]  # order changes inside each group only
                             for g in np.array_split(np.arange(n), k)])
    take = lambda t, p: jax.tree.map(lambda x: x[p], t)  # noqa: E731
    w, w_p = robust.winsorized_mean(tree, 2), robust.winsorized_mean(take(tree, perm), 2)
    m, m_p = robust.median_of_means(tree, k), robust.median_of_means(take(tree, within), k)
    for a, b in ((w, w_p), (m, m_p)):
        for key in SHAPES:
            np.testing.assert_allclose(a[key], b[key], rtol=RTOL, atol=ATOL)
    # ... but moving examples across groups changes the median of means (it is order-dependent)
    m_x = robust.median_of_means(take(tree, perm), k)
    assert not np.allclose(m["w"], m_x["w"], rtol=RTOL, atol=ATOL)


def test_outliers_are_bounded():
    """c extreme examples move W_c no further than the (c+1)-th value; k=3 resists one group."""
    n, c = 9, 2
    x = np.linspace(-1.0, 1.0, n)[:, None] * np.ones((1, 4))
    x_bad = x.copy()
    x_bad[:c] = 1e6  # c examples pushed far out on every coordinate (the mean is ~2e5)
    bad = np.asarray(robust.winsorized_mean({"a": jnp.asarray(x_bad)}, c)["a"])
    assert np.all(np.abs(bad) <= 1.0 + 1e-6)  # within the range of the clean examples
    # ... and c + 1 outliers are no longer bounded
    x_bad[: c + 1] = 1e6
    assert np.all(np.asarray(robust.winsorized_mean({"a": jnp.asarray(x_bad)}, c)["a"]) > 1e5)
    y = np.zeros((9, 2))
    y[:3] = 1e6  # one group of three corrupted: the median of 3 group means ignores it
    np.testing.assert_allclose(robust.median_of_means({"a": jnp.asarray(y)}, 3)["a"], 0.0)


@pytest.mark.parametrize("kind,kw,ref",
                         [("winsorize", {"c": 1}, lambda v: _ref_winsorized(v, 1)),
                          ("median_of_means", {"num_groups": 3}, lambda v: _ref_mom(v, 3))])
def test_optax_chain_with_per_example_grads(kind, kw, ref):
    n, lr = 6, 0.1
    ref_g, tree = _tree(n, seed=5)
    params = jax.tree.map(lambda x: jnp.ones(x.shape[1:], x.dtype), tree)
    opt = optax.chain(robust.robust_aggregation(kind, **kw), optax.sgd(lr, momentum=0.9))
    state = opt.init(params)
    updates, state = jax.jit(opt.update)(tree, state, params)
    _close(updates, {k: -lr * ref(v) for k, v in ref_g.items()})
    # the second step sees the momentum of the first: -lr (g2 + 0.9 g1)
    updates, state = opt.update(tree, state, params)
    _close(updates, {k: -lr * 1.9 * ref(v) for k, v in ref_g.items()})


def _loss(params, batch):
    pred = jnp.tanh(batch["x"] @ params["w"]) @ params["v"]
    return 0.5 * jnp.mean((pred - batch["y"]) ** 2)


def _model():
    k = jax.random.split(jax.random.key(0), 4)
    params = {"w": jax.random.normal(k[0], (3, 4)), "v": jax.random.normal(k[1], (4,))}
    data = {"x": jax.random.normal(k[2], (8, 3)), "y": jax.random.normal(k[3], (8,))}
    return params, data


def test_robust_value_and_grad_against_per_example_grads():
    params, data = _model()
    loss, g = jax.jit(robust.robust_value_and_grad(_loss, "mean"))(params, data)
    ref_loss, ref_g = jax.value_and_grad(_loss)(params, data)
    np.testing.assert_allclose(loss, ref_loss, rtol=RTOL)
    for key in params:
        np.testing.assert_allclose(g[key], ref_g[key], rtol=1e-9 if X64 else 1e-5, atol=ATOL)
    pe = gs.per_example_grads(_loss, params, data)
    _, g = robust.robust_value_and_grad(_loss, "winsorize", c=2, chunk_size=3)(params, data)
    want = robust.winsorized_mean(pe, 2)
    for key in params:
        np.testing.assert_allclose(g[key], want[key], rtol=RTOL, atol=ATOL)


def test_train_with_robust_value_and_grad_equals_a_hand_written_loop():
    """``train.train(value_and_grad=...)``: each step applies the winsorised gradient of the
    step's batch (the batches of ``train.batch_at``), checked against a Python loop over the
    NumPy reference; a wrong gradient structure and a stateful run are rejected."""
    from landscape import train

    params, data = _model()
    key, lr, c, b = jax.random.key(4), 0.1, 1, 4
    vg = robust.robust_value_and_grad(_loss, "winsorize", c=c)
    res = train.train(_loss, params, optax.sgd(lr), data, key=key, num_steps=5, batch_size=b,
                      value_and_grad=vg, progress=False)
    data_key = jax.random.split(key)[0]
    want = params
    for t in range(5):
        pe = gs.per_example_grads(_loss, want, train.batch_at(data, t, data_key, b))
        want = jax.tree.map(lambda w, g: w - lr * _ref_winsorized(np.asarray(g, np.float64), c),
                            want, pe)
    for name in params:
        np.testing.assert_allclose(res.params[name], want[name], rtol=1e-10 if X64 else 1e-5,
                                   atol=ATOL)
    with pytest.raises(ValueError, match="structure, shapes and dtypes of params"):
        train.train(_loss, params, optax.sgd(lr), data, key=key, num_steps=1,
                    value_and_grad=lambda p, bt: (_loss(p, bt), {"w": p["w"]}), progress=False)
    with pytest.raises(TypeError, match="value_and_grad must be callable"):
        train.train(_loss, params, optax.sgd(lr), data, key=key, num_steps=1,
                    value_and_grad=3, progress=False)
    with pytest.raises(ValueError, match="stateless losses"):
        train.train(lambda p, bt, s, k=None: (_loss(p, bt), s), params, optax.sgd(lr), data,
                    key=key, num_steps=1, model_state={"m": jnp.zeros(())}, value_and_grad=vg,
                    progress=False)


@pytest.mark.single_dtype
def test_errors_name_the_argument():
    _, tree = _tree(5)
    with pytest.raises(ValueError, match="c must satisfy 2 c < n"):
        robust.winsorized_mean(tree, 3)
    with pytest.raises(ValueError, match="c must be"):
        robust.winsorized_mean(tree, -1)
    with pytest.raises(TypeError, match="c must be an int"):
        robust.winsorized_mean(tree, 1.5)
    with pytest.raises(ValueError, match="num_groups"):
        robust.median_of_means(tree, 6)
    with pytest.raises(ValueError, match="num_groups"):
        robust.median_of_means(tree, 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        robust.aggregate(tree, "trimmed")
    with pytest.raises(ValueError, match="kind must be one of"):
        robust.robust_aggregation("median")
    with pytest.raises(ValueError, match="share the leading example axis"):
        robust.winsorized_mean({"a": jnp.ones((4, 2)), "b": jnp.ones((5,))}, 1)
    with pytest.raises(ValueError, match="floating arrays with a leading example axis"):
        robust.median_of_means({"a": jnp.ones(())}, 1)
    with pytest.raises(ValueError, match="non-empty pytree"):
        robust.winsorized_mean({}, 0)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        robust.robust_value_and_grad(None)
    params = jax.tree.map(lambda x: x[0], tree)
    opt = robust.robust_aggregation("winsorize", c=1)
    with pytest.raises(ValueError, match="per-example gradients"):
        opt.update(params, opt.init(params), params)  # a mean gradient, not per-example ones

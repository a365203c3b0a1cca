"""Weight distance from initialisation (per leaf / per layer), its training probe, and the
``a + b log t`` fit, against explicit NumPy (float64) computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from landscape import train
from landscape.dynamics.distance import (
    distance_probe,
    fit_log_growth,
    layer_name,
    weight_distance,
)

FLOAT = jax.dtypes.canonicalize_dtype(jnp.float64)
TOL = 1e-12 if FLOAT == jnp.float64 else 2e-6


def _params(seed):
    ks = jax.random.split(jax.random.key(seed), 4)
    return {"hidden": [{"kernel": jax.random.normal(ks[0], (3, 4), FLOAT),
                        "bias": jax.random.normal(ks[1], (4,), FLOAT)}],
            "head": {"kernel": jax.random.normal(ks[2], (4, 2), FLOAT)},
            "w": jax.random.normal(ks[3], (5,), FLOAT)}


def test_weight_distance_against_numpy():
    p, p0 = _params(0), _params(1)
    wd = jax.jit(weight_distance)(p, p0)
    a = jax.tree.map(lambda x: np.asarray(x, np.float64), p)
    b = jax.tree.map(lambda x: np.asarray(x, np.float64), p0)
    leaf = jax.tree.map(lambda x, y: np.linalg.norm((x - y).ravel()), a, b)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, rtol=TOL), wd.per_leaf, leaf)
    sq = lambda *ks: sum(np.sum((_get(a, k) - _get(b, k)) ** 2) for k in ks)  # noqa: E731
    layers = {"hidden/0": sq(("hidden", 0, "kernel"), ("hidden", 0, "bias")),
              "head": sq(("head", "kernel")), "w": sq(("w",))}
    assert set(wd.per_layer) == set(layers)
    for name, s in layers.items():
        np.testing.assert_allclose(wd.per_layer[name], np.sqrt(s), rtol=TOL)
    total = np.linalg.norm(np.concatenate([(x - y).ravel() for x, y in
                                           zip(jax.tree.leaves(a), jax.tree.leaves(b))]))
    np.testing.assert_allclose(wd.total, total, rtol=TOL)
    assert float(weight_distance(p, p).total) == 0.0


def _get(tree, keys):
    for k in keys:
        tree = tree[k]
    return tree


@pytest.mark.single_dtype
def test_layer_name_and_errors():
    paths = jax.tree_util.tree_flatten_with_path({"a": [{"k": 1}], "b": 2})[0]
    assert [layer_name(p) for p, _ in paths] == ["a/0", "b"]
    assert layer_name(()) == ""
    with pytest.raises(ValueError, match="params0 and params"):
        weight_distance({"a": jnp.zeros(2)}, {"a": jnp.zeros(3)})
    t = np.arange(5)
    with pytest.raises(ValueError, match="d must have shape"):
        fit_log_growth(t, np.ones(4))
    with pytest.raises(ValueError, match="t_min must be positive"):
        fit_log_growth(t, np.ones(5), t_min=0)
    with pytest.raises(ValueError, match="at least two distinct"):
        fit_log_growth(t, np.ones(5), t_min=4)
    with pytest.raises(ValueError, match="finite"):
        fit_log_growth(t, np.array([0, 1, np.nan, 2, 3.0]))


def test_fit_log_growth_against_numpy_polyfit():
    t = np.arange(0, 60)
    rng = np.random.default_rng(0)
    d = 0.3 + 1.2 * np.log(np.maximum(t, 1))[None] + 0.2 * rng.standard_normal((3, 60))
    d[:, 0] = 0.0  # t = 0 is left out of the fit
    fit = fit_log_growth(t, jnp.asarray(d, FLOAT))
    used = t >= 1
    for i in range(3):
        b, a = np.polyfit(np.log(t[used]), d[i, used], 1)
        pred = a + b * np.log(t[used])
        r2 = 1 - np.sum((d[i, used] - pred) ** 2) / np.sum((d[i, used] - d[i, used].mean()) ** 2)
        np.testing.assert_allclose(fit.slope[i], b, rtol=50 * TOL)
        np.testing.assert_allclose(fit.intercept[i], a, rtol=50 * TOL, atol=50 * TOL)
        np.testing.assert_allclose(fit.r2[i], r2, rtol=50 * TOL)
    assert fit.num_points == 59 and fit.slope.shape == (3,)
    # an exact logarithm is recovered with R^2 = 1; t_min leaves out the early points
    exact = fit_log_growth(t, 2.0 - 0.5 * np.log(np.maximum(t, 1)) + 9.0 * (t < 10), t_min=10)
    np.testing.assert_allclose([exact.intercept, exact.slope, exact.r2], [2.0, -0.5, 1.0],
                               rtol=50 * TOL, atol=50 * TOL)
    assert exact.num_points == 50
    assert np.isnan(fit_log_growth(t, np.ones(60)).r2)


def test_distance_probe_against_numpy_gradient_descent():
    """Full-batch GD on least squares: the probe's record at step t is ||w_t - w_0|| of the
    NumPy iterates (before the update of step t), per layer too."""
    kx, ky = jax.random.split(jax.random.key(2))
    data = {"x": jax.random.normal(kx, (8, 3), FLOAT), "y": jax.random.normal(ky, (8,), FLOAT)}
    p0 = {"lin": {"w": jnp.asarray([0.5, -0.2, 0.1], FLOAT), "b": jnp.asarray(0.3, FLOAT)}}

    def lf(p, batch):
        return 0.5 * jnp.mean((batch["x"] @ p["lin"]["w"] + p["lin"]["b"] - batch["y"]) ** 2)

    eta, steps = 0.2, 6
    res = train.train(lf, p0, optax.sgd(eta), data, key=jax.random.key(0), num_steps=steps,
                      probes={"d": distance_probe(every=2)})
    x, y = np.asarray(data["x"], np.float64), np.asarray(data["y"], np.float64)
    w, b = np.asarray(p0["lin"]["w"], np.float64), 0.3
    w0, b0, ref = w.copy(), b, []
    for _ in range(steps):
        ref.append(np.sqrt(np.sum((w - w0) ** 2) + (b - b0) ** 2))
        r = x @ w + b - y
        w, b = w - eta * x.T @ r / len(y), b - eta * r.mean()
    np.testing.assert_array_equal(res.trace_steps["d"], [0, 2, 4])
    np.testing.assert_allclose(res.trace["d"]["total"], ref[::2], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(res.trace["d"]["per_layer"]["lin"], ref[::2], rtol=1e-5,
                               atol=1e-7)

"""Gradient flow (RK4, sharpness-set step) against closed forms, GD, and bad inputs.

References: on a least-squares problem ``L(w) = 1/(2n) ||X w - y||^2`` the flow is
``w(tau) = w* + expm(-H tau) (w0 - w*)`` with ``H = X^T X / n`` (scipy's ``expm``, float64);
the spectrum of ``H`` is planted, so the sharpness is known exactly. GD with step ``eta`` is
``O(eta)`` away from the flow at time ``t eta`` (a hand-written GD loop checks the recorded GD
trajectory). The losses along a gradient flow never increase (an exact invariant).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.flatten_util import ravel_pytree

from landscape import dynamics
from landscape.dynamics import flow as gf

X64 = jax.config.jax_enable_x64
DT = jnp.float64 if X64 else jnp.float32
TIMES = np.array([0.0, 0.1, 1.0, 5.0])  # one length: one compilation per static setting
SPECTRUM = np.array([4.0, 2.0, 1.0, 0.5, 0.25, 0.1])


def _lsq(spectrum, n=8, seed=0):
    """X (n, d) with X^T X / n = Q diag(spectrum) Q^T, targets y, the minimiser, a start."""
    rng = np.random.default_rng(seed)
    d = len(spectrum)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    u, _ = np.linalg.qr(rng.normal(size=(n, d)))
    x = np.sqrt(n) * (u * np.sqrt(spectrum)) @ q.T
    y = rng.normal(size=n)
    h = x.T @ x / n
    w_star = np.linalg.solve(h, x.T @ y / n)
    return x, y, h, w_star, rng.normal(size=d)


def _flat(p):
    return jnp.concatenate([p["a"], p["b"]["c"].ravel()])


def lsq_loss(p, batch):
    return 0.5 * jnp.mean((batch["x"] @ _flat(p) - batch["y"]) ** 2)


def _problem(spectrum=SPECTRUM):
    x, y, h, w_star, w0 = _lsq(np.asarray(spectrum, float))
    data = {"x": jnp.asarray(x, DT), "y": jnp.asarray(y, DT)}
    params = {"a": jnp.asarray(w0[:2], DT), "b": {"c": jnp.asarray(w0[2:].reshape(2, -1), DT)}}
    exact = lambda t: w_star + scipy.linalg.expm(-h * t) @ (w0 - w_star)  # noqa: E731
    return params, data, exact, w0


def _rows(p):
    return np.concatenate([np.asarray(p["a"]), np.asarray(p["b"]["c"]).reshape(
        p["a"].shape[0], -1)], axis=1)


def _errors(res, exact, w0):
    ref = np.stack([exact(t) for t in np.asarray(res.times, np.float64)])
    return np.linalg.norm(_rows(res.params) - ref, axis=1) / np.linalg.norm(w0)


def _flow(params, data, times=TIMES, **kw):
    kw.setdefault("batch_size", 3)  # three batches of 3, 3 and 2: the exact batched mean
    return gf.gradient_flow(lsq_loss, params, data, times, key=jax.random.key(0), **kw)


# ----------------------------------------------------------------------------- closed forms


def test_matches_the_matrix_exponential_on_a_quadratic_with_pytree_params():
    params, data, exact, w0 = _problem()
    scale = 0.05 if X64 else 0.25  # RK4's local error ~ (h S)^5 / 120 relative
    res = _flow(params, data, step_scale=scale)
    assert jax.tree.structure(res.params) == jax.tree.structure(params)
    assert res.params["b"]["c"].shape == (len(TIMES), 2, 2) and res.losses.dtype == DT
    err = _errors(res, exact, w0)
    assert err[0] == 0 or err[0] < 1e-7  # w(0) is the start itself
    assert np.max(err) < (2e-8 if X64 else 2e-6), err
    np.testing.assert_allclose(res.sharpness, 4.0, rtol=1e-6 if X64 else 1e-5)
    losses = [float(lsq_loss(jax.tree.map(lambda a, j=j: a[j], res.params), data))
              for j in range(len(TIMES))]
    np.testing.assert_allclose(res.losses, losses, rtol=1e-12 if X64 else 1e-5)
    assert bool(res.reached) and int(res.num_rejected) == 0
    # steps of h = scale / 4 to tau = 5 (each requested time hit exactly), 4 gradients each
    assert abs(int(res.num_steps) - 20 / scale) <= 4
    assert int(res.num_grads) == 4 * int(res.num_steps) + 1 and int(res.num_hvps) > 0


def test_stiff_quadratic_with_a_spread_of_ten_thousand():
    params, data, exact, w0 = _problem([100.0, 10.0, 1.0, 0.1, 0.03, 0.01])
    res = _flow(params, data, times=np.array([0.0, 0.01, 1.0, 40.0]), step_scale=1.0)
    err = _errors(res, exact, w0)
    # the first step has h S = 1 on the stiff mode (RK4's relative error there is ~2%, and
    # that mode has decayed by e^-1 by then); later the stiff modes are gone and the slow ones
    # are resolved to ~1e-8 (float32: ~20 rounding errors over the 4000 steps)
    assert err[1] < 5e-3 and np.max(err[2:]) < (1e-8 if X64 else 2e-5), err
    np.testing.assert_allclose(res.sharpness, 100.0, rtol=1e-5)
    assert 3990 <= int(res.num_steps) <= 4010  # 40 * 100 / 1


def test_halving_the_step_scale_divides_the_error_by_about_sixteen():
    params, data, exact, w0 = _problem()
    times = np.array([0.0, 0.5, 1.0, 2.0])  # multiples of every step h = c / 4 below
    scales = (0.5, 0.25, 0.125) if X64 else (0.5, 0.25)  # float32: stay above rounding
    errs = [_errors(_flow(params, data, times=times, step_scale=c), exact, w0)[1]
            for c in scales]
    ratios = np.asarray(errs[:-1]) / np.asarray(errs[1:])
    # RK4: 2^4 = 16 as h -> 0; at h S = 0.5 the top mode's error is still pre-asymptotic (~20)
    assert np.all((14 < ratios) & (ratios < 22)), (errs, ratios)
    if X64:
        assert abs(ratios[1] - 16) < abs(ratios[0] - 16), ratios  # and it tends to 16


def test_rtol_controls_the_local_error_of_a_coarse_step():
    params, data, exact, w0 = _problem()
    coarse = _errors(_flow(params, data, step_scale=2.5), exact, w0)
    res = _flow(params, data, step_scale=2.5, rtol=1e-6)
    tight = _errors(res, exact, w0)
    assert np.max(coarse) > 1e-3 and np.max(tight) < 1e-6 * 5, (coarse, tight)
    assert np.all(np.asarray(res.error_estimates)[1:] <= 1e-6 * np.linalg.norm(w0) * 3)
    assert int(res.num_steps) > 16  # more steps than the 12 of h S = 2.5


def test_losses_never_increase_along_the_flow_and_jit_gives_the_same_result():
    params, data, _, _ = _problem()
    res = _flow(params, data)
    jitted = jax.jit(lambda p: _flow(p, data).losses)(params)
    np.testing.assert_allclose(jitted, res.losses, rtol=1e-12 if X64 else 1e-6)
    assert np.all(np.diff(np.asarray(res.losses)) <= (1e-12 if X64 else 1e-6))


# ----------------------------------------------------------------------------- GD vs flow


def _mlp_problem():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(16, 3)), DT)
    data = {"x": x, "y": jnp.tanh(x @ jnp.asarray(rng.normal(size=(3,)), DT))}
    params = {"W1": jnp.asarray(rng.normal(size=(3, 5)) / np.sqrt(3), DT),
              "b1": jnp.zeros(5, DT), "W2": jnp.asarray(rng.normal(size=(5,)) / np.sqrt(5), DT)}
    return params, data


def mlp_loss(p, batch):
    out = jnp.tanh(batch["x"] @ p["W1"] + p["b1"]) @ p["W2"]
    return 0.5 * jnp.mean((out - batch["y"]) ** 2)


def _hand_gd(params, data, eta, num_steps):
    grad = jax.jit(jax.grad(mlp_loss))
    out = [params]
    for _ in range(num_steps):
        g = grad(out[-1], data)
        out.append(jax.tree.map(lambda w, d: w - eta * d, out[-1], g))
    return out


def test_gd_with_a_small_step_tracks_the_flow_to_first_order_in_eta():
    params, data = _mlp_problem()
    at_tau_one = []
    for eta in (0.04, 0.02, 0.01):  # one step count and record grid: one compilation
        c = gf.compare_gd_flow(mlp_loss, params, data, learning_rate=eta, num_steps=101,
                               every=5, key=jax.random.key(0))
        np.testing.assert_array_equal(c.gd.steps, np.arange(21) * 5)
        np.testing.assert_allclose(c.flow.times, c.gd.steps * eta, rtol=1e-6)
        assert c.distance[0] == 0 and np.all(c.distance[1:] > 0)
        at_tau_one.append(c.distance[int(round(1 / eta)) // 5])  # flow time t eta = 1
        if eta == 0.04:  # the recorded GD iterates are w_t (after t updates)
            ref = _hand_gd(params, data, eta, 100)
            for j, t in enumerate(c.gd.steps):
                flat = ravel_pytree(ref[int(t)])[0]
                np.testing.assert_allclose(c.gd.params[j], flat, rtol=1e-5, atol=1e-6)
    # GD - flow = O(eta): halving eta about halves the distance at the same flow time
    ratios = np.asarray(at_tau_one[1:]) / np.asarray(at_tau_one[:-1])
    assert np.all((0.45 < ratios) & (ratios < 0.55)), at_tau_one


def test_distance_of_pytrees_and_ravelled_rows():
    a = {"u": jnp.ones((3, 2)), "v": jnp.zeros((3,))}
    b = {"u": jnp.zeros((3, 2)), "v": jnp.full((3,), 2.0)}
    np.testing.assert_allclose(gf.gd_flow_distance(a, b), np.sqrt(2 + 4) * np.ones(3))
    rows = jnp.stack([ravel_pytree(jax.tree.map(lambda x, j=j: x[j], a))[0]
                      for j in range(3)])
    np.testing.assert_allclose(gf.gd_flow_distance(rows, b), gf.gd_flow_distance(a, b))
    with pytest.raises(ValueError, match="same records"):
        gf.gd_flow_distance(rows[:2], b)
    assert gf.first_crossing([0, 10, 20], [1.0, 2.5, 3.0], 2.0) == 10
    assert gf.first_crossing([0, 10, 20], [1.0, 1.5, 1.9], 2.0) == -1


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("times, match", [
    (np.array([0.0, 1.0, 1.0]), "strictly increasing"),
    (np.array([0.0, 2.0, 1.0]), "strictly increasing"),
    (np.array([-1.0, 1.0]), "nonnegative"),
    (np.array([0.0, np.nan]), "finite"),
    (np.zeros((2, 2)), "1-D"),
    (np.zeros((0,)), "non-empty"),
])
def test_bad_times_raise_naming_times(times, match):
    params, data, _, _ = _problem()
    with pytest.raises(ValueError, match=f"times.*{match}|{match}.*times"):
        _flow(params, data, times=times)


@pytest.mark.parametrize("kw, name", [
    ({"step_scale": 0.0}, "step_scale"), ({"step_scale": -1.0}, "step_scale"),
    ({"rtol": 0.0}, "rtol"), ({"max_step": -0.5}, "max_step"),
    ({"sharpness_every": 0}, "sharpness_every"), ({"max_steps": 0}, "max_steps"),
])
def test_bad_settings_raise_naming_the_argument(kw, name):
    params, data, _, _ = _problem()
    with pytest.raises(ValueError, match=name):
        _flow(params, data, **kw)


def test_non_finite_start_divergence_and_step_budget():
    params, data, _, _ = _problem()
    bad = jax.tree.map(lambda x: x.at[0].set(jnp.nan) if x.ndim == 1 else x, params)
    with pytest.raises(ValueError, match="params"):
        _flow(bad, data)
    with pytest.raises(ValueError, match="dataset loss"):
        gf.gradient_flow(lambda p, b: jnp.log(p["w"][0]) * jnp.mean(b["x"]),
                         {"w": -jnp.ones(2, DT)}, {"x": jnp.ones((3,), DT)}, TIMES,
                         key=jax.random.key(0))
    # L = -w^3/3: dw/dtau = w^2 blows up at tau = 1/w0 = 0.5; the curvature -2w is negative,
    # so no step bound applies and the first long step overflows
    with pytest.raises(FloatingPointError, match="non-finite"):
        gf.gradient_flow(lambda p, b: -jnp.sum(p["w"] ** 3) / 3 + 0 * jnp.mean(b["x"]),
                         {"w": jnp.full((1,), 2.0, DT)}, {"x": jnp.ones((3,), DT)},
                         np.array([0.0, 1.0, 1e30, 1e35]), key=jax.random.key(0))
    with pytest.warns(gf.FlowNotFinished, match="max_steps"):
        res = _flow(params, data, max_steps=10)
    assert int(res.status) == 1 and np.isnan(np.asarray(res.losses)[-1])
    assert np.isfinite(np.asarray(res.losses)[0])


def test_the_package_exports_the_flow():
    assert dynamics.gradient_flow is gf.gradient_flow
    assert dynamics.compare_gd_flow is gf.compare_gd_flow



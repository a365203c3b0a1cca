"""LSA = one GD step (von Oswald et al.), comparison metrics, and the logistic implicit bias."""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from landscape import attention as att
from landscape import data


@pytest.mark.single_dtype  # runs in float64 whatever the global flag
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 5), N=st.integers(1, 8),
       eta=st.floats(0.05, 3.0), with_w0=st.booleans())
def test_lsa_construction_equals_one_gd_step_x64(seed, d, N, eta, with_w0):
    with jax.enable_x64(True):
        k1, k2 = jax.random.split(jax.random.key(seed))
        t = data.linear_regression_tasks(k1, 6, N, d, noise_std=0.1, dtype=jnp.float64)
        W0 = jax.random.normal(k2, (d,), jnp.float64) if with_w0 else None
        params = att.lsa_construction(d, eta, N, W0=W0, dtype=jnp.float64)
        pred = att.lsa_predict(params, data.icl_tokens(t))
        if with_w0:  # the layer outputs Delta W x_q; one GD step predicts (W0 + Delta W) x_q
            pred = pred + t["x_query"] @ W0
        gd = att.gd_step_prediction(t, eta, W0)
        # independent reference: the closed-form GD step in numpy
        x, y, xq = (np.asarray(t[k]) for k in ("x", "y", "x_query"))
        w0 = np.zeros(d) if W0 is None else np.asarray(W0)
        w1 = w0[None] - eta * np.einsum("bn,bnd->bd", np.einsum("bnd,d->bn", x, w0) - y, x) / N
        ref = np.einsum("bd,bd->b", w1, xq)
    np.testing.assert_allclose(np.asarray(gd), ref, rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(np.asarray(pred) - ref)) <= 1e-6 * max(1.0, np.abs(ref).max())


def test_lsa_construction_float32_accuracy():
    t = data.linear_regression_tasks(jax.random.key(0), 32, 10, 5)
    pred = att.lsa_predict(att.lsa_construction(5, 0.8, 10), data.icl_tokens(t))
    ref = att.gd_step_prediction(t, 0.8)
    np.testing.assert_allclose(np.asarray(pred), np.asarray(ref), rtol=1e-4, atol=1e-5)


def test_optimal_learning_rate_beats_a_grid_and_comparison_of_construction_is_perfect():
    with jax.enable_x64(True):
        t = data.linear_regression_tasks(jax.random.key(1), 512, 10, 4, dtype=jnp.float64)
        eta = float(att.optimal_gd_learning_rate(t))
        losses = jax.jit(jax.vmap(
            lambda e: jnp.mean((att.gd_step_prediction(t, e) - t["y_query"]) ** 2)))
        grid = np.linspace(0.1, 4.0, 40)
        assert np.all(np.asarray(losses(jnp.asarray([eta]))) <= np.asarray(losses(grid)) + 1e-12)
        gd = att.lsa_construction(4, eta, 10, dtype=jnp.float64)
        # rescale factors between P and W_V (and W_K, W_Q): the same function, cosine still 1
        scaled = {**gd, "P": 3.0 * gd["P"], "W_V": gd["W_V"] / 3.0, "W_K": -2.0 * gd["W_K"],
                  "W_Q": -0.5 * gd["W_Q"]}
        cmp = att.compare_with_gd(scaled, t, eta)
        np.testing.assert_allclose(float(cmp.pred_diff), 0.0, atol=1e-12)
        np.testing.assert_allclose([float(cmp.sensitivity_cos), float(cmp.weight_cos)], 1.0,
                                   atol=1e-12)
        np.testing.assert_allclose(float(cmp.loss_lsa), float(cmp.loss_gd), rtol=1e-12)
        other = att.compare_with_gd(att.init_lsa(jax.random.key(2), 4, 1.0, jnp.float64), t, eta)
        assert float(other.weight_cos) < 0.9 and float(other.pred_diff) > 0.01


def test_train_lsa_smoke_approaches_gd():
    with jax.enable_x64(True):
        ev = data.linear_regression_tasks(jax.random.key(0), 256, 5, 2, dtype=jnp.float64)
        eta = att.optimal_gd_learning_rate(ev)
        p0 = att.init_lsa(jax.random.key(1), 2, dtype=jnp.float64)
        _, steps, rec = att.train_lsa(jax.random.key(2), p0, ev, eta, num_steps=300,
                                      batch_size=64, learning_rate=1e-2, record_every=100)
    assert list(steps) == [0, 100, 200, 300]
    assert float(rec.loss_lsa[-1]) < float(rec.loss_lsa[0])
    assert float(rec.sensitivity_cos[-1]) > 0.9
    with pytest.raises(ValueError, match="multiple of record_every"):
        att.train_lsa(jax.random.key(2), p0, ev, eta, num_steps=10, record_every=3)


def test_train_lsa_equals_a_hand_written_adam_loop_on_its_documented_tasks():
    """Adam with a cosine-decayed step on fresh tasks from the documented per-step keys
    (``split(split(key, C)[t // r], r)[t % r]``), recorded every ``r`` steps, against a plain
    Python loop."""
    with jax.enable_x64(True):
        ev = data.linear_regression_tasks(jax.random.key(0), 32, 4, 2, dtype=jnp.float64)
        p0 = att.init_lsa(jax.random.key(1), 2, scale=0.3, dtype=jnp.float64)
        key, eta = jax.random.key(2), 0.7
        out, steps, rec = att.train_lsa(key, p0, ev, eta, num_steps=6, batch_size=8,
                                        learning_rate=0.05, record_every=3, noise_std=0.1)
        opt = optax.adam(optax.cosine_decay_schedule(0.05, 6))
        p, state, ref = p0, opt.init(p0), [att.compare_with_gd(p0, ev, eta)]
        for chunk_key in jax.random.split(key, 2):
            for k in jax.random.split(chunk_key, 3):
                tasks = data.linear_regression_tasks(k, 8, 4, 2, noise_std=0.1,
                                                     dtype=jnp.float64)
                upd, state = opt.update(jax.grad(att.lsa_loss)(p, tasks), state, p)
                p = optax.apply_updates(p, upd)
            ref.append(att.compare_with_gd(p, ev, eta))
    np.testing.assert_array_equal(steps, [0, 3, 6])
    for name in p:
        np.testing.assert_allclose(np.asarray(out[name]), np.asarray(p[name]), rtol=1e-12,
                                   atol=1e-14)
    for field, got in rec._asdict().items():
        want = [float(getattr(r, field)) for r in ref]
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, err_msg=field)
    assert abs(float(rec.loss_lsa[2]) - float(rec.loss_lsa[0])) > 1e-3  # the run moved


def test_hard_margin_svm_matches_cvxpy_and_gd_direction_improves():
    with jax.enable_x64(True):
        X, y = att.asymmetric_separable_2d(jax.random.key(0), dtype=jnp.float64)
        w_hat, qp = att.hard_margin_svm(X, y)
        steps = np.array([10, 100, 1000, 10_000, 100_000])
        ws, losses = att.logistic_gd(X, y, steps)
    Xn, yn = np.asarray(X), np.asarray(y)
    w = cp.Variable(2)
    cp.Problem(cp.Minimize(cp.sum_squares(w)), [cp.multiply(yn, Xn @ w) >= 1]).solve(
        solver="CLARABEL")
    assert bool(qp.converged)
    np.testing.assert_allclose(np.asarray(w_hat), w.value, rtol=1e-6)
    m = att.implicit_bias_metrics(ws, losses, steps, X, y, w_hat)
    assert np.all(np.diff(m.direction_gap) < 0) and np.all(np.diff(m.loss) < 0)
    assert np.all(m.margin_gap >= -1e-12)
    # ws[k] is exactly the GD iterate after steps[k] steps (independent numpy GD loop)
    wn = np.zeros(2)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(yn * (Xn @ wn)))
        wn = wn + (yn * p) @ Xn / len(yn)
    np.testing.assert_allclose(np.asarray(ws[1]), wn, rtol=1e-10)
    with pytest.raises(ValueError, match="steps must be >= 2"):
        att.implicit_bias_metrics(ws, losses, np.array([1, 100, 1000, 10_000, 100_000]), X, y,
                                  w_hat)


def test_inverse_log_fit_recovers_known_rate():
    steps = np.geomspace(100, 1e6, 20)
    fit = att.fit_inverse_log_rate(steps, 0.7 / (np.log(steps) + 1.3))
    assert abs(fit.a - 0.7) < 1e-9 and abs(fit.c - 1.3) < 1e-8 and fit.r2 > 1 - 1e-12
    with pytest.raises(ValueError, match="positive"):
        att.fit_inverse_log_rate(steps, -0.7 / np.log(steps))


def test_gd_follows_soudry_asymptotics_on_pruned_data():
    """w_t - w_hat log t -> w_tilde at the predicted power rate; t * loss -> ||w_hat||^2 / eta."""
    with jax.enable_x64(True):
        X, y = att.asymmetric_separable_2d(jax.random.fold_in(jax.random.key(0), 1),
                                           dtype=jnp.float64)
        w_full, _ = att.hard_margin_svm(X, y)
        Xp, yp = att.prune_near_support(X, y, w_full, ratio=1.5)
        w_hat, qp = att.hard_margin_svm(jnp.asarray(Xp), jnp.asarray(yp))
        steps = np.geomspace(1e3, 3e5, 11).astype(np.int64)
        ws, losses = att.logistic_gd(jnp.asarray(Xp), jnp.asarray(yp), steps)
    assert len(yp) < len(y)
    np.testing.assert_allclose(np.asarray(w_hat), np.asarray(w_full), rtol=1e-8)  # SVM unchanged
    pred = att.asymptotic_prediction(Xp, yp, w_hat, qp.lam, learning_rate=1.0)
    assert pred.spans and pred.support.sum() == 2 and pred.theta >= 1.5
    m = att.implicit_bias_metrics(ws, losses, steps, Xp, yp, w_hat, pred)
    assert np.all(np.diff(m.residual) < 0) and m.residual[-1] < 0.05 * np.linalg.norm(ws[-1])
    slope = np.polyfit(np.log(steps[-5:]), np.log(m.residual[-5:]), 1)[0]
    assert abs(-slope - pred.exponent) < 0.05 * pred.exponent  # measured: 0.5505 vs 0.5478
    np.testing.assert_allclose(m.loss[-1] * steps[-1], pred.loss_times_t, rtol=0.01)
    np.testing.assert_allclose(m.norm_over_log[-1], np.linalg.norm(w_hat), rtol=0.15)
    with pytest.raises(ValueError, match="ratio"):
        att.prune_near_support(Xp, yp, w_hat, ratio=1.0)
    with pytest.raises(ValueError, match="alpha"):
        att.asymptotic_prediction(Xp, yp, w_hat, qp.lam[:-1])

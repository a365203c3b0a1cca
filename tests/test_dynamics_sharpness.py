"""Sharpness during training, preconditioned sharpness and stability thresholds.

References: dense float64 ``jax.hessian`` / ``eigh`` at recorded steps of real training runs, the
update optax actually applies (for the preconditioner read from its state), and the exact
stability boundary of the optimizers themselves on quadratics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_curvature_oracles import (
    apply_fn,
    dense_ggn64,
    dense_hessian64,
    loss_fn_for,
    make_data,
    make_params,
    to64,
)

from landscape import curvature, dynamics, train
from landscape.tree import ravel

X64 = jax.config.jax_enable_x64
REL = 1e-9 if X64 else 2e-4
TOL = 1e-9 if X64 else 1e-5  # eigsh's default; the probe's own default (1e-4) is for tracking


def _record_params():
    return train.probe(lambda ctx, s: (ctx.params, s), every=1)


def test_sharpness_probe_matches_dense_hessian_at_recorded_steps():
    """A GD run tracked every step: every recorded top-2 pair is within its certificate (plus
    rounding) of the dense float64 eigenvalues at the same params."""
    kind = "mse"
    data, params = make_data(jax.random.key(1), kind), make_params(jax.random.key(0))
    loss = loss_fn_for(kind)
    probes = {"S": dynamics.sharpness_probe(loss, data, k=2, every=1, batch_size=10,
                                            tol=TOL),
              "p": _record_params()}
    res = train.train(loss, params, optax.sgd(0.3), data, key=jax.random.key(2), num_steps=40,
                      probes=probes)
    tr = res.trace["S"]
    assert tr["eigenvalues"].shape == (40, 2) and res.trace_steps["S"].tolist() == list(range(40))
    assert np.all(tr["status"] == 0)
    for t in (0, 7, 23, 39):
        p_t = jax.tree.map(lambda a, t=t: a[t], res.trace["p"])
        top = np.linalg.eigvalsh(dense_hessian64(kind, p_t, data))[::-1][:2]
        err = np.abs(tr["eigenvalues"][t] - top)
        assert np.all(err <= tr["residuals"][t] + 1e-12 * top[0]), (t, err, tr["residuals"][t])
        np.testing.assert_allclose(tr["eigenvalues"][t], top, rtol=REL)


def test_warm_start_spends_fewer_products_than_a_cold_start():
    """The tracked estimate reuses the previous eigenvectors; a cold start from a random vector
    at the same params needs more Lanczos steps (both to the same tolerance)."""
    kind = "cross_entropy"
    data, params = make_data(jax.random.key(3), kind), make_params(jax.random.key(4))
    loss = loss_fn_for(kind)
    res = train.train(loss, params, optax.sgd(0.5), data, key=jax.random.key(2), num_steps=30,
                      probes={"S": dynamics.sharpness_probe(loss, data, k=1, tol=TOL),
                              "p": _record_params()})
    warm = res.trace["S"]["num_matvecs"][1:]
    cold = []
    for t in range(1, 30, 4):
        p_t = jax.tree.map(lambda a, t=t: a[t], res.trace["p"])
        r = dynamics.sharpness(loss, p_t, data, key=jax.random.key(t), k=1, tol=TOL)
        cold.append(int(r.num_matvecs))
        np.testing.assert_allclose(res.trace["S"]["eigenvalues"][t, 0], r.eigenvalues[0],
                                   rtol=10 * REL)
    assert np.median(warm) < np.median(cold), (warm, cold)


def test_sharpness_of_the_ggn_matches_the_dense_ggn():
    kind = "cross_entropy"
    data, params = make_data(jax.random.key(5), kind), make_params(jax.random.key(6))
    op = lambda p: curvature.ggn(apply_fn, kind, p, data, batch_size=7, check=False)
    r = dynamics.sharpness(loss_fn_for(kind), params, data, key=jax.random.key(0), k=3,
                           operator=op)
    top = np.linalg.eigvalsh(dense_ggn64(kind, params, data))[::-1][:3]
    np.testing.assert_allclose(r.eigenvalues, top, rtol=REL)


# ------------------------------------------------------------------ preconditioner from state

def _steps(opt, params, grads_seq):
    state = opt.init(params)
    for g in grads_seq:
        _, state = opt.update(g, state, params)
    return state


def _grads(params, n, seed=0):
    keys = jax.random.split(jax.random.key(seed), n)
    return [jax.tree.map(lambda p, k=k: jax.random.normal(k, p.shape, p.dtype), params)
            for k in keys]


@pytest.mark.parametrize("case", ["adam", "adamw", "rmsprop", "rmsprop_eps_out",
                                  "rmsprop_corrected", "adagrad", "injected_adam"])
def test_preconditioner_is_the_factor_optax_applies(case):
    """``D`` read from the state after an update, times the (bias-corrected) first moment,
    is exactly the update optax returned (with ``b1 = 0`` the first moment is the gradient)."""
    params = make_params(jax.random.key(0))
    lr = 0.1
    opts = {
        "adam": (optax.adam(lr, b1=0.0, b2=0.95, eps=1e-3, eps_root=1e-4), "adam",
                 {"b2": 0.95, "eps": 1e-3, "eps_root": 1e-4}),
        "adamw": (optax.adamw(lr, b1=0.0, b2=0.9, weight_decay=0.0), "adamw", {"b2": 0.9}),
        "rmsprop": (optax.rmsprop(lr, decay=0.8, eps=1e-2), "rmsprop",
                    {"decay": 0.8, "eps": 1e-2}),
        "rmsprop_eps_out": (optax.rmsprop(lr, decay=0.8, eps=1e-2, eps_in_sqrt=False), "rmsprop",
                            {"decay": 0.8, "eps": 1e-2, "eps_in_sqrt": False}),
        "rmsprop_corrected": (optax.rmsprop(lr, decay=0.8, eps=1e-2, bias_correction=True),
                              "rmsprop", {"decay": 0.8, "eps": 1e-2}),
        "adagrad": (optax.adagrad(lr, eps=1e-3), "adagrad", {"eps": 1e-3}),
        "injected_adam": (optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=0.0,
                                                               b2=0.9, eps=0.05), "adam", {}),
    }
    opt, rule, args = opts[case]
    gs = _grads(params, 4)
    state = _steps(opt, params, gs[:3])
    update, new_state = opt.update(gs[3], state, params)
    D = dynamics.preconditioner(new_state, params, rule, args)
    expect = jax.tree.map(lambda d, g: -lr * d * g, D, gs[3])
    for a, b in zip(jax.tree.leaves(update), jax.tree.leaves(expect)):
        np.testing.assert_allclose(a, b, rtol=1e-12 if X64 else 1e-5, atol=1e-7)
    if case == "injected_adam":  # the injected b2/eps were used, not optax's defaults
        D0 = dynamics.preconditioner(new_state, params, rule, {"b2": 0.999, "eps": 1e-8})
        assert not np.allclose(ravel(D)[0], ravel(D0)[0])


def test_preconditioned_sharpness_matches_dense_from_a_real_adam_state():
    kind = "mse"
    data, params = make_data(jax.random.key(7), kind), make_params(jax.random.key(8))
    loss = loss_fn_for(kind)
    opt = optax.adam(0.05, b2=0.99, eps=1e-4)
    state = opt.init(params)
    for _ in range(5):
        g = jax.grad(loss)(params, data)
        upd, state = opt.update(g, state, params)
        params = optax.apply_updates(params, upd)
    r = dynamics.preconditioned_sharpness(loss, params, data, state, key=jax.random.key(0), k=2,
                                          args={"b2": 0.99, "eps": 1e-4})
    # independent float64 reference: D from the state by the formula, eig(D^1/2 H D^1/2)
    s = state[0]
    nu = ravel(to64(s.nu))[0]
    D = 1.0 / (np.sqrt(nu / (1 - 0.99 ** int(s.count))) + 1e-4)
    H = dense_hessian64(kind, params, data)
    top = np.linalg.eigvalsh(np.sqrt(D)[:, None] * H * np.sqrt(D)[None, :])[::-1][:2]
    np.testing.assert_allclose(r.eigenvalues, top, rtol=REL)
    assert np.all(np.abs(r.eigenvalues - top) <= r.residuals + 1e-12 * top[0])


def test_preconditioned_probe_agrees_with_the_function_at_the_same_state():
    kind = "mse"
    data, params = make_data(jax.random.key(9), kind), make_params(jax.random.key(10))
    loss = loss_fn_for(kind)
    n = 6
    opt = optax.adam(0.02)
    ref = train.train(loss, params, opt, data, key=jax.random.key(0), num_steps=n)
    pr = dynamics.sharpness_probe(loss, data, k=1, every=n, preconditioner="adam", tol=TOL)
    res = train.train(loss, params, opt, data, key=jax.random.key(0), num_steps=n + 1,
                      probes={"S": pr})
    tr = res.trace["S"]
    assert res.trace_steps["S"].tolist() == [0, n]
    assert np.isnan(tr["eigenvalues"][0, 0])  # no preconditioner before the first update
    direct = dynamics.preconditioned_sharpness(loss, ref.params, data, ref.opt_state,
                                               key=jax.random.key(1))
    np.testing.assert_allclose(tr["eigenvalues"][1, 0], direct.eigenvalues[0], rtol=10 * REL)
    raw = dynamics.sharpness(loss, ref.params, data, key=jax.random.key(2))
    np.testing.assert_allclose(tr["raw_eigenvalues"][1, 0], raw.eigenvalues[0], rtol=10 * REL)


# ------------------------------------------------------------------ thresholds on quadratics

def _quadratic_run(opt, H, steps):
    w = jnp.ones((H.shape[0],), H.dtype)
    state = opt.init(w)

    def body(_, carry):
        w, state = carry
        upd, state = opt.update(H @ w, state, w)
        return optax.apply_updates(w, upd), state

    w, _ = jax.lax.fori_loop(0, steps, body, (w, state))
    return float(jnp.linalg.norm(w))


def _frozen_adam(eta, b1, D):
    """Adam's first moment (no bias correction) with a frozen diagonal preconditioner ``D``."""
    return optax.chain(optax.ema(b1, debias=False),
                       optax.stateless(lambda u, p: D * u), optax.scale(-eta))


@pytest.mark.parametrize("rule", ["gd", "momentum", "nesterov", "adam"])
def test_optimizers_become_unstable_exactly_at_the_threshold(rule):
    """On ``L = 1/2 w^T H w`` the optimizer converges at 0.98 of the critical step size and
    diverges at 1.02 of it, where the critical step size solves threshold(eta) = sharpness."""
    H = jnp.diag(jnp.array([3.0, 1.0, 0.2]))
    beta, b1 = 0.7, 0.9
    D = jnp.array([0.5, 2.0, 1.0])
    S = 3.0 if rule != "adam" else float(jnp.max(D * jnp.diag(H)))  # lambda_max(D H) = 2.0
    # the threshold is proportional to 1/eta: threshold(eta) = threshold(1) / eta
    kw = {"momentum": beta} if rule in ("momentum", "nesterov") else {"b1": b1}
    eta_star = dynamics.stability_threshold(rule, 1.0, **kw) / S
    for factor, stable in ((0.98, True), (1.02, False)):
        eta = factor * eta_star
        opt = {"gd": optax.sgd(eta), "momentum": optax.sgd(eta, momentum=beta),
               "nesterov": optax.sgd(eta, momentum=beta, nesterov=True),
               "adam": _frozen_adam(eta, b1, D)}[rule]
        norm = _quadratic_run(opt, H, 3000)
        assert (norm < 1e-3) if stable else not (norm < 1e3), (rule, factor, norm)


def test_threshold_values_and_errors():
    assert dynamics.stability_threshold("adam", 0.01) == pytest.approx(3800.0)
    assert dynamics.stability_threshold("gd", 0.5) == pytest.approx(4.0)
    assert dynamics.stability_threshold("sgd", 1.0, momentum=0.9) == pytest.approx(3.8)
    assert dynamics.stability_threshold("rmsprop", 2.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="rule"):
        dynamics.stability_threshold("lion", 0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        dynamics.stability_threshold("gd", 0.0)
    with pytest.raises(ValueError, match="momentum"):
        dynamics.stability_threshold("momentum", 0.1, momentum=1.0)


# ------------------------------------------------------------------ bad input

def test_bad_inputs_name_the_argument():
    kind = "mse"
    data, params = make_data(jax.random.key(1), kind), make_params(jax.random.key(0))
    loss = loss_fn_for(kind)
    dim = ravel(params)[0].shape[0]
    with pytest.raises(ValueError, match="k"):
        dynamics.sharpness(loss, params, data, key=jax.random.key(0), k=dim + 1)
    bad = jax.tree.map(lambda p: p * jnp.inf, params)
    with pytest.raises((ValueError, FloatingPointError), match="finite|params"):
        dynamics.sharpness(loss, bad, data, key=jax.random.key(0))
    nan_loss = lambda p, b: loss(p, b) * jnp.nan
    with pytest.raises(ValueError, match="dataset loss"):
        dynamics.sharpness(nan_loss, params, data, key=jax.random.key(0))
    sgd_state = optax.sgd(0.1, momentum=0.9).init(params)
    with pytest.raises(ValueError, match="ScaleByAdamState.*TraceState"):
        dynamics.preconditioned_sharpness(loss, params, data, sgd_state, key=jax.random.key(0))
    fresh = optax.adam(0.1).init(params)
    with pytest.raises(ValueError, match="count 0"):
        dynamics.preconditioned_sharpness(loss, params, data, fresh, key=jax.random.key(0))
    with pytest.raises(ValueError, match="unknown"):
        dynamics.preconditioner(fresh, params, "adam", {"beta2": 0.9})
    with pytest.raises(ValueError, match="preconditioner"):
        dynamics.sharpness_probe(loss, data, preconditioner="lamb")
    with pytest.raises(ValueError, match="k must be <="):
        train.train(loss, params, optax.sgd(0.1), data, key=jax.random.key(0), num_steps=2,
                    probes={"S": dynamics.sharpness_probe(loss, data, k=dim + 1)})

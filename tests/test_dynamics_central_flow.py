"""Central flows (Cohen et al. 2025) and their semidefinite complementarity problem.

References used: cvxpy (Clarabel) for the SDCP as a convex QP; dense third derivatives from
``jax.hessian``/``jax.jacfwd`` and finite differences of eigenvalues for the Hessian-form
gradients; explicit Euler gradient flow below the threshold; discrete GD / RMSProp runs on a
two-parameter model whose edge-of-stability equilibrium is known in closed form.
"""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from landscape import tree as T
from landscape.dynamics.central_flow import (
    central_flow,
    hessian_form_gradients,
    rmsprop_central_flow,
    scalar_rmsprop_central_flow,
)
from landscape.dynamics.complementarity import solve_psd_complementarity

X64 = jax.config.jax_enable_x64
DT = jnp.float64 if X64 else jnp.float32
RTOL = 1e-9 if X64 else 2e-4


def _instance(rng, k, m):
    b = rng.normal(size=(k, k, m))
    b = b + b.transpose(1, 0, 2)
    a = rng.normal(size=(k, k))
    return a + a.T, np.einsum("ijp,klp->ijkl", b, b), b


def _cvxpy(a, b):
    k = a.shape[0]
    X = cp.Variable((k, k), PSD=True)
    lin = sum(X[i, j] * b[i, j] for i in range(k) for j in range(k))
    cp.Problem(cp.Minimize(cp.trace(a @ X) + 0.25 * cp.sum_squares(lin))).solve(
        solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return X.value


def _kkt(a, G, X):
    k = a.shape[0]
    M = a + 0.5 * (G.reshape(k * k, k * k) @ X.reshape(-1)).reshape(k, k)
    return np.linalg.eigvalsh(X)[0], np.linalg.eigvalsh(M)[0], np.vdot(X, M)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_sdcp_matches_cvxpy(k):
    rng = np.random.default_rng(k)
    solve = jax.jit(solve_psd_complementarity)
    for _ in range(2):
        a, G, b = _instance(rng, k, k * k + 2)
        r = solve(jnp.asarray(a, DT), jnp.asarray(G, DT))
        ref = _cvxpy(a, b)
        X = np.asarray(r.X, np.float64)
        assert int(r.status) == 0
        scale = max(1.0, np.abs(ref).max())
        assert np.abs(X - ref).max() <= (1e-5 if X64 else 1e-3) * scale
        xmin, mmin, comp = _kkt(a, G, X)
        tol = (1e-9 if X64 else 1e-4) * (np.linalg.norm(a) + np.linalg.norm(G))
        assert xmin >= -tol and mmin >= -tol and abs(comp) <= tol


def test_sdcp_scalar_closed_form():
    for a, g in ((-1.5, 2.0), (0.7, 3.0), (-2e-3, 1e4)):
        r = solve_psd_complementarity(jnp.full((1, 1), a, DT), jnp.full((1, 1), g, DT))
        np.testing.assert_allclose(float(r.X[0, 0]), max(0.0, -2 * a / g), rtol=RTOL, atol=0)


def test_sdcp_degenerate_cases():
    zero = jnp.zeros((2, 2, 2, 2), DT)
    r = solve_psd_complementarity(jnp.asarray([[1.0, 0.2], [0.2, 0.5]], DT), zero)
    assert int(r.status) == 0 and float(jnp.abs(r.X).max()) == 0
    r = solve_psd_complementarity(jnp.asarray([[1.0, 0.0], [0.0, -0.5]], DT), zero)
    assert int(r.status) == 2              # B = 0 and alpha not PSD: no solution
    # singular B (one beta vector for k = 2), a solvable instance built around X* = diag(1, 0)
    rng = np.random.default_rng(0)
    b = rng.normal(size=(2, 2, 1))
    b = b + b.transpose(1, 0, 2)
    G = np.einsum("ijp,klp->ijkl", b, b)
    Xs = np.diag([1.0, 0.0])
    a = -0.5 * np.einsum("ijkl,kl->ij", G, Xs) + np.diag([0.0, 1.0])
    r = solve_psd_complementarity(jnp.asarray(a, DT), jnp.asarray(G, DT))
    xmin, mmin, comp = _kkt(a, G, np.asarray(r.X, np.float64))
    tol = 1e-9 if X64 else 1e-4
    assert int(r.status) == 0 and xmin >= -tol and mmin >= -tol and abs(comp) <= tol


def test_sdcp_bad_input():
    with pytest.raises(ValueError, match="alpha"):
        solve_psd_complementarity(jnp.zeros((2, 3)), jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match="gram"):
        solve_psd_complementarity(jnp.zeros((2, 2)), jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="gram must be positive semidefinite"):
        solve_psd_complementarity(jnp.zeros((1, 1)), -jnp.ones((1, 1)))


# ---------------------------------------------------------------- tiny models


def _mlp(key, n=7, d=2, h=3):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    params = {"w1": jax.random.normal(k1, (d, h), DT), "b1": 0.1 * jax.random.normal(k2, (h,), DT),
              "w2": jax.random.normal(k3, (h,), DT)}
    x = jax.random.normal(k4, (n, d), DT)
    data = {"x": x, "y": jnp.sin(x[:, 0]) + 0.5 * x[:, 1]}

    def loss_fn(p, batch):
        out = jnp.tanh(batch["x"] @ p["w1"] + p["b1"]) @ p["w2"]
        return 0.5 * jnp.mean((out - batch["y"]) ** 2)

    return loss_fn, params, data


def test_hessian_form_gradients_match_dense_third_derivative():
    loss_fn, params, data = _mlp(jax.random.key(0))
    flat, unravel = T.ravel(params)
    full = lambda f: loss_fn(unravel(f), data)
    third = jax.jit(jax.jacfwd(jax.hessian(full)))(flat)           # (dim, dim, dim)
    V = jax.random.normal(jax.random.key(1), (flat.shape[0], 3), DT)
    beta = jax.jit(lambda p, v: hessian_form_gradients(loss_fn, p, data, v, batch_size=3))(
        params, V)
    ref = jnp.einsum("pqr,pi,qj->ijr", third, V, V)
    np.testing.assert_allclose(beta, ref, rtol=0, atol=(1e-10 if X64 else 1e-4)
                               * float(jnp.abs(ref).max()))
    np.testing.assert_allclose(beta, beta.transpose(1, 0, 2), atol=0)


@pytest.mark.skipif(not X64, reason="finite differences of eigenvalues need float64")
def test_beta_is_the_gradient_of_the_top_eigenvalue():
    loss_fn, params, data = _mlp(jax.random.key(2))
    flat, unravel = T.ravel(params)
    hess = lambda f: jax.hessian(lambda g: loss_fn(unravel(g), data))(f)
    lam, U = jnp.linalg.eigh(hess(flat))
    beta = hessian_form_gradients(loss_fn, params, data, U[:, -1:])[0, 0]
    e = jax.random.normal(jax.random.key(3), flat.shape, DT)
    h = 1e-5
    fd = (jnp.linalg.eigvalsh(hess(flat + h * e))[-1]
          - jnp.linalg.eigvalsh(hess(flat - h * e))[-1]) / (2 * h)
    np.testing.assert_allclose(float(jnp.vdot(beta, e)), float(fd), rtol=1e-6)


def test_below_threshold_the_central_flow_is_euler_gradient_flow():
    loss_fn, params, data = _mlp(jax.random.key(4))
    eta, dt, n = 0.05, 0.5, 12            # sharpness ~ a few units << 2 / eta = 40
    r = central_flow(loss_fn, params, data, learning_rate=eta, num_steps=n, key=jax.random.key(5),
                     dt=dt, k=1, record_every=3)
    grad = jax.jit(jax.grad(lambda p: loss_fn(p, data)))
    w, ref = params, [params]
    for i in range(int(n / dt)):
        w = jax.tree.map(lambda a, g: a - dt * eta * g, w, grad(w))
        if (i + 1) % int(3 / dt) == 0:
            ref.append(w)
    ref = jax.tree.map(lambda *xs: jnp.stack(xs), *ref)
    assert float(jnp.max(r.eigenvalues)) < 0.5 * r.threshold
    assert float(jnp.abs(r.X).max()) == 0
    for a, b in zip(jax.tree.leaves(r.params), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-12 if X64 else 1e-5, atol=1e-12 if X64 else 1e-6)
    np.testing.assert_allclose(r.predicted_loss, r.loss, rtol=0, atol=0)
    np.testing.assert_array_equal(r.num_grads, np.arange(5) * 6)


# ------------------------------------------- a model with a known edge-of-stability equilibrium
# L(a, b) = (a - 2)^2 / 2 + (1 + a^2) b^2 / 2: the b-curvature 1 + a^2 rises from 1.25 to 5 along
# gradient flow. With eta = 0.5 (threshold 4) the central flow stops at a = sqrt(3) with
# X = E[b^2] = (2 - sqrt(3)) / sqrt(3) (from a' = 0), which GD reaches as a time average.


def _toy(p, batch):
    a, b = p["a"], p["b"]
    return jnp.mean(batch["x"]) * (0.5 * (a - 2) ** 2 + 0.5 * (1 + a ** 2) * b ** 2)


TOY_P = {"a": jnp.asarray(0.5, DT), "b": jnp.asarray(0.3, DT)}
TOY_D = {"x": jnp.ones((3,), DT)}


def _run_discrete(step, p, n):
    grad = jax.jit(jax.grad(lambda q: _toy(q, TOY_D)))
    hist = []
    state = None
    for _ in range(n):
        p, state = step(p, grad(p), state)
        hist.append((float(p["a"]), float(p["b"]) ** 2))
    return np.asarray(hist)


def test_central_flow_holds_the_sharpness_at_two_over_eta():
    eta = 0.5
    r = central_flow(_toy, TOY_P, TOY_D, learning_rate=eta, num_steps=40, key=jax.random.key(0),
                     record_every=4)
    lam = np.asarray(r.eigenvalues[:, 0])
    tol = 1e-9 if X64 else 1e-5
    assert lam[0] < 2 / eta and np.all(np.abs(lam[2:] - 2 / eta) <= tol * 4)
    np.testing.assert_allclose(r.params["a"][2:], np.sqrt(3), rtol=tol)
    sigma2 = (2 - np.sqrt(3)) / np.sqrt(3)
    np.testing.assert_allclose(r.X[2:, 0, 0], sigma2, rtol=10 * tol)
    np.testing.assert_allclose(r.predicted_loss[2:], r.loss[2:] + 0.5 * 4 * sigma2, rtol=10 * tol)
    assert np.all(np.asarray(r.sdcp_status) == 0) and np.all(np.asarray(r.eigsh_status) == 0)
    # plain gradient flow (Euler, same dt) passes the threshold: curvature 1 + a^2 -> 5
    grad = jax.jit(jax.grad(lambda q: _toy(q, TOY_D)))
    w = TOY_P
    for _ in range(80):
        w = jax.tree.map(lambda x, g: x - 0.5 * eta * g, w, grad(w))
    assert 1 + float(w["a"]) ** 2 > 4.5
    # GD oscillates around the flow: its time averages match a and X
    gd = _run_discrete(lambda p, g, s: (jax.tree.map(lambda x, y: x - eta * y, p, g), s),
                       TOY_P, 300)
    np.testing.assert_allclose(gd[-100:].mean(axis=0), [np.sqrt(3), sigma2], rtol=1e-3)


def _rmsprop_step(eta, b2, scalar):
    def step(p, g, nu):
        if scalar:
            sq = sum(jnp.sum(x ** 2) for x in jax.tree.leaves(g))
            nu = sq if nu is None else b2 * nu + (1 - b2) * sq
            return jax.tree.map(lambda x, y: x - eta * y / jnp.sqrt(nu), p, g), nu
        nu = (jax.tree.map(jnp.square, g) if nu is None else
              jax.tree.map(lambda n, y: b2 * n + (1 - b2) * y ** 2, nu, g))
        return jax.tree.map(lambda x, y, n: x - eta * y / jnp.sqrt(n), p, g, nu), nu
    return step


@pytest.mark.parametrize("scalar", [True, False])
def test_rmsprop_central_flows_match_discrete_rmsprop(scalar):
    eta, b2 = 0.05, 0.9
    flow = scalar_rmsprop_central_flow if scalar else rmsprop_central_flow
    # diagonal RMSProp drives both preconditioned eigenvalues to the threshold: k = 2
    r = flow(_toy, TOY_P, TOY_D, learning_rate=eta, num_steps=300, key=jax.random.key(0),
             b2=b2, k=1 if scalar else 2, record_every=50)
    lam = np.asarray(r.eigenvalues)
    tol = 1e-8 if X64 else 1e-4
    assert np.all(np.abs(lam[-3:] - 2 / eta) <= tol * 40)
    assert np.all(np.asarray(r.sdcp_status) == 0)
    run = _run_discrete(_rmsprop_step(eta, b2, scalar), TOY_P, 300)
    np.testing.assert_allclose(run[-50:, 0].mean(), r.params["a"][-1], rtol=1e-4)
    assert float(r.trace_X[-1]) > 0


def test_scalar_rmsprop_sigma_is_the_closed_form():
    """k = 1 at the threshold: sigma^2 = [2<-g, grad S> + 2c/eta^2 (nu - |g|^2)] /
    [|grad S|^2 + 2c S^2 / eta^2] (S the raw sharpness), with X = sigma^2 sqrt(nu)."""
    eta, b2 = 0.05, 0.9
    r = scalar_rmsprop_central_flow(_toy, TOY_P, TOY_D, learning_rate=eta, num_steps=300,
                                    key=jax.random.key(0), b2=b2, record_every=50, dt=0.25)
    p = jax.tree.map(lambda x: x[-1], r.params)
    nu = float(r.nu[-1])
    c = (1 - b2) / b2
    a, b = float(p["a"]), float(p["b"])
    g = np.array([(a - 2) + a * b * b, (1 + a * a) * b])
    S = 1 + a * a                         # b ~ 0: top eigenvector e_b, raw sharpness 1 + a^2
    gS = np.array([2 * a, 0.0])
    s2 = (2 * (-g @ gS) + 2 * c / eta ** 2 * (nu - g @ g)) / (gS @ gS + 2 * c * S * S / eta ** 2)
    np.testing.assert_allclose(float(r.X[-1, 0, 0]), s2 * np.sqrt(nu), rtol=1e-6 if X64 else 1e-3)


def test_bad_inputs_name_the_argument():
    kw = dict(learning_rate=0.5, num_steps=4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="k must be"):
        central_flow(_toy, TOY_P, TOY_D, k=3, **kw)
    with pytest.raises(ValueError, match="dt must be"):
        central_flow(_toy, TOY_P, TOY_D, dt=0.0, **kw)
    with pytest.raises(ValueError, match="dt must divide"):
        central_flow(_toy, TOY_P, TOY_D, dt=0.3, **kw)
    with pytest.raises(ValueError, match="learning_rate"):
        central_flow(_toy, TOY_P, TOY_D, **dict(kw, learning_rate=-1.0))
    with pytest.raises(ValueError, match="dataset loss is not finite"):
        central_flow(lambda p, b: _toy(p, b) + jnp.log(p["a"] - 1), TOY_P, TOY_D, **kw)
    with pytest.raises(ValueError, match="num_steps"):
        central_flow(_toy, TOY_P, TOY_D, **dict(kw, num_steps=5), record_every=2)
    with pytest.raises(ValueError, match="b2"):
        rmsprop_central_flow(_toy, TOY_P, TOY_D, b2=1.0, **kw)
    with pytest.raises(ValueError, match="nu0"):
        scalar_rmsprop_central_flow(_toy, TOY_P, TOY_D, nu0=-1.0, **kw)
    with pytest.raises(TypeError, match="key"):
        central_flow(_toy, TOY_P, TOY_D, **dict(kw, key=None))

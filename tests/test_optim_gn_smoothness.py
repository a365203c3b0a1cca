"""Gradient-normalised smoothness (``landscape.optim.gn_smoothness``) against NumPy and SciPy.

No reference package exists on PyPI; the authors' code (github.com/epfml/grad-norm-smooth,
``src/methods.py``, ``grad_norm_smooth``) is NumPy with dense Cholesky solves. Its Algorithm 1
loop is transcribed below (``_algorithm1``) with the exact dense Hessian, and our JAX version
(GGN operator from ``landscape.curvature``, solved by CG) must follow the same trajectory of
iterates and ``gamma_k``. The convergence check uses ``scipy.optimize.minimize``'s minimiser.

The shared convention checks of ``tests/_optim_conventions.py`` call ``tx.update(g, s, p)``
without the extra arguments this method needs (``value_fn``, ``curvature``), so local
variants are used; ``optax.MultiSteps`` is not checked: the adaptive test compares the loss
``value_fn`` at trial points with the gradient passed in, and a gradient averaged over
micro-batches is not the gradient of that loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

from landscape import curvature
from landscape.optim.gn_smoothness import cg_solve, gn_smoothness, gn_smoothness_step

pytestmark = pytest.mark.single_dtype


def _data(n=60, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-X @ rng.normal(size=d)))).astype(float)
    return X, y


def _loss(params, batch):
    z = _apply(params, batch["x"])
    return jnp.mean(jax.nn.softplus(z) - batch["y"] * z)


def _apply(params, x):
    return x @ params["w"] + params["b"]


def _bce(z, y):
    return jnp.mean(jax.nn.softplus(z) - y * z)


def _ggn(params, batch):
    return curvature.ggn(_apply, _bce, params, batch, batch_size=batch["x"].shape[0],
                         check=False)


def _np_oracle(theta, X, y):
    """Loss, gradient and Hessian of the mean logistic loss; ``theta = (b, w)`` (ravel order)."""
    Xa = np.concatenate([np.ones((len(X), 1)), X], axis=1)
    z = Xa @ theta
    p = 1 / (1 + np.exp(-z))
    f = np.mean(np.logaddexp(0, z) - y * z)
    return f, Xa.T @ (p - y) / len(y), (Xa.T * (p * (1 - p))) @ Xa / len(y)


def _algorithm1(theta, X, y, n_iters, gamma, eps=1e-8, gamma_min=1e-9, max_tries=40,
                grad_tol=1e-8):
    """The authors' ``grad_norm_smooth`` loop (B = I), transcribed; stops at ``grad_tol``
    (below it the descent test compares rounding errors)."""
    f, g, _ = _np_oracle(theta, X, y)
    thetas, gammas = [], []
    for _ in range(n_iters):
        if np.linalg.norm(g) < grad_tol:
            break
        H = _np_oracle(theta, X, y)[2]
        for i in range(max_tries + 1):
            if i == max_tries:
                break
            lam = np.linalg.norm(g) / (gamma + eps)
            delta = np.linalg.solve(H + lam * np.eye(len(theta)), -g)
            f_new, g_new, _ = _np_oracle(theta + delta, X, y)
            if f - f_new >= g_new @ g_new / (8 * lam):
                gamma = max(2 * gamma, gamma_min)
                break
            gamma *= 0.5
        theta, f, g = theta + delta, f_new, g_new
        thetas.append(theta)
        gammas.append(gamma)
    return np.array(thetas), np.array(gammas)


def test_exact_hessian_on_quadratic_is_the_newton_step():
    rng = np.random.default_rng(1)
    Q = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    A = Q @ np.diag(np.linspace(0.5, 20, 6)) @ Q.T
    bvec = rng.normal(size=6)
    with jax.enable_x64(True):
        loss = lambda p, _: 0.5 * p @ (A @ p) - bvec @ p  # noqa: E731
        x0 = jnp.asarray(rng.normal(size=6))
        kw = {"adaptive": False, "cg_tol": 1e-14, "cg_maxiter": 50}
        newton, info = gn_smoothness_step(loss, x0, None, lambda p, _: curvature.from_matrix(A),
                                          1e15, **kw)
        assert int(info.tries) == 1
        np.testing.assert_allclose(newton, np.linalg.solve(A, bvec), rtol=1e-9)
        # a finite gamma: the regularised Newton step with lambda = ||g|| / (gamma + eps)
        step, info = gn_smoothness_step(loss, x0, None, lambda p, _: (lambda v: A @ v), 0.7, **kw)
        g = A @ np.asarray(x0) - bvec
        lam = np.linalg.norm(g) / (0.7 + 1e-8)
        want = np.asarray(x0) - np.linalg.solve(A + lam * np.eye(6), g)
        np.testing.assert_allclose(step, want, rtol=1e-12)
        np.testing.assert_allclose(info.lam, lam, rtol=1e-14)
        assert np.linalg.norm(step - x0) <= 0.7


def test_adaptive_rule_follows_algorithm_1():
    """From a far start with a large gamma_0 the search halves and doubles; iterates and gamma_k
    equal the NumPy transcription (GGN = Hessian for a linear model)."""
    X, y = _data()
    theta0 = np.concatenate([[2.0], np.full(4, 3.0)])
    want_theta, want_gamma = _algorithm1(theta0, X, y, 12, 50.0)
    with jax.enable_x64(True):
        batch = {"x": jnp.asarray(X), "y": jnp.asarray(y)}
        step = jax.jit(lambda p, g: gn_smoothness_step(_loss, p, batch, _ggn, g, cg_tol=1e-14,
                                                       cg_maxiter=50))
        p, gamma, tries = {"b": jnp.asarray(2.0), "w": jnp.full(4, 3.0)}, 50.0, []
        assert len(want_theta) >= 6
        for k in range(len(want_theta)):
            p, info = step(p, gamma)
            gamma = info.next_gamma
            tries.append(int(info.tries))
            got = np.concatenate([[p["b"]], p["w"]])
            np.testing.assert_allclose(got, want_theta[k], rtol=1e-9, atol=1e-12, err_msg=k)
            np.testing.assert_allclose(gamma, want_gamma[k], rtol=1e-12, err_msg=k)
    assert max(tries) > 1  # the halving branch ran


def _run(tx, loss, curv, params, steps):
    @jax.jit
    def go(params):
        def body(_, c):
            p, s = c
            f, g = jax.value_and_grad(loss)(p)
            u, s = tx.update(g, s, p, value=f, value_fn=loss, curvature=curv(p))
            return optax.apply_updates(p, u), s

        return jax.lax.fori_loop(0, steps, body, (params, tx.init(params)))

    return go(params)


def _hessian_matvec(loss):
    def curv(p):
        flat, unravel = jax.flatten_util.ravel_pytree(p)
        grad = lambda x: jax.flatten_util.ravel_pytree(jax.grad(loss)(unravel(x)))[0]  # noqa
        return lambda v: jax.jvp(grad, (flat,), (v,))[1]

    return curv


def test_logistic_regression_converges_to_scipy_minimiser():
    X, y = _data(seed=3)
    res = scipy.optimize.minimize(lambda t: _np_oracle(t, X, y)[0], np.zeros(5),
                                  jac=lambda t: _np_oracle(t, X, y)[1],
                                  hess=lambda t: _np_oracle(t, X, y)[2], method="trust-exact",
                                  options={"gtol": 1e-12})
    with jax.enable_x64(True):
        batch = {"x": jnp.asarray(X), "y": jnp.asarray(y)}
        loss = lambda p: _loss(p, batch)  # noqa: E731
        p, state = _run(gn_smoothness(1.0, cg_tol=1e-12), loss, lambda p: _ggn(p, batch),
                        {"b": jnp.zeros(()), "w": jnp.zeros(4)}, 25)
    got = np.concatenate([[p["b"]], p["w"]])
    np.testing.assert_allclose(got, res.x, rtol=1e-7, atol=1e-9)
    assert int(state[0].count) == 25


def test_optax_conventions_local():
    """Convergence (parabola, Rosenbrock with its Gauss-Newton matrix, a mixed pytree),
    ``inject_hyperparams``, dtypes and state, and the weight-decay mask."""
    from _optim_conventions import MIXED_INIT, MIXED_OPT, mixed_loss, parabola_loss

    tx = gn_smoothness(1.0)
    p, _ = _run(tx, parabola_loss, _hessian_matvec(parabola_loss), jnp.zeros(3), 20)
    np.testing.assert_allclose(p, [1.0, -2.0, 3.0], atol=1e-4)
    p, _ = _run(tx, mixed_loss, _hessian_matvec(mixed_loss),
                jax.tree.map(jnp.asarray, MIXED_INIT), 20)
    for k in MIXED_OPT:
        np.testing.assert_allclose(p[k], MIXED_OPT[k], atol=1e-4, err_msg=k)

    def rosen(p):
        return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2

    def gauss_newton(p):  # 2 J^T J of the residuals (1 - x, 10 (y - x^2))
        J = jnp.asarray([[-1.0, 0.0], [-20 * p[0], 10.0]])
        return lambda v: 2 * J.T @ (J @ v)

    p, _ = _run(tx, rosen, gauss_newton, jnp.asarray([-1.0, 1.0]), 200)
    np.testing.assert_allclose(p, [1.0, 1.0], atol=1e-3)

    # inject_hyperparams: same updates, every numeric keyword traced
    loss = parabola_loss
    curv = _hessian_matvec(loss)
    x0 = jnp.asarray([0.3, 0.1, -0.2])
    plain = _run(gn_smoothness(0.5, 0.25), loss, curv, x0, 4)[0]
    injected = _run(optax.inject_hyperparams(gn_smoothness)(0.5, 0.25), loss, curv, x0, 4)[0]
    np.testing.assert_allclose(injected, plain, rtol=1e-6)

    # dtypes: bfloat16 and float32 params keep their dtype; the state keeps its spec
    def ml(p):
        return mixed_loss(jax.tree.map(lambda a: a.astype(jnp.float32), p))

    for dtype in (jnp.bfloat16, jnp.float32):
        params = {"w": jnp.full((4, 3), 0.1, dtype), "b": jnp.zeros(3, dtype),
                  "s": jnp.zeros((), dtype)}
        state0 = tx.init(params)
        g = jax.grad(ml)(params)
        u, state = jax.jit(lambda g, s, p: tx.update(
            g, s, p, value_fn=ml, curvature=_hessian_matvec(ml)(p)))(g, state0, params)
        spec = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)  # noqa: E731
        assert spec(state) == spec(state0)
        assert all(u[k].dtype == dtype for k in u)
        assert state[0].count.dtype == jnp.int32

    # weight decay with a mask touches only the masked-in leaf
    params = jax.tree.map(lambda a: jnp.asarray(a) + 0.5, MIXED_INIT)
    g = jax.grad(mixed_loss)(params)
    kw = {"value_fn": mixed_loss, "curvature": _hessian_matvec(mixed_loss)(params)}
    mask = {"w": True, "b": False, "s": False}
    dec = gn_smoothness(1.0, weight_decay=0.1, mask=mask)
    a, _ = dec.update(g, dec.init(params), params, **kw)
    b, _ = tx.update(g, tx.init(params), params, **kw)
    for k in ("b", "s"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6)
    assert not np.allclose(a["w"], b["w"])


def test_cg_and_errors():
    rng = np.random.default_rng(2)
    M = rng.normal(size=(8, 8))
    A = M @ M.T
    b = rng.normal(size=8)
    with jax.enable_x64(True):
        sol = jax.jit(lambda b: cg_solve(lambda v: A @ v, b, shift=0.5, tol=1e-13,
                                         maxiter=100))(jnp.asarray(b))
    np.testing.assert_allclose(sol.x, np.linalg.solve(A + 0.5 * np.eye(8), b), rtol=1e-10)
    assert int(sol.iterations) <= 20
    tx = gn_smoothness(1.0)
    with pytest.raises(ValueError, match="value_fn"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))

"""Shared by the test_curvature* files (no tests here): tiny nested-pytree models and float64
dense oracles (jax.hessian, explicit Jacobians, per-example gradients)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from landscape import losses
from landscape.tree import ravel

N, D_IN, HIDDEN, C = 23, 3, 4, 3


def tol() -> float:
    """Relative tolerance of operator products against float64 oracles in the active mode."""
    return 1e-10 if jax.config.jax_enable_x64 else 1e-4


def make_params(key):
    k = jax.random.split(key, 4)
    return {
        "layer1": {
            "w": 0.8 * jax.random.normal(k[0], (D_IN, HIDDEN)),
            "b": 0.3 * jax.random.normal(k[1], (HIDDEN,)),
        },
        "layer2": [0.8 * jax.random.normal(k[2], (HIDDEN, C)), 0.1 * jax.random.normal(k[3], (C,))],
    }


def apply_fn(p, x):
    h = jnp.tanh(x @ p["layer1"]["w"] + p["layer1"]["b"])
    return h @ p["layer2"][0] + p["layer2"][1]


def make_data(key, kind="cross_entropy", n=N):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (n, D_IN))
    if kind == "cross_entropy":
        y = jax.random.randint(ky, (n,), 0, C)
    else:
        y = jax.random.normal(ky, (n, C))
    return {"x": x, "y": y}


def _make_loss(kind):
    out_loss = losses.get(kind)
    return lambda p, b: out_loss(apply_fn(p, b["x"]), b["y"])


_LOSS_FNS = {kind: _make_loss(kind) for kind in ("cross_entropy", "mse")}


def loss_fn_for(kind):
    """The mean loss of ``apply_fn`` (one function object per kind, so jit caches are reused)."""
    return _LOSS_FNS[kind]


def to64(tree):
    """Concrete float arrays of ``tree`` as float64 numpy (ints untouched)."""
    return jax.tree.map(
        lambda x: (
            np.asarray(x, np.float64)
            if np.issubdtype(np.asarray(x).dtype, np.floating)
            else np.asarray(x)
        ),
        tree,
    )


def dense_hessian64(kind, params, data):
    with jax.enable_x64(True):
        p64, d64 = to64(params), to64(data)
        flat, unravel = ravel(p64)
        loss = loss_fn_for(kind)
        return np.asarray(jax.hessian(lambda f: loss(unravel(f), d64))(flat))


def _output_hessian(kind, f, y):
    if kind == "mse":
        return jnp.eye(f.shape[-1], dtype=f.dtype)
    p = jax.nn.softmax(f)
    return jnp.diag(p) - jnp.outer(p, p)


def dense_ggn64(kind, params, data):
    """``(1/n) sum_i J_i^T H_i J_i`` from explicit per-example Jacobians (``jax.jacrev``)."""
    with jax.enable_x64(True):
        p64, d64 = to64(params), to64(data)
        flat, unravel = ravel(p64)
        f1 = lambda w, x: apply_fn(unravel(w), x[None])[0]
        J = jax.vmap(lambda x: jax.jacrev(f1)(flat, x))(d64["x"])  # (n, C, P)
        F = jax.vmap(lambda x: f1(flat, x))(d64["x"])
        H = jax.vmap(lambda f, y: _output_hessian(kind, f, y))(F, d64["y"])  # (n, C, C)
        return np.asarray(jnp.einsum("nap,nab,nbq->pq", J, H, J) / F.shape[0])


def per_example_grads64(kind, params, data):
    with jax.enable_x64(True):
        p64, d64 = to64(params), to64(data)
        loss = loss_fn_for(kind)
        g = lambda x, y: ravel(jax.grad(loss)(p64, {"x": x[None], "y": y[None]}))[0]
        return np.asarray(jax.vmap(g)(d64["x"], d64["y"]))


def assert_close(actual, expected, rel=None):
    rel = tol() if rel is None else rel
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(np.abs(expected).max(), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * scale)

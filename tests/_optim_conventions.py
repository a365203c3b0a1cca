"""Shared checks of the optax conventions every ``landscape.optim`` optimizer must pass.

Each test module of an optimizer calls these with its own transformation. The checks compare
with independent references: the minimiser of a known function, the same optimizer without
``optax.inject_hyperparams``, the same optimizer applied by hand to averaged gradients (for
``optax.MultiSteps``), and the same optimizer without weight decay (for masks).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax


def run(tx: optax.GradientTransformation, loss: Callable, params, num_steps: int):
    """``params`` after ``num_steps`` steps of ``tx`` on ``loss`` (jitted ``fori_loop``)."""

    @jax.jit
    def go(params):
        def body(_, carry):
            p, s = carry
            g = jax.grad(loss)(p)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        return jax.lax.fori_loop(0, num_steps, body, (params, tx.init(params)))[0]

    return go(params)


def parabola_loss(params):
    """``sum (x - (1, -2, 3))^2``, minimised at ``(1, -2, 3)``."""
    return jnp.sum((params - jnp.asarray([1.0, -2.0, 3.0], params.dtype)) ** 2)


def rosenbrock_loss(params):
    """``(1 - x)^2 + 100 (y - x^2)^2``, minimised at ``(1, 1)``."""
    x, y = params[0], params[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def mixed_loss(params):
    """A quadratic on a pytree of a matrix, a vector and a scalar; minimised at
    ``w = 0.5, b = -1, s = 2`` (every entry)."""
    return (jnp.sum((params["w"] - 0.5) ** 2) + jnp.sum((params["b"] + 1.0) ** 2)
            + (params["s"] - 2.0) ** 2)


MIXED_INIT = {"w": np.zeros((4, 3)), "b": np.zeros((3,)), "s": np.zeros(())}
MIXED_OPT = {"w": np.full((4, 3), 0.5), "b": np.full((3,), -1.0), "s": np.asarray(2.0)}


def check_convergence(tx, *, num_steps: int = 2000, tol: float = 1e-2,
                      rosenbrock_tx=None, rosenbrock_steps: int = 10000,
                      rosenbrock_tol: float = 5e-2):
    """The parabola, the Rosenbrock function (from ``(-1, 1)``) and the mixed pytree reach
    their minimisers to ``tol`` (max-abs error)."""
    f = jnp.result_type(float)
    p = run(tx, parabola_loss, jnp.zeros(3, f), num_steps)
    np.testing.assert_allclose(p, [1.0, -2.0, 3.0], atol=tol)
    p = run(rosenbrock_tx or tx, rosenbrock_loss, jnp.asarray([-1.0, 1.0], f), rosenbrock_steps)
    np.testing.assert_allclose(p, [1.0, 1.0], atol=rosenbrock_tol)
    init = jax.tree.map(lambda a: jnp.asarray(a, f), MIXED_INIT)
    p = run(tx, mixed_loss, init, num_steps)
    for k in MIXED_OPT:
        np.testing.assert_allclose(p[k], MIXED_OPT[k], atol=tol, err_msg=k)


def gradient_sequence(shapes: dict, num_steps: int, *, seed: int = 0, dtype=None):
    """``num_steps`` pytrees of standard-normal gradients with the given leaf shapes."""
    rng = np.random.default_rng(seed)
    dtype = dtype or jnp.result_type(float)
    return [{k: jnp.asarray(rng.normal(size=s), dtype) for k, s in shapes.items()}
            for _ in range(num_steps)]


def apply_sequence(tx, params, grads):
    """The list of updates of ``tx`` fed ``grads`` one after another, and the final state."""
    state = tx.init(params)
    step = jax.jit(tx.update)
    out = []
    for g in grads:
        u, state = step(g, state, params)
        params = optax.apply_updates(params, u)
        out.append(u)
    return out, state


def check_inject_hyperparams(factory: Callable, kwargs: dict, shapes: dict, *,
                             num_steps: int = 6, rtol: float = 1e-6):
    """``optax.inject_hyperparams(factory)(**kwargs)`` gives the updates of
    ``factory(**kwargs)`` (every numeric keyword becomes a traced hyperparameter)."""
    grads = gradient_sequence(shapes, num_steps, seed=1)
    params = jax.tree.map(jnp.zeros_like, grads[0])
    plain, _ = apply_sequence(factory(**kwargs), params, grads)
    injected, state = apply_sequence(optax.inject_hyperparams(factory)(**kwargs), params, grads)
    assert set(state.hyperparams) >= {k for k, v in kwargs.items()
                                      if isinstance(v, int | float) and not isinstance(v, bool)}
    for a, b in zip(plain, injected, strict=True):
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=rtol, atol=1e-12, err_msg=k)


def check_dtypes_and_state(tx, shapes: dict, *, num_steps: int = 4):
    """For bfloat16 and float32 params: updates keep the params' dtype, and the state keeps
    its structure, shapes and dtypes from ``init`` through every step; ``count`` is int32."""
    for dtype in (jnp.bfloat16, jnp.float32):
        grads = gradient_sequence(shapes, num_steps, seed=2, dtype=dtype)
        params = jax.tree.map(lambda g: jnp.ones_like(g) * 0.5, grads[0])
        state0 = tx.init(params)
        spec = lambda t: jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), t)  # noqa
        updates, state = apply_sequence(tx, params, grads)
        assert jax.tree.structure(state) == jax.tree.structure(state0)
        assert spec(state) == spec(state0), (spec(state0), spec(state))
        for u in updates:
            for k in u:
                assert u[k].dtype == dtype, (k, u[k].dtype, dtype)
        counts = [x for path, x in jax.tree_util.tree_leaves_with_path(state)
                  if any(getattr(e, "name", None) == "count" for e in path)]
        assert counts and all(c.dtype == jnp.int32 for c in counts)


def check_multisteps(tx, shapes: dict, *, k: int = 2, num_steps: int = 6, rtol: float = 1e-5):
    """``optax.MultiSteps(tx, k)`` equals ``tx`` applied by hand to the mean of every ``k``
    consecutive gradients (and zero updates in between)."""
    grads = gradient_sequence(shapes, num_steps, seed=3)
    params = jax.tree.map(lambda g: jnp.ones_like(g) * 0.5, grads[0])
    multi, _ = apply_sequence(optax.MultiSteps(tx, every_k_schedule=k), params, grads)
    means = [jax.tree.map(lambda *g: sum(g) / k, *grads[i:i + k])
             for i in range(0, num_steps, k)]
    by_hand, _ = apply_sequence(tx, params, means)
    for i, u in enumerate(multi):
        want = by_hand[i // k] if (i + 1) % k == 0 else jax.tree.map(jnp.zeros_like, u)
        for key in u:
            np.testing.assert_allclose(u[key], want[key], rtol=rtol, atol=1e-7, err_msg=key)


def check_weight_decay_mask(alias: Callable, kwargs: dict, shapes: dict, *,
                            num_steps: int = 3, rtol: float = 1e-6):
    """With ``weight_decay`` and a mask that decays only the first leaf, the masked-out leaves
    get the updates of ``weight_decay=0`` and the first leaf does not."""
    names = list(shapes)
    mask = {k: k == names[0] for k in names}
    grads = gradient_sequence(shapes, num_steps, seed=4)
    params = jax.tree.map(lambda g: jnp.ones_like(g) * 0.5, grads[0])
    decayed, _ = apply_sequence(alias(**kwargs, weight_decay=0.1, mask=mask), params, grads)
    plain, _ = apply_sequence(alias(**kwargs, weight_decay=0.0), params, grads)
    for a, b in zip(decayed, plain, strict=True):
        for k in names[1:]:
            np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=1e-12, err_msg=k)
    assert not np.allclose(decayed[0][names[0]], plain[0][names[0]])

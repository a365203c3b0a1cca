"""Paths and barriers: analytic paths, exact dataset means, state policies, the simplex."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from landscape import connectivity as C

KEY = jax.random.key(0)


def _quartic_loss(params, batch):
    """Mean over examples of ``(1 - (w . x)^2)^2``: analytic along any path in ``w``."""
    z = batch["x"] @ params["w"]
    return jnp.mean((1 - z**2) ** 2)


def _data(n=37, d=3):
    return {"x": jax.random.normal(KEY, (n, d)), "y": jnp.zeros((n,), jnp.int32)}


def test_interpolate_matches_direct_evaluation_in_one_call():
    data = _data()
    pa = {"w": jnp.array([1.0, 0.0, 0.0])}
    pb = {"w": jnp.array([-1.0, 0.5, 0.0])}
    path = C.interpolate(_quartic_loss, pa, pb, data, 7, batch_size=5, chunk_size=3)
    direct = [float(_quartic_loss({"w": (1 - a) * pa["w"] + a * pb["w"]}, data))
              for a in np.linspace(0, 1, 7)]
    rtol = 1e-12 if path.losses.dtype == jnp.float64 else 2e-5
    np.testing.assert_allclose(path.losses, direct, rtol=rtol)
    assert path.errors is None and path.accuracies is None and path.num_examples == 37


def test_batch_size_and_chunking_do_not_change_the_result():
    data = _data(50)
    pa, pb = {"w": jnp.ones(3)}, {"w": -jnp.ones(3)}
    err = lambda p, b: jnp.mean((b["x"] @ p["w"] > 0).astype(jnp.result_type(float)))
    a = C.interpolate(_quartic_loss, pa, pb, data, 5, error_fn=err, test_dataset=_data(11))
    b = C.interpolate(_quartic_loss, pa, pb, data, 5, error_fn=err, test_dataset=_data(11),
                      batch_size=7, chunk_size=2)
    for x, y in zip((a.losses, a.errors, a.test_losses, a.test_errors),
                    (b.losses, b.errors, b.test_losses, b.test_errors)):
        np.testing.assert_allclose(x, y, rtol=1e-5)
    chex.assert_trees_all_close(b.accuracies, 1 - b.errors)


def test_barrier_kinds_on_an_analytic_path():
    alphas = jnp.linspace(0, 1, 5)  # 0, .25, .5, .75, 1
    losses = jnp.array([1.0, 4.0, 3.0, 2.5, 3.0])
    path = C.Path(alphas, losses)
    b = C.barrier(path, "max_minus_mean")
    assert np.isclose(b.value, 4.0 - 2.0) and np.isclose(b.alpha, 0.25)
    b = C.barrier(path, "max_minus_linear")  # gaps: 0, 2.5, 1, 0, 0
    assert np.isclose(b.value, 2.5) and np.isclose(b.alpha, 0.25)
    b = C.barrier(path, "midpoint_minus_mean")
    assert np.isclose(b.value, 1.0) and np.isclose(b.alpha, 0.5)
    # jit-able
    v = jax.jit(lambda l: C.barrier(C.Path(alphas, l), "max_minus_linear").value)(losses)
    assert np.isclose(v, 2.5)


def test_barrier_of_a_symmetric_double_well():
    # (1 - w^2)^2 with scalar data x = 1: L(alpha) for w from 1 to -1 is (1 - (1-2a)^2)^2,
    # peak 1 at alpha = 1/2, endpoints 0: all three kinds equal 1.
    data = {"x": jnp.ones((4, 1))}
    path = C.interpolate(_quartic_loss, {"w": jnp.ones(1)}, {"w": -jnp.ones(1)}, data, 25)
    for kind in C.BARRIER_KINDS:
        b = C.barrier(path, kind)
        assert np.isclose(b.value, 1.0, atol=1e-6) and np.isclose(b.alpha, 0.5)


def test_state_policies():
    data = _data(20)

    def loss(params, batch, state):
        return jnp.mean((batch["x"] @ params["w"] - state["shift"]) ** 2)

    pa, pb = {"w": jnp.ones(3)}, {"w": jnp.zeros(3)}
    sa, sb = {"shift": jnp.asarray(2.0)}, {"shift": jnp.asarray(0.0)}
    interp = C.interpolate(loss, pa, pb, data, 3, state_a=sa, state_b=sb)
    mid = loss({"w": 0.5 * jnp.ones(3)}, data, {"shift": jnp.asarray(1.0)})
    np.testing.assert_allclose(interp.losses[1], mid, rtol=1e-5)
    # recompute: the state is the mean prediction at each alpha (a BN-reset-like statistic)
    recompute = lambda p, s, d: {"shift": jnp.mean(d["x"] @ p["w"])}
    rec = C.interpolate(loss, pa, pb, data, 3, state_a=sa, state_b=sb,
                        state_policy="recompute", recompute_state=recompute)
    pred = data["x"] @ (0.5 * jnp.ones(3))
    np.testing.assert_allclose(rec.losses[1], jnp.mean((pred - pred.mean()) ** 2), rtol=1e-5)
    assert rec.state_policy == "recompute" and interp.state_policy == "interpolate"


def test_simplex_path_and_barrier():
    data = {"x": jnp.eye(3)}
    loss = lambda p, b: jnp.mean((b["x"] @ p["w"]) ** 2)
    models = [{"w": 3.0 * e} for e in jnp.eye(3)]
    sp = C.interpolate_simplex(loss, models, data, resolution=3)
    assert sp.weights.shape == (10, 3)
    np.testing.assert_allclose(sp.weights.sum(1), 1.0)
    direct = [float(loss({"w": w @ jnp.stack([m["w"] for m in models])}, data))
              for w in sp.weights]
    np.testing.assert_allclose(sp.losses, direct, rtol=1e-5)
    b = C.simplex_barrier(sp)  # vertices have loss 3, the centre 1: the barrier is negative
    np.testing.assert_allclose(b.value, 0.0, atol=1e-6)  # max is at the vertices
    assert C.simplex_grid(3, 2).shape == (6, 3)


def test_bad_inputs_fail_fast():
    data = _data()
    pa = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="start at 0 and end at 1"):
        C.interpolate(_quartic_loss, pa, pa, data, alphas=jnp.linspace(0.1, 1, 4))
    with pytest.raises(ValueError, match="start at 0 and end at 1"):
        C.interpolate(_quartic_loss, pa, pa, data, alphas=jnp.linspace(0, 0.9, 4))
    with pytest.raises(ValueError, match="increasing"):
        C.interpolate(_quartic_loss, pa, pa, data, alphas=jnp.array([0.0, 0.7, 0.5, 1.0]))
    with pytest.raises(ValueError, match="differ at leaf"):
        C.interpolate(_quartic_loss, pa, {"w": jnp.ones(4)}, data)
    with pytest.raises(ValueError, match="structures"):
        C.interpolate(_quartic_loss, pa, {"v": jnp.ones(3)}, data)
    with pytest.raises(ValueError, match="non-finite"):
        C.interpolate(_quartic_loss, pa, {"w": jnp.array([1.0, jnp.nan, 0.0])}, data)
    with pytest.raises(ValueError, match="num_points"):
        C.interpolate(_quartic_loss, pa, pa, data, 1)
    with pytest.raises(ValueError, match="batch_size"):
        C.interpolate(_quartic_loss, pa, pa, data, 3, batch_size=0)
    with pytest.raises(ValueError, match="recompute_state"):
        C.interpolate(_quartic_loss, pa, pa, data, 3, state_a={}, state_b={},
                      state_policy="recompute")
    path = C.Path(jnp.linspace(0, 1, 4), jnp.zeros(4))
    with pytest.raises(ValueError, match="alpha = 0.5"):
        C.barrier(path, "midpoint_minus_mean")
    with pytest.raises(ValueError, match="kind"):
        C.barrier(path, "max")
    with pytest.raises(ValueError, match="errors"):
        C.barrier(path, metric="error")

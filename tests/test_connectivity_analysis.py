"""REPAIR, BN reset, PLeaS, second-order predictor, layer-wise paths, Ito diagnostics, Bezier,
slices and instability, each against an independent reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from landscape import connectivity as C
from landscape import nnx as lnnx
from landscape.models.mlp import MLP

KEY = jax.random.key(0)


@functools.cache
def _mlp(seed, norm=None, width=10):
    m = MLP(4, width, 2, 3, norm=norm, rngs=nnx.Rngs(seed))
    return lnnx.functional(m, mode="eval"), m


def _data(n=48):
    kx, ky = jax.random.split(jax.random.key(3))
    return {"x": jax.random.normal(kx, (n, 4)), "y": jax.random.randint(ky, (n,), 0, 3)}


def _ce(logits, y):
    return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], 1)[:, 0])


def _tol(x):
    return 1e-10 if jnp.result_type(x) == jnp.float64 else 2e-4


def test_mlp_features_match_the_flax_model():
    fm, _ = _mlp(0)
    x = _data()["x"]
    h = C.mlp_features(fm.params, x)["P_1"]
    logits = h @ fm.params["head"]["kernel"] + fm.params["head"]["bias"]
    np.testing.assert_allclose(logits, fm.apply(fm.params, x), rtol=_tol(x), atol=_tol(x))


def test_repair_restores_interpolated_endpoint_statistics():
    pa, pb = _mlp(0)[0].params, _mlp(1)[0].params
    data = _data()
    feats = functools.partial(C.mlp_features, pre_activation=True)
    fixed = C.repair(feats, C.mlp_producers(pa), pa, pb, data, alpha=0.3, batch_size=7)
    za, zb, zm = (np.asarray(feats(p, data["x"])["P_1"], np.float64) for p in (pa, pb, fixed))
    np.testing.assert_allclose(zm.mean(0), 0.7 * za.mean(0) + 0.3 * zb.mean(0), atol=1e-4)
    np.testing.assert_allclose(zm.std(0), 0.7 * za.std(0) + 0.3 * zb.std(0), rtol=1e-3)
    with pytest.raises(ValueError, match="not found"):
        C.repair(feats, {"P_0": ("['nope']", "['x']")}, pa, pb, data)


def _preactivations64(params, x):
    """Hidden pre-activations of a ReLU ``MLP`` param tree, in float64 NumPy."""
    h, out = np.asarray(x, np.float64), []
    for l in sorted(params["hidden"]):
        layer = params["hidden"][l]
        z = h @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
        out.append(z)
        h = np.maximum(z, 0.0)
    return out


def _repair_error(fixed, pa, pb, x, alpha, skip=()):
    """Largest per-unit ``|mu - mu*| / sigma*`` and ``|sigma / sigma* - 1|`` over the layers
    (``skip``: ``(layer, unit)`` pairs left out)."""
    worst_mu = worst_sd = 0.0
    for l, (za, zb, zm) in enumerate(zip(*(_preactivations64(p, x) for p in (pa, pb, fixed)))):
        mu = (1 - alpha) * za.mean(0) + alpha * zb.mean(0)
        sd = (1 - alpha) * za.std(0) + alpha * zb.std(0)
        keep = np.array([(l, u) not in skip for u in range(zm.shape[1])])
        err_mu, err_sd = np.abs(zm.mean(0) - mu) / sd, np.abs(zm.std(0) / sd - 1)
        worst_mu = max(worst_mu, float(np.max(err_mu[keep])))
        worst_sd = max(worst_sd, float(np.max(err_sd[keep])))
    return worst_mu, worst_sd


@pytest.mark.parametrize("input_scale", [1.0, 1e-3])
def test_repair_matches_the_target_statistics_exactly(input_scale):
    """Every unit of every layer, against a float64 forward pass. ``input_scale=1e-3`` makes the
    pre-activation stds about 1e-3, where a ``sigma*/(sigma + eps)`` rescaling with the default
    ``eps=1e-6`` is off by about 1e-3 relative (1e-6 at scale 1, still visible in float64)."""
    pa, pb = _mlp(0)[0].params, _mlp(1)[0].params
    data = _data()
    data["x"] = data["x"] * input_scale
    feats = functools.partial(C.mlp_features, pre_activation=True)
    fixed = C.repair(feats, C.mlp_producers(pa), pa, pb, data, alpha=0.3, batch_size=7)
    tol = 1e-10 if jax.config.jax_enable_x64 else 2e-5
    worst_mu, worst_sd = _repair_error(fixed, pa, pb, data["x"], 0.3)
    assert worst_mu < tol and worst_sd < tol, (worst_mu, worst_sd)


def test_repair_leaves_a_constant_unit_unscaled_and_recentres_it():
    """Opposite kernel columns cancel at ``alpha = 0.5``: the unit is constant in the
    interpolation (std 0 < eps) and can only be shifted to ``mu*``; the other units are exact."""
    pa, pb = _mlp(0)[0].params, _mlp(1)[0].params
    col = pa["hidden"][0]["kernel"][:, 0]
    pb = jax.tree.map(lambda x: x, pb)
    pb["hidden"][0]["kernel"] = pb["hidden"][0]["kernel"].at[:, 0].set(-col)
    data = _data()
    feats = functools.partial(C.mlp_features, pre_activation=True)
    fixed = C.repair(feats, C.mlp_producers(pa), pa, pb, data, alpha=0.5, batch_size=7)
    za, zb, zm = (_preactivations64(p, data["x"])[0][:, 0] for p in (pa, pb, fixed))
    tol = 1e-10 if jax.config.jax_enable_x64 else 2e-5
    assert zm.std() == 0.0  # still constant: its (zero) kernel column stays zero
    assert abs(zm.mean() - 0.5 * (za.mean() + zb.mean())) < tol * 0.5 * (za.std() + zb.std())
    worst_mu, worst_sd = _repair_error(fixed, pa, pb, data["x"], 0.5, skip={(0, 0)})
    assert worst_mu < tol and worst_sd < tol, (worst_mu, worst_sd)
    with pytest.raises(ValueError, match="eps"):
        C.repair(feats, C.mlp_producers(pa), pa, pb, data, eps=-1.0)


def test_batchnorm_reset_gives_population_statistics():
    model = MLP(4, 6, 1, 3, norm="batch", rngs=nnx.Rngs(0))
    train = lnnx.functional(model, mode="train")
    momentum = float(model.norms[0].momentum)
    data = _data()
    reset = C.batchnorm_reset(train.apply_with_state, momentum, batch_size=None)
    state = reset(train.params, train.state, data)
    z = np.asarray(data["x"] @ train.params["hidden"][0]["kernel"]
                   + train.params["hidden"][0]["bias"], np.float64)
    np.testing.assert_allclose(state["norms"][0]["mean"], z.mean(0), atol=1e-5)
    np.testing.assert_allclose(state["norms"][0]["var"], z.var(0), rtol=1e-4, atol=1e-6)


def test_pleas_at_double_width_reproduces_the_ensemble_and_merges_at_width():
    pa, pb = _mlp(0)[0].params, _mlp(1)[0].params
    x = _data(200)["x"]
    merged = C.pleas_merge(pa, pb, x, widths=(20, 20), ridge=1e-10)
    ens = (_mlp(0)[0].apply(pa, x) + _mlp(1)[0].apply(pb, x)) / 2
    out = C.mlp_features(merged, x)["P_1"] @ merged["head"]["kernel"] + merged["head"]["bias"]
    np.testing.assert_allclose(out, ens, atol=1e-3)
    small = C.pleas_merge(pa, pb, x, widths=(12, 14))
    assert small["hidden"][0]["kernel"].shape == (4, 12)
    assert small["hidden"][1]["kernel"].shape == (12, 14)
    with pytest.raises(ValueError, match=r"\[h, 2h\]"):
        C.pleas_merge(pa, pb, x, widths=(9, 10))


def _tiny_loss(params, batch):
    h = jnp.tanh(batch["x"] @ params["w1"])
    return _ce(h @ params["w2"], batch["y"])


def _tiny(seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"w1": jax.random.normal(k1, (4, 3)), "w2": jax.random.normal(k2, (3, 3))}


def test_second_order_terms_match_dense_hessian_float64():
    data = _data()
    with jax.enable_x64(True):
        d64 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64) if v.dtype.kind == "f" else v,
                           data)
        pa = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), _tiny(1))
        pb = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), _tiny(2))
        res = C.second_order_barrier(_tiny_loss, pa, pb, d64, batch_size=10)
        flat_a, unravel = jax.flatten_util.ravel_pytree(pa)
        flat_b = jax.flatten_util.ravel_pytree(pb)[0]
        f = lambda v: _tiny_loss(unravel(v), d64)
        delta = flat_b - flat_a
        ha, hb = np.asarray(jax.hessian(f)(flat_a)), np.asarray(jax.hessian(f)(flat_b))
        hm = np.asarray(jax.hessian(f)((flat_a + flat_b) / 2))
        ga, gb = jax.grad(f)(flat_a), jax.grad(f)(flat_b)
        d = np.asarray(delta)
        np.testing.assert_allclose(res.curvature_endpoints, d @ (ha + hb) @ d / 2, rtol=1e-9)
        np.testing.assert_allclose(res.curvature_midpoint, d @ hm @ d, rtol=1e-9)
        np.testing.assert_allclose(res.first_order, 0.25 * (ga - gb) @ delta, rtol=1e-9)
        meas = f((flat_a + flat_b) / 2) - (f(flat_a) + f(flat_b)) / 2
        np.testing.assert_allclose(res.measured, meas, rtol=1e-9)


def test_second_order_is_exact_for_a_quadratic():
    a = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    loss = lambda p, b: 0.5 * p["w"] @ a @ p["w"] + jnp.mean(b["x"]) * 0.0
    pa, pb = {"w": jnp.array([1.0, -1.0])}, {"w": jnp.array([-0.5, 2.0])}
    res = C.second_order_barrier(loss, pa, pb, {"x": jnp.ones((3, 1))})
    np.testing.assert_allclose(res.predicted, res.measured, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.measured, -res.curvature_midpoint / 8, rtol=1e-5)


def test_layerwise_paths_hold_other_layers_fixed():
    data = _data()
    pa, pb = _tiny(1), _tiny(2)
    paths = C.layerwise_paths(_tiny_loss, pa, pb, data, num_points=5)
    assert set(paths) == {"['w1']", "['w2']"}
    mixed = {"w1": 0.5 * (pa["w1"] + pb["w1"]), "w2": pa["w2"]}
    np.testing.assert_allclose(paths["['w1']"].losses[2], _tiny_loss(mixed, data), rtol=1e-5)
    whole = C.layerwise_paths(_tiny_loss, pa, pb, data, {"all": ["['w1']", "['w2']"]},
                              num_points=5)["all"]
    full = C.interpolate(_tiny_loss, pa, pb, data, 5)
    np.testing.assert_allclose(whole.losses, full.losses, rtol=1e-5)
    with pytest.raises(ValueError, match="not in params"):
        C.layerwise_paths(_tiny_loss, pa, pb, data, {"x": ["['w3']"]})


def test_ito_diagnostics():
    pa, pb = _tiny(1), _tiny(2)
    same = C.subspace_overlap(pa, pa, k=3)
    for ov in same.values():
        np.testing.assert_allclose(ov.left[-1], 1.0, rtol=1e-5)
        np.testing.assert_allclose(ov.right, 1.0, rtol=1e-5)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    rotated = {"w1": jnp.asarray(q @ np.asarray(pa["w1"]), pa["w1"].dtype), "w2": pa["w2"]}
    ov = C.subspace_overlap(pa, rotated, k=3)["['w1']"]
    np.testing.assert_allclose(ov.right, 1.0, rtol=1e-4)  # right singular vectors unchanged
    np.testing.assert_allclose(ov.sv_a, ov.sv_b, rtol=1e-5)
    d = C.l2_distances(pa, pb, pa)
    assert d["after"] == 0.0 and d["before"] > 0


def test_bezier_curve_fits_and_is_evaluated():
    data = _data()
    pa, pb = _tiny(1), _tiny(2)
    mid = jax.tree.map(lambda a, b: (a + b) / 2, pa, pb)
    p0 = C.bezier_point(0.0, pa, mid, pb)
    np.testing.assert_allclose(p0["w1"], pa["w1"])
    lin = C.interpolate(_tiny_loss, pa, pb, data, 5)
    straight = C.bezier_path(_tiny_loss, pa, mid, pb, data, 5)  # bend at the midpoint: a line
    np.testing.assert_allclose(straight.losses, lin.losses, rtol=1e-5)
    fit = C.fit_bezier(_tiny_loss, pa, pb, data, key=KEY, num_steps=150, batch_size=48,
                       learning_rate=0.05)
    curved = C.bezier_path(_tiny_loss, pa, fit.bend, pb, data, 5)
    assert float(curved.losses[2]) < float(lin.losses[2])


def _close(a, b):
    rtol = 1e-12 if jnp.result_type(float) == jnp.float64 else 1e-5
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=rtol)


def test_fit_bezier_equals_a_hand_written_adam_loop_on_its_documented_draws():
    """Step ``s`` draws ``t`` and a minibatch without replacement from ``split(key, S)[s]``
    and records its loss before the update; a plain Python loop of Adam steps must agree."""
    data = _data()
    pa, pb = _tiny(1), _tiny(2)
    mid = jax.tree.map(lambda a, b: (a + b) / 2, pa, pb)
    fit = C.fit_bezier(_tiny_loss, pa, pb, data, key=KEY, num_steps=6, batch_size=10,
                       learning_rate=0.05, init_bend=mid)
    opt = optax.adam(0.05)
    bend, state, losses = mid, opt.init(mid), []
    for k in jax.random.split(KEY, 6):
        kt, kb = jax.random.split(k)
        t = jax.random.uniform(kt, (), dtype=jnp.result_type(float))
        idx = jax.random.choice(kb, 48, (10,), replace=False)
        batch = {"x": data["x"][idx], "y": data["y"][idx]}
        loss, g = jax.value_and_grad(
            lambda c, t=t, b=batch: _tiny_loss(C.bezier_point(t, pa, c, pb), b))(bend)
        upd, state = opt.update(g, state, bend)
        bend, losses = optax.apply_updates(bend, upd), losses + [float(loss)]
    assert fit.losses.shape == (6,) and len(set(losses)) == 6  # a new draw every step
    _close(fit.losses, losses)
    for name in bend:
        _close(fit.bend[name], bend[name])


def test_ste_matching_equals_a_hand_written_loop():
    """Per step: weight matching of the free weights (warm-started), then one Adam step on the
    midpoint loss with the straight-through value, on the documented minibatch."""
    pa, pb = _mlp(0)[0].params, _mlp(1)[0].params
    fm, spec, data = _mlp(0)[0], C.mlp_spec(pa), _data()

    def loss(p, b):
        return _ce(fm.apply(p, b["x"]), b["y"])

    key_wm, key_batch = jax.random.split(KEY)
    res = C.ste_matching(spec, loss, pa, pb, data, key=KEY, num_steps=4, batch_size=16,
                         learning_rate=0.05, select_on="batch")
    opt = optax.adam(0.05)
    free, state, perm, losses = pa, opt.init(pa), None, []
    for t in range(4):
        perm = C.weight_matching(spec, free, pb, key=jax.random.fold_in(key_wm, t),
                                 init_perm=perm).perm
        pi_b = C.apply_permutation(spec, perm, pb)
        idx = jax.random.choice(jax.random.fold_in(key_batch, t), 48, (16,), replace=False)
        batch = {"x": data["x"][idx], "y": data["y"][idx]}

        def mid_loss(f, pi_b=pi_b, batch=batch):
            z = jax.tree.map(lambda fi, bi: fi + jax.lax.stop_gradient(bi - fi), f, pi_b)
            return loss(jax.tree.map(lambda a, zi: (a + zi) / 2, pa, z), batch)

        value, g = jax.value_and_grad(mid_loss)(free)
        upd, state = opt.update(g, state, free)
        free, losses = optax.apply_updates(free, upd), losses + [float(value)]
    _close(res.losses, losses)
    assert res.best_step == int(np.argmin(losses))


def test_slices_and_directions():
    data = _data()
    p = _tiny(1)
    d = C.gaussian_direction(jax.random.key(4), p, "filter")
    np.testing.assert_allclose(jnp.linalg.norm(d["w1"], axis=0), jnp.linalg.norm(p["w1"], axis=0),
                               rtol=1e-5)
    dl = C.gaussian_direction(jax.random.key(4), p, "layer")
    np.testing.assert_allclose(jnp.linalg.norm(dl["w2"]), jnp.linalg.norm(p["w2"]), rtol=1e-5)
    raw = C.gaussian_direction(jax.random.key(4), p, None)
    assert float(jnp.min(raw["w1"])) < 0 < float(jnp.max(raw["w1"]))  # Gaussian, not U[0,1)
    d2 = C.gaussian_direction(jax.random.key(5), p, "filter")
    s = C.slice_2d(_tiny_loss, p, d, d2, data, jnp.linspace(-1, 1, 3), jnp.linspace(-1, 1, 4),
                   chunk_size=5, seeds=(4, 5))
    assert s.losses.shape == (4, 3) and s.seeds == (4, 5)
    at = jax.tree.map(lambda x, a, b: x + 1.0 * a + (-1.0 / 3) * b, p, d, d2)
    np.testing.assert_allclose(s.losses[1, 2], _tiny_loss(at, data), rtol=1e-5)
    s1 = C.slice_1d(_tiny_loss, p, d, data, jnp.linspace(-1, 1, 5))
    np.testing.assert_allclose(s1.losses[2], _tiny_loss(p, data), rtol=1e-5)
    with pytest.raises(ValueError, match="normalization"):
        C.gaussian_direction(KEY, p, "uniform")


def test_pca_and_hessian_directions():
    p = _tiny(1)
    line = jax.tree.map(lambda x: jnp.ones_like(x), p)
    traj = [jax.tree.map(lambda x, l, t=t: x + t * l, p, line) for t in np.linspace(0, 1, 6)]
    dirs, ratio, coords = C.pca_directions(traj, k=1)
    v = jax.flatten_util.ravel_pytree(dirs[0])[0]
    np.testing.assert_allclose(abs(float(v @ jnp.ones_like(v))) / np.sqrt(v.size), 1.0, rtol=1e-5)
    assert ratio[0] > 0.999 and coords.shape == (6, 1)
    data = _data()
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), p)
        d64 = {"x": jnp.asarray(data["x"], jnp.float64), "y": data["y"]}
        dirs, res = C.hessian_directions(_tiny_loss, p64, d64, key=KEY, k=2, batch_size=16)
        flat, unravel = jax.flatten_util.ravel_pytree(p64)
        h = np.asarray(jax.hessian(lambda v: _tiny_loss(unravel(v), d64))(flat))
        np.testing.assert_allclose(res.eigenvalues, np.linalg.eigvalsh(h)[::-1][:2], rtol=1e-6)


def test_instability_with_a_deterministic_trainer():
    data = _data()
    pa = _tiny(1)

    def train(params, key):  # a few GD steps; children differ by a key-dependent kick
        kick = C.gaussian_direction(key, params, None, ignore_1d=False)
        params = jax.tree.map(lambda x, k: x + 0.1 * k, params, kick)
        for _ in range(3):
            g = jax.grad(_tiny_loss)(params, data)
            params = jax.tree.map(lambda x, gi: x - 0.1 * gi, params, g)
        return params

    res = C.spawn_and_compare(train, pa, _tiny_loss, data, key=KEY, num_points=5)
    ka, kb = jax.random.split(KEY)
    np.testing.assert_allclose(res.child_a["w1"], train(pa, ka)["w1"], rtol=1e-6)
    np.testing.assert_allclose(res.barrier, C.barrier(res.path).value, rtol=1e-6)

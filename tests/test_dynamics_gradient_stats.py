"""Per-example gradients, gradient-noise statistics, the adaptive-batch-size tests and the probe.

References: an explicit Python loop of ``jax.grad`` over single examples with every statistic
written out in float64 NumPy (``np.cov`` for the covariance), planted losses whose per-example
gradients are identical, orthogonal or parallel (closed-form answers), the materialised norms
for the Goodfellow MLP trick, and direct calls at the parameters recorded inside ``train``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from landscape import batching, train
from landscape import nnx as lnnx
from landscape.dynamics import gradient_stats as gs
from landscape.models import MLP
from landscape.tree import ravel

X64 = jax.config.jax_enable_x64
RTOL = 1e-9 if X64 else 1e-4
N = 7


def _model_loss(params, batch):
    """A small nonlinear regression model: mean of 0.5 ||tanh(x W + b) V - y||^2."""
    h = jnp.tanh(batch["x"] @ params["w"] + params["b"])
    return 0.5 * jnp.mean(jnp.sum((h @ params["v"] - batch["y"]) ** 2, axis=1))


def _setup(n=N, seed=0):
    k = jax.random.split(jax.random.key(seed), 5)
    params = {"w": jax.random.normal(k[0], (3, 4)), "b": 0.1 * jax.random.normal(k[1], (4,)),
              "v": jax.random.normal(k[2], (4, 2))}
    data = {"x": jax.random.normal(k[3], (n, 3)), "y": jax.random.normal(k[4], (n, 2))}
    return params, data


def _loop_grads(loss, params, data):
    """``(n, dim)`` float64 per-example gradients by a Python loop over batches of one."""
    grad = jax.jit(jax.grad(loss))
    n = batching.num_examples(data)
    rows = []
    for i in range(n):
        one = jax.tree.map(lambda x, i=i: x[i:i + 1], data)
        rows.append(np.asarray(ravel(grad(params, one))[0], np.float64))
    return np.stack(rows)


def _reference(g):
    """Every statistic of the module from the per-example gradient matrix, in NumPy float64."""
    n = g.shape[0]
    G = g.mean(axis=0)
    cov = np.atleast_2d(np.cov(g.T, ddof=1))
    G2 = G @ G
    sq = np.sum(g * g, axis=1)
    a = g @ G
    resid = g - np.outer(a / G2, G)
    return {"mean": G, "norms": np.sqrt(sq), "total_variance": np.trace(cov),
            "diag": np.diag(cov), "coherence": np.sum(g, axis=0) @ np.sum(g, axis=0) / sq.sum(),
            "noise_scale": np.trace(cov) / G2, "snr": np.abs(G) / np.sqrt(np.diag(cov)),
            "norm": np.sum((g - G) ** 2) / (n - 1) / G2,
            "inner": np.sum((a - G2) ** 2) / (n - 1) / G2**2,
            "orth": np.sum(resid * resid) / (n - 1) / G2}


def _close(a, b, rtol=RTOL, atol=0.0):
    np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=rtol, atol=atol)


def _close_vec(a, b):
    """Entries of a mean can cancel: compare each to within RTOL of the largest entry."""
    _close(a, b, atol=RTOL * np.max(np.abs(b)))


def test_every_statistic_matches_the_per_example_loop():
    params, data = _setup()
    g = _loop_grads(_model_loss, params, data)
    ref = _reference(g)
    key = jax.random.key(3)
    st = gs.gradient_statistics(_model_loss, params, data, chunk_size=3, minibatch_size=3,
                                      key=key, eta=0.5, theta=0.7, nu=2.0)
    assert st.num_examples == N and int(st.num_nonfinite) == 0
    _close_vec(ravel(st.mean)[0], ref["mean"])
    _close(st.norms, ref["norms"])
    _close(st.total_variance, ref["total_variance"])
    _close(st.coherence, ref["coherence"])
    _close(st.noise_scale, ref["noise_scale"])
    _close_vec(ravel(st.snr)[0], ref["snr"])
    sizes = np.cumsum([0] + [x.size for x in jax.tree.leaves(params)])
    want_leaf = [ref["diag"][lo:hi].sum() for lo, hi in zip(sizes[:-1], sizes[1:])]
    _close(jax.tree.leaves(st.leaf_variance), want_leaf)
    for test, stat, tol in ((st.norm_test, ref["norm"], 0.5), (st.inner_product_test,
                            ref["inner"], 0.7), (st.orthogonality_test, ref["orth"], 2.0)):
        _close(test.statistic, stat)
        _close(test.batch_size, stat / tol**2)
        assert bool(test.passed) == (N >= stat / tol**2)
    _close(st.norm_test.statistic, st.noise_scale)  # the norm test's statistic is B_simple
    # the minibatch: drawn without replacement with the key, as documented
    picks = np.asarray(st.minibatch_indices)
    np.testing.assert_array_equal(picks, jax.random.choice(key, N, (3,), replace=False))
    assert len(set(picks.tolist())) == 3
    gb = g[picks].mean(axis=0)
    _close(st.minibatch_cosine, gb @ ref["mean"] / np.linalg.norm(gb) / np.linalg.norm(ref["mean"]))


@pytest.mark.parametrize("chunk", [1, 3, 4, N, 100, None])
def test_results_do_not_depend_on_the_chunk_size(chunk):
    """Chunks of 1, 3 (remainder 1), 4 (remainder 3), n, more than n and all at once."""
    params, data = _setup()
    g = _loop_grads(_model_loss, params, data)
    pe = gs.per_example_grads(_model_loss, params, data, chunk_size=chunk)
    assert all(x.shape[0] == N for x in jax.tree.leaves(pe))
    _close(jax.vmap(lambda t: ravel(t)[0])(pe), g, atol=1e-6 if not X64 else 0.0)
    _close(gs.per_example_norms(_model_loss, params, data, chunk_size=chunk),
           np.linalg.norm(g, axis=1))
    ref = _reference(g)
    st = gs.gradient_statistics(_model_loss, params, data, chunk_size=chunk)
    _close(st.total_variance, ref["total_variance"])
    _close_vec(ravel(st.snr)[0], ref["snr"])
    _close(st.inner_product_test.statistic, ref["inner"])
    _close(st.orthogonality_test.statistic, ref["orth"])
    assert st.minibatch_cosine is None and st.minibatch_indices is None


def _linear_loss(params, batch):
    """Per-example loss ``s_i <v_i, w>``: the gradient of example ``i`` is ``s_i v_i``."""
    return jnp.mean(batch["s"] * (batch["v"] @ params["w"]))


def test_identical_examples_have_coherence_n_and_no_variance():
    params, data = _setup()
    same = jax.tree.map(lambda x: jnp.repeat(x[:1], N, axis=0), data)
    st = gs.gradient_statistics(_model_loss, params, same, chunk_size=3)
    _close(st.coherence, N, rtol=1e-5)
    scale = float(jnp.mean(st.norms)) ** 2
    assert abs(float(st.total_variance)) <= (1e-10 if X64 else 1e-5) * scale
    assert float(st.noise_scale) <= (1e-10 if X64 else 1e-5)


def test_orthogonal_gradients_and_the_three_tests_in_closed_form():
    """Gradients ``e_i`` (one per coordinate): ``G = 1/n``, coherence 1, and in closed form the
    norm test ``n``, the inner-product test 0 and the orthogonality test ``n``."""
    params = {"w": jnp.zeros(N)}
    data = {"s": jnp.ones(N), "v": jnp.eye(N)}
    st = gs.gradient_statistics(_linear_loss, params, data, chunk_size=2, eta=0.9,
                                      theta=0.9, nu=5.84)
    _close(st.coherence, 1.0, rtol=1e-6)
    _close(st.noise_scale, N, rtol=1e-6)
    _close(st.total_variance, 1.0, rtol=1e-6)
    _close(st.norm_test.statistic, N, rtol=1e-6)
    _close(st.norm_test.batch_size, N / 0.81, rtol=1e-6)
    assert not bool(st.norm_test.passed)
    _close(st.inner_product_test.statistic, 0.0, atol=1e-6)
    assert bool(st.inner_product_test.passed)
    _close(st.orthogonality_test.statistic, N, rtol=1e-6)
    _close(st.orthogonality_test.batch_size, N / 5.84**2, rtol=1e-6)
    assert bool(st.orthogonality_test.passed)
    # a scaled copy: coherence and the tests are scale-free
    st2 = gs.gradient_statistics(_linear_loss, params, {"s": 3 * jnp.ones(N),
                                                             "v": jnp.eye(N)})
    _close(st2.coherence, 1.0, rtol=1e-6)
    _close(st2.orthogonality_test.statistic, N, rtol=1e-6)


def test_parallel_gradients_have_no_orthogonal_noise():
    """``g_i = s_i v``: the orthogonality statistic is 0 and the inner-product and norm
    statistics both equal the squared coefficient of variation of ``s``."""
    s = jnp.asarray([1.0, 2.0, 0.5, 3.0, 1.5, 2.5, 0.25])
    v = jnp.asarray([0.6, -0.8, 0.0])
    params = {"w": jnp.zeros(3)}
    st = gs.gradient_statistics(_linear_loss, params, {"s": s, "v": jnp.tile(v, (N, 1))},
                                      chunk_size=3)
    sn = np.asarray(s, np.float64)
    cv2 = sn.var(ddof=1) / sn.mean() ** 2
    _close(st.orthogonality_test.statistic, 0.0, atol=1e-6)
    _close(st.inner_product_test.statistic, cv2, rtol=1e-5)
    _close(st.norm_test.statistic, cv2, rtol=1e-5)
    _close(st.coherence, N * sn.mean() ** 2 / np.mean(sn**2), rtol=1e-5)
    snr = np.asarray(st.snr["w"])
    assert snr[2] == 0.0  # no signal and no noise in the third coordinate: 0/0 is reported as 0
    _close(snr[:2], np.full(2, 1 / np.sqrt(cv2)), rtol=1e-5)


@pytest.mark.parametrize("depth,residual,loss_name", [
    (2, False, "cross_entropy"), (3, True, "cross_entropy"), (0, False, "mse")])
def test_mlp_norms_without_per_example_gradients_match_the_materialised_ones(depth, residual,
                                                                              loss_name):
    model = MLP(5, 6, depth, 3, activation="tanh", residual=residual, rngs=nnx.Rngs(depth))
    loss, params, _ = lnnx.loss_fn(model, loss_name)
    kx, ky = jax.random.split(jax.random.key(7))
    x = jax.random.normal(kx, (N, 5))
    y = (jax.random.randint(ky, (N,), 0, 3) if loss_name == "cross_entropy"
         else jax.random.normal(ky, (N, 3)))
    data = {"x": x, "y": y}
    want = gs.per_example_norms(loss, params, data, chunk_size=3)
    got = gs.mlp_per_example_norms(params, data, activation=jnp.tanh,
                                         output_loss=loss_name, residual=residual, chunk_size=3)
    assert got.shape == (N,)
    _close(got, np.asarray(want, np.float64), rtol=1e-9 if X64 else 1e-5)
    # and a callable mean loss (derivatives by autodiff of the batch mean)
    if loss_name == "mse":
        mean_fn = lambda f, t: jnp.mean(0.5 * jnp.sum((f - t) ** 2, axis=1))
        got2 = gs.mlp_per_example_norms(params, data, activation=jnp.tanh,
                                              output_loss=mean_fn)
        _close(got2, np.asarray(want, np.float64), rtol=1e-9 if X64 else 1e-5)


def test_mlp_norms_reject_norm_layers_and_wrong_inputs():
    model = MLP(5, 6, 1, 3, norm="layer", rngs=nnx.Rngs(0))
    _, params, _ = lnnx.loss_fn(model)
    data = {"x": jnp.ones((4, 5)), "y": jnp.zeros(4, jnp.int32)}
    with pytest.raises(ValueError, match="norms"):
        gs.mlp_per_example_norms(params, data)
    _, plain, _ = lnnx.loss_fn(MLP(5, 6, 1, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="batch"):
        gs.mlp_per_example_norms(plain, {"x": jnp.ones((4, 4)), "y": data["y"]})
    with pytest.raises(TypeError, match="activation"):
        gs.mlp_per_example_norms(plain, data, activation="relu")


def test_probes_inside_train_match_direct_calls_at_recorded_steps():
    params, data = _setup(n=8, seed=1)
    subset = jax.tree.map(lambda x: x[:5], data)
    probes = {"full": gs.gradient_probe(_model_loss, every=2, kind="full", chunk_size=3),
              "cheap": gs.gradient_probe(_model_loss, subset, chunk_size=2),
              "p": train.probe(lambda ctx, s: (ctx.params, s), every=1)}
    res = train.train(_model_loss, params, optax.sgd(0.2), data, key=jax.random.key(0),
                      num_steps=7, probes=probes)
    full, cheap = res.trace["full"], res.trace["cheap"]
    assert res.trace_steps["full"].tolist() == [0, 2, 4, 6]
    assert res.trace_steps["cheap"].tolist() == list(range(7))
    at = lambda t: jax.tree.map(lambda a: a[t], res.trace["p"])
    flat = lambda p: np.asarray(ravel(p)[0], np.float64)
    for r, t in enumerate((0, 2, 4, 6)):
        st = gs.gradient_statistics(_model_loss, at(t), data)
        for name, want in (("coherence", st.coherence), ("noise_scale", st.noise_scale),
                           ("total_variance", st.total_variance),
                           ("norm_max", jnp.max(st.norms)), ("norm_mean", jnp.mean(st.norms)),
                           ("norm_test_batch_size", st.norm_test.batch_size),
                           ("inner_product_batch_size", st.inner_product_test.batch_size),
                           ("orthogonality_batch_size", st.orthogonality_test.batch_size)):
            _close(full[name][r], float(want), rtol=RTOL * 10)
        _close([full["leaf_variance"][k][r] for k in sorted(params)],
               [float(st.leaf_variance[k]) for k in sorted(params)], rtol=RTOL * 10)
        _close(full["distance_from_init"][r], np.linalg.norm(flat(at(t)) - flat(params)),
               rtol=RTOL, atol=1e-6)
        prev = flat(at(t - 2)) if t else flat(params)
        _close(full["update_size"][r], np.linalg.norm(flat(at(t)) - prev), rtol=RTOL, atol=1e-6)
    for t in (0, 3, 6):  # the cheap probe runs on its fixed subset
        ref = _reference(_loop_grads(_model_loss, at(t), subset))
        _close(cheap["coherence"][t], ref["coherence"])
        _close(cheap["noise_scale"][t], ref["noise_scale"], rtol=10 * RTOL)
        _close(cheap["norm_max"][t], ref["norms"].max())
        _close(cheap["grad_norm"][t], np.linalg.norm(ref["mean"]))
        prev = flat(at(t - 1)) if t else flat(params)
        _close(cheap["update_size"][t], np.linalg.norm(flat(at(t)) - prev), rtol=RTOL, atol=1e-6)
    assert cheap["update_size"][0] == 0 and cheap["distance_from_init"][0] == 0


def test_jit_and_sharded_dataset_give_the_same_results():
    params, data = _setup()
    eager = gs.gradient_statistics(_model_loss, params, data, chunk_size=3)
    jitted = jax.jit(lambda p, d: gs.gradient_statistics(_model_loss, p, d,
                                                               chunk_size=3))(params, data)
    _close(jitted.coherence, float(eager.coherence), rtol=1e-6)
    _close(jitted.orthogonality_test.statistic, float(eager.orthogonality_test.statistic),
           rtol=1e-6)
    # padded rows (weight 0) in between real ones never enter any result
    pad = jax.tree.map(lambda x: jnp.concatenate([x[:3], 100 + x[:2], x[3:]]), data)
    weights = jnp.asarray([1, 1, 1, 0, 0, 1, 1, 1, 1], jnp.float32)
    sharded = batching.ShardedDataset(pad, weights, N)
    st = gs.gradient_statistics(_model_loss, params, sharded, chunk_size=2)
    _close(st.norms, np.asarray(eager.norms, np.float64), rtol=1e-5)
    _close(st.inner_product_test.statistic, float(eager.inner_product_test.statistic), rtol=1e-4)
    pe = gs.per_example_grads(_model_loss, params, sharded, chunk_size=4)
    _close(pe["w"], np.asarray(gs.per_example_grads(_model_loss, params, data)["w"],
                               np.float64), rtol=1e-5, atol=1e-7)


def test_bad_inputs_raise_naming_the_argument():
    params, data = _setup()
    st = gs.gradient_statistics
    with pytest.raises(ValueError, match="chunk_size"):
        st(_model_loss, params, data, chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        gs.per_example_grads(_model_loss, params, data, chunk_size=2.5)
    empty = jax.tree.map(lambda x: x[:0], data)
    with pytest.raises(ValueError, match="batch"):
        gs.per_example_grads(_model_loss, params, empty)
    with pytest.raises(ValueError, match="batch"):
        st(_model_loss, params, jax.tree.map(lambda x: x[:1], data))
    with pytest.raises(ValueError, match="minibatch_size"):
        st(_model_loss, params, data, minibatch_size=N + 1, key=jax.random.key(0))
    with pytest.raises(TypeError, match="key"):
        st(_model_loss, params, data, minibatch_size=2)
    with pytest.raises(ValueError, match="nu"):
        st(_model_loss, params, data, nu=0.0)
    with pytest.raises(TypeError, match="loss_fn"):
        st(lambda p, b: b["x"] @ p["w"], params, data)
    bad = jax.tree.map(lambda x: x, data)
    bad["y"] = data["y"].at[4, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="loss_fn.*1 of the 7"):
        st(_model_loss, params, bad)
    with pytest.raises(ValueError, match="loss_fn"):
        gs.per_example_norms(_model_loss, params, bad, chunk_size=3)
    with pytest.raises(ValueError, match="kind"):
        gs.gradient_probe(_model_loss, kind="everything")
    with pytest.raises(ValueError, match="chunk_size"):
        gs.gradient_probe(_model_loss, chunk_size=-1)


def _mlp_setting(n=9, seed=3):
    model = MLP(5, 6, 2, 3, activation="tanh", rngs=nnx.Rngs(seed))
    loss, params, _ = lnnx.loss_fn(model, "cross_entropy")
    kx, ky = jax.random.split(jax.random.key(seed))
    data = {"x": jax.random.normal(kx, (n, 5)),
            "y": jax.random.randint(ky, (n,), 0, 3)}
    norms = lambda p, b: gs.mlp_per_example_norms(p, b, activation=jnp.tanh, chunk_size=4)
    return loss, params, data, norms


def test_cheap_probe_from_per_example_norms_matches_the_materialised_path():
    loss, params, data, norms = _mlp_setting()
    subset = jax.tree.map(lambda x: x[:6], data)
    probes = {"slow": gs.gradient_probe(loss, subset, chunk_size=4),
              "fast": gs.gradient_probe(loss, subset, norms_fn=norms),
              # on the step's batch: the fast path takes G from the step's own gradient
              "slow_step": gs.gradient_probe(loss, chunk_size=4),
              "fast_step": gs.gradient_probe(loss, norms_fn=norms)}
    res = train.train(loss, params, optax.sgd(0.5), data, key=jax.random.key(0), num_steps=3,
                      batch_size=5, probes=probes)
    for s, f in (("slow", "fast"), ("slow_step", "fast_step")):
        slow, fast = res.trace[s], res.trace[f]
        assert set(fast) == set(slow)
        for name in ("norm_mean", "norm_max", "grad_norm", "coherence"):
            _close(fast[name], np.asarray(slow[name], np.float64), rtol=1e-9 if X64 else 1e-5)
        # tr(Sigma) = (sum ||g_i||^2 - n ||G||^2) / (n - 1) cancels mildly here (B_simple 1-10)
        _close(fast["noise_scale"], np.asarray(slow["noise_scale"], np.float64),
               rtol=1e-8 if X64 else 1e-4)
        for name in ("distance_from_init", "update_size"):
            np.testing.assert_array_equal(fast[name], slow[name])
    # on a batch given as the step's batch, against the explicit per-example loop
    rec = _call_probe(gs.gradient_probe(loss, norms_fn=norms), res.params, data)
    ref = _reference(_loop_grads(loss, res.params, data))
    _close(rec["noise_scale"], ref["noise_scale"], rtol=1e-8 if X64 else 1e-4)
    _close(rec["coherence"], ref["coherence"])
    _close(rec["norm_max"], ref["norms"].max())
    _close(rec["grad_norm"], np.linalg.norm(ref["mean"]))


def _call_probe(pr, params, batch):
    """The probe's record at ``params`` with ``batch`` as the step's batch (jitted)."""

    @jax.jit
    def call(params, batch):
        ctx = train.ProbeContext(step=jnp.zeros((), jnp.int32), params=params, opt_state=None,
                                 model_state=None, batch=batch, key=jax.random.key(0),
                                 data=None, hyperparams={})
        return pr.fn(ctx, pr.init(params, None))[0]

    return call(params, batch)


def test_cheap_probe_from_norms_on_identical_examples_and_bad_norms_fn():
    loss, params, data, norms = _mlp_setting()
    same = jax.tree.map(lambda x: jnp.repeat(x[:1], 6, axis=0), data)
    rec = _call_probe(gs.gradient_probe(loss, norms_fn=norms), params, same)
    eps = float(jnp.finfo(jnp.result_type(float)).eps)
    _close(rec["coherence"], 6.0, rtol=1e-9 if X64 else 1e-5)
    assert 0 <= float(rec["noise_scale"]) <= 50 * eps  # clamped at 0, cancellation ~ eps
    with pytest.raises(ValueError, match="norms_fn"):
        gs.gradient_probe(loss, kind="full", norms_fn=norms)
    with pytest.raises(TypeError, match="norms_fn"):
        gs.gradient_probe(loss, norms_fn="mlp")
    with pytest.raises(ValueError, match="norms_fn"):
        _call_probe(gs.gradient_probe(loss, norms_fn=lambda p, b: jnp.ones(3)), params, same)

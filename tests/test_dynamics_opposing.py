"""Per-example losses, their probe, and the opposing-signals analysis.

References: a Python loop of ``loss_fn`` over single examples; direct calls at parameters reached
by a separate ``train`` run; every analysis step rewritten as explicit float64 loops (the
leading singular vector via ``eigh`` of ``D^T D``, correlations via ``np.corrcoef``); and a
planted loss matrix with two groups in anti-phase around two spikes that must be recovered.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from landscape import train
from landscape.dynamics import opposing as op

X64 = jax.config.jax_enable_x64
RTOL = 1e-12 if X64 else 1e-5
N = 7


def _loss(params, batch):
    h = jnp.tanh(batch["x"] @ params["w"] + params["b"])
    return 0.5 * jnp.mean(jnp.sum((h @ params["v"] - batch["y"]) ** 2, axis=1))


def _setup(n=N):
    k = jax.random.split(jax.random.key(0), 5)
    params = {"w": jax.random.normal(k[0], (3, 4)), "b": 0.1 * jax.random.normal(k[1], (4,)),
              "v": jax.random.normal(k[2], (4, 2))}
    data = {"x": jax.random.normal(k[3], (n, 3)), "y": jax.random.normal(k[4], (n, 2))}
    return params, data


def _loop_losses(params, data):
    n = data["x"].shape[0]
    return np.array([float(_loss(params, jax.tree.map(lambda x, i=i: x[i:i + 1], data)))
                     for i in range(n)])


# ----------------------------------------------------------------------------- recording


def test_per_example_losses_match_a_loop_for_every_chunk_size():
    params, data = _setup()
    ref = _loop_losses(params, data)
    for c in (None, 1, 3, N, 100):
        got = np.asarray(op.per_example_losses(_loss, params, data, chunk_size=c))
        np.testing.assert_allclose(got, ref, rtol=RTOL, err_msg=str(c))
    # a mean loss: the mean of the per-example losses is the batch loss
    np.testing.assert_allclose(ref.mean(), float(_loss(params, data)), rtol=RTOL)
    jitted = jax.jit(lambda p: op.per_example_losses(_loss, p, data, chunk_size=2))(params)
    np.testing.assert_allclose(np.asarray(jitted), ref, rtol=RTOL)


def test_probe_records_the_losses_at_the_params_before_each_update():
    params, data = _setup()
    opt = optax.sgd(0.3)
    res = train.train(_loss, params, opt, data, key=jax.random.key(1), num_steps=5,
                      probes={"L": op.per_example_loss_probe(_loss, data, every=2,
                                                             chunk_size=3)})
    np.testing.assert_array_equal(res.trace_steps["L"], [0, 2, 4])
    assert res.trace["L"].shape == (3, N)
    for row, step in enumerate((0, 2, 4)):
        p = train.train(_loss, params, opt, data, key=jax.random.key(1),
                        num_steps=step).params if step else params
        np.testing.assert_allclose(res.trace["L"][row], _loop_losses(p, data), rtol=1e-4)


# ----------------------------------------------------------------------------- analysis


def _loop_spikes(y, window, min_rise):
    """The spike rule written as loops over records."""
    out = []
    for p in range(1, len(y)):
        near = range(max(p - window, 0), min(p + window, len(y) - 1) + 1)
        if any(y[j] > y[p] or (y[j] == y[p] and j < p) for j in near):
            continue
        before = [j for j in near if j <= p]
        a = min(before, key=lambda j: (y[j], j))
        if y[p] >= (1 + min_rise) * y[a] and y[p] > y[a]:
            out.append([a, p])
    return np.array(out, int).reshape(-1, 2)


def _planted(R=70, n=40, seed=0):
    """Two groups (0-4 and 5-9) oscillating in anti-phase with growing amplitude into spikes
    peaking at records 25 and 55, on a slowly falling background with small noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(R)
    base = 1.0 - 0.004 * t
    L = base[:, None] + 0.01 * rng.standard_normal((R, n))
    for peak in (25, 55):
        for j in range(peak - 6, peak + 1):
            amp = 2.0 ** (j - peak)  # 1/64 ... 1 at the peak
            sign = (-1.0) ** (peak - j)
            L[j, :5] += 3 * amp * (1 + sign) / 2 + 0.5 * amp
            L[j, 5:10] += 3 * amp * (1 - sign) / 2 + 0.5 * amp
            L[j, :5] -= 3 * amp * (1 - sign) / 4
            L[j, 5:10] -= 3 * amp * (1 + sign) / 4
    return np.abs(L)


@pytest.mark.single_dtype
def test_planted_opposing_groups_are_recovered():
    L = _planted()
    r = op.opposing_signals(L, k=8, window=8, min_rise=0.3)
    np.testing.assert_array_equal(r.spikes[:, 1], [25, 55])
    # group A (0-4) is the one whose loss rises relative to the mean into the peaks
    a, b = set(np.flatnonzero(r.groups == 0)), set(np.flatnonzero(r.groups == 1))
    assert a == set(range(5)) and b == set(range(5, 10))
    assert list(r.group_sizes) == [5, 5]
    p = r.spikes[r.biggest, 1]
    assert L[p, list(a)].mean() > L[p, list(b)].mean()
    # in anti-phase at both spikes (the second out of sample); the common 0.5 amp keeps it > -1
    assert np.all(r.anti_phase < -0.7)


@pytest.mark.single_dtype
def test_analysis_matches_explicit_loops():
    rng = np.random.default_rng(3)
    L = _planted(seed=1) + 0.05 * rng.random((70, 40))
    steps = 3 * np.arange(70) + 10
    k, window, min_rise, thr = 6, 7, 0.2, 0.4
    r = op.opposing_signals(L, steps, k=k, window=window, min_rise=min_rise, threshold=thr)
    R, n = L.shape
    np.testing.assert_array_equal(r.steps, steps)
    mean = np.array([sum(L[j]) / n for j in range(R)])
    np.testing.assert_allclose(r.mean_loss, mean, rtol=1e-13)
    delta = np.array([[L[j + 1, i] - L[j, i] for i in range(n)] for j in range(R - 1)])
    np.testing.assert_allclose(r.delta, delta, rtol=0, atol=1e-15)
    for j in range(R - 1):
        ranked = sorted(range(n), key=lambda i: -delta[j, i])
        assert list(r.top_increase[j]) == ranked[:k]
        assert list(r.top_decrease[j]) == sorted(range(n), key=lambda i: delta[j, i])[:k]
    spikes = _loop_spikes(mean, window, min_rise)
    np.testing.assert_array_equal(r.spikes, spikes)
    rise = [mean[p] - mean[a] for a, p in spikes]
    np.testing.assert_allclose(r.spike_rise, rise, rtol=1e-13)
    big = int(np.argmax(rise))
    assert r.biggest == big
    a, p = spikes[big]
    np.testing.assert_allclose(r.spike_change, L[p] - L[a], rtol=1e-13)
    assert list(r.spike_increase) == sorted(range(n), key=lambda i: -(L[p, i] - L[a, i]))[:k]
    # loadings: the top eigenvector of D^T D with D the centred changes of the window
    lo, hi = max(p - window, 0), min(p + window, R - 1)
    D = delta[lo:hi] - delta[lo:hi].mean(axis=1, keepdims=True)
    u = np.linalg.eigh(D.T @ D)[1][:, -1]
    if sum((D @ u)[a - lo:p - lo]) < 0:
        u = -u
    np.testing.assert_allclose(r.loadings, u, atol=1e-10)
    for g, keep in ((0, [i for i in range(n) if u[i] >= thr * u.max()]),
                    (1, [i for i in range(n) if u[i] <= thr * u.min()])):
        keep = sorted(keep, key=lambda i: -abs(u[i]))[:k]
        assert sorted(np.flatnonzero(r.groups == g)) == sorted(keep)
        np.testing.assert_allclose(r.group_losses[g], L[:, keep].mean(axis=1), rtol=1e-13)
    A, B = r.groups == 0, r.groups == 1
    for s, (_, pk) in enumerate(spikes):
        lo, hi = max(pk - window, 0), min(pk + window, R - 1)
        c = np.corrcoef(delta[lo:hi][:, A].mean(1), delta[lo:hi][:, B].mean(1))[0, 1]
        np.testing.assert_allclose(r.anti_phase[s], c, rtol=1e-10)
    np.testing.assert_allclose(op.anti_phase(L, r.groups, r.spikes, window=window),
                               r.anti_phase, rtol=1e-14)


@pytest.mark.single_dtype
def test_no_spikes_no_groups_and_helpers():
    L = np.linspace(2, 1, 30)[:, None] * np.ones((1, 5))
    r = op.opposing_signals(L, k=2)
    assert r.spikes.shape == (0, 2) and r.biggest == -1 and np.all(r.groups == -1)
    assert np.all(np.isnan(r.group_losses)) and r.anti_phase.shape == (0,)
    groups = np.array([0, 1, -1, 0, 1, 1])
    labels = np.array([2, 0, 1, 2, 1, 0])
    np.testing.assert_array_equal(op.group_composition(groups, labels, 3),
                                  [[0, 0, 2], [2, 1, 0]])
    f = np.array([0.5, 3.0, -1.0, 2.0, 0.0, 1.0, -2.0, 4.0])
    np.testing.assert_array_equal(op.feature_groups(f, fraction=0.25),
                                  [-1, 0, 1, -1, -1, -1, 1, 0])


@pytest.mark.single_dtype
def test_bad_inputs_name_the_argument():
    params, data = _setup()
    L = _planted()
    cases = [
        (lambda: op.per_example_losses("x", params, data), TypeError, "loss_fn"),
        (lambda: op.per_example_losses(_loss, params, data, chunk_size=0), ValueError,
         "chunk_size"),
        (lambda: op.per_example_losses(lambda p, b: b["x"], params, data), TypeError,
         "loss_fn"),
        (lambda: op.per_example_loss_probe(_loss, {"x": np.zeros((0, 2))}), ValueError,
         "dataset"),
        (lambda: op.per_example_loss_probe(_loss, data, every=0), ValueError, "every"),
        (lambda: op.opposing_signals(L[0]), ValueError, "losses"),
        (lambda: op.opposing_signals(L[:1]), ValueError, "losses"),
        (lambda: op.opposing_signals(np.where(L > 1.5, np.nan, L)), ValueError, "losses"),
        (lambda: op.opposing_signals(L, np.zeros(len(L))), ValueError, "steps"),
        (lambda: op.opposing_signals(L, k=0), ValueError, "k"),
        (lambda: op.opposing_signals(L, k=L.shape[1] + 1), ValueError, "k"),
        (lambda: op.opposing_signals(L, window=0), ValueError, "window"),
        (lambda: op.opposing_signals(L, min_rise=0.0), ValueError, "min_rise"),
        (lambda: op.opposing_signals(L, threshold=1.5), ValueError, "threshold"),
        (lambda: op.group_losses(L, np.full(L.shape[1], 2)), ValueError, "groups"),
        (lambda: op.anti_phase(L, np.zeros(L.shape[1], int), [[0, len(L)]]), ValueError,
         "spikes"),
        (lambda: op.group_composition(np.zeros(3, int), np.array([0, 1, 5]), 3), ValueError,
         "labels"),
        (lambda: op.feature_groups(np.arange(4.0), fraction=0.7), ValueError, "fraction"),
        (lambda: op.feature_groups(np.ones((2, 2))), ValueError, "feature"),
    ]
    for fn, exc, word in cases:
        with pytest.raises(exc, match=word):
            fn()

"""AdAdaGrad (Lau, Liu, Kolar 2024): AdaGrad-Norm and the adaptive batch-size controller.

No reference installs from PyPI (the authors' code, github.com/timlautk/AdAdaGrad, is a
Lightning script whose ``Adagradnorm`` keeps per-row accumulators), so everything is checked
against NumPy transcriptions of the paper's equations written here: AdaGrad-Norm
(``b_t^2 = b_{t-1}^2 + ||g_t||^2``, step ``g_t / b_t``), coordinate-wise AdaGrad, the norm,
inner-product and orthogonality tests on per-example gradients, and the batch-size rule
``b <- min(max(b, ceil(requested)), max)``. The controller is replayed step by step in NumPy on
a quadratic whose per-example gradients are known in closed form (``g_i = w - x_i``), with the
data order and test samples taken from the documented ``train.batch_at``,
``segment_key`` and ``check_indices``.
"""

from __future__ import annotations

import importlib
import math
import os

import _optim_conventions as conv
import _optim_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from landscape import checkpoint as ckpt
from landscape import train
from landscape.dynamics import gradient_statistics
from landscape.optim.adadagrad import (
    adagrad_norm,
    adaptive_batch_train,
    check_indices,
    next_batch_size,
    scale_by_adagrad_norm,
    segment_key,
)

pytestmark = pytest.mark.single_dtype

SHAPES = {"w": (8, 6), "b": (6,), "c": (5, 4)}
STEPS = 300


def _numpy_adagrad_norm(params, grads, lr, b0, wd):
    p = {k: v.copy() for k, v in params.items()}
    b2, out = b0**2, []
    for g in grads:
        b2 += sum(float(np.sum(x * x)) for x in g.values())
        p = {k: p[k] - lr * (g[k] / np.sqrt(b2) + wd * p[k]) for k in p}
        out.append({k: v.copy() for k, v in p.items()})
    return out


def _numpy_adagrad(params, grads, lr, b0):
    p = {k: v.copy() for k, v in params.items()}
    b2 = {k: np.full_like(v, b0**2) for k, v in p.items()}
    out = []
    for g in grads:
        b2 = {k: b2[k] + g[k] ** 2 for k in p}
        p = {k: p[k] - lr * g[k] / np.sqrt(b2[k]) for k in p}
        out.append({k: v.copy() for k, v in p.items()})
    return out


def test_adagrad_norm_and_adagrad_equal_the_papers_equations():
    params = ref.initial_params(SHAPES)
    grads = ref.gradients(SHAPES, STEPS)
    ours = ref.optax_trajectory(adagrad_norm(0.3, b0=0.5, weight_decay=1e-2), params, grads)
    err = ref.max_relative_error(ours, _numpy_adagrad_norm(params, grads, 0.3, 0.5, 1e-2))
    assert err <= 1e-10, err
    # the paper's coordinate-wise AdaGrad is optax.adagrad with b0^2 as the initial
    # accumulator and eps = 0 (optax's default eps = 1e-7 sits under the square root)
    ours = ref.optax_trajectory(optax.adagrad(0.3, initial_accumulator_value=0.25, eps=0.0),
                                params, grads)
    err = ref.max_relative_error(ours, _numpy_adagrad(params, grads, 0.3, 0.5))
    assert err <= 1e-10, err
    with jax.enable_x64(True):
        tx = scale_by_adagrad_norm(b0=0.0)  # b = 0 and g = 0: a zero step, not NaN
        z = {"a": jnp.zeros(3)}
        u, st = tx.update(z, tx.init(z))
        assert np.all(np.asarray(u["a"]) == 0) and st.count.dtype == jnp.int32


def test_optax_conventions():
    shapes = {"w": (4, 3), "b": (3,)}
    conv.check_convergence(adagrad_norm(1.0, b0=0.1), num_steps=1500,
                           rosenbrock_tx=adagrad_norm(0.5, b0=0.1))
    conv.check_inject_hyperparams(adagrad_norm, dict(learning_rate=0.3, b0=0.2,
                                                     weight_decay=1e-2), shapes)
    conv.check_dtypes_and_state(adagrad_norm(0.1), shapes)
    conv.check_multisteps(adagrad_norm(0.1), shapes)
    conv.check_weight_decay_mask(adagrad_norm, {"learning_rate": 0.1}, shapes)


def test_next_batch_size_rule():
    assert next_batch_size(8, 3.2, 64) == 8  # never shrinks
    assert next_batch_size(8, 8.0, 64) == 8
    assert next_batch_size(8, 8.01, 64) == 9  # ceil
    assert next_batch_size(8, 100.0, 64) == 64  # capped
    assert next_batch_size(8, math.inf, 64) == 64
    assert next_batch_size(8, math.nan, 64) == 8


# ----------------------------------------------------------------------------- controller

N, DIM = 64, 5


def _loss(params, batch):
    """``mean_i 0.5 ||w - x_i||^2`` over two leaves: per-example gradient ``w - x_i``."""
    x = batch["x"]
    return 0.5 * jnp.mean(jnp.sum((params["a"] - x[:, :3]) ** 2, axis=1)
                          + jnp.sum((params["b"] - x[:, 3:]) ** 2, axis=1))


def _numpy_requested(w, xs, test, eta, theta, nu):
    """The paper's tests on per-example gradients ``g_i = w - x_i`` (unbiased, n - 1)."""
    g = w[None, :] - xs
    n = g.shape[0]
    G = g.mean(axis=0)
    G2 = G @ G
    norm = np.sum((g - G) ** 2) / (n - 1) / (eta**2 * G2)
    a = g @ G
    ip = np.sum((a - G2) ** 2) / (n - 1) / (theta**2 * G2**2)
    orth = np.sum((g - np.outer(a / G2, G)) ** 2) / (n - 1) / (nu**2 * G2)
    return {"norm": norm, "inner_product": ip, "orthogonality": orth,
            "augmented": max(ip, orth)}[test]


def _numpy_controller(x, key, *, test, num_steps, b0, bmax, every, lr, acc0, tols):
    """AdAdaGrad-Norm with the controller, replayed in NumPy (params as one vector)."""
    w = np.zeros(DIM)
    b2 = acc0**2
    b, sizes, reqs = b0, [], []
    segments = -(-num_steps // every)
    index = {"i": jnp.arange(N)}
    for s in range(segments):
        k = segment_key(key, s)
        for t in range(min(every, num_steps - s * every)):
            idx = np.asarray(train.batch_at(index, t, k, b)["i"])
            g = w - x[idx].mean(axis=0)
            b2 += g @ g
            w = w - lr * g / np.sqrt(b2)
        sizes.append(b)
        r = math.nan
        if s < segments - 1 and b < bmax:
            r = _numpy_requested(w, x[np.asarray(check_indices(key, s, N, b))], test, *tols)
            b = min(max(b, math.ceil(r)), bmax)
        reqs.append(r)
    return w, np.asarray(sizes), np.asarray(reqs)


OPT = adagrad_norm(1.0, b0=0.1)  # one object: the segments' compilations are shared
TOLS = (0.5, 0.9, 0.5)  # eta, theta, nu
X = np.random.default_rng(0).normal(size=(N, DIM)) + 2.0


@pytest.mark.parametrize("test", ["norm", "augmented"])
def test_controller_replays_the_numpy_oracle(test):
    """Batch sizes (norm: 2, 9, 16; augmented: 2, 9, 13, 16), requested sizes and params."""
    key = jax.random.key(3)
    with jax.enable_x64(True):
        params = {"a": jnp.zeros(3, jnp.float64), "b": jnp.zeros(2, jnp.float64)}
        res = adaptive_batch_train(_loss, params, OPT, {"x": jnp.asarray(X)}, key=key,
                                   num_steps=24, test=test, initial_batch_size=2,
                                   max_batch_size=16, check_every=4, eta=TOLS[0],
                                   theta=TOLS[1], nu=TOLS[2])
        w, sizes, reqs = _numpy_controller(X, key, test=test, num_steps=24, every=4, b0=2,
                                           bmax=16, lr=1.0, acc0=0.1, tols=TOLS)
    np.testing.assert_array_equal(res.batch_sizes, sizes)
    np.testing.assert_allclose(res.requested, reqs, rtol=1e-9, equal_nan=True)
    ours = np.concatenate([np.asarray(res.params["a"]), np.asarray(res.params["b"])])
    np.testing.assert_allclose(ours, w, rtol=1e-10, atol=1e-12)
    # the batch grew (near the minimiser the signal ||G|| shrinks against the noise), at least
    # once by the ceiling of a request below the cap, and the accounting adds up
    assert sizes[-1] == 16 and len(set(sizes)) >= 3
    assert res.examples == int(np.sum(sizes * np.diff(np.append(res.segment_starts, 24))))
    assert res.test_examples == 2 * int(np.sum(sizes[np.isfinite(reqs)]))


def test_each_test_requests_the_papers_size():
    """The tolerances reach the right tests: the four requests of ``gradient_statistics`` (the
    controller's source) against the NumPy formulas, at a point near the minimiser."""
    with jax.enable_x64(True):
        sample = X[np.asarray(check_indices(jax.random.key(1), 0, N, 9))]
        w = X.mean(axis=0) + 0.1
        params = {"a": jnp.asarray(w[:3]), "b": jnp.asarray(w[3:])}
        st = gradient_statistics(_loss, params, {"x": jnp.asarray(sample)}, eta=TOLS[0],
                                 theta=TOLS[1], nu=TOLS[2])
    got = {"norm": st.norm_test.batch_size, "inner_product": st.inner_product_test.batch_size,
           "orthogonality": st.orthogonality_test.batch_size}
    for name, value in got.items():
        np.testing.assert_allclose(value, _numpy_requested(w, sample, name, *TOLS), rtol=1e-9)


def test_identical_examples_never_grow_the_batch():
    with jax.enable_x64(True):
        x = jnp.ones((N, DIM), jnp.float64) * 2.0  # no gradient noise: every test asks for 0
        params = {"a": jnp.zeros(3, jnp.float64), "b": jnp.zeros(2, jnp.float64)}
        res = adaptive_batch_train(_loss, params, OPT, {"x": x}, key=jax.random.key(0),
                                   num_steps=12, initial_batch_size=2, max_batch_size=16,
                                   check_every=4)
    assert list(res.batch_sizes) == [2, 2, 2]
    np.testing.assert_allclose(res.requested[:2], 0.0, atol=1e-12)


def test_controller_rejects_bad_arguments():
    params = {"a": jnp.zeros(3), "b": jnp.zeros(2)}
    data = {"x": jnp.ones((N, DIM))}
    kw = dict(key=jax.random.key(0), num_steps=4, initial_batch_size=2, max_batch_size=8)
    with pytest.raises(ValueError, match="test"):
        adaptive_batch_train(_loss, params, adagrad_norm(1.0), data, test="variance", **kw)
    with pytest.raises(ValueError, match="max_batch_size"):
        adaptive_batch_train(_loss, params, adagrad_norm(1.0), data,
                             **{**kw, "max_batch_size": N + 1})
    with pytest.raises(ValueError, match="initial_batch_size"):
        adaptive_batch_train(_loss, params, adagrad_norm(1.0), data,
                             **{**kw, "initial_batch_size": 1})
    with pytest.raises(ValueError, match="hyperparams"):
        adaptive_batch_train(_loss, params, adagrad_norm(1.0), data,
                             hyperparams={"learning_rate": 0.1}, **kw)


# ----------------------------------------------------------------------------- checkpoints

ABT = importlib.import_module("landscape.optim.adadagrad")
CKPT_KEY = jax.random.key(3)


class _Killed(Exception):
    """Stands for a SIGKILL: raised from inside the run, it skips every later save."""


def _ckpt_run(path=None, every=0, **over):
    """The augmented-test run of ``test_controller_replays_the_numpy_oracle`` (its
    compilations are shared): batch sizes 2, 9, 13, 16 over six segments of 4 steps."""
    kw = dict(key=CKPT_KEY, num_steps=24, test="augmented", initial_batch_size=2,
              max_batch_size=16, check_every=4, eta=TOLS[0], theta=TOLS[1], nu=TOLS[2])
    with jax.enable_x64(True):
        params = {"a": jnp.zeros(3, jnp.float64), "b": jnp.zeros(2, jnp.float64)}
        return adaptive_batch_train(_loss, params, OPT, {"x": jnp.asarray(X)},
                                    checkpoint=path, checkpoint_every=every, **{**kw, **over})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The uninterrupted run, and the checkpoint it left at its end."""
    path = tmp_path_factory.mktemp("abt") / "finished.ckpt"
    return _ckpt_run(path), path


@pytest.fixture(scope="module")
def uninterrupted(finished):
    return finished[0]


def _assert_same_result(got, want):
    for a, b in zip(jax.tree.leaves((got.params, got.opt_state)),
                    jax.tree.leaves((want.params, want.opt_state)), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for name in ("segment_starts", "batch_sizes", "requested", "losses"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))  # NaN == NaN
    assert (got.examples, got.test_examples) == (want.examples, want.test_examples)


def _spy_segments(monkeypatch, kill_at=None):
    """Count the segments run; raise ``_Killed`` when segment call ``kill_at`` starts."""
    calls, real = [], ABT._segment

    def spy(*args, **kwargs):
        calls.append(1)
        if len(calls) == kill_at:
            raise _Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(ABT, "_segment", spy)
    return calls


def _saved_ends(monkeypatch):
    """The step at which each checkpoint is written."""
    ends, real = [], ABT._save
    monkeypatch.setattr(ABT, "_save", lambda path, state, config, done: (
        ends.append(int(state.step)), real(path, state, config, done)))
    return ends


def test_killed_run_resumes_bit_identical(tmp_path, monkeypatch, uninterrupted):
    """Killed in segment 4 (steps 16-20), the run had saved on the segment grid after the
    first boundary at or past each multiple of ``checkpoint_every=6``: at steps 8 and 12. The
    resumed run runs only segments 3-5 and ends identical to the uninterrupted one (params,
    AdaGrad-Norm state, histories, counters); a finished file returns without training."""
    assert len(set(uninterrupted.batch_sizes.tolist())) >= 3  # the histories carry information
    path = tmp_path / "abt.ckpt"
    ends = _saved_ends(monkeypatch)
    _spy_segments(monkeypatch, kill_at=5)
    with pytest.raises(_Killed):
        _ckpt_run(path, every=6)
    assert ends == [8, 12]
    calls = _spy_segments(monkeypatch)
    _assert_same_result(_ckpt_run(path, every=6), uninterrupted)
    assert len(calls) == 3 and ends == [8, 12, 20, 24]
    again = _ckpt_run(path, every=6)
    assert len(calls) == 3 and ends == [8, 12, 20, 24]  # nothing left to run or save
    _assert_same_result(again, uninterrupted)
    # checkpoint_every = 0: one save, at the end
    ends.clear()
    _ckpt_run(tmp_path / "end_only.ckpt")
    assert ends == [24]


@pytest.mark.parametrize("over, match", [
    ({"num_steps": 20}, r"different num_steps \(24 in the file, 20 now\)"),
    ({"test": "norm"}, r"test \(\"augmented\" in the file, \"norm\" now\)"),
    ({"initial_batch_size": 3}, "initial_batch_size"),
    ({"max_batch_size": 15, "check_every": 3}, "check_every .*max_batch_size"),
    ({"nu": 0.4}, r"nu \(0.5 in the file, 0.4 now\)"),
    ({"key": jax.random.key(4)}, "different key;"),
])
def test_checkpoint_of_another_run_is_refused(over, match, finished):
    """A file from other arguments raises before any step, naming each differing one."""
    with pytest.raises(ValueError, match=match):
        _ckpt_run(finished[1], **over)


def test_checkpoint_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "other.ckpt"
    ckpt.save(path, {"x": np.zeros(1)}, {"history": {}})
    with pytest.raises(ValueError, match="not written by adaptive_batch_train"):
        _ckpt_run(path)


def test_torn_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, uninterrupted):
    """The second save dies mid-write (its temporary file cut to half, then an error): the
    checkpoint of step 8 stays whole, no temporary file is left, and resuming from it ends
    identical to the uninterrupted run."""
    path = tmp_path / "abt.ckpt"
    syncs, real = [], os.fsync

    def torn(fd):
        syncs.append(fd)
        if len(syncs) == 2:
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            raise OSError("simulated crash in the middle of a write")
        real(fd)

    monkeypatch.setattr(os, "fsync", torn)
    with pytest.raises(OSError, match="simulated"):
        _ckpt_run(path, every=8)
    monkeypatch.setattr(os, "fsync", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abt.ckpt"]
    assert ckpt.metadata(path)["progress"]["segment_starts"] == [0, 4]
    _assert_same_result(_ckpt_run(path, every=8), uninterrupted)

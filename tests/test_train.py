"""Training loop: exactness against a hand-written loop, data order, resume after SIGKILL."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from landscape import train

HERE = Path(__file__).parent


def _problem(n=40, d=5):
    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k1, (n, d))
    y = x @ jnp.arange(1.0, d + 1) + 0.1 * jax.random.normal(k2, (n,))
    params = {"w": jnp.zeros(d), "b": {"c": jnp.zeros(())}}

    def loss_fn(p, batch):
        return jnp.mean((batch["x"] @ p["w"] + p["b"]["c"] - batch["y"]) ** 2)

    return loss_fn, params, {"x": x, "y": y}


def test_full_batch_sgd_matches_hand_written_loop():
    loss_fn, params, ds = _problem()
    res = train.train(loss_fn, params, optax.sgd(0.05), ds, key=jax.random.key(0), num_steps=25)
    p = params
    for _ in range(25):
        g = jax.grad(loss_fn)(p, ds)
        p = jax.tree.map(lambda a, b: a - 0.05 * b, p, g)
    chex.assert_trees_all_close(res.params, p, rtol=1e-5, atol=1e-6)


def test_minibatch_order_is_a_permutation_per_epoch():
    _, _, ds = _problem(n=12)
    ds = {"i": jnp.arange(12)}
    key = jax.random.key(3)
    seen = [np.asarray(train.batch_at(ds, s, key, 4)["i"]) for s in range(6)]
    for epoch in range(2):
        np.testing.assert_array_equal(np.sort(np.concatenate(seen[3 * epoch: 3 * epoch + 3])),
                                      np.arange(12))
    assert not np.array_equal(np.concatenate(seen[:3]), np.concatenate(seen[3:]))


def test_minibatch_training_matches_explicit_batches():
    loss_fn, params, ds = _problem(n=24)
    key = jax.random.key(5)
    res = train.train(loss_fn, params, optax.sgd(0.02), ds, key=key, num_steps=9, batch_size=8)
    p = params
    for s in range(9):
        batch = train.batch_at(ds, s, jax.random.split(key)[0], 8)
        p = jax.tree.map(lambda a, g: a - 0.02 * g, p, jax.grad(loss_fn)(p, batch))
    chex.assert_trees_all_close(res.params, p, rtol=1e-5, atol=1e-6)


def test_batch_indices_are_the_batches_of_batch_at():
    ds = {"i": jnp.arange(30)}
    key = jax.random.key(7)
    table = train.batch_indices(key, 30, 8, 11)  # 3 batches per epoch, 4 epochs started
    assert table.shape == (11, 8) and table.dtype == jnp.int32
    for t in range(11):
        np.testing.assert_array_equal(table[t], train.batch_at(ds, t, key, 8)["i"])
    with pytest.raises(ValueError, match="batch_size"):
        train.batch_indices(key, 30, 31, 2)


def test_same_key_same_result_and_history():
    loss_fn, params, ds = _problem()
    run = lambda: train.train(loss_fn, params, optax.adam(0.1), ds, key=jax.random.key(1),
                              num_steps=20, batch_size=10, callback_every=5)
    a, b = run(), run()
    chex.assert_trees_all_equal(a.params, b.params)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    np.testing.assert_array_equal(a.history["step"], [5, 10, 15, 20])


def test_in_process_resume_equals_uninterrupted(tmp_path):
    loss_fn, params, ds = _problem()
    kw = dict(key=jax.random.key(2), batch_size=8, checkpoint_every=5)
    full = train.train(loss_fn, params, optax.adam(0.05), ds, num_steps=30, **kw)
    ck = tmp_path / "run.ckpt"
    half = train.train(loss_fn, params, optax.adam(0.05), ds, num_steps=15, checkpoint=ck, **kw)
    assert half.resumed_from == 0
    rest = train.train(loss_fn, params, optax.adam(0.05), ds, num_steps=30, checkpoint=ck, **kw)
    assert rest.resumed_from == 15
    chex.assert_trees_all_equal(rest.params, full.params)


def test_resume_refuses_a_different_key(tmp_path):
    loss_fn, params, ds = _problem()
    ck = tmp_path / "run.ckpt"
    train.train(loss_fn, params, optax.sgd(0.1), ds, key=jax.random.key(0), num_steps=3,
                checkpoint=ck)
    with pytest.raises(ValueError, match="different key"):
        train.train(loss_fn, params, optax.sgd(0.1), ds, key=jax.random.key(1), num_steps=6,
                    checkpoint=ck)


def _worker(args, **kw):
    return subprocess.Popen([sys.executable, str(HERE / "_train_worker.py"), *map(str, args)],
                            env=os.environ.copy(), **kw)


def test_sigkill_and_resume_gives_identical_parameters(tmp_path):
    ref_out, out, ck = tmp_path / "ref.npz", tmp_path / "out.npz", tmp_path / "run.ckpt"
    assert _worker(["-", ref_out, 0]).wait(timeout=300) == 0
    proc = _worker([ck, out, 0.3])
    deadline = time.time() + 300
    while not ck.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "the worker finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not out.exists()
    assert _worker([ck, out, 0]).wait(timeout=300) == 0
    ref, got = np.load(ref_out), np.load(out)
    assert int(got["resumed_from"]) > 0
    for k in ref.files:
        if k.startswith("leaf"):
            np.testing.assert_array_equal(got[k], ref[k])


def test_stateful_loss_updates_model_state():
    _, params, ds = _problem()

    def loss_fn(p, batch, state, key):
        pred = batch["x"] @ p["w"] + p["b"]["c"]
        return jnp.mean((pred - batch["y"]) ** 2), {"count": state["count"] + 1}

    res = train.train(loss_fn, params, optax.sgd(0.01), ds, key=jax.random.key(0),
                      num_steps=7, model_state={"count": jnp.zeros(())})
    assert float(res.model_state["count"]) == 7


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_steps": -1}, "num_steps"),
        ({"num_steps": 2, "batch_size": 0}, "batch_size"),
        ({"num_steps": 2, "batch_size": 1000}, "batch_size"),
        ({"num_steps": 2, "callback_every": -2}, "callback_every"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    loss_fn, params, ds = _problem()
    with pytest.raises(ValueError, match=match):
        train.train(loss_fn, params, optax.sgd(0.1), ds, key=jax.random.key(0), **kwargs)


def test_non_scalar_loss_and_nan_params_are_rejected():
    loss_fn, params, ds = _problem()
    with pytest.raises(TypeError, match="scalar"):
        train.train(lambda p, b: b["x"] @ p["w"], params, optax.sgd(0.1), ds,
                    key=jax.random.key(0), num_steps=1)
    bad = {"w": jnp.full(5, jnp.nan), "b": {"c": jnp.zeros(())}}
    with pytest.raises(ValueError, match="params contains non-finite"):
        train.train(loss_fn, bad, optax.sgd(0.1), ds, key=jax.random.key(0), num_steps=1)


def test_divergence_is_reported():
    loss_fn, params, ds = _problem()
    with pytest.raises(FloatingPointError, match="non-finite"):
        train.train(loss_fn, params, optax.sgd(1e6), ds, key=jax.random.key(0), num_steps=50,
                    callback_every=10)


# ----------------------------------------------------------------------------- probes


def _norm_probe(every, data):
    """Records the full-dataset loss and the parameter norm, and counts its own calls."""
    loss_fn, _, _ = _problem()

    def fn(ctx, count):
        rec = {"loss": loss_fn(ctx.params, ctx.data),
               "norm": jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(ctx.params)))}
        return (rec, ctx.step), count + 1

    return train.probe(fn, every=every, init=lambda p, d: jnp.zeros((), jnp.int32), data=data)


def test_probes_record_what_a_hand_written_loop_sees():
    loss_fn, params, ds = _problem()
    res = train.train(loss_fn, params, optax.sgd(0.05), ds, key=jax.random.key(0), num_steps=23,
                      probes={"m": _norm_probe(5, ds)}, chunk_seconds=1e-6)
    np.testing.assert_array_equal(res.trace_steps["m"], [0, 5, 10, 15, 20])
    rec, seen_step = res.trace["m"]
    np.testing.assert_array_equal(seen_step, [0, 5, 10, 15, 20])
    assert int(res.probe_states["m"]) == 5
    p, expect_loss, expect_norm = params, [], []
    for t in range(23):
        if t % 5 == 0:  # measured before the update of step t
            expect_loss.append(float(loss_fn(p, ds)))
            expect_norm.append(float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p)))))
        p = jax.tree.map(lambda a, g: a - 0.05 * g, p, jax.grad(loss_fn)(p, ds))
    np.testing.assert_allclose(rec["loss"], expect_loss, rtol=1e-5)
    np.testing.assert_allclose(rec["norm"], expect_norm, rtol=1e-5, atol=1e-7)


def test_probe_sees_the_step_gradient_unless_value_and_grad_replaces_it():
    """``ctx.grads`` is the gradient the step computed (the minibatch gradient of ``ctx.loss``
    at ``ctx.params``, checked against ``jax.grad`` on the same batch); with
    ``value_and_grad=`` the probe gets ``None`` and the step applies the given gradient."""
    loss_fn, params, ds = _problem()

    def fn(ctx, state):
        return {"g": ctx.grads, "p": ctx.params, "b": ctx.batch}, state

    res = train.train(loss_fn, params, optax.sgd(0.05), ds, key=jax.random.key(1), num_steps=7,
                      batch_size=8, probes={"g": train.probe(fn, every=3)})
    rec = res.trace["g"]
    for i in range(3):  # steps 0, 3, 6
        at = lambda t, i=i: jax.tree.map(lambda a: a[i], t)  # noqa: E731
        assert not np.array_equal(at(rec["b"])["x"], np.asarray(ds["x"][:8]))  # a minibatch
        chex.assert_trees_all_close(at(rec["g"]), jax.grad(loss_fn)(at(rec["p"]), at(rec["b"])),
                                    rtol=1e-6, atol=1e-6)

    seen = []

    def none_fn(ctx, state):
        seen.append(ctx.grads)
        return jnp.zeros(()), state

    half = lambda p, b: (loss_fn(p, b), jax.tree.map(lambda g: 0.5 * g,  # noqa: E731
                                                      jax.grad(loss_fn)(p, b)))
    a = train.train(loss_fn, params, optax.sgd(0.05), ds, key=jax.random.key(1), num_steps=4,
                    probes={"n": train.probe(none_fn, every=2)}, value_and_grad=half)
    assert seen and all(g is None for g in seen)
    b = train.train(loss_fn, params, optax.sgd(0.025), ds, key=jax.random.key(1), num_steps=4)
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-6)


def test_update_extra_args_reach_the_optimizer_as_in_a_hand_written_loop():
    """``update_extra_args(params, batch)`` is passed to ``optimizer.update`` at every step: TrAct
    on the first kernel fed the minibatch inputs equals the loop that calls ``update`` with them
    on the same batches; a non-callable is named."""
    from landscape import optim

    loss_fn, _, ds = _problem(n=24)
    loss = lambda p, b: jnp.mean((jnp.tanh(b["x"] @ p["w"]) @ p["v"] - b["y"]) ** 2)  # noqa: E731
    params = {"w": 0.3 * jax.random.normal(jax.random.key(2), (5, 3)), "v": jnp.ones(3)}
    opt = optim.tract(0.05, 0.1, kernels={"w": True, "v": False})
    key = jax.random.key(4)
    res = train.train(loss, params, opt, ds, key=key, num_steps=6, batch_size=8,
                      update_extra_args=lambda p, b: {"tract_inputs": b["x"]})
    p, state = params, opt.init(params)
    for s in range(6):
        batch = train.batch_at(ds, s, jax.random.split(key)[0], 8)
        upd, state = opt.update(jax.grad(loss)(p, batch), state, p, tract_inputs=batch["x"])
        p = optax.apply_updates(p, upd)
    chex.assert_trees_all_close(res.params, p, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="update_extra_args"):
        train.train(loss, params, opt, ds, key=key, num_steps=1, update_extra_args={"a": 1})


def test_probe_trace_survives_resume(tmp_path):
    loss_fn, params, ds = _problem()
    kw = dict(key=jax.random.key(4), batch_size=8, checkpoint_every=4,
              probes={"m": _norm_probe(3, ds)})
    full = train.train(loss_fn, params, optax.adam(0.05), ds, num_steps=20, **kw)
    ck = tmp_path / "run.ckpt"
    train.train(loss_fn, params, optax.adam(0.05), ds, num_steps=12, checkpoint=ck, **kw)
    rest = train.train(loss_fn, params, optax.adam(0.05), ds, num_steps=20, checkpoint=ck, **kw)
    assert rest.resumed_from == 12
    np.testing.assert_array_equal(rest.trace_steps["m"], full.trace_steps["m"])
    chex.assert_trees_all_equal(rest.trace["m"], full.trace["m"])
    assert int(rest.probe_states["m"]) == int(full.probe_states["m"]) == 7


def test_chunking_does_not_change_results():
    loss_fn, params, ds = _problem()
    kw = dict(key=jax.random.key(1), num_steps=37, batch_size=8, probes={"m": _norm_probe(2, ds)})
    a = train.train(loss_fn, params, optax.adam(0.05), ds, chunk_seconds=1e-6, **kw)
    b = train.train(loss_fn, params, optax.adam(0.05), ds, chunk_seconds=100.0, **kw)
    chex.assert_trees_all_equal(a.params, b.params)
    chex.assert_trees_all_equal(a.trace, b.trace)


# ----------------------------------------------------------------------------- hyperparameters


def test_learning_rate_sweep_compiles_once():
    loss_fn, params, ds = _problem()

    def fresh_loss(p, b):  # a new function object: its compilation cannot be in any cache
        return loss_fn(p, b)

    before = train._compiled_chunk._cache_size()
    finals = []
    for lr in np.geomspace(1e-3, 3e-2, 8):
        res = train.train(fresh_loss, params, optax.sgd, ds, key=jax.random.key(0), num_steps=15,
                          hyperparams={"learning_rate": lr}, chunk_seconds=1e-6)
        finals.append(res.params)
    assert train._compiled_chunk._cache_size() - before == 1
    # and the values really differ: each run used its own learning rate
    ref = train.train(loss_fn, params, optax.sgd(3e-2), ds, key=jax.random.key(0), num_steps=15)
    chex.assert_trees_all_close(finals[-1], ref.params, rtol=1e-5, atol=1e-6)
    assert not np.allclose(finals[0]["w"], finals[-1]["w"])


def test_run_steps_vmaps_over_learning_rates():
    loss_fn, params, ds = _problem()
    lrs = jnp.asarray([0.01, 0.02, 0.05])

    def final(lr):
        state = train.init_state(params, optax.sgd, hyperparams={"learning_rate": lr})
        out = train.run_steps(loss_fn, optax.sgd, state, ds, key=jax.random.key(0), num_steps=10,
                              hyperparams={"learning_rate": lr})
        return out[0].params

    batched = jax.jit(jax.vmap(final))(lrs)
    for i, lr in enumerate(lrs):
        ref = train.train(loss_fn, params, optax.sgd(float(lr)), ds, key=jax.random.key(0),
                          num_steps=10)
        chex.assert_trees_all_close(jax.tree.map(lambda x, i=i: x[i], batched), ref.params,
                                    rtol=1e-5, atol=1e-6)


def test_bad_probe_and_hyperparams_are_named():
    loss_fn, params, ds = _problem()
    with pytest.raises(TypeError, match="probes\\['m'\\]"):
        train.train(loss_fn, params, optax.sgd(0.1), ds, key=jax.random.key(0), num_steps=1,
                    probes={"m": lambda c, s: (0.0, s)})
    with pytest.raises(ValueError, match="every"):
        train.probe(lambda c, s: (0.0, s), every=0)
    with pytest.raises(ValueError, match="hyperparams"):
        train.train(loss_fn, params, optax.sgd(0.1), ds, key=jax.random.key(0), num_steps=1,
                    hyperparams={"learning_rate": 0.1})
    with pytest.raises(ValueError, match="learning_rate"):
        train.train(loss_fn, params, optax.sgd, ds, key=jax.random.key(0), num_steps=1,
                    hyperparams={"learning_rate": float("nan")})


# ------------------------------------------------------ custom data order, probe loss


def _sq_loss(p, b):
    return jnp.mean((b["x"] @ p["w"] - b["y"]) ** 2)


def test_batch_fn_and_probe_loss_match_a_hand_written_loop():
    """Fresh examples each step from per-step keys (``batch_fn``), and ``ctx.loss`` recorded
    by a probe, against a plain loop."""
    w_true = jnp.arange(1.0, 4.0)

    def draw(k):
        x = jax.random.normal(k, (5, 3))
        return {"x": x, "y": x @ w_true}

    keys = jax.random.split(jax.random.key(0), 7)
    opt = optax.sgd(0.1)
    params = {"w": jnp.zeros(3)}
    rec = train.probe(lambda ctx, s: ((ctx.loss, ctx.batch["x"][0, 0]), s))
    state, mean, trace, steps, _ = jax.jit(lambda st: train.run_steps(
        _sq_loss, opt, st, keys, key=jax.random.key(1), num_steps=7, probes={"l": rec},
        batch_fn=lambda ks, t, _: draw(ks[t])))(train.init_state(params, opt))
    p, losses, firsts = params, [], []
    for k in keys:
        b = draw(k)
        loss, g = jax.value_and_grad(_sq_loss)(p, b)
        p = jax.tree.map(lambda a, d: a - 0.1 * d, p, g)
        losses.append(float(loss))
        firsts.append(float(b["x"][0, 0]))
    tol = 1e-12 if jax.config.jax_enable_x64 else 1e-5
    np.testing.assert_allclose(np.asarray(trace["l"][0][:7]), losses, rtol=tol)
    np.testing.assert_allclose(np.asarray(trace["l"][1][:7]), firsts, rtol=tol)
    np.testing.assert_array_equal(np.asarray(steps["l"][:7]), np.arange(7))
    np.testing.assert_allclose(np.asarray(state.params["w"]), np.asarray(p["w"]), rtol=tol)
    np.testing.assert_allclose(float(mean), np.mean(losses), rtol=tol)
    with pytest.raises(ValueError, match="batch_size"):
        train.run_steps(_sq_loss, opt, train.init_state(params, opt), keys, key=keys[0],
                        num_steps=1, batch_size=2, batch_fn=lambda ks, t, _: draw(ks[t]))


def test_probe_loss_in_train_equals_the_history_of_single_steps():
    x = jax.random.normal(jax.random.key(2), (12, 3))
    ds = {"x": x, "y": x @ jnp.ones(3)}
    rec = train.probe(lambda ctx, s: (ctx.loss, s))
    r = train.train(_sq_loss, {"w": jnp.zeros(3)}, optax.sgd(0.05), ds, key=jax.random.key(3),
                    num_steps=6, batch_size=4, probes={"loss": rec}, callback=lambda *_: {},
                    callback_every=1, progress=False)
    tol = 1e-12 if jax.config.jax_enable_x64 else 1e-6
    np.testing.assert_allclose(r.trace["loss"], r.history["loss"][1:], rtol=tol)

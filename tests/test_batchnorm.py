"""BatchNorm done right: train with mode="train" + model_state, evaluate and measure curvature
with mode="eval" and the trained statistics; the frozen-statistics warning; the barrier example.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from landscape import curvature, data, models, train
from landscape.models.layers import BATCHNORM_MOMENTUM
from landscape.nnx import FrozenBatchStatsWarning, functional, loss_fn

REPO = Path(__file__).resolve().parent.parent
FLOAT = jax.dtypes.canonicalize_dtype(jnp.float64)
TOL = 1e-9 if FLOAT == jnp.float64 else 2e-5
OPT = optax.sgd(0.1)  # one object, so that every training run below shares one compilation


def _digits(n=128):
    tr, _ = data.digits(jax.random.key(0))
    return jax.tree.map(lambda a: a[:n], tr)


def _cnn(norm="batch", seed=0):
    return models.CNN2D(10, width=4, num_layers=2, norm=norm, rngs=nnx.Rngs(seed))


def _ce(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@pytest.fixture(scope="module")
def trained():
    """One full-batch step, then 19 more: ``(model, lf, p0, s0, step1, step20)``."""
    model, ds = _cnn(), _digits()
    lf, p0, s0 = loss_fn(model, mode="train")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FrozenBatchStatsWarning)  # the right pattern is quiet
        r1 = train.train(lf, p0, OPT, ds, key=jax.random.key(1), num_steps=1, model_state=s0)
        r20 = train.train(lf, r1.params, OPT, ds, key=jax.random.key(1), num_steps=19,
                          model_state=r1.model_state)
    return model, ds, lf, p0, s0, r1, r20


def test_one_train_step_updates_the_statistics_as_flax_momentum_says(trained):
    """Step 0 sees the full batch at the initial params: the first BatchNorm's new running
    mean/var are ``m * old + (1 - m) * batch mean/var`` of conv0's output (biased variance),
    recomputed here with ``lax.conv`` (the model uses ShiftConv on CPU)."""
    _, ds, _, p0, s0, r1, _ = trained
    conv = p0["convs"][0]
    x = ds["x"].astype(conv["kernel"].dtype)  # digits are float32 even under x64
    z = jax.lax.conv_general_dilated(x, conv["kernel"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + conv["bias"]
    z = np.asarray(z, np.float64)
    m = BATCHNORM_MOMENTUM
    want_mean = m * np.asarray(s0["norms"][0]["mean"]) + (1 - m) * z.mean((0, 1, 2))
    want_var = m * np.asarray(s0["norms"][0]["var"]) + (1 - m) * z.var((0, 1, 2))
    np.testing.assert_allclose(r1.model_state["norms"][0]["mean"], want_mean, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(r1.model_state["norms"][0]["var"], want_var, rtol=TOL, atol=TOL)
    np.testing.assert_array_equal(s0["norms"][0]["mean"], 0.0)  # the init is untouched


def test_statistics_move_and_eval_uses_the_trained_ones(trained):
    model, ds, _, _, s0, _, r20 = trained
    params, stats = r20.params, r20.model_state
    for layer, init in zip(stats["norms"].values(), s0["norms"].values(), strict=True):
        assert not np.allclose(layer["mean"], init["mean"])
        assert not np.allclose(layer["var"], init["var"])
    lf_eval, _, returned = loss_fn(model, mode="eval", state=stats)
    assert returned is stats
    lf_init, _, _ = loss_fn(model, mode="eval")  # the wrong pattern: init statistics
    good, bad = float(lf_eval(params, ds)), float(lf_init(params, ds))
    assert abs(good - bad) > 1e-2 * abs(good)
    # an independent route: the NNX model itself, updated with the trained arrays, in eval mode
    ref = nnx.clone(model)
    for kind, values in ((nnx.Param, params), (nnx.BatchStat, stats)):
        st = nnx.state(ref, kind)
        nnx.replace_by_pure_dict(st, values)
        nnx.update(ref, st)
    ref.eval()
    np.testing.assert_allclose(good, _ce(ref(ds["x"]), ds["y"]), rtol=TOL)
    fm = functional(model, mode="eval")
    np.testing.assert_allclose(fm.apply(params, ds["x"], state=stats), ref(ds["x"]),
                               rtol=TOL, atol=TOL)
    merged = fm.merge(params, stats)
    np.testing.assert_allclose(merged(ds["x"]), ref(ds["x"]), rtol=TOL, atol=TOL)
    with pytest.raises(ValueError, match="state"):
        loss_fn(model, mode="eval", state={"norms": {0: stats["norms"][0]}})


def test_hessian_with_trained_statistics(trained):
    """The eval-mode Hessian with the trained statistics equals jvp-of-grad of that same loss,
    differs from the one with the initial statistics, and raises no warning."""
    model, ds, _, _, _, _, r20 = trained
    params, stats = r20.params, r20.model_state
    lf_eval, _, _ = loss_fn(model, mode="eval", state=stats)
    lf_init, _, _ = loss_fn(model, mode="eval")
    flat, unravel = ravel_pytree(params)
    v = jax.random.normal(jax.random.key(2), flat.shape, flat.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FrozenBatchStatsWarning)
        hv = curvature.hessian(lf_eval, params, ds, batch_size=64).matvec(v)
        hv_init = curvature.hessian(lf_init, params, ds).matvec(v)
    want = jax.jvp(jax.grad(lambda p: lf_eval(p, ds)), (params,), (unravel(v),))[1]
    want = ravel_pytree(want)[0]
    scale = float(jnp.linalg.norm(want))
    np.testing.assert_allclose(hv, want, atol=20 * TOL * scale)
    assert float(jnp.linalg.norm(hv - hv_init)) > 1e-2 * scale


def _warnings_of(fn):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fn()
    return [w for w in rec if issubclass(w.category, FrozenBatchStatsWarning)]


@pytest.mark.single_dtype  # a warning's logic: the same in both dtypes
def test_training_an_eval_mode_batchnorm_loss_warns_once_per_compilation():
    model, ds = _cnn(seed=1), _digits()
    lf, p, _ = loss_fn(model, mode="eval")
    with pytest.warns(FrozenBatchStatsWarning, match="mode='train'.*model_state="):
        train.train(lf, p, OPT, ds, key=jax.random.key(0), num_steps=2)
    # several chunks of one compiled loop (callback every 3 steps) -> one warning at most;
    # a new loss function is a new compilation -> exactly one
    lf2, p, _ = loss_fn(model, mode="eval")
    got = _warnings_of(lambda: train.train(lf2, p, OPT, ds, key=jax.random.key(0), num_steps=12,
                                           batch_size=32, callback_every=3))
    assert len(got) == 1
    assert "stay frozen" in str(got[0].message)
    state = train.init_state(p, OPT)
    got = _warnings_of(lambda: train.run_steps(lf, OPT, state, ds, key=jax.random.key(0),
                                               num_steps=3))
    assert len(got) == 1


@pytest.mark.single_dtype  # a warning's logic: the same in both dtypes
def test_no_warning_without_batchnorm_or_outside_training():
    ds = _digits(64)
    lf, p, s = loss_fn(_cnn(norm=None), mode="eval")
    assert s == {}
    assert _warnings_of(lambda: train.train(lf, p, OPT, ds, key=jax.random.key(0),
                                            num_steps=2)) == []
    lf_bn, p_bn, _ = loss_fn(_cnn(seed=2), mode="eval")
    # evaluation, gradients and curvature of the eval-mode BatchNorm loss are fine
    assert _warnings_of(lambda: (jax.jit(lf_bn)(p_bn, ds), jax.grad(lf_bn)(p_bn, ds),
                                 curvature.hessian(lf_bn, p_bn, ds).matvec(
                                     ravel_pytree(p_bn)[0]))) == []
    # ... and so is a probe that evaluates it inside a (train-mode) training loop
    lt, pt, st = loss_fn(_cnn(seed=2), mode="train")
    pr = train.probe(lambda ctx, s: (lf_bn(ctx.params, ds), s))
    assert _warnings_of(lambda: train.train(lt, pt, OPT, ds, key=jax.random.key(0),
                                            num_steps=2, model_state=st,
                                            probes={"eval": pr})) == []


def _example(monkeypatch):
    """examples/bn_barrier.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bn_barrier", REPO / "examples" /
                                                  "bn_barrier.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look the module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.single_dtype
def test_bn_barrier_example_smoke(capsys, monkeypatch):
    out = _example(monkeypatch).main(smoke=True)
    assert "barrier" in capsys.readouterr().out
    barriers, paths, ends = out["barriers"], out["paths"], out["endpoints"]
    assert set(barriers) == {(p, q) for p in ("raw", "aligned")
                             for q in ("interpolate", "recompute")}
    for b in barriers.values():
        assert all(np.isfinite(v) for v in b.values())
    # both policies start and end at the same models, whose eval losses use their own
    # (reset) statistics; permuting B changes nothing
    tol = 1e-4
    for path in paths.values():
        np.testing.assert_allclose(path.losses[0], ends[0]["loss"], rtol=tol)
        np.testing.assert_allclose(path.losses[-1], ends[1]["loss"], rtol=tol)

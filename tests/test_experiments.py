"""Every registered experiment end to end on its smoke config, with the figures that read it.

One parametrised test per experiment: run the smoke config through ``ensure`` (the result is
shared with other tests and xdist workers through the suite's results folder), check that the
stored metrics have exactly the keys of the experiment's layout, run the experiment's own checks
(``CHECKS``), and draw every figure that reads it, twice, byte for byte the same. The
experiment-specific checks test what the experiment claims (invariants, shapes derived from the
config, agreement with independent references); the helper tests at the end pin small functions
on known inputs.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import subprocess
import sys
import typing
from pathlib import Path

import jax
import numpy as np
import pytest

import experiments
import paper_figures
from landscape import experiment as ex

# These two compare with dense references at dtype-dependent tolerances: they run in the float64
# pass, where the tolerance is tight (the spectral routines they call are tested in both dtypes
# on their own); every other smoke run is dtype-independent plumbing and runs in float32.
FLOAT64_ONLY = {"hessian_outliers", "hessian_spectrum"}


def _param(name):
    return pytest.param(name, marks=pytest.mark.float64_only if name in FLOAT64_ONLY
                        else pytest.mark.single_dtype)


NAMES = [_param(name) for name in experiments.names()]


def _finite(x):
    return bool(np.all(np.isfinite(np.asarray(x, np.float64))))


def _in_unit_interval(x):
    x = np.asarray(x, np.float64)
    return bool(np.all((x >= 0) & (x <= 1)))


# ----------------------------------------------------------------------------- layouts


def check_layout(value, tp, where: str = "metrics") -> None:
    """Assert that ``value`` has exactly the structure the annotation ``tp`` declares.

    TypedDicts must have every required key, no undeclared key, and values of the declared
    types; ``dict[str, X]`` and ``list[X]`` are checked item by item; leaves are ``np.ndarray``,
    ``float`` (an int is a float), ``int``, ``bool`` or ``str``.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if typing.is_typeddict(tp):
        assert isinstance(value, dict), f"{where} is {type(value).__name__}, not a dict"
        keys = set(value)
        missing = tp.__required_keys__ - keys
        extra = keys - tp.__required_keys__ - tp.__optional_keys__
        assert not missing, f"{where} lacks {sorted(missing)} declared by {tp.__qualname__}"
        assert not extra, f"{where} has {sorted(extra)} not declared by {tp.__qualname__}"
        hints = typing.get_type_hints(tp)
        for key in keys:
            check_layout(value[key], hints[key], f"{where}[{key!r}]")
    elif origin is dict:
        assert isinstance(value, dict), f"{where} is {type(value).__name__}, not a dict"
        for key, item in value.items():
            assert isinstance(key, args[0]), f"{where} has key {key!r}"
            check_layout(item, args[1], f"{where}[{key!r}]")
    elif origin is list:
        assert isinstance(value, list), f"{where} is {type(value).__name__}, not a list"
        for i, item in enumerate(value):
            check_layout(item, args[0], f"{where}[{i}]")
    elif tp is float:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
    elif tp is int:
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif tp in (bool, str, np.ndarray):
        assert isinstance(value, tp), f"{where} is {type(value).__name__}, not {tp.__name__}"
    else:
        raise TypeError(f"{where}: the checker does not know the annotation {tp!r}")


@pytest.mark.single_dtype
def test_layout_check_rejects_missing_extra_and_mistyped_keys():
    from experiments.layouts.merging import Metrics

    good = {"endpoints": 0.5, "ensemble": 0.6, "average": 0.1, "wm": 0.4, "wm_repair": 1,
            "pleas": np.zeros(2), "num_merged": np.arange(2), "multi_average": np.zeros(2),
            "multi_wm": np.zeros(2)}
    check_layout(good, Metrics)
    for bad, message in (({k: v for k, v in good.items() if k != "wm"}, "lacks"),
                         ({**good, "extra": 1.0}, "not declared"),
                         ({**good, "pleas": [0.1, 0.2]}, "not ndarray")):
        with pytest.raises(AssertionError, match=message):
            check_layout(bad, Metrics)


# ----------------------------------------------------------------------------- contract


@pytest.mark.single_dtype
def test_registry_lists_every_experiment_module_and_nothing_else():
    folder = Path(experiments.__file__).parent
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__", "__main__", "cli"}
    assert set(experiments.names()) == {m for m in modules if not m.startswith("_")}
    layouts = {p.stem for p in (folder / "layouts").glob("*.py")} - {"__init__"}
    assert layouts == set(experiments.names())


@pytest.mark.single_dtype
@pytest.mark.parametrize("name", experiments.names())
def test_experiment_satisfies_the_protocol(name):
    module = experiments.get(name)
    assert isinstance(module, ex.Experiment)
    config, smoke = module.Config(), module.Config.smoke()
    assert isinstance(config, ex.ExperimentConfig) and type(smoke) is module.Config
    assert module.Config.__dataclass_params__.frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1
    params = inspect.signature(module.run).parameters
    assert list(params)[:2] == ["config", "ctx"] and params["ctx"].default is None
    layout = importlib.import_module(f"experiments.layouts.{name}").Metrics
    assert module.Metrics is layout and typing.is_typeddict(layout)
    assert typing.get_type_hints(module.run)["return"] is layout


# ----------------------------------------------------------------------------- checks


def _adaptive_eos(E, cfg, m):
    """The recorded preconditioned sharpness equals the dense float64 eigenvalues of
    D^1/2 H D^1/2 at a recorded step, with D rebuilt from the Adam state of a rerun."""
    import optax

    from landscape import train
    from landscape.tree import ravel

    R = cfg.num_steps // cfg.every
    for name, r in m["runs"].items():
        assert np.asarray(r["pre_sharpness"]).shape == (R, cfg.k)
        assert np.isnan(r["pre_sharpness"][0, 0]) and np.all(np.isfinite(r["pre_sharpness"][1:]))
        row = R // 2
        step = int(r["steps"][row])
        s = E.setting(cfg)
        res = train.train(s.loss_fn, s.params, E.optimizer(cfg, r["eta"]), s.dataset,
                          key=jax.random.key(cfg.seed + 1), num_steps=step)
        adam = res.opt_state[0]
        assert isinstance(adam, optax.ScaleByAdamState) and int(adam.count) == step
        with jax.enable_x64(True):
            nu = np.asarray(ravel(adam.nu)[0], np.float64)
            D = 1.0 / (np.sqrt(nu / (1 - cfg.b2 ** step)) + cfg.eps)
            w0, unravel = ravel(jax.tree.map(lambda a: np.asarray(a, np.float64), res.params))
            data = jax.tree.map(lambda a: np.asarray(a, np.float64)
                                if np.issubdtype(np.asarray(a).dtype, np.floating) else a,
                                s.dataset)
            full = lambda w, s=s, unravel=unravel, data=data: s.loss_fn(unravel(w), data)
            H = np.asarray(jax.hessian(full)(w0))
        top = np.linalg.eigvalsh(np.sqrt(D)[:, None] * H * np.sqrt(D)[None, :])[::-1][:cfg.k]
        np.testing.assert_allclose(r["pre_sharpness"][row], top, rtol=2e-3)
        top_raw = np.linalg.eigvalsh(H)[::-1][:cfg.k]
        np.testing.assert_allclose(r["raw_sharpness"][row], top_raw, rtol=2e-3)
        thr = m["summary"][name]["threshold"]
        assert thr == pytest.approx((2 + 2 * cfg.b1) / ((1 - cfg.b1) * r["eta"]))


def _barrier_vs_training(E, cfg, m):
    np.testing.assert_array_equal(m["steps"], cfg.checkpoints)
    np.testing.assert_array_equal(m["spawn_steps"], cfg.spawn_steps)
    for key in ("naive_loss", "naive_error", "wm_loss", "wm_error", "spawn_loss", "spawn_error"):
        # max_minus_mean is never negative: the path's max is at least the endpoints' mean
        assert _finite(m[key]) and np.all(np.asarray(m[key]) >= -1e-6), key
    for key in ("naive_error", "wm_error", "spawn_error", "test_error", "child_test_error"):
        assert _in_unit_interval(m[key]), key  # errors, and barriers of errors, are <= 1
    assert len(m["naive_loss"]) == len(cfg.checkpoints)
    assert len(m["spawn_loss"]) == len(cfg.spawn_steps)


def _barrier_vs_width(E, cfg, m):
    shape = (len(cfg.datasets), len(cfg.widths), len(m["methods"]), cfg.num_pairs)
    ste = m["methods"].index("ste")
    for key in ("barrier_loss", "barrier_error"):
        v = np.asarray(m[key], float)
        assert v.shape == shape
        others = np.delete(v, ste, axis=2)
        assert _finite(others) and np.all(others >= -1e-6)  # max_minus_mean >= 0
        wide = np.asarray(cfg.widths) > cfg.ste_max_width
        assert np.all(np.isnan(v[:, wide, ste])) and _finite(v[:, ~wide, ste])
    test_error = np.asarray(m["test_error"])
    assert test_error.shape == (len(cfg.datasets), len(cfg.widths), 2 * cfg.num_pairs)
    assert _in_unit_interval(test_error)


def _baselines(E, cfg, m):
    from landscape import data

    assert set(m["results"]) == set(m["summary"]) == set(cfg.datasets)
    for d in cfg.datasets:
        assert set(m["results"][d]) == set(cfg.models)
        for model, runs in m["results"][d].items():
            assert len(runs) == cfg.num_seeds
            for r in runs:
                assert _in_unit_interval([r["test_acc"], r["train_acc"]])
                assert _in_unit_interval(r["curve_test_acc"])
                steps = np.asarray(r["curve_step"])
                assert steps[-1] == cfg.num_steps and np.all(np.diff(steps) == cfg.eval_every)
            s, accs = m["summary"][d][model], [r["test_acc"] for r in runs]
            assert s["per_seed"] == accs
            assert s["mean"] == pytest.approx(np.mean(accs))
            assert s["std"] == pytest.approx(np.std(accs))
    # Digits has 10 balanced classes. The smoke config still trains every model for
    # num_steps * batch_size examples (about two epochs), so each must beat chance by far more
    # than the test set's sampling noise: 5 binomial standard errors of a chance-level classifier.
    train, test = data.digits(jax.random.key(cfg.seed))
    chance = 0.1
    bound = chance + 5 * np.sqrt(chance * (1 - chance) / len(test["y"]))
    assert cfg.num_steps * cfg.batch_size >= len(train["y"])  # the premise: at least an epoch
    for model in cfg.models:
        assert m["summary"]["digits"][model]["mean"] > bound, model


def _last_gap_count(eigenvalues, threshold):
    """The last-gap rule of the docstring, written independently: scan up from the bottom."""
    lam = [float(x) for x in eigenvalues]
    floor = 1e-3 * lam[0]
    for count in range(len(lam) - 1, 0, -1):
        if lam[count - 1] / max(lam[count], floor) >= threshold:
            return count
    return 0


def _central_flow(E, cfg, m):
    """Mechanics: shapes, a shared start, the held threshold, solver health, and the smoothed
    iterate at step 0, (w_0 + w_1) / 2, at distance eta/2 ||grad L(w_0)|| from w_0."""
    from landscape import dynamics
    from landscape.tree import ravel

    R = cfg.num_steps // cfg.record_every
    for key in ("gd_sharpness", "cf_loss", "cf_predicted_loss", "gf_loss", "distance_cf",
                "distance_gf", "cf_trace_X"):
        assert np.asarray(m[key]).shape == (R,), key
    assert np.asarray(m["cf_sharpness"]).shape == (R, cfg.k)
    np.testing.assert_allclose(m["cf_loss"][0], m["gd_loss"][0], rtol=1e-5)
    np.testing.assert_allclose(m["gf_loss"][0], m["gd_loss"][0], rtol=1e-5)
    assert np.all(np.asarray(m["cf_sdcp_status"]) == 0)
    assert np.all(np.asarray(m["cf_trace_X"]) >= -1e-6)
    s = m["summary"]
    after = np.asarray(m["steps"]) > m["steps"][0]
    assert np.all(np.asarray(m["cf_sharpness"])[after, 0] <= s["threshold"] * (1 + 1e-3))
    st = E.setting(cfg)
    _, g = dynamics.full_loss_and_grad(st.loss_fn, st.params, st.dataset)
    np.testing.assert_allclose(m["distance_cf_raw"][0], 0.0, atol=1e-6)
    np.testing.assert_allclose(m["distance_cf"][0],
                               0.5 * cfg.learning_rate * np.linalg.norm(ravel(g)[0]), rtol=1e-4)
    x = np.asarray(m["gd_loss"], np.float64)
    w = cfg.smooth_window
    np.testing.assert_allclose(m["gd_loss_smoothed"][w // 2: -(w // 2)],
                               np.convolve(x, np.ones(w) / w, mode="valid"), rtol=1e-10)


def _edge_of_stability(E, cfg, m):
    """The recorded sharpness equals a dense float64 eigendecomposition at the stored steps."""
    from experiments import _eos
    from landscape.tree import ravel

    assert sorted(r["model"] for r in m["runs"].values()) == sorted(
        ["mlp"] * (len(cfg.mse_learning_rates) + len(cfg.ce_learning_rates))
        + ["cnn"] * len(cfg.cnn_learning_rates))
    for name, r in m["runs"].items():
        mlp = r["model"] == "mlp"
        steps, every = (cfg.num_steps, cfg.every) if mlp else (cfg.cnn_num_steps, cfg.cnn_every)
        assert np.asarray(r["sharpness"]).shape == (steps // every, cfg.k)
        assert np.asarray(r["loss"]).shape == (steps,)
        with jax.enable_x64(True):
            s = _eos.setting(seed=cfg.seed, num_examples=cfg.num_examples,
                             width=cfg.width if mlp else cfg.cnn_width,
                             depth=cfg.depth if mlp else cfg.cnn_layers, loss=r["loss_kind"],
                             dataset=cfg.dataset, model=r["model"])
            _, unravel = ravel(s.params)
            full = lambda w, s=s, unravel=unravel: s.loss_fn(unravel(w), s.dataset)
            for step, w in zip(r["check_steps"], r["check_params"]):
                w = jax.numpy.asarray(w, jax.numpy.float64)
                top = np.linalg.eigvalsh(np.asarray(jax.hessian(full)(w)))[::-1][:cfg.k]
                row = int(np.flatnonzero(np.asarray(r["steps"]) == step)[0])
                np.testing.assert_allclose(r["sharpness"][row], top, rtol=1e-4)
            np.testing.assert_allclose(r["loss"][0], full(jax.numpy.asarray(
                r["check_params"][0], jax.numpy.float64)), rtol=1e-5)
        sm = m["summary"][name]
        assert sm["threshold"] == 2.0 / r["eta"] and 0 < sm["fraction_converged"] <= 1


def _gd_vs_flow(E, cfg, m):
    """Smoke-metric checks of ``gd_vs_flow`` (for ``tests/test_experiments.py``'s CHECKS)."""
    import optax

    from landscape import dynamics, train

    steps = np.arange(0, cfg.num_steps, cfg.record_every)
    np.testing.assert_array_equal(m["steps"], steps)
    shape = (len(cfg.learning_rates), len(steps))
    for key in ("distance", "travel", "gd_sharpness", "flow_sharpness", "gd_loss", "flow_loss"):
        assert np.asarray(m[key]).shape == shape and np.all(np.isfinite(m[key])), key
    # record 0 is the same point for GD and the flow
    assert np.all(np.asarray(m["distance"])[:, 0] == 0) and np.all(m["travel"][:, 0] == 0)
    np.testing.assert_allclose(m["gd_loss"][:, 0], m["flow_loss"][:, 0], rtol=1e-5)
    np.testing.assert_allclose(m["gd_sharpness"][:, 0], m["flow_sharpness"][:, 0], rtol=1e-3)
    # gradient flow never increases the loss (times t eta are increasing in t)
    assert np.all(np.diff(m["flow_loss"], axis=1) <= 1e-6 * m["flow_loss"][:, :-1])
    s = m["summary"]
    for j, eta in enumerate(cfg.learning_rates):
        hit = np.flatnonzero(np.asarray(m["gd_sharpness"][j]) >= 2 / eta)
        assert s["crossing_step"][j] == (int(steps[hit[0]]) if hit.size else -1)
        assert s["threshold"][j] == pytest.approx(2 / eta)
    assert s["flow_num_steps"] > 0 and s["flow_num_grads"] == 4 * s["flow_num_steps"] + 1
    # the recorded GD sharpness is the sharpness of w_t: recompute one record directly
    st = E._setting(cfg)
    j, r = 0, 2
    res = train.train(st.loss_fn, st.params, optax.sgd(cfg.learning_rates[j]), st.dataset,
                      key=jax.random.key(0), num_steps=int(steps[r]))
    direct = dynamics.sharpness(st.loss_fn, res.params, st.dataset, key=jax.random.key(1))
    np.testing.assert_allclose(m["gd_sharpness"][j][r], float(direct.eigenvalues[0]),
                               rtol=1e-3)


def _hessian_outliers(E, cfg, m):
    from experiments.layouts.hessian_outliers import run_key

    rtol = 1e-8 if jax.config.jax_enable_x64 else 1e-3
    runs, summary = m["runs"], m["summary"]
    grid = [(ci, c, wi, w) for ci, c in enumerate(cfg.num_classes)
            for wi, w in enumerate(cfg.widths)]
    assert set(runs) == {run_key(c, w) for _, c, _, w in grid}
    assert summary["seeds"] == [cfg.seed + i for i in range(1 + cfg.extra_seeds)]
    for ci, c, wi, w in grid:
        r = runs[run_key(c, w)]
        assert _finite([r["train_loss"], r["train_accuracy"], r["overlap_random"]])
        k = c + cfg.num_extra
        for kind in ("hessian", "ggn"):
            s = r[kind]
            lam = np.asarray(s["eigenvalues"])
            assert lam.shape == (k,) and _finite(lam) and _finite(s["residuals"])
            assert np.all(np.diff(lam) <= 0)  # descending
            count = s["outlier_count"]
            assert count == _last_gap_count(lam, cfg.gap_threshold)
            assert 0 <= count < k and s["bulk_edge"] == lam[count]
            assert 0.0 <= s["overlap"] <= 1.0 + 1e-9
            ks = summary[kind]
            assert ks["outlier_count"][ci][wi] == count
            assert ks["overlap"][ci][wi] == s["overlap"]
            assert len(ks["counts_by_seed"][ci][wi]) == 1 + cfg.extra_seeds
            assert ks["counts_by_seed"][ci][wi][0] == count  # the first seed is this run
            for th, counts in summary["threshold_sensitivity"].items():
                assert counts[kind][ci][wi][0] == _last_gap_count(lam, float(th))
        w_sum = np.asarray(r["hessian"]["density_weights"]).sum(axis=1)
        np.testing.assert_allclose(w_sum, 1.0, rtol=1e-4)  # SLQ weights per probe
        # eigsh against numpy's eigvalsh of the dense Hessian; the GGN is PSD
        dense_top = np.asarray(r["dense_hessian_top"])
        lam = np.asarray(r["hessian"]["eigenvalues"])
        np.testing.assert_allclose(lam, dense_top, rtol=rtol, atol=rtol * abs(dense_top[0]))
        g = np.asarray(r["ggn"]["eigenvalues"])
        assert np.all(g > -rtol * g[0])
    # A higher gap threshold can only remove gaps, so no count grows with the threshold.
    ths = sorted(summary["threshold_sensitivity"], key=float)
    for kind in ("hessian", "ggn"):
        counts = [np.asarray(summary["threshold_sensitivity"][th][kind]) for th in ths]
        assert all(np.all(hi <= lo) for lo, hi in zip(counts, counts[1:]))


def _hessian_spectrum(E, cfg, m):
    rtol = 1e-8 if jax.config.jax_enable_x64 else 1e-3
    runs = m["runs"]
    assert set(runs) == set(cfg.runs)
    checked = 0
    for r in runs.values():
        assert 0.0 <= r["test_accuracy"] <= 1.0 and _finite([r["train_loss"], r["test_loss"]])
        for when in ("init", "final"):
            for kind in ("hessian", "ggn"):
                s = r[when][kind]
                lam = np.asarray(s["eigenvalues"])
                assert lam.shape == (cfg.top_k,) and _finite(lam) and _finite(s["residuals"])
                assert np.all(np.diff(lam) <= 0)  # "LA": descending
                nodes, weights = np.asarray(s["density_nodes"]), np.asarray(s["density_weights"])
                assert nodes.shape == (cfg.density_probes, cfg.density_steps) == weights.shape
                np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-4)
                assert s["trace_per_param_stderr"] >= 0 and s["neg_pos_ratio"] >= 0
            # The GGN is PSD: its Ritz values and eigenvalues cannot be (much) negative.
            g = r[when]["ggn"]
            floor = -1e-4 * max(abs(float(np.max(g["density_nodes"]))), 1e-12)
            assert np.min(g["density_nodes"]) >= floor and np.min(g["eigenvalues"]) >= floor
        assert ("dense_hessian_top" in r) == (r["num_params"] <= cfg.dense_check_max_dim)
        if "dense_hessian_top" in r:
            dense = np.asarray(r["dense_hessian_top"])
            s = r["final"]["hessian"]
            lam, res = np.asarray(s["eigenvalues"]), np.asarray(s["residuals"])
            # each eigenvalue is within its certified residual of the dense spectrum's top
            np.testing.assert_allclose(lam, dense, rtol=0, atol=rtol * abs(dense[0]) + res.max())
            checked += 1
    assert checked  # the smoke config keeps at least one model small enough


def _icl_as_gd(E, cfg, m):
    R = cfg.num_steps // cfg.record_every + 1
    for key in ("loss_lsa", "loss_gd", "pred_diff", "sensitivity_cos", "weight_cos"):
        assert np.asarray(m[key]).shape == (cfg.num_seeds, R), key
    s = m["summary"]
    assert s["construction_max_abs_diff"] < 1e-10  # float64 construction equals the GD step
    assert s["final_loss_lsa"][0] < np.asarray(m["loss_lsa"])[0, 0]  # training helps
    gd_curve = np.asarray(m["gd_curve"])
    assert gd_curve.shape == (cfg.num_seeds, len(cfg.eta_grid))
    # eta* minimises the one-step loss, so no step size of the grid does better
    assert gd_curve[0].min() >= np.asarray(m["loss_gd"])[0, -1] - 1e-12


def _implicit_bias_logistic(E, cfg, m):
    assert len(m["datasets"]) == cfg.num_datasets
    row = m["datasets"][0]
    assert row["svm_converged"]
    # GD approaches the predicted path w_hat log t + w_tilde (the direction gap itself need
    # not fall monotonically this early on pruned data)
    assert np.all(np.diff(np.asarray(row["residual"])) < 0)
    assert np.all(np.diff(row["loss"]) < 0)
    assert np.isfinite(m["summary"]["fit_slope_along_w_hat"][0])
    assert np.all(np.isfinite(row["residual"])) and row["prediction"]["spans"]
    assert len(row["y"]) + row["num_pruned"] == cfg.n_pos + cfg.n_neg


def _matching_anatomy(E, cfg, m):
    from experiments.layouts.matching_anatomy import LAYER_COLUMNS

    d = m["distances"]
    assert d["before"] > 0 and d["after"] > 0
    # a permutation preserves norms, so the distance obeys the triangle inequality both ways
    assert d["after"] <= d["norm_a"] + d["norm_b"] + 1e-4
    for ov in (m["overlap_before"], m["overlap_after"]):
        for layer in ov.values():
            for side in ("left", "right"):
                v = np.asarray(layer[side])
                assert np.all((v >= -1e-9) & (v <= 1 + 1e-6))
    table = np.asarray(m["layer_table"], float)
    col = LAYER_COLUMNS.index
    assert table.shape == (len(m["layers"]), len(LAYER_COLUMNS)) and m["layers"][-1] == "all"
    assert _finite(table[:, [col("midpoint_barrier"), col("predicted"),
                             col("measured_midpoint")]])
    # the layer-wise midpoint barrier equals the measured midpoint of the second-order check
    np.testing.assert_allclose(table[:-1, col("midpoint_barrier")],
                               table[:-1, col("measured_midpoint")], rtol=1e-3, atol=1e-5)


def _merging(E, cfg, m):
    for key in ("endpoints", "ensemble", "average", "wm", "wm_repair"):
        assert 0.0 <= m[key] <= 1.0
    pleas = np.asarray(m["pleas"])
    assert pleas.shape == (len(cfg.pleas_factors),) and _in_unit_interval(pleas)
    # PLeaS at twice the width merges nothing and reproduces the logit ensemble
    assert cfg.pleas_factors[-1] == 2.0
    assert abs(pleas[-1] - m["ensemble"]) <= 0.02
    np.testing.assert_array_equal(m["num_merged"], np.arange(2, cfg.num_models + 1))
    assert np.asarray(m["multi_wm"]).shape == (cfg.num_models - 1,)
    assert _in_unit_interval(m["multi_wm"]) and _in_unit_interval(m["multi_average"])


def _surfaces(E, cfg, m):
    for norm in ("none", "batch"):
        s = m[norm]
        for key in ("gauss_loss", "hess_loss"):
            assert np.asarray(s[key]).shape == (cfg.grid_points, cfg.grid_points)
            assert _finite(s[key])
        # the grid centre is the trained model itself in both slices
        c = cfg.grid_points // 2
        np.testing.assert_allclose(s["gauss_loss"][c, c], s["hess_loss"][c, c], rtol=1e-5)
        assert np.all(np.diff(np.asarray(s["eigenvalues"])) <= 1e-6)  # descending
    b = m["bezier"]
    np.testing.assert_allclose(b["bezier_loss"][[0, -1]], b["linear_loss"][[0, -1]], rtol=1e-5)


def _svm_convergence(E, cfg, m):
    R = cfg.num_steps // cfg.record_every + 1
    for key in ("corr_W", "corr_KQ", "mass_W", "mass_KQ", "norm_W", "cross_W_to_nuc"):
        assert np.asarray(m[key]).shape == (cfg.num_seeds, R), key
        assert np.all(np.isfinite(m[key])), key
    assert np.asarray(m["ablation_corr"]).shape == (cfg.num_seeds, len(cfg.ridge_ablation), R)
    s = m["summary"]
    assert s["W"]["final_corr_min"] > 0.95 and s["KQ"]["final_corr_min"] > 0.95
    assert set(s["W"]["kinds"]) <= {"global", "local", "none"}
    assert all(r <= cfg.n for r in m["rank_fro"])  # the Frobenius solution has rank <= n


def _svm_local(E, cfg, m):
    for scale in cfg.init_scales:
        f = m["frequency"][str(scale)]
        assert len(f["kinds"]) == cfg.num_seeds
        assert abs(sum(f["fraction"].values()) - 1.0) < 1e-12
    pic = m["picture"]
    assert np.asarray(pic["paths"]).shape == (cfg.picture_paths, cfg.picture_steps + 1, 2)
    assert len(pic["token_kind"]) == cfg.picture_T
    assert "global" in pic["token_kind"]


def _svm_nonlinear(E, cfg, m):
    steps = np.asarray(m["steps"])
    # step 0, then log-spaced from 10 to num_steps at records_per_decade per decade
    assert steps[0] == 0 and steps[1] == 10 and steps[-1] == cfg.num_steps
    ratios = steps[2:] / steps[1:-1]
    np.testing.assert_allclose(ratios, 10 ** (1 / cfg.records_per_decade), rtol=0.1)
    R = len(steps)
    assert np.asarray(m["corr_perp"]).shape == (cfg.num_seeds, R)
    assert np.asarray(m["set_sizes"]).shape == (cfg.num_seeds, cfg.n)
    ok = np.asarray(m["feasible"], bool)
    for key in ("corr_perp", "corr_growth", "corr_full"):
        c = np.asarray(m[key])[ok]
        assert np.all(np.abs(c[np.isfinite(c)]) <= 1 + 1e-9)
    assert np.all(np.isfinite(np.asarray(m["loss"])))


def _svm_rank(E, cfg, m):
    assert m["ds"] == list(cfg.ds)
    for n in cfg.ns:
        row = m["per_n"][str(n)]
        assert len(row["infeasible_fraction"]) == len(cfg.ds)
        assert all(0.0 <= f <= 1.0 for f in row["infeasible_fraction"])
        fro = np.asarray(row["rank_fro_max"], float)
        assert np.all(fro[np.isfinite(fro)] <= n)  # Frobenius solution has rank <= n
        assert row["max_violation"] <= 1e-6


def _batch_size_tests(E, cfg, m):
    """Smoke-metric checks of ``batch_size_tests`` (for ``tests/test_experiments.py``'s CHECKS)."""
    import optax

    from landscape import dynamics, train

    steps = np.arange(0, cfg.num_steps, cfg.record_every)
    np.testing.assert_array_equal(m["steps"], steps)
    keys = ("norm_test_batch_size", "inner_product_batch_size", "orthogonality_batch_size",
            "noise_scale", "grad_norm", "total_variance", "coherence", "loss")
    for key in keys:
        x = np.asarray(m[key])
        assert x.shape == steps.shape and np.all(np.isfinite(x)) and np.all(x >= 0), key
    # the norm test's request is B_simple / eta^2 (eta = 0.5); B_simple = tr(Sigma) / ||G||^2
    np.testing.assert_allclose(m["norm_test_batch_size"], m["noise_scale"] / 0.25, rtol=1e-6)
    np.testing.assert_allclose(m["noise_scale"], m["total_variance"] / m["grad_norm"] ** 2,
                               rtol=1e-4)
    # m-coherence lies in [0, n] for n probe examples
    assert np.all(np.asarray(m["coherence"]) <= cfg.probe_size * (1 + 1e-6))
    s = m["summary"]
    for key, t in s["tests"].items():
        q = max(len(steps) // 4, 1)
        assert t["first_quarter"] == np.float64(np.mean(m[key][:q])).item() or np.isclose(
            t["first_quarter"], np.mean(m[key][:q]), rtol=1e-12), key
        assert np.isclose(t["growth"], t["last_quarter"] / t["first_quarter"]), key
        assert -1 <= t["spearman_step"] <= 1, key
    assert s["tests"]["norm_test_batch_size"]["fraction_passed"] == float(
        np.mean(cfg.batch_size >= np.asarray(m["norm_test_batch_size"])))
    # recompute one record by an independent route: train to steps[r] without probes, then
    # gradient_statistics on the probe set, and the loss by hand
    st, probe_set = E.setting(cfg)
    r = 2
    res = train.train(st.loss_fn, st.params, optax.sgd(cfg.learning_rate), st.dataset,
                      key=jax.random.key(cfg.seed), num_steps=int(steps[r]),
                      batch_size=cfg.batch_size, progress=False)
    g = dynamics.gradient_statistics(st.loss_fn, res.params, probe_set)
    np.testing.assert_allclose(m["noise_scale"][r], float(g.noise_scale), rtol=1e-3)
    np.testing.assert_allclose(m["inner_product_batch_size"][r],
                               float(g.inner_product_test.batch_size), rtol=1e-3)
    np.testing.assert_allclose(m["orthogonality_batch_size"][r],
                               float(g.orthogonality_test.batch_size), rtol=1e-3)
    np.testing.assert_allclose(m["loss"][r], float(st.loss_fn(res.params, probe_set)),
                               rtol=1e-4)


def _coherence(E, cfg, m):
    """Smoke-metric checks of ``coherence``: layout from the config, the summary from the runs,
    the recorded coherence at step 0 from an explicit per-example loop, the plain run reproduced
    by the robust loop with the mean, and the first winsorised record from a NumPy sort."""
    import jax.numpy as jnp

    from landscape import train
    from landscape.tree import ravel

    steps = np.arange(0, cfg.num_steps + 1, cfg.record_every)
    np.testing.assert_array_equal(m["steps"], steps)
    assert m["kinds"] == ["plain", "winsorize", "median_of_means"]
    keys = {f"{d}/{lb}" for d in cfg.datasets for lb in ("real", "random")}
    assert set(m["runs"]) == keys
    for key, run in m["runs"].items():
        coh = np.asarray(run["coherence"])
        assert coh.shape == steps.shape and np.all((coh > 0) & (coh <= cfg.probe_size)), key
        for name, size in (("train_accuracy", cfg.num_train), ("test_accuracy", cfg.num_test)):
            acc = np.asarray(run[name])
            assert acc.shape == (3, len(steps)) and np.all((acc >= 0) & (acc <= 1)), key
            np.testing.assert_allclose(acc * size, np.round(acc * size), atol=1e-3)
        ratio = np.asarray(run["norm_ratio"])
        assert ratio.shape == (3, len(steps)) and np.all(ratio[0] == 1) and np.all(ratio > 0)
        loss = np.asarray(run["train_loss"])
        assert loss.shape == (3, len(steps)) and np.all(np.isfinite(loss) & (loss > 0))
        # record 0 is the same initial point for every kind of gradient
        np.testing.assert_allclose(loss[:, 0], loss[0, 0], rtol=1e-5)
    early = steps <= cfg.early_steps
    at = np.searchsorted(steps, cfg.report_steps)
    for d in cfg.datasets:
        s = m["summary"][d]
        real, rand = (np.mean(m["runs"][f"{d}/{lb}"]["coherence"][early])
                      for lb in ("real", "random"))
        assert s["early_coherence_real"] == pytest.approx(real)
        assert s["early_coherence_ratio"] == pytest.approx(real / rand)
        for i, kind in enumerate(m["kinds"]):
            np.testing.assert_allclose(s["train_accuracy_random"][kind],
                                       m["runs"][f"{d}/random"]["train_accuracy"][i][at])
    d = cfg.datasets[0]
    st = E.setting(cfg, d)
    # coherence at step 0: n ||mean g||^2 / mean ||g||^2 over the probe set, per-example loop
    data = st.train["real"]
    grad = jax.jit(jax.grad(st.loss_fn))
    rows = np.stack([np.asarray(ravel(grad(st.params, {k: v[i:i + 1] for k, v in data.items()}))
                                [0], np.float64) for i in range(cfg.probe_size)])
    want = cfg.probe_size * np.sum(rows.mean(0) ** 2) / np.mean(np.sum(rows ** 2, axis=1))
    assert m["runs"][f"{d}/real"]["coherence"][0] == pytest.approx(want, rel=1e-4)
    # the robust loop with the plain mean reproduces the run of landscape.train.train
    mean_run = E.run_robust(cfg, st, "random", "mean")
    np.testing.assert_allclose(mean_run["train_loss"], m["runs"][f"{d}/random"]["train_loss"][0],
                               rtol=1e-3)
    # the first record_every winsorised steps by hand: sort each coordinate, clip, average
    pe = jax.jit(jax.vmap(lambda p, ex: jax.grad(st.loss_fn)(p, jax.tree.map(lambda x: x[None],
                                                                             ex)),
                          in_axes=(None, 0)))
    params, data = st.params, st.train["random"]
    key = jax.random.split(jax.random.key(cfg.seed))[0]
    n, c = cfg.batch_size, cfg.c

    def wins(x):
        x = np.asarray(x, np.float64)
        srt = np.sort(x, axis=0)
        return np.clip(x, srt[c], srt[n - 1 - c]).mean(axis=0)

    for t in range(cfg.record_every):
        g = pe(params, train.batch_at(data, t, key, cfg.batch_size))
        if t == 0:  # the recorded norm ratio of the winsorised gradient at step 0
            w = np.concatenate([wins(x).ravel() for x in jax.tree.leaves(g)])
            mean = np.concatenate([np.asarray(x, np.float64).mean(0).ravel()
                                   for x in jax.tree.leaves(g)])
            assert m["runs"][f"{d}/random"]["norm_ratio"][1][0] == pytest.approx(
                np.linalg.norm(w) / np.linalg.norm(mean), rel=1e-4)
        params = jax.tree.map(lambda p, x: p - cfg.learning_rate * jnp.asarray(wins(x), p.dtype),
                              params, g)
    direct = float(st.loss_fn(params, data))
    assert m["runs"][f"{d}/random"]["train_loss"][1][1] == pytest.approx(direct, rel=1e-4)


def _data_diet(E, cfg, m):
    """Smoke-metric checks of ``data_diet``: shapes from the config, the shared unpruned run,
    the summary from the per-seed values, and EL2N/GraNd at initialisation recomputed by an
    independent route (softmax in float64 NumPy; ``jax.grad`` of single examples)."""
    import jax.numpy as jnp
    from scipy.stats import rankdata

    from landscape.tree import ravel

    n, F, S = cfg.num_train, len(cfg.fractions), cfg.train_seeds
    assert m["fractions"] == list(cfg.fractions) and m["methods"] == list(cfg.methods)
    assert m["num_kept"] == [n - round(f * n) for f in cfg.fractions]
    j0 = cfg.fractions.index(0.0)
    for key in ("test_accuracy", "train_accuracy"):
        assert set(m[key]) == set(cfg.methods)
        for method, acc in m[key].items():
            acc = np.asarray(acc)
            assert acc.shape == (F, S) and _in_unit_interval(acc), (key, method)
            # the unpruned run is one run shared by every method
            np.testing.assert_array_equal(acc[j0], np.asarray(m[key][cfg.methods[0]])[j0])
    for acc in m["test_accuracy"].values():  # whole test examples correct
        np.testing.assert_allclose(np.asarray(acc) * cfg.num_test,
                                   np.round(np.asarray(acc) * cfg.num_test), atol=1e-6)
    s = m["summary"]
    for method in cfg.methods:
        mean = np.asarray(m["test_accuracy"][method]).mean(axis=1)
        np.testing.assert_allclose(s["mean_accuracy"][method], mean, rtol=1e-12)
        np.testing.assert_allclose(s["drop"][method], s["full_accuracy"] - mean, rtol=1e-12,
                                   atol=1e-15)
    assert s["full_accuracy"] == pytest.approx(np.mean(m["test_accuracy"][cfg.methods[0]][j0]))
    np.testing.assert_allclose(s["el2n_minus_random"], np.asarray(s["mean_accuracy"]["el2n"])
                               - np.asarray(s["mean_accuracy"]["random"]), atol=1e-15)
    net = m["score_networks"]
    assert net["num_steps"] == cfg.score_epochs * (n // cfg.batch_size)
    assert len(net["train_accuracy"]) == len(net["test_accuracy"]) == cfg.score_seeds
    sc = {k: np.asarray(v) for k, v in m["scores"].items()}
    assert all(v.shape == (n,) and _finite(v) and np.all(v >= 0) for v in sc.values())
    assert all(np.all(sc[k] <= np.sqrt(2) + 1e-6) for k in ("el2n", "el2n_init"))
    for name, rho in s["spearman"].items():
        ranks = np.corrcoef(rankdata(sc["el2n"]), rankdata(sc[name]))[0, 1]
        assert rho == pytest.approx(ranks, abs=1e-9), name
    # EL2N and GraNd at initialisation, recomputed from the score networks' initial params
    st = E._Setting(cfg)
    inits = [st.init(E._keys(cfg, 1, seed)[0]) for seed in range(cfg.score_seeds)]
    x, y = st.train["x"], np.asarray(st.train["y"])
    el2n = np.zeros(n)
    for p in inits:
        z = np.asarray(st.apply(p, x), np.float64)
        prob = np.exp(z - z.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        el2n += np.linalg.norm(prob - np.eye(z.shape[1])[y], axis=1) / len(inits)
    rtol = 1e-9 if jax.config.jax_enable_x64 else 1e-4
    np.testing.assert_allclose(sc["el2n_init"], el2n, rtol=rtol, atol=rtol)
    grad = jax.jit(jax.grad(st.loss_fn))
    for i in (0, n // 2, n - 1):
        one = {"x": x[i:i + 1], "y": jnp.asarray(y[i:i + 1])}
        norms = [np.linalg.norm(np.asarray(ravel(grad(p, one))[0], np.float64)) for p in inits]
        assert sc["grand_init"][i] == pytest.approx(np.mean(norms), rel=10 * rtol), i


def _large_batch(E, cfg, m):
    """Smoke-metric checks of ``large_batch`` (for ``tests/test_experiments.py``'s CHECKS)."""
    import jax.numpy as jnp
    import optax
    from jax.flatten_util import ravel_pytree

    from landscape import train
    from landscape.nnx import functional

    s = m["summary"]
    n, T = s["num_train"], s["num_updates"]
    assert n == (cfg.num_train or E.DIGITS_TRAIN) and T == cfg.epochs * (n // cfg.small_batch)
    steps = np.arange(0, T, cfg.record_every)
    np.testing.assert_array_equal(m["steps"], steps)
    d = np.asarray(m["distance"])
    assert d.shape == (cfg.num_seeds, len(cfg.batch_sizes), len(steps)) and np.all(np.isfinite(d))
    assert np.all(d[..., 0] == 0) and np.all(d[..., 1:] > 0)  # record 0 is w_0 itself
    # the a + b log t fit, recomputed with numpy over t >= fit_min_step
    used = steps >= cfg.fit_min_step
    assert m["fit"]["num_points"] == int(used.sum())
    for i in range(cfg.num_seeds):
        for j in range(len(cfg.batch_sizes)):
            b, a = np.polyfit(np.log(steps[used]), d[i, j, used], 1)
            r = d[i, j, used] - a - b * np.log(steps[used])
            r2 = 1 - np.sum(r**2) / np.sum((d[i, j, used] - d[i, j, used].mean()) ** 2)
            np.testing.assert_allclose([m["fit"]["slope"][i][j], m["fit"]["intercept"][i][j],
                                        m["fit"]["r2"][i][j]], [b, a, r2], rtol=1e-4, atol=1e-5)
            p = np.polyfit(np.log(steps[used]), np.log(d[i, j, used]), 1)[0]
            np.testing.assert_allclose(m["fit"]["power_exponent"][i][j], p, rtol=1e-4)
    # the plan of part (b): same epochs, sqrt scaling, same number of updates
    V = list(m["variants"])
    assert V == list(E.VARIANTS)
    B, b, lr = cfg.large_batch, cfg.small_batch, cfg.learning_rate
    same = cfg.epochs * (n // B)
    assert m["variant_batch_size"] == [b] + [B] * 6
    assert m["variant_num_steps"] == [T, same, same, same, T, T, T]
    r = np.sqrt(B / b)
    np.testing.assert_allclose(m["variant_learning_rate"], [lr, lr, lr * r, lr, lr, lr * r, lr * r])
    assert m["variant_ghost"] == [False, False, False, True, False, False, True]
    test, tr = np.asarray(m["test_accuracy"]), np.asarray(m["train_accuracy"])
    assert test.shape == tr.shape == (len(V), cfg.num_seeds)
    assert np.all((test >= 0) & (test <= 1)) and np.all((tr >= 0) & (tr <= 1))
    # "small" and "+regime" are the sweep's runs at small_batch and large_batch
    sweep = np.asarray(m["sweep_test_accuracy"])
    np.testing.assert_array_equal(test[0], sweep[:, cfg.batch_sizes.index(b)])
    np.testing.assert_array_equal(test[V.index("+regime")], sweep[:, cfg.batch_sizes.index(B)])
    gap = test[0][None] - test[1:]
    np.testing.assert_allclose(s["gap_mean"], gap.mean(axis=1), atol=1e-12)
    if gap[0].mean() != 0:
        assert s["gap_closed_fraction"] == pytest.approx(1 - gap[-1].mean() / gap[0].mean())
    # recompute the +ghost_bn run's ||w_T - w_0|| with a hand-written loop: ghost-BN forward
    # in train mode, optax SGD with momentum, the training loop's batch order
    seed = cfg.seed
    data, _ = E._data(cfg, seed)
    fm = functional(E._model(cfg, seed, cfg.ghost_batch_size), mode="train")
    opt = optax.sgd(lr, momentum=cfg.momentum or None)

    @jax.jit
    def step(params, state, opt_state, t):
        data_key = jax.random.split(jax.random.fold_in(jax.random.key(seed), 2))[0]
        batch = train.batch_at(data, t, data_key, B)

        def lf(p):
            logits, new = fm.apply_with_state(p, state, batch["x"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), new

        grads, new_state = jax.grad(lf, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state

    params, state, opt_state = fm.params, fm.state, opt.init(fm.params)
    for t in range(same):
        params, state, opt_state = step(params, state, opt_state, jnp.int32(t))
    w = ravel_pytree(params)[0] - ravel_pytree(fm.params)[0]
    rtol = 1e-9 if jax.config.jax_enable_x64 else 1e-4
    np.testing.assert_allclose(m["final_distance"][V.index("+ghost_bn")][0],
                               float(jnp.linalg.norm(w)), rtol=rtol)


def _opposing_signals(E, cfg, m):
    """Shapes; the recorded per-example losses average to the loop's own step loss; group
    losses at step 0 and the sharpness at step 0 recomputed directly (single-example loop,
    dense Hessian); the spike rule, group rule and anti-phase correlations re-derived from the
    stored curves."""
    from landscape.tree import ravel

    R, n, w = cfg.num_steps, cfg.num_examples, cfg.window
    np.testing.assert_array_equal(m["steps"], np.arange(R))
    np.testing.assert_array_equal(m["sharpness_steps"], np.arange(0, R, cfg.sharpness_every))
    for key, shape in (("mean_loss", (R,)), ("train_loss", (R,)), ("group_losses", (2, R)),
                       ("feature_group_losses", (2, R)), ("groups", (n,)), ("labels", (n,)),
                       ("composition", (2, 10))):
        assert np.asarray(m[key]).shape == shape, key
    # the mean of the per-example losses is the full-batch loss the training loop evaluated
    np.testing.assert_allclose(m["mean_loss"], m["train_loss"], rtol=1e-5)
    st = E.setting(cfg)
    y = E.labels(st)
    np.testing.assert_array_equal(m["labels"], y)
    x = np.asarray(st.dataset["x"], np.float64).reshape(n, -1)
    np.testing.assert_allclose(m["feature"], np.linalg.norm(x, axis=1), rtol=1e-6)
    groups, load = np.asarray(m["groups"]), np.asarray(m["loadings"])
    s = m["summary"]
    assert s["group_sizes"] == [int(np.sum(groups == 0)), int(np.sum(groups == 1))]
    assert max(s["group_sizes"]) <= cfg.k
    assert np.all(load[groups == 0] > 0) and np.all(load[groups == 1] < 0)
    loss = jax.jit(st.loss_fn)
    for j in range(2):
        np.testing.assert_array_equal(m["composition"][j], np.bincount(y[groups == j],
                                                                       minlength=10))
        # a group's loss at step 0 is the (mean) loss of the group's examples as one batch
        members = np.flatnonzero(groups == j)
        if members.size:
            sub = jax.tree.map(lambda a, i=members: a[i], st.dataset)
            np.testing.assert_allclose(m["group_losses"][j][0], loss(st.params, sub),
                                       rtol=1e-5)
    # spikes: peaks are window maxima at least (1 + min_rise) times the start
    mean = np.asarray(m["mean_loss"])
    spikes = np.asarray(m["spike_steps"]).reshape(-1, 2)
    assert s["num_spikes"] == len(spikes) == len(m["anti_phase"]) == len(m["spike_rise"])
    for (a, p), rise in zip(spikes, m["spike_rise"]):
        assert p - w <= a < p and mean[p] == mean[max(p - w, 0):p + w + 1].max()
        assert mean[p] >= (1 + cfg.min_rise) * mean[a]
        np.testing.assert_allclose(rise, mean[p] - mean[a], rtol=1e-12)
    # anti-phase: the change of a group's mean loss is the mean of its members' changes
    for key, gl in (("anti_phase", m["group_losses"]),
                    ("feature_anti_phase", m["feature_group_losses"])):
        d = np.diff(np.asarray(gl), axis=1)
        for (_, p), c in zip(spikes, m[key]):
            lo, hi = max(p - w, 0), min(p + w, R - 1)
            if np.all(np.isfinite(d[:, lo:hi])) and hi - lo > 1:
                np.testing.assert_allclose(c, np.corrcoef(d[0, lo:hi], d[1, lo:hi])[0, 1],
                                           rtol=1e-6, atol=1e-9)
    assert s["threshold"] == pytest.approx(2 / cfg.learning_rate)
    # the first sharpness record is lambda_max of the dense Hessian at the initial params
    with jax.enable_x64(True):
        w0, unravel = ravel(jax.tree.map(lambda a: np.asarray(a, np.float64), st.params))
        data = {"x": np.asarray(st.dataset["x"], np.float64),
                "y": np.asarray(st.dataset["y"], np.float64)}
        H = np.asarray(jax.jit(jax.hessian(lambda v: st.loss_fn(unravel(v), data)))(w0))
    np.testing.assert_allclose(m["sharpness"][0], np.linalg.eigvalsh(H)[-1], rtol=1e-3)


def _optimizer_checks(E, cfg, m):
    """Smoke-metric checks of ``optimizer_checks``: shapes from the config; the clean Adam run
    of check 1 reproduced by a hand-written loop (epoch order, ``optax.adam``, the second moment
    read from its state); spikes change nothing before the first spike step and something after
    it; the spike transformation's contract on a known gradient; the Adam runs of check 3 at
    ``eps = 1e-8`` are check 1's clean Adam runs; every summary number recomputed with NumPy; the
    batch-size sequence of check 2 follows the paper's rule from the stored requests."""
    import jax.numpy as jnp
    import optax

    from landscape import train
    from landscape.optim import next_batch_size

    L, S, T = len(cfg.learning_rates), cfg.num_seeds, cfg.num_steps
    R = T // cfg.record_every + 1
    np.testing.assert_array_equal(m["eval_steps"], np.arange(0, T + 1, cfg.record_every))
    spikes = np.asarray(m["spike_steps"])
    assert len(spikes) == cfg.num_spikes and np.all(np.diff(spikes) > 0)
    assert spikes[0] >= 2 * cfg.spike_window and spikes[-1] < T - 2 * cfg.spike_window
    for key in ("spam_step_loss", "spam_second_moment"):
        assert m[key].shape == (2, 2, L, S, T) and np.all(np.isfinite(m[key])), key
    for key in ("spam_train_loss", "spam_test_loss", "spam_test_accuracy"):
        assert m[key].shape == (2, 2, L, S, R) and np.all(np.isfinite(m[key])), key
    D = len(cfg.mfac_damps)
    for key in ("mfac_train_loss", "mfac_test_loss", "mfac_test_accuracy"):
        assert m[key].shape == (2, L * D, S, R), key
    for key in ("spam_test_accuracy", "mfac_test_accuracy", "ada_test_accuracy"):
        a = np.asarray(m[key])
        assert np.all((a[np.isfinite(a)] >= 0) & (a[np.isfinite(a)] <= 1)), key
    loss = np.asarray(m["spam_step_loss"])
    # before any update the second moment is zero; spikes change nothing up to the first spike
    # step (whose update they scale) and change the loss after it
    assert np.all(m["spam_second_moment"][..., 0] == 0)
    s0 = spikes[0]
    np.testing.assert_allclose(loss[:, 1, ..., :s0 + 1], loss[:, 0, ..., :s0 + 1], rtol=1e-6)
    assert np.all(np.any(loss[:, 1, ..., s0 + 1:] != loss[:, 0, ..., s0 + 1:], axis=-1))
    # the clean Adam run (lr 0, seed 0) by hand: train.batch_at's epoch order from the run's
    # data key fold_in(key(seed), 0), optax.adam, nu read from its state
    d = E.setting(cfg)
    lr = cfg.learning_rates[0]
    opt = optax.adam(lr)
    data_key = jax.random.fold_in(jax.random.key(cfg.seed), 0)
    params = jax.tree.map(lambda a: a[0], d.params)
    state = opt.init(params)

    @jax.jit
    def step(params, state, t):
        batch = train.batch_at(d.train, t, data_key, cfg.batch_size)
        loss, g = jax.value_and_grad(d.loss_fn)(params, batch)
        nu = sum(jnp.sum(v) for v in jax.tree.leaves(state[0].nu))
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state, loss, nu

    hand = []
    for t in range(T):
        params, state, lt, nu = step(params, state, jnp.int32(t))
        hand.append((float(lt), float(nu)))
    hand = np.asarray(hand)
    rtol = 1e-9 if jax.config.jax_enable_x64 else 2e-4
    np.testing.assert_allclose(loss[0, 0, 0, 0], hand[:, 0], rtol=rtol)
    np.testing.assert_allclose(m["spam_second_moment"][0, 0, 0, 0], hand[:, 1], rtol=rtol,
                               atol=1e-12)
    logits = d.apply_fn(params, d.test["x"])
    np.testing.assert_allclose(m["spam_test_accuracy"][0, 0, 0, 0, -1],
                               float(jnp.mean(jnp.argmax(logits, -1) == d.test["y"])), atol=1e-9)
    # the spike transformation: identity off the spike steps; at the j-th spike step the
    # entries of masks[j] are multiplied by the factor and no other entry changes
    g = {"a": jnp.linspace(1.0, 2.0, 400).reshape(20, 20), "b": jnp.linspace(-1.0, 1.0, 7)}
    masks = E.spike_masks(np.random.default_rng(0), g, 2, 0.5)
    assert masks["a"].shape == (2, 20, 20) and masks["b"].shape == (2, 7)
    assert 0.3 < float(jnp.mean(masks["a"])) < 0.7
    tx = E.inject_spikes([1, 3], masks, 10.0)
    st = tx.init(g)
    for t in range(5):
        out, st = tx.update(g, st)
        for k in g:
            j = {1: 0, 3: 1}.get(t)
            want = g[k] if j is None else np.where(masks[k][j], 10.0 * g[k], g[k])
            np.testing.assert_array_equal(out[k], want)
    assert int(st.count) == 5
    # check 3's Adam at the Adam default eps 1e-8 is check 1's clean Adam (same runs)
    if 1e-8 in cfg.adam_eps:
        e = cfg.adam_eps.index(1e-8)
        for j in range(L):
            np.testing.assert_allclose(m["mfac_train_loss"][0, j * D + e],
                                       m["spam_train_loss"][0, 0, j], rtol=1e-5)
    # summaries from the arrays
    s = m["summary"]
    for o, name in enumerate(("adam", "spam")):
        tl = np.asarray(m["spam_train_loss"])[o, ..., -1]
        np.testing.assert_allclose(s["spam"][name]["train_loss_excess"],
                                   (tl[1] - tl[0]).mean(-1), rtol=1e-9, atol=1e-12)
        w = cfg.spike_window
        jump = np.zeros(L)
        for t in spikes:
            ch = loss[o, :, :, :, t + 1:t + 1 + w].mean(-1) - loss[o, :, :, :, t - w:t].mean(-1)
            jump += (ch[1] - ch[0]).mean(-1) / len(spikes)
        np.testing.assert_allclose(s["spam"][name]["spike_jump"], jump, rtol=1e-9, atol=1e-12)
    for o, name in enumerate(("adam", "mfac")):
        tl = np.asarray(m["mfac_train_loss"])[o, :, :, -1].mean(-1)
        r = s["mfac"][name]
        assert r["best_setting"] == int(np.nanargmin(tl))
        assert r["best_train_loss"] == pytest.approx(np.nanmin(tl))
        assert r["best_learning_rate"] == cfg.learning_rates[r["best_setting"] // D]
        assert r["best_inside_grid"] == (min(cfg.learning_rates) < r["best_learning_rate"]
                                         < max(cfg.learning_rates))
    # check 2: the paper's rule b <- min(max(b, ceil(request)), max) from the stored requests
    starts = np.arange(0, cfg.ada_num_steps, cfg.ada_check_every)
    np.testing.assert_array_equal(m["ada_segment_starts"], starts)
    assert m["ada_tests"] == ["fixed", *cfg.ada_tests]
    b, req = np.asarray(m["ada_batch_size"]), np.asarray(m["ada_requested"])
    assert b.shape == req.shape == (1 + len(cfg.ada_tests), S, len(starts))
    assert np.all(b[0] == cfg.ada_initial_batch_size) and np.all(np.isnan(req[0]))
    lengths = np.diff(np.append(starts, cfg.ada_num_steps))
    for t in range(b.shape[0]):
        for i in range(S):
            assert b[t, i, 0] == cfg.ada_initial_batch_size
            nxt = cfg.ada_initial_batch_size if t == 0 else cfg.ada_max_batch_size
            for k in range(len(starts) - 1):
                assert b[t, i, k + 1] == next_batch_size(int(b[t, i, k]), float(req[t, i, k]),
                                                         nxt), (t, i, k)
            np.testing.assert_array_equal(m["ada_examples"][t, i], np.cumsum(lengths * b[t, i]))
    assert np.all(np.isfinite(m["ada_loss"])) and np.all(np.isfinite(m["ada_train_loss"]))
    # a test ran after every segment but the last while the batch was below the maximum
    for t, test in enumerate(m["ada_tests"]):
        ran = np.isfinite(req[t])
        below = b[t] < (cfg.ada_initial_batch_size if t == 0 else cfg.ada_max_batch_size)
        below[:, -1] = False
        np.testing.assert_array_equal(ran, below)
        a = s["adadagrad"][test]
        assert a["final_batch_size"] == pytest.approx(b[t, :, -1].mean())
        assert a["examples"] == pytest.approx(np.asarray(m["ada_examples"])[t, :, -1].mean())


def _optimizer_comparison(E, cfg, m):
    """Shapes; every score re-derived from the stored curves with independent NumPy code
    (steps to target, median of the studies' best, the profile by counting); the defaults run of
    the first optimizer equals the same optimizer trained by ``landscape.train.train`` alone
    (not vmapped) with the same key; the state bytes equal the leaves of ``init``."""
    O, W = len(cfg.optimizers), len(cfg.workloads)
    S, T, G = cfg.num_studies, cfg.trials_per_study, cfg.sensitivity_points
    for key in ("scores", "default_scores", "tuned_final", "default_final", "sensitivity",
                "state_bytes", "state_ratio"):
        assert np.asarray(m[key]).shape == (O, W), key
    ratios = np.asarray(m["ratios"])
    assert ratios[0] == 1 and ratios[-1] == cfg.max_ratio
    assert m["summary"]["targets_match_sweep"]  # the smoke config scores against its sweep
    for j, w in enumerate(cfg.workloads):
        c = m["curves"][w]
        steps = np.asarray(c["steps"])
        np.testing.assert_array_equal(steps, np.arange(cfg.num_evals + 1)
                                      * (cfg.num_steps[j] // cfg.num_evals))
        # the target: the target_rank-th best of the sweep trials' best metric
        best = np.sort(np.asarray(c["sweep_best"]).ravel())
        assert m["sweep_targets"][j] == pytest.approx(best[cfg.target_rank - 1])
        target = m["targets"][j]
        times = np.asarray(c["trial_times"])
        final = np.asarray(c["trial_final"])
        assert times.shape == final.shape == (O, S, T)
        curves = np.asarray(c["trial_curves"])
        assert curves.shape == (O, S, T, len(steps))
        np.testing.assert_array_equal(final, curves[..., -1])
        for i in range(O):
            assert np.asarray(c["grid_lr"])[i].shape == (G,)
            for s in range(S):
                for t in range(T):
                    hit = np.flatnonzero(curves[i, s, t] <= target)
                    assert times[i, s, t] == (steps[hit[0]] if hit.size else np.inf)
            study_best = np.sort(times[i].min(axis=1))
            mid = study_best[(S - 1) // 2] if S % 2 else (
                np.inf if np.isinf(study_best[S // 2]) else study_best[S // 2 - 1:S // 2 + 1]
                .mean())
            assert m["scores"][i][j] == mid
            d = np.asarray(c["default_curve"])[i]
            hit = np.flatnonzero(d <= target)
            assert m["default_scores"][i][j] == (steps[hit[0]] if hit.size else np.inf)
            assert m["default_final"][i][j] == d[-1]
            best_final = np.sort(np.where(np.isnan(final[i]), np.inf, final[i]).min(axis=1))
            want = best_final[(S - 1) // 2] if S % 2 else best_final[S // 2 - 1:S // 2 + 1].mean()
            assert m["tuned_final"][i][j] == pytest.approx(want, nan_ok=True) or (
                np.isnan(m["tuned_final"][i][j]) and not np.isfinite(want))
    # profile: fraction of workloads within r of the best, counted directly
    for key, pkey in (("scores", "profile"), ("relaxed_scores", "relaxed_profile")):
        sc = np.asarray(m[key])
        for i in range(O):
            for k, r in enumerate(ratios):
                ok = [np.isfinite(sc[i, j]) and sc[i, j] <= r * sc[:, j].min()
                      for j in range(W)]
                assert m[pkey][i][k] == pytest.approx(np.mean(ok))
    # relaxed targets: the relaxed_rank-th best sweep trial; scores re-derived from the curves
    for j, w in enumerate(cfg.workloads):
        c = m["curves"][w]
        best = np.sort(np.asarray(c["sweep_best"]).ravel())
        assert m["relaxed_targets"][j] == pytest.approx(best[cfg.relaxed_rank - 1])
        steps = np.asarray(c["steps"])
        curves = np.asarray(c["trial_curves"])
        for i in range(O):
            hit = [[np.flatnonzero(curves[i, s, t] <= m["relaxed_targets"][j])
                    for t in range(T)] for s in range(S)]
            study = np.sort([min((steps[h[0]] if h.size else np.inf) for h in row)
                             for row in hit])
            mid = study[(S - 1) // 2] if S % 2 else (
                np.inf if np.isinf(study[S // 2]) else study[S // 2 - 1:S // 2 + 1].mean())
            assert m["relaxed_scores"][i][j] == mid
    # the vmapped defaults run equals a plain training run of the same optimizer
    from landscape import train

    name, w = cfg.optimizers[0], cfg.workloads[0]
    wl = E.workload(w, cfg)
    c0 = E.CANDIDATES[name]
    opt = E.factory(name, wl, cfg, cfg.num_steps[0])(c0.default_lr, 0.0, c0.default_own)
    n_runs = 1 + G + S * T
    key = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed),
                                              E._salt(w, name, "trials")), n_runs)[0]
    res = train.train(wl.loss_fn, wl.params, opt, wl.train, key=key,
                      num_steps=cfg.num_steps[0], batch_size=cfg.batch_size[0], progress=False)
    err = float(wl.eval_fn(res.params, wl.val))
    assert abs(err - np.asarray(m["curves"][w]["default_curve"])[0][-1]) <= 1.5 / cfg.val_size
    leaves = jax.tree.leaves(opt.init(wl.params))
    assert m["state_bytes"][0][0] == sum(np.asarray(x).nbytes for x in leaves)



def _blockwise_spectra(E, cfg, m):
    """Smoke-metric checks of ``blockwise_spectra``: shapes from the config; every leaf
    partition covers the model exactly and every head block has 4 d^2 / H entries; SLQ weights
    are probability vectors; the top eigenvalue (certified) is at least every SLQ node of its
    block; the stored densities are recomputed with NumPy from the stored nodes (asinh axis,
    common grid, Gaussian width sigma_rel * node range) and the JS matrix and its mean with
    scipy's ``jensenshannon`` on them; the corpus is pinned by its sha256."""
    from scipy.spatial.distance import jensenshannon

    from landscape import plotting

    models = m["models"]
    assert set(models) == set(cfg.models)
    d, H = cfg.d_model, cfg.n_heads
    for name, mod in models.items():
        for when in ("init", "trained"):
            snap = mod[when]
            assert _finite(snap["train_loss"])
            parts = {"leaf": snap["leaf"]}
            if name == "transformer":
                parts["heads"] = snap["heads"]
                assert len(snap["heads"]["names"]) == cfg.n_layers * H
                assert np.all(np.asarray(snap["heads"]["dims"]) == 4 * d * d // H)
            else:
                assert "heads" not in snap
            assert int(np.sum(snap["leaf"]["dims"])) == mod["num_params"]  # exact partition
            for p in parts.values():
                B = len(p["names"])
                nodes, weights = np.asarray(p["nodes"]), np.asarray(p["weights"])
                assert nodes.shape == weights.shape == (B, cfg.num_probes, cfg.num_steps_slq)
                np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-4)
                top, res = np.asarray(p["top_eigenvalues"]), np.asarray(p["top_residuals"])
                assert top.shape == res.shape == (B, cfg.top_k) and _finite(top)
                if cfg.top_k:  # the smoke config skips eigsh (tests/test_blockwise.py runs it)
                    scale = np.max(np.abs(nodes))
                    assert np.all(top[:, 0] + res[:, 0] >= nodes.max(axis=(1, 2))
                                  - 1e-4 * scale)
                # densities on the common asinh grid, recomputed
                tau = cfg.tau_rel * np.median(np.abs(nodes).max(axis=(1, 2)))
                assert p["tau"] == pytest.approx(tau, rel=1e-5)
                x = np.arcsinh(nodes / tau)
                sigma = cfg.sigma_rel * (x.max() - x.min())
                grid = np.asarray(p["grid"])
                assert grid.shape == (cfg.num_grid,)
                np.testing.assert_allclose(grid[[0, -1]], [x.min() - 4 * sigma,
                                                           x.max() + 4 * sigma], rtol=1e-4,
                                           atol=1e-4)
                pdfs = np.stack([plotting.smoothed_density(x[b], weights[b], grid, sigma)
                                 for b in range(B)])
                np.testing.assert_allclose(p["pdfs"], pdfs, rtol=1e-3, atol=1e-6 * pdfs.max())
                js = np.asarray(p["js"])
                ref = np.array([[jensenshannon(pdfs[b], pdfs[c]) if b != c else 0.0
                                 for c in range(B)] for b in range(B)])
                np.testing.assert_allclose(js, ref, atol=2e-3)
                assert np.all(js >= 0) and np.all(js <= np.sqrt(np.log(2)) + 1e-6)
                upper = np.triu_indices(B, 1)
                assert abs(p["mean_js"] - js[upper].mean()) < 1e-5
                for key in ("mean_js_linear", "mean_js_shape"):
                    assert 0.0 <= p[key] <= np.sqrt(np.log(2)) + 1e-6
        steps = np.asarray(mod["loss_history_step"])
        assert steps.size == np.asarray(mod["loss_history"]).size >= 1
    if "transformer" in models:
        corpus = m["corpus"]
        assert len(corpus["sha256"]) == 64 and corpus["python_version"]
        assert corpus["vocab_size"] == 97



def _small_scale_proxies(E, cfg, m):
    """Smoke-metric checks of ``small_scale_proxies``: shapes from the config; the corpus
    fingerprint is this interpreter's; the records at step 0 (before any update, the same for
    every learning rate) equal the initial model's max attention logit, mean log Z and probe
    loss recomputed from the model; the step-0 minibatch loss of a z-loss variant exceeds the
    plain one by exactly ``z_loss_coef * mean(log Z^2)`` of that minibatch; the qk-layernorm
    model starts from the plain model's weights; the divergence
    flags, the divergence rate, the best rate and the sensitivity re-derived with NumPy."""
    import jax
    import jax.numpy as jnp

    from landscape.data import text

    S, V, L = len(cfg.d_models), len(cfg.variants), len(cfg.learning_rates)
    R = cfg.num_steps // cfg.record_every + 1
    np.testing.assert_array_equal(m["record_steps"],
                                  np.append(np.arange(0, cfg.num_steps, cfg.record_every),
                                            cfg.num_steps))
    assert m["fingerprint"]["sha256"] == text.corpus_fingerprint()["sha256"]
    assert m["fingerprint"]["vocab_size"] == text.VOCAB_SIZE
    assert np.asarray(m["final_loss"]).shape == np.asarray(m["diverged"]).shape == (S, V, L)
    for key in ("log_z", "max_abs_logit", "probe_loss", "train_loss"):
        assert np.asarray(m[key]).shape == (S, V, L, R), key
    attn = np.asarray(m["max_attention_logit"])
    assert attn.shape == (S, V, L, R, max(cfg.n_layers))
    assert _finite(m["initial_loss"]) and _finite(attn[..., 0, :])
    assert set(cfg.variants) == {"plain", "z_loss"} and S == 1
    # step 0: every learning rate starts from the same weights and batch
    for key in ("log_z", "max_abs_logit", "probe_loss", "train_loss"):
        rec0 = np.asarray(m[key])[..., 0]
        np.testing.assert_allclose(rec0, np.broadcast_to(rec0[..., :1], rec0.shape), rtol=1e-6,
                                   err_msg=key)
    tokens = E.corpus(cfg)
    probe = tokens.valid["tokens"][: cfg.probe_size]
    batch0 = tokens.train["tokens"][: cfg.batch_size]
    fm = E.model(cfg, 0, False)  # the smoke variants are plain and z-loss: no qk-layernorm

    @jax.jit
    def reference(params):
        net = fm.merge(params)
        logits = net(probe[:, :-1])
        lz = jax.nn.logsumexp(logits, axis=-1)
        ce = jnp.mean(lz - jnp.take_along_axis(logits, probe[:, 1:, None], -1)[..., 0])
        lz0 = jax.nn.logsumexp(net(batch0[:, :-1]), axis=-1)
        return (jnp.mean(lz), ce, jnp.max(jnp.abs(logits)), net.max_attention_logit(probe[:, :-1]),
                jnp.mean(lz0**2))

    log_z, ce, max_abs, max_attn, z_term = reference(fm.params)
    # the qk-layernorm model starts from the plain model's weights (plus unit LayerNorms)
    qk = E.model(cfg, 0, True).params
    jax.tree.map(np.testing.assert_array_equal, fm.params,
                 {k: v for k, v in qk.items() if k != "blocks"} | {"blocks": {
                     i: {**b, "attn": {n: a for n, a in b["attn"].items() if "norm" not in n}}
                     for i, b in qk["blocks"].items()}})
    np.testing.assert_array_equal(qk["blocks"][0]["attn"]["q_norm"]["scale"], 1.0)
    for j in range(V):
        np.testing.assert_allclose(m["log_z"][0, j, 0, 0], log_z, rtol=1e-5)
        np.testing.assert_allclose(m["probe_loss"][0, j, 0, 0], ce, rtol=1e-5)
        np.testing.assert_allclose(m["max_abs_logit"][0, j, 0, 0], max_abs, rtol=1e-5)
        np.testing.assert_allclose(attn[0, j, 0, 0, :cfg.n_layers[0]], max_attn, rtol=1e-5)
    plain, zl = cfg.variants.index("plain"), cfg.variants.index("z_loss")
    excess = m["train_loss"][0, zl, 0, 0] - m["train_loss"][0, plain, 0, 0]
    np.testing.assert_allclose(excess, cfg.z_loss_coef * z_term, rtol=1e-3)
    final, init = np.asarray(m["final_loss"]), np.asarray(m["initial_loss"])
    lrs = np.asarray(cfg.learning_rates)
    bad = ~np.isfinite(final) | (final > init[..., None])
    np.testing.assert_array_equal(m["diverged"], bad)
    for s in range(S):
        for j in range(V):
            capped = np.minimum(np.where(np.isfinite(final[s, j]), final[s, j], np.inf),
                                init[s, j])
            assert m["sensitivity"][s, j] == pytest.approx(capped.mean() - capped.min())
            want = lrs[bad[s, j]].min() if bad[s, j].any() else np.nan
            np.testing.assert_equal(m["divergence_lr"][s, j], want)
            if not bad[s, j].all():
                ok = np.where(bad[s, j], np.inf, final[s, j])
                assert m["best_lr"][s, j] == lrs[np.argmin(ok)]


CHECKS = {
    "adaptive_eos": _adaptive_eos,
    "barrier_vs_training": _barrier_vs_training,
    "barrier_vs_width": _barrier_vs_width,
    "baselines": _baselines,
    "batch_size_tests": _batch_size_tests,
    "blockwise_spectra": _blockwise_spectra,
    "central_flow": _central_flow,
    "coherence": _coherence,
    "data_diet": _data_diet,
    "edge_of_stability": _edge_of_stability,
    "gd_vs_flow": _gd_vs_flow,
    "hessian_outliers": _hessian_outliers,
    "hessian_spectrum": _hessian_spectrum,
    "icl_as_gd": _icl_as_gd,
    "large_batch": _large_batch,
    "implicit_bias_logistic": _implicit_bias_logistic,
    "matching_anatomy": _matching_anatomy,
    "merging": _merging,
    "opposing_signals": _opposing_signals,
    "optimizer_checks": _optimizer_checks,
    "optimizer_comparison": _optimizer_comparison,
    "small_scale_proxies": _small_scale_proxies,
    "surfaces": _surfaces,
    "svm_convergence": _svm_convergence,
    "svm_local": _svm_local,
    "svm_nonlinear": _svm_nonlinear,
    "svm_rank": _svm_rank,
}


@pytest.mark.single_dtype
def test_every_experiment_has_a_check():
    assert set(CHECKS) == set(experiments.names())


@pytest.mark.parametrize("name", NAMES)
def test_smoke_run_metrics_and_figures(name, tmp_path):
    module = experiments.get(name)
    cfg = module.Config.smoke()
    result = ex.ensure(module, cfg, quiet=True)
    assert result.config == ex.config_dict(cfg)
    check_layout(result.metrics, module.Metrics)
    CHECKS[name](module, cfg, result.metrics)
    readers = [f for f in paper_figures.names() if name in paper_figures.get(f).EXPERIMENTS]
    assert readers, f"no figure reads {name}"
    for fig_name in readers:
        fig = paper_figures.get(fig_name)
        results = {e: ex.ensure(experiments.get(e), experiments.get(e).Config.smoke(),
                                quiet=True) for e in fig.EXPERIMENTS}
        first = fig.draw(results, tmp_path / "a")
        second = fig.draw(results, tmp_path / "b")
        assert {p.suffix for p in first} == {".png", ".pdf"}
        for a, b in zip(first, second, strict=True):
            assert a.stat().st_size > 0 and a.read_bytes() == b.read_bytes(), a.name


# ----------------------------------------------------------------------------- helpers


def test_hessian_outliers_helpers_on_known_inputs():
    E = experiments.get("hessian_outliers")
    assert E.outlier_count([10.0, 9.0, 8.0, 1.0, 0.9, 0.8]) == 3
    assert E.outlier_count([5.0, 0.1, 0.09]) == 1
    assert E.outlier_count([50.0, 4.0, 3.5, 1.0, 0.9]) == 3  # last big gap, not the largest
    assert E.outlier_count([1.0, 0.95, 0.9, 0.85]) == 0
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 3))
    mix = a @ rng.normal(size=(3, 3))  # same span, different basis
    assert E.subspace_overlap(a, mix) == pytest.approx(1.0)
    orth = np.linalg.qr(np.concatenate([a, rng.normal(size=(30, 3))], 1))[0]
    assert E.subspace_overlap(orth[:, :3], orth[:, 3:]) == pytest.approx(0.0, abs=1e-12)


def test_hessian_spectrum_rejects_a_bad_run_name():
    E = experiments.get("hessian_spectrum")
    with pytest.raises(ValueError, match="config key 'runs'"):
        dataclasses.replace(E.Config.smoke(), runs=("cifar_mlp",))


@pytest.mark.single_dtype
def test_svm_convergence_iterations_to_threshold():
    E = experiments.get("svm_convergence")
    steps = np.array([0, 10, 20, 30])
    assert E.iterations_to(steps, [0.5, 0.995, 0.98, 0.999], 0.99) == 30
    assert E.iterations_to(steps, [0.995, 0.996, 0.997, 0.999], 0.99) == 0
    assert E.iterations_to(steps, [0.5, 0.6, 0.7, 0.8], 0.99) == -1


@pytest.mark.single_dtype
def test_svm_rank_two_dimensional_problem_with_many_examples_is_infeasible():
    E = experiments.get("svm_rank")
    cfg = E.Config(ns=(10,), ds=(2,), num_draws=3)
    draws = [E.one_draw(cfg, 10, 2, k) for k in range(3)]
    assert not any(d["feasible"] for d in draws)


# ----------------------------------------------------------------------------- config checks

# Any integer is a valid seed; every other number of every config has a range.
SEED_FIELDS = {"seed", "direction_seeds"}

# The int fields for which 0 is a valid value (a count that may be zero, a step that may be the
# first); every other int field must be positive. Exact both ways (the test below checks that 0
# is accepted here and rejected elsewhere).
ZERO_ALLOWED = {
    "barrier_vs_training": {"checkpoints", "spawn_steps"},
    "barrier_vs_width": {"ste_max_width"},
    "baselines": {"mlp_depth"},
    "blockwise_spectra": {"mlp_depth", "top_k"},
    "coherence": {"c", "early_steps"},  # c = 0: the plain mean; early_steps = 0: step 0 only
    "hessian_outliers": {"depth", "num_extra", "dense_check_max_dim", "extra_seeds"},
    "hessian_spectrum": {"mlp_depth", "dense_check_max_dim"},
}


def _leaf_types(tp) -> set:
    """The scalar types a field annotation is made of (``int | None``, ``tuple[float, ...]``)."""
    if typing.get_origin(tp) is typing.Literal:
        return {typing.Literal}
    args = [a for a in typing.get_args(tp) if a is not Ellipsis and a is not type(None)]
    return set().union(*map(_leaf_types, args)) if args else {tp}


def _fields_of(config_cls, kinds) -> list[str]:
    hints = typing.get_type_hints(config_cls)
    return [f.name for f in dataclasses.fields(config_cls)
            if f.name not in SEED_FIELDS and _leaf_types(hints[f.name]) <= kinds]


def _rejects(module, smoke, override, field):
    with pytest.raises(ex.UsageError, match=f"'{field}'"):
        ex.make_config(module, smoke=smoke, overrides=[override])


@pytest.mark.single_dtype
@pytest.mark.parametrize("name", experiments.names())
def test_config_rejects_out_of_range_numbers_before_any_work(name):
    """Every number of every config is range-checked in ``Config.__post_init__``: -3 is
    rejected for every int and float field but seeds, 0 for every int field not in
    ``ZERO_ALLOWED``, each through ``make_config`` with a ``UsageError`` naming the field."""
    module = experiments.get(name)
    for smoke in (False, True):
        base = ex.make_config(module, smoke=smoke)
        assert base == (module.Config.smoke() if smoke else module.Config())
        numbers = _fields_of(module.Config, {int, float})
        ints = _fields_of(module.Config, {int})
        assert numbers and ints, name
        for field in numbers:
            _rejects(module, smoke, f"{field}=-3", field)
        for field in ints:
            if field in ZERO_ALLOWED.get(name, ()):
                ex.make_config(module, smoke=smoke, overrides=[f"{field}=0"])
            else:
                _rejects(module, smoke, f"{field}=0", field)
    assert ZERO_ALLOWED.get(name, set()) <= set(ints)


@pytest.mark.single_dtype
@pytest.mark.parametrize("name", experiments.names())
def test_config_literal_fields_accept_their_options_and_nothing_else(name):
    """A field typed ``Literal[...]`` (or a tuple of them) accepts each option when built
    directly (so ``__post_init__`` agrees with the annotation) and rejects any other string
    both in the CLI parser and in ``__post_init__``."""
    module = experiments.get(name)
    hints = typing.get_type_hints(module.Config)
    default = module.Config()
    for field, tp in hints.items():
        if typing.Literal not in _leaf_types(tp):
            continue
        is_tuple = typing.get_origin(tp) is tuple
        options = typing.get_args(typing.get_args(tp)[0] if is_tuple else tp)
        wrap = (lambda v: (v,)) if is_tuple else (lambda v: v)
        for option in options:
            assert getattr(dataclasses.replace(default, **{field: wrap(option)}), field)
        _rejects(module, False, f"{field}=bogus", field)
        with pytest.raises(ValueError, match=f"'{field}'"):
            dataclasses.replace(default, **{field: wrap("bogus")})


@pytest.mark.single_dtype
def test_config_literal_runs_of_hessian_spectrum_are_its_dataset_model_pairs():
    E = experiments.get("hessian_spectrum")
    item = typing.get_args(typing.get_type_hints(E.Config)["runs"])[0]  # tuple[Literal, ...]
    assert set(typing.get_args(item)) == {f"{d}_{m}" for d in E._DATASETS for m in E._MODELS}


@pytest.mark.single_dtype
@pytest.mark.parametrize(("override", "field"), [("runs=cifar_vit", "runs"),
                                                 ("top_k=-3", "top_k")])
def test_cli_rejects_a_bad_config_in_one_line_before_any_work(override, field, tmp_path):

    results = tmp_path / "results"
    env = {**os.environ, "LANDSCAPE_RESULTS": str(results)}
    proc = subprocess.run([sys.executable, "-m", "experiments", "run", "hessian_spectrum",
                           "--set", override], capture_output=True, text=True, env=env,
                          cwd=Path(experiments.__file__).parent.parent, timeout=120)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("landscape: error:"), proc.stderr
    assert f"'{field}'" in lines[0]
    assert not (results / "hessian_spectrum").exists()  # no work folder: nothing started

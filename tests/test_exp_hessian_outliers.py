"""The hessian_outliers experiment end to end on its smoke config, plus its figure."""

from __future__ import annotations

import importlib

import jax
import numpy as np
import pytest

from landscape import experiment

E = experiment.load_experiment("hessian_outliers")
FIG = importlib.import_module("paper_figures.hessian_outliers")  # root is on sys.path now


@pytest.fixture(scope="module")
def result():
    return experiment.ensure("hessian_outliers", E.Config.smoke(), quiet=True)


def _finite(x):
    return bool(np.all(np.isfinite(np.asarray(x, np.float64))))


def test_smoke_metrics_have_expected_keys_and_finite_values(result):
    cfg = E.Config.smoke()
    runs = result.metrics["runs"]
    assert set(runs) == {f"C{c}_w{w}" for c in cfg.num_classes for w in cfg.widths}
    for c in cfg.num_classes:
        for w in cfg.widths:
            r = runs[f"C{c}_w{w}"]
            assert _finite([r["train_loss"], r["train_accuracy"], r["overlap_random"]])
            for kind in ("hessian", "ggn"):
                s = r[kind]
                k = c + cfg.num_extra
                assert np.asarray(s["eigenvalues"]).shape == (k,)
                assert _finite(s["eigenvalues"]) and _finite(s["residuals"])
                assert np.all(np.diff(s["eigenvalues"]) <= 0)  # descending
                assert 0 <= s["outlier_count"] < k
                assert 0.0 <= s["overlap"] <= 1.0 + 1e-9
            w_sum = np.asarray(r["hessian"]["density_weights"]).sum(axis=1)
            np.testing.assert_allclose(w_sum, 1.0, rtol=1e-4)  # SLQ weights per probe
    summary = result.metrics["summary"]
    assert np.asarray(summary["hessian"]["outlier_count"]).shape == (2, 1)
    cfg = result.config
    for kind in ("hessian", "ggn"):
        by_seed = np.asarray(summary[kind]["counts_by_seed"])
        assert by_seed.shape == (2, 1, 1 + cfg["extra_seeds"])
        # the first seed's recount is the stored count; other thresholds recount the same runs
        np.testing.assert_array_equal(by_seed[..., 0], summary[kind]["outlier_count"])
        np.testing.assert_array_equal(
            summary["threshold_sensitivity"][str(cfg["gap_threshold"])][kind], by_seed)
    assert summary["seeds"] == [cfg["seed"] + i for i in range(1 + cfg["extra_seeds"])]


def test_eigsh_matches_dense_hessian_and_ggn_is_psd(result):
    rtol = 1e-8 if jax.config.jax_enable_x64 else 1e-3
    for r in result.metrics["runs"].values():
        dense_top = np.asarray(r["dense_hessian_top"])  # numpy eigvalsh of the dense operator
        lam = np.asarray(r["hessian"]["eigenvalues"])
        np.testing.assert_allclose(lam, dense_top, rtol=rtol, atol=rtol * abs(dense_top[0]))
        assert np.all(np.asarray(r["ggn"]["eigenvalues"]) > -rtol * r["ggn"]["eigenvalues"][0])


def test_helpers_on_known_inputs():
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


def test_figure_draws_from_stored_result(result, tmp_path):
    stored = experiment.load("hessian_outliers", E.Config.smoke())
    paths = FIG.draw({"hessian_outliers": stored}, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert all(p.stat().st_size > 0 for p in paths)

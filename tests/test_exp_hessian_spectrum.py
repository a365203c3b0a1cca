"""The hessian_spectrum experiment end to end on its smoke config, plus its figure."""

from __future__ import annotations

import dataclasses
import importlib

import jax
import numpy as np
import pytest

from landscape import experiment

E = experiment.load_experiment("hessian_spectrum")
FIG = importlib.import_module("paper_figures.hessian_spectrum")


@pytest.fixture(scope="module")
def result():
    return experiment.ensure("hessian_spectrum", E.Config.smoke(), quiet=True)


def _finite(x):
    return bool(np.all(np.isfinite(np.asarray(x, np.float64))))


def test_smoke_metrics_shapes_and_invariants(result):
    cfg = E.Config.smoke()
    runs = result.metrics["runs"]
    assert set(runs) == set(cfg.runs)
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


def test_eigsh_matches_dense_hessian(result):
    rtol = 1e-8 if jax.config.jax_enable_x64 else 1e-3
    checked = 0
    for r in result.metrics["runs"].values():
        if "dense_hessian_top" not in r:
            continue
        dense = np.asarray(r["dense_hessian_top"])
        s = r["final"]["hessian"]
        lam, res = np.asarray(s["eigenvalues"]), np.asarray(s["residuals"])
        # Each eigenvalue is within its certified residual of the dense spectrum's top values.
        np.testing.assert_allclose(lam, dense, rtol=0, atol=rtol * abs(dense[0]) + res.max())
        checked += 1
    assert checked == len(result.metrics["runs"])  # every smoke model is small enough


def test_bad_run_name_is_rejected():
    bad = dataclasses.replace(E.Config.smoke(), runs=("cifar_mlp",))
    with pytest.raises(ValueError, match="runs entries must be DATASET_MODEL"):
        E.run(bad)


def test_figure_draws_from_stored_result(result, tmp_path):
    stored = experiment.load("hessian_spectrum", E.Config.smoke())
    paths = FIG.draw({"hessian_spectrum": stored}, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert all(p.stat().st_size > 0 for p in paths)

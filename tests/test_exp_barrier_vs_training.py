"""The barrier_vs_training experiment end to end on its smoke config, plus its figure."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from landscape import experiment

pytestmark = pytest.mark.single_dtype

E = experiment.load_experiment("barrier_vs_training")
FIG = importlib.import_module("paper_figures.barrier_vs_training")


@pytest.fixture(scope="module")
def result():
    return experiment.ensure("barrier_vs_training", E.Config.smoke(), quiet=True)


def _finite(x):
    return bool(np.all(np.isfinite(np.asarray(x, np.float64))))


def test_figure_draws_from_stored_results(result, tmp_path):
    paths = FIG.draw({"barrier_vs_training": result}, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert all(p.stat().st_size > 0 for p in paths)
    assert FIG.EXPERIMENTS == ("barrier_vs_training",)


def test_smoke_metrics(result):
    cfg, m = E.Config.smoke(), result.metrics
    assert np.asarray(m["steps"]).tolist() == list(cfg.checkpoints)
    assert np.asarray(m["spawn_steps"]).tolist() == list(cfg.spawn_steps)
    for key in ("naive_loss", "naive_error", "wm_loss", "wm_error", "spawn_loss", "spawn_error"):
        assert _finite(m[key]) and np.all(np.asarray(m[key]) >= -1e-6)
    # at step 0 both models are fresh inits: error barriers are bounded by 1
    assert np.all(np.asarray(m["naive_error"]) <= 1)

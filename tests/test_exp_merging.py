"""The merging experiment end to end on its smoke config, plus its figure."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from landscape import experiment

pytestmark = pytest.mark.single_dtype

E = experiment.load_experiment("merging")
FIG = importlib.import_module("paper_figures.merging")


@pytest.fixture(scope="module")
def result():
    return experiment.ensure("merging", E.Config.smoke(), quiet=True)


def _finite(x):
    return bool(np.all(np.isfinite(np.asarray(x, np.float64))))


def test_figure_draws_from_stored_results(result, tmp_path):
    paths = FIG.draw({"merging": result}, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert all(p.stat().st_size > 0 for p in paths)
    assert FIG.EXPERIMENTS == ("merging",)


def test_smoke_metrics(result):
    cfg, m = E.Config.smoke(), result.metrics
    for key in ("endpoints", "ensemble", "average", "wm", "wm_repair"):
        assert 0.0 <= m[key] <= 1.0
    pleas = np.asarray(m["pleas"])
    assert pleas.shape == (len(cfg.pleas_factors),)
    # PLeaS at twice the width merges nothing and reproduces the logit ensemble
    assert cfg.pleas_factors[-1] == 2.0
    assert abs(pleas[-1] - m["ensemble"]) <= 0.02
    assert np.asarray(m["multi_wm"]).shape == (cfg.num_models - 1,)

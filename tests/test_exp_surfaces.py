"""The surfaces experiment end to end on its smoke config, plus its figure."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from landscape import experiment

pytestmark = pytest.mark.single_dtype

E = experiment.load_experiment("surfaces")
FIG = importlib.import_module("paper_figures.surfaces")


@pytest.fixture(scope="module")
def result():
    return experiment.ensure("surfaces", E.Config.smoke(), quiet=True)


def _finite(x):
    return bool(np.all(np.isfinite(np.asarray(x, np.float64))))


def test_figure_draws_from_stored_results(result, tmp_path):
    paths = FIG.draw({"surfaces": result}, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert all(p.stat().st_size > 0 for p in paths)
    assert FIG.EXPERIMENTS == ("surfaces",)


def test_smoke_metrics(result):
    cfg, m = E.Config.smoke(), result.metrics
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

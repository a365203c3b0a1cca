"""The barrier_vs_width experiment end to end on its smoke config, plus its figure."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from landscape import experiment

pytestmark = pytest.mark.single_dtype

E = experiment.load_experiment("barrier_vs_width")
FIG = importlib.import_module("paper_figures.barrier_vs_width")


@pytest.fixture(scope="module")
def result():
    return experiment.ensure("barrier_vs_width", E.Config.smoke(), quiet=True)


def _finite(x):
    return bool(np.all(np.isfinite(np.asarray(x, np.float64))))


def test_figure_draws_from_stored_results(result, tmp_path):
    paths = FIG.draw({"barrier_vs_width": result}, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert all(p.stat().st_size > 0 for p in paths)
    assert FIG.EXPERIMENTS == ("barrier_vs_width",)


def test_smoke_metrics(result):
    cfg, m = E.Config.smoke(), result.metrics
    shape = (len(cfg.datasets), len(cfg.widths), len(E.METHODS), cfg.num_pairs)
    for key in ("barrier_loss", "barrier_error"):
        v = np.asarray(m[key], float)
        assert v.shape == shape
        ste = E.METHODS.index("ste")
        others = np.delete(v, ste, axis=2)
        assert _finite(others)
        # max_minus_mean is never negative: the path's max is at least the endpoints' mean
        assert np.all(others >= -1e-6)
        wide = np.asarray(cfg.widths) > cfg.ste_max_width
        assert np.all(np.isnan(v[:, wide, ste])) and _finite(v[:, ~wide, ste])
    assert np.asarray(m["test_error"]).shape == (1, 1, 2)

"""The matching_anatomy experiment end to end on its smoke config, plus its figure."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from landscape import experiment

pytestmark = pytest.mark.single_dtype

E = experiment.load_experiment("matching_anatomy")
FIG = importlib.import_module("paper_figures.matching_anatomy")


@pytest.fixture(scope="module")
def result():
    return experiment.ensure("matching_anatomy", E.Config.smoke(), quiet=True)


def _finite(x):
    return bool(np.all(np.isfinite(np.asarray(x, np.float64))))


def test_figure_draws_from_stored_results(result, tmp_path):
    paths = FIG.draw({"matching_anatomy": result}, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert all(p.stat().st_size > 0 for p in paths)
    assert FIG.EXPERIMENTS == ("matching_anatomy",)


def test_smoke_metrics(result):
    m = result.metrics
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
    assert table.shape == (len(m["layers"]), 4) and _finite(table[:, [0, 2, 3]])
    # the layer-wise midpoint barrier equals the measured midpoint of the second-order check
    np.testing.assert_allclose(table[:-1, 0], table[:-1, 3], rtol=1e-3, atol=1e-5)

"""Smoke run of experiments/svm_nonlinear."""

import numpy as np
import pytest

from landscape import experiment

pytestmark = pytest.mark.single_dtype

exp = experiment.load_experiment("svm_nonlinear")


def test_smoke_run():
    cfg = exp.Config.smoke()
    m = exp.run(cfg)
    R = len(exp.record_steps(cfg))
    np.testing.assert_array_equal(m["steps"], exp.record_steps(cfg))
    assert np.all(np.diff(m["steps"]) > 0)
    assert np.asarray(m["corr_perp"]).shape == (cfg.num_seeds, R)
    assert np.asarray(m["set_sizes"]).shape == (cfg.num_seeds, cfg.n)
    ok = np.asarray(m["feasible"], bool)
    for key in ("corr_perp", "corr_growth", "corr_full"):
        c = np.asarray(m[key])[ok]
        assert np.all(np.abs(c[np.isfinite(c)]) <= 1 + 1e-9)
    assert np.all(np.isfinite(np.asarray(m["loss"])))

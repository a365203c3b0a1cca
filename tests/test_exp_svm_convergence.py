"""Smoke run of experiments/svm_convergence: shapes, finite values, the science on a tiny case."""

import dataclasses

import numpy as np
import pytest

from landscape import experiment

pytestmark = pytest.mark.single_dtype

exp = experiment.load_experiment("svm_convergence")


def test_smoke_run():
    cfg = exp.Config.smoke()
    m = exp.run(cfg)
    R = cfg.num_steps // cfg.record_every + 1
    for key in ("corr_W", "corr_KQ", "mass_W", "mass_KQ", "norm_W", "cross_W_to_nuc"):
        assert np.asarray(m[key]).shape == (cfg.num_seeds, R), key
        assert np.all(np.isfinite(m[key])), key
    assert np.asarray(m["ablation_corr"]).shape == (cfg.num_seeds, len(cfg.ridge_ablation), R)
    s = m["summary"]
    assert s["W"]["final_corr_min"] > 0.95 and s["KQ"]["final_corr_min"] > 0.95
    assert set(s["W"]["kinds"]) <= {"global", "local", "none"}
    assert all(r <= cfg.n for r in m["rank_fro"])


def test_iterations_to_threshold():
    steps = np.array([0, 10, 20, 30])
    assert exp.iterations_to(steps, [0.5, 0.995, 0.98, 0.999], 0.99) == 30
    assert exp.iterations_to(steps, [0.995, 0.996, 0.997, 0.999], 0.99) == 0
    assert exp.iterations_to(steps, [0.5, 0.6, 0.7, 0.8], 0.99) == -1


def test_default_config_is_the_documented_science():
    cfg = exp.Config()
    assert (cfg.n, cfg.T, cfg.d, cfg.learning_rate) == (6, 8, 10, 0.1) and cfg.num_seeds >= 10
    assert dataclasses.is_dataclass(cfg)

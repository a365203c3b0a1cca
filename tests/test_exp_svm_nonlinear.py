"""Smoke run of experiments/svm_nonlinear."""

import numpy as np

from landscape import experiment

exp = experiment.load_experiment("svm_nonlinear")


def test_smoke_run():
    cfg = exp.Config.smoke()
    m = exp.run(cfg)
    R = cfg.num_steps // cfg.record_every + 1
    assert np.asarray(m["corr_perp"]).shape == (cfg.num_seeds, R)
    assert np.asarray(m["set_sizes"]).shape == (cfg.num_seeds, cfg.n)
    ok = np.asarray(m["feasible"], bool)
    cp = np.asarray(m["corr_perp"])[ok]
    assert np.all(np.abs(cp) <= 1 + 1e-9)
    assert np.all(np.isfinite(np.asarray(m["loss"])))

"""Smoke run of experiments/implicit_bias_logistic."""

import numpy as np

from landscape import experiment

exp = experiment.load_experiment("implicit_bias_logistic")


def test_smoke_run():
    cfg = exp.Config.smoke()
    m = exp.run(cfg)
    assert len(m["datasets"]) == cfg.num_datasets
    row = m["datasets"][0]
    assert row["svm_converged"]
    gap = np.asarray(row["direction_gap"])
    assert np.all(np.diff(gap[len(gap) // 2:]) < 0)  # GD direction approaches the SVM
    assert np.all(np.diff(row["loss"]) < 0)
    assert np.isfinite(m["summary"]["fit_a"][0])

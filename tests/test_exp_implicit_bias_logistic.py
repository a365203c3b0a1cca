"""Smoke run of experiments/implicit_bias_logistic."""

import numpy as np
import pytest

from landscape import experiment

pytestmark = pytest.mark.single_dtype

exp = experiment.load_experiment("implicit_bias_logistic")


def test_smoke_run():
    cfg = exp.Config.smoke()
    m = exp.run(cfg)
    assert len(m["datasets"]) == cfg.num_datasets
    row = m["datasets"][0]
    assert row["svm_converged"]
    # GD approaches the predicted path w_hat log t + w_tilde (the direction gap itself need
    # not fall monotonically this early on pruned data)
    assert np.all(np.diff(np.asarray(row["residual"])) < 0)
    assert np.all(np.diff(row["loss"]) < 0)
    assert np.isfinite(m["summary"]["fit_slope_along_w_hat"][0])
    assert np.all(np.isfinite(row["residual"])) and row["prediction"]["spans"]
    assert len(row["y"]) + row["num_pruned"] == cfg.n_pos + cfg.n_neg

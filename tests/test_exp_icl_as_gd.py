"""Smoke run of experiments/icl_as_gd."""

import numpy as np
import pytest

from landscape import experiment

pytestmark = pytest.mark.single_dtype

exp = experiment.load_experiment("icl_as_gd")


def test_smoke_run():
    cfg = exp.Config.smoke()
    m = exp.run(cfg)
    R = cfg.num_steps // cfg.record_every + 1
    assert np.asarray(m["loss_lsa"]).shape == (cfg.num_seeds, R)
    s = m["summary"]
    assert s["construction_max_abs_diff"] < 1e-10  # float64 construction equals the GD step
    assert s["final_loss_lsa"][0] < np.asarray(m["loss_lsa"])[0, 0]
    assert np.asarray(m["gd_curve"]).shape == (cfg.num_seeds, len(cfg.eta_grid))
    assert min(np.asarray(m["gd_curve"])[0]) >= np.asarray(m["loss_gd"])[0, -1] - 1e-12

"""Smoke run of experiments/svm_local."""

import numpy as np
import pytest

from landscape import experiment

pytestmark = pytest.mark.single_dtype

exp = experiment.load_experiment("svm_local")


def test_smoke_run():
    cfg = exp.Config.smoke()
    m = exp.run(cfg)
    for scale in cfg.init_scales:
        f = m["frequency"][str(scale)]
        assert len(f["kinds"]) == cfg.num_seeds
        assert abs(sum(f["fraction"].values()) - 1.0) < 1e-12
    pic = m["picture"]
    assert np.asarray(pic["paths"]).shape == (cfg.picture_paths, cfg.picture_steps + 1, 2)
    assert len(pic["token_kind"]) == cfg.picture_T
    assert "global" in pic["token_kind"]

"""Smoke run of experiments/svm_rank."""

import numpy as np
import pytest

from landscape import experiment

pytestmark = pytest.mark.single_dtype

exp = experiment.load_experiment("svm_rank")


def test_smoke_run():
    cfg = exp.Config.smoke()
    m = exp.run(cfg)
    assert m["ds"] == list(cfg.ds)
    for n in cfg.ns:
        row = m["per_n"][str(n)]
        assert len(row["infeasible_fraction"]) == len(cfg.ds)
        assert all(0.0 <= f <= 1.0 for f in row["infeasible_fraction"])
        fro = np.asarray(row["rank_fro_max"], float)
        assert np.all(fro[np.isfinite(fro)] <= n)  # Frobenius solution has rank <= n
        assert row["max_violation"] <= 1e-6


def test_a_two_dimensional_problem_with_many_examples_is_infeasible():
    cfg = exp.Config(ns=(10,), ds=(2,), num_draws=3)
    draws = [exp.one_draw(cfg, 10, 2, k) for k in range(3)]
    assert not any(d["feasible"] for d in draws)

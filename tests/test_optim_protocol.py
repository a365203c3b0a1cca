"""The comparison protocol's scoring (``landscape.optim.protocol``) against loops written out
here, analytic cases, and its errors on bad input."""

import math
import statistics

import numpy as np
import pytest

from landscape.optim import protocol

pytestmark = pytest.mark.single_dtype


def test_quasi_random_trials_cover_the_space_and_are_deterministic_per_study():
    space = {"lr": (1e-4, 1e-1, "log"), "wd": (0.0, 0.5, "linear")}
    a = protocol.quasi_random_trials(space, 64, seed=1)
    b = protocol.quasi_random_trials(space, 64, seed=1)
    c = protocol.quasi_random_trials(space, 64, seed=2)
    np.testing.assert_array_equal(a["lr"], b["lr"])
    assert not np.allclose(a["lr"], c["lr"])
    assert a["lr"].shape == a["wd"].shape == (64,)
    assert np.all((a["lr"] >= 1e-4) & (a["lr"] <= 1e-1))
    assert np.all((a["wd"] >= 0) & (a["wd"] <= 0.5))
    # log-uniform: each decade of the three holds about a third of the points (a Halton
    # sequence fills them far more evenly than independent draws would)
    counts = np.histogram(np.log10(a["lr"]), bins=[-4, -3, -2, -1])[0]
    assert np.all(np.abs(counts - 64 / 3) <= 2), counts
    counts = np.histogram(a["wd"], bins=4, range=(0, 0.5))[0]
    assert np.all(np.abs(counts - 16) <= 2), counts


@pytest.mark.parametrize("space, n, match", [
    ({"lr": (0.0, 1.0, "log")}, 3, "low > 0"),
    ({"lr": (2.0, 1.0, "linear")}, 3, "low <= high"),
    ({"lr": (1.0, 2.0, "cubic")}, 3, "scale"),
    ({"lr": (1.0, 2.0, "log")}, 0, "num_trials"),
    ({}, 3, "space"),
])
def test_quasi_random_trials_reject_bad_spaces(space, n, match):
    with pytest.raises(ValueError, match=match):
        protocol.quasi_random_trials(space, n, seed=0)


def test_steps_to_target_is_the_first_evaluation_at_or_below_the_target():
    rng = np.random.default_rng(0)
    steps = np.arange(0, 210, 10)
    curves = np.cumsum(rng.normal(-0.02, 0.05, size=(4, 5, len(steps))), axis=-1) + 1.0
    curves[0, 0, 3:] = np.nan  # a run that diverged never reaches the target afterwards
    target = 0.8
    got = protocol.steps_to_target(curves, steps, target)
    assert got.shape == (4, 5)
    for i in range(4):
        for j in range(5):
            want = math.inf
            for s, v in zip(steps, curves[i, j]):
                if v == v and v <= target:
                    want = s
                    break
            assert got[i, j] == want
    with pytest.raises(ValueError, match="evaluations"):
        protocol.steps_to_target(curves, steps[:-1], target)


def test_workload_score_is_the_median_over_studies_of_the_fastest_trial():
    inf = math.inf
    times = np.array([[30.0, 20.0, inf], [inf, inf, inf], [50.0, 10.0, 40.0]])
    # study bests 20, inf, 10 -> median 20
    assert protocol.workload_score(times) == statistics.median([20.0, inf, 10.0]) == 20.0
    assert protocol.workload_score(times[:2]) == inf  # bests 20, inf: the upper middle is inf
    assert protocol.workload_score(np.array([[30.0], [10.0]])) == 20.0
    assert protocol.workload_score(np.full((3, 2), inf)) == inf
    with pytest.raises(ValueError, match="num_studies"):
        protocol.workload_score(np.array([1.0, 2.0]))


def test_performance_profile_counts_workloads_within_a_factor_of_the_best():
    inf = math.inf
    scores = np.array([[100.0, 300.0, inf, inf],
                       [200.0, 100.0, 50.0, inf],
                       [400.0, inf, 60.0, inf]])
    ratios = [1.0, 1.2, 2.0, 3.0, 4.0]
    got = protocol.performance_profile(scores, ratios)
    for o in range(3):
        for k, r in enumerate(ratios):
            n = 0
            for w in range(4):
                best = min(scores[:, w])
                n += bool(math.isfinite(scores[o, w]) and scores[o, w] <= r * best)
            assert got[o, k] == n / 4
    np.testing.assert_allclose(got[1], [0.5, 0.5, 0.75, 0.75, 0.75])
    np.testing.assert_allclose(got[2], [0.0, 0.25, 0.25, 0.25, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        protocol.performance_profile(np.array([[np.nan, 1.0]]), ratios)


def test_lr_sensitivity_matches_wortsman_et_al_definition():
    # l0 = 2; the grid's losses 3 (worse than init -> capped at 2), 1, 0.5, nan (diverged -> 2)
    got = protocol.lr_sensitivity(np.array([3.0, 1.0, 0.5, np.nan]), 2.0)
    assert got == pytest.approx((2 + 1 + 0.5 + 2) / 4 - 0.5)
    assert protocol.lr_sensitivity(np.full(5, 0.3), 1.0) == 0.0
    with pytest.raises(ValueError, match="final"):
        protocol.lr_sensitivity(np.zeros((2, 2)), 1.0)

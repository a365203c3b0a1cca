"""The benchmarks' timing primitive and thread pinning (``benchmarks/_report.py``); no torch.

``compare`` must alternate the contenders round-robin after a warm-up, compute per-round ratios
``peer / ours`` with their median and min-max range, and call a range that includes 1 a tie.
The clock is faked: each fake contender advances it by a scripted duration, so every number
below is exact. No test here asserts a wall-clock time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _report as rep  # noqa: E402

pytestmark = pytest.mark.single_dtype  # no floating-point dtype involved


class FakeClock:
    """A clock that only moves when a fake contender says so; records the call order."""

    def __init__(self):
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def contender(self, name: str, durations):
        """A function that logs ``name`` and advances the clock by the next duration."""
        it = iter(durations)

        def fn():
            self.calls.append(name)
            self.now += next(it)

        return fn


def test_compare_alternates_after_warmup():
    clock = FakeClock()
    c = rep.compare(clock.contender("ours", [1.0] * 4), clock.contender("peer", [2.0] * 4),
                    repeats=3, warmup=1, clock=clock)
    assert clock.calls == ["ours", "peer"] * 4  # one warm-up round, then three timed rounds
    assert c.names == ("ours", "peer")
    assert c.times == {"ours": [1.0] * 3, "peer": [2.0] * 3}
    assert c.warmup_times == {"ours": [1.0], "peer": [2.0]}


def test_compare_round_robin_over_several_peers():
    clock = FakeClock()
    fns = {n: clock.contender(n, [1.0] * 7) for n in ("a", "b")}
    c = rep.compare(clock.contender("mine", [1.0] * 7), fns, repeats=5, warmup=2,
                    ours_name="mine", clock=clock)
    assert clock.calls == ["mine", "a", "b"] * 7
    assert c.peers == ("a", "b")
    assert set(c.ratios) == {"a", "b"}


def test_median_ratio_and_range_on_scripted_times():
    clock = FakeClock()
    ours = [9.0, 1.0, 2.0, 1.0, 4.0, 0.5]  # the first value is the warm-up (compilation)
    peer = [1.0, 3.0, 4.0, 2.5, 6.0, 2.0]
    c = rep.compare(clock.contender("ours", ours), clock.contender("peer", peer),
                    repeats=5, clock=clock)
    r = c.ratios["peer"]
    assert r.values == (3.0, 2.0, 2.5, 1.5, 4.0)  # per round, peer / ours
    assert r.median == 2.5
    assert (r.low, r.high) == (1.5, 4.0)
    assert r.verdict == "faster"
    assert c.medians == {"ours": 1.0, "peer": 3.0}
    assert r.text() == "2.5 (1.5-4) faster"
    # Any other pair of contenders, e.g. ours over the peer.
    assert c.ratio("ours", "peer").values == pytest.approx((1 / 3, 0.5, 0.4, 2 / 3, 0.25))


@pytest.mark.parametrize("peer, verdict", [
    ([1.0, 0.5, 0.8, 0.9, 0.7, 0.6], "slower"),   # every round below 1
    ([1.0, 1.2, 0.9, 1.5, 1.1, 1.3], "tie"),      # range 0.9-1.5 includes 1
    ([1.0, 1.0, 2.0, 2.0, 2.0, 2.0], "tie"),      # a round exactly at 1 counts as a tie
    ([1.0, 1.01, 1.2, 1.1, 1.3, 1.4], "faster"),  # every round above 1
])
def test_verdict(peer, verdict):
    clock = FakeClock()
    c = rep.compare(clock.contender("ours", [1.0] * 6), clock.contender("peer", peer),
                    repeats=5, clock=clock)
    assert c.ratios["peer"].verdict == verdict


def test_ratio_against_a_threshold():
    r = rep.Ratio("hvp", "grad", (1.4, 1.5, 1.9))
    assert r.against(2.0) == "below"
    assert rep.Ratio("hvp", "grad", (1.8, 2.1)).against(2.0) == "tie"
    assert r.text(verdict=False) == "1.5 (1.4-1.9)"


def test_number_averages_calls_per_sample():
    clock = FakeClock()
    c = rep.compare(clock.contender("ours", [1.0, 3.0] * 3), clock.contender("peer", [4.0] * 6),
                    repeats=2, warmup=1, number=2, clock=clock)
    assert clock.calls == ["ours", "ours", "peer", "peer"] * 3
    assert c.times == {"ours": [2.0, 2.0], "peer": [4.0, 4.0]}
    assert c.ratios["peer"].values == (2.0, 2.0)


def test_compare_rejects_bad_arguments():
    f = lambda: None
    with pytest.raises(ValueError, match="repeats"):
        rep.compare(f, f, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        rep.compare(f, f, warmup=-1)
    with pytest.raises(ValueError, match="at least one peer"):
        rep.compare(f, {})
    with pytest.raises(ValueError, match="named like ours"):
        rep.compare(f, {"ours": f})


def test_comparison_is_written_as_json(tmp_path):
    clock = FakeClock()
    c = rep.compare(clock.contender("ours", [1.0] * 6), clock.contender("peer", [2.0] * 6),
                    repeats=5, clock=clock)
    path = tmp_path / "out.json"
    rep.write_json({"c": c, "nan": float("nan")}, path)
    d = json.loads(path.read_text())
    assert d["c"]["ratios_peer_over_ours"]["peer"]["median"] == 2.0
    assert d["c"]["ratios_peer_over_ours"]["peer"]["verdict"] == "faster"
    assert d["c"]["seconds"]["peer"] == [2.0] * 5
    assert len(d["c"]["load_average_before"]) == 3
    assert d["nan"] == "nan"


def test_compare_blocks_on_jax_results_and_counts_recompiles():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    x = jnp.ones(8)
    cached = jax.jit(lambda v: v * 2.0)
    fresh = lambda: jax.jit(lambda v: v * 3.0)(x)  # a new function: compiled on every call
    c = rep.compare(lambda: cached(x), {"fresh": fresh}, repeats=2)
    assert c.compiles == {"ours": 0, "fresh": 2}
    assert c.warmup_compiles["ours"] == 1


def test_pin_threads_before_numpy_limits_openblas_in_a_fresh_process():
    pytest.importorskip("threadpoolctl")
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import _report as rep\n"
        "rec = rep.pin_threads(1)\n"
        "import numpy, scipy.linalg\n"
        "print(json.dumps({'rec': rec, 'report': rep.thread_report()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in rep.THREAD_ENV_VARS}
    out = subprocess.run([sys.executable, "-c", code, str(BENCH)], env=env, check=True,
                         capture_output=True, text=True, timeout=120)
    d = json.loads(out.stdout.strip().splitlines()[-1])
    assert d["rec"]["imported_before_pinning"] == []
    assert d["report"]["env"]["OPENBLAS_NUM_THREADS"] == "1"
    assert rep.XLA_SINGLE_THREAD_FLAG in d["report"]["xla_flags"]
    blas = [p for p in d["report"]["threadpools"] if p["internal_api"] == "openblas"]
    assert blas and all(p["num_threads"] == 1 for p in blas)
    assert d["report"]["cores_available_to_process"] == 1


def test_pin_threads_rejects_nonpositive():
    with pytest.raises(ValueError, match="positive"):
        rep.pin_threads(0)

"""``benchmarks/gpu.py --small`` runs on CPU and prints one JSON line with finite timings.

The script is meant for a GPU; ``--small`` shrinks it to seconds on a CPU. It runs in a
subprocess (as a user runs it), with ``--xla_backend_optimization_level=0`` to cut XLA:CPU's
compile time (the script's numbers are only checked for presence and finiteness here).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
ROUTINES = ("hvp", "eigsh_top5", "trace_hutchpp", "density_slq")


@pytest.mark.single_dtype
def test_gpu_script_small_prints_one_json_line():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--small"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [s for s in proc.stdout.splitlines() if s.strip()]
    assert len(lines) == 1, proc.stdout[-2000:]
    out = json.loads(lines[0])
    assert out["device_kind"] and out["platform"] == "cpu" and out["small"] is True
    assert out["jax_version"] and isinstance(out["x64"], bool)
    assert set(out["workloads"]) == {"resnet20", "transformer"}
    for name, w in out["workloads"].items():
        assert w["params"] > 0 and w["examples"] > 0, name
        assert set(w["seconds"]) == set(ROUTINES) == set(w["matvecs"]), name
        assert all(math.isfinite(t) and t > 0 for t in w["seconds"].values()), (name, w)
        assert w["matvecs"]["eigsh_top5"] >= 5, (name, w)
        top = w["top_eigenvalues"]
        assert len(top) == 5 and all(math.isfinite(x) for x in top), (name, top)
        assert top == sorted(top, reverse=True), (name, top)
        assert math.isfinite(w["trace"]) and math.isfinite(w["trace_stderr"]), (name, w)

"""The runner and CLI: stored results with provenance, resumable stages, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.single_dtype

REPO = Path(__file__).resolve().parent.parent

FAKE = textwrap.dedent('''
    import os, time
    from dataclasses import dataclass
    from pathlib import Path
    import numpy as np
    from landscape.experiment import RunContext

    @dataclass(frozen=True)
    class Config:
        seed: int = 0
        num_stages: int = 4
        sleep: float = 0.0
        widths: tuple[int, ...] = (1, 2)
        flag: bool = False

        @classmethod
        def smoke(cls):
            return cls(num_stages=2)

    def run(config, ctx=None):
        ctx = ctx or RunContext.ephemeral()
        log = Path(os.environ["FAKE_LOG"])
        def work(i):
            with open(log, "a") as fh:
                fh.write(f"{i}\\n")
            time.sleep(config.sleep)
            return {"value": np.arange(3) * i}
        vals = [ctx.stage(f"s{i}", lambda i=i: work(i)) for i in range(config.num_stages)]
        return {"total": float(sum(v["value"].sum() for v in vals)),
                "curve": np.arange(5.0), "nested": {"a": [np.ones(2), 3]},
                "widths": list(config.widths), "flag": config.flag}
''')


@pytest.fixture
def project(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("")
    (tmp_path / "experiments" / "fake.py").write_text(FAKE)
    env = {**os.environ, "LANDSCAPE_ROOT": str(tmp_path),
           "LANDSCAPE_RESULTS": str(tmp_path / "results"), "FAKE_LOG": str(tmp_path / "log")}
    return tmp_path, env


def cli(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "landscape.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300, **kw)


def test_run_stores_config_metrics_arrays_and_provenance(project):
    root, env = project
    out = cli(["run", "fake", "--set", "widths=3,4", "--set", "flag=true"], env)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    record = json.loads(path.read_text())
    assert record["config"] == {"seed": 0, "num_stages": 4, "sleep": 0.0, "widths": [3, 4],
                                "flag": True}
    assert record["metrics"]["total"] == 18.0
    prov = record["provenance"]
    for key in ("git_commit", "versions", "backend", "device_kind", "device_count", "x64",
                "seed", "wall_time_s"):
        assert key in prov
    assert prov["x64"] == (os.environ.get("JAX_ENABLE_X64", "0") not in ("0", "", "false"))
    sys.path.insert(0, str(REPO))
    from landscape.experiment import load

    res = load("fake", path=path)
    np.testing.assert_array_equal(res.metrics["curve"], np.arange(5.0))
    np.testing.assert_array_equal(res.metrics["nested"]["a"][0], np.ones(2))
    assert res.metrics["nested"]["a"][1] == 3
    assert not list(path.parent.glob("*.tmp"))


def test_killed_run_resumes_without_redoing_finished_stages(project):
    root, env = project
    proc = subprocess.Popen([sys.executable, "-m", "landscape.cli", "run", "fake", "--set",
                             "sleep=1.0"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    work = root / "results" / "fake"
    deadline = time.time() + 240
    while len(list(work.glob("*.work/stage-*.pkl"))) < 2 and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    finished = {p.stem.removeprefix("stage-s") for p in work.glob("*.work/stage-*.pkl")}
    assert len(finished) >= 2 and not list(work.glob("*.json"))
    out = cli(["run", "fake", "--set", "sleep=1.0"], env)
    assert out.returncode == 0, out.stderr
    runs = (root / "log").read_text().split()
    assert set(runs) == {"0", "1", "2", "3"}
    for stage in finished:  # work finished before the kill is never redone
        assert runs.count(stage) == 1


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "nope"], "unknown experiment 'nope'"),
        (["run", "fake", "--set", "bogus=1"], "unknown config key 'bogus'"),
        (["run", "fake", "--set", "num_stages=many"], "expects int"),
        (["run", "fake", "--set", "flag=maybe"], "expects bool"),
        (["run", "fake", "--set", "num_stages"], "key=value"),
        (["figures", "nope"], "unknown figure"),
        (["show", "fake"], "no stored result"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(project, args, fragment):
    _, env = project
    (Path(env["LANDSCAPE_ROOT"]) / "paper_figures").mkdir(exist_ok=True)
    out = cli(args, env)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert fragment in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_unreadable_results_file_is_a_clean_error(project):
    root, env = project
    assert cli(["run", "fake", "--smoke"], env).returncode == 0
    (path,) = (root / "results" / "fake").glob("*.json")
    path.write_text("{ not json")
    out = cli(["show", "fake", "--smoke"], env)
    assert out.returncode == 2 and "cannot read results file" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_list_names_the_real_experiments_and_figures():
    out = subprocess.run([sys.executable, "-m", "landscape.cli", "list"], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0
    assert "baselines" in out.stdout.split("figures:")[0]
    assert "baselines" in out.stdout.split("figures:")[1]


def test_config_hash_depends_on_values_only():
    from landscape.experiment import config_hash, load_experiment, make_config

    mod = load_experiment("baselines")
    a, b = make_config(mod), make_config(mod)
    c = make_config(mod, overrides=["num_seeds=5"])
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert make_config(mod, overrides=["datasets=digits"]).datasets == ("digits",)

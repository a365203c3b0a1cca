"""The runner and CLI: stored results with provenance, resumable stages keyed by the code,
progress lines in log files, one-line errors, and a library that knows no experiment."""

import ast
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from landscape import experiment as ex

pytestmark = pytest.mark.single_dtype

REPO = Path(__file__).resolve().parent.parent

FAKE = textwrap.dedent('''
    import os, time
    from dataclasses import dataclass
    from pathlib import Path
    import numpy as np
    from typing import Literal
    from landscape.experiment import RunContext, check_fields

    SCALE = 1

    @dataclass(frozen=True)
    class Config:
        seed: int = 0
        num_stages: int = 4
        sleep: float = 0.0
        widths: tuple[int, ...] = (1, 2)
        flag: bool = False
        kinds: tuple[Literal["mlp", "cnn"], ...] = ("mlp",)

        def __post_init__(self):
            check_fields(self, positive=("num_stages", "widths"), nonnegative=("sleep",))

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
            return {"value": np.arange(3) * i * SCALE}
        vals = [ctx.stage(f"s{i}", lambda i=i: work(i)) for i in range(config.num_stages)]
        if os.environ.get("FAKE_CRASH"):
            raise RuntimeError("crashed after the stages")
        return {"total": float(sum(v["value"].sum() for v in vals)),
                "curve": np.arange(5.0), "nested": {"a": [np.ones(2), 3]},
                "widths": list(config.widths), "flag": config.flag}
''')

FAKE_FIGURE = textwrap.dedent('''
    EXPERIMENTS = ("fake",)

    def draw(results, out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "fakefig.txt"
        path.write_text(str(results["fake"].metrics["total"]))
        return [path]
''')

# Runs the real CLI with the fake experiment and figure added to the registries.
DRIVER = textwrap.dedent('''
    import sys
    sys.path.insert(0, sys.argv[1])
    import experiments, paper_figures
    from experiments.cli import main
    experiments.REGISTRY["fake"] = "fake"
    paper_figures.REGISTRY["fakefig"] = "fakefig"
    sys.exit(main(sys.argv[2:]))
''')


def _quiet_env(**extra):
    """The suite's environment (CI=1: quiet), without pytest's per-test variable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    return {**env, **extra}


@pytest.fixture
def project(tmp_path):
    (tmp_path / "fake.py").write_text(FAKE)
    (tmp_path / "fakefig.py").write_text(FAKE_FIGURE)
    env = _quiet_env(LANDSCAPE_RESULTS=str(tmp_path / "results"),
                     FAKE_LOG=str(tmp_path / "log"))
    return tmp_path, env


def cli(args, env, root, **kw):
    return subprocess.run([sys.executable, "-c", DRIVER, str(root), *args], env=env,
                          capture_output=True, text=True, timeout=300, **kw)


def _module(path: Path, name: str = "fake"):
    """Import ``path`` as a fresh module object named ``name`` (not put in sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_stores_config_metrics_arrays_and_provenance(project):
    root, env = project
    out = cli(["run", "fake", "--set", "widths=3,4", "--set", "flag=true"], env, root)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # quiet under CI
    path = Path(out.stdout.strip())
    assert path.parent == root / "results" / "fake"
    record = json.loads(path.read_text())
    assert record["config"] == {"seed": 0, "num_stages": 4, "sleep": 0.0, "widths": [3, 4],
                                "flag": True, "kinds": ["mlp"]}
    assert record["metrics"]["total"] == 18.0
    prov = record["provenance"]
    for key in ("git_commit", "code_hash", "versions", "backend", "device_kind",
                "device_count", "x64", "seed", "wall_time_s"):
        assert key in prov
    assert prov["x64"] == (os.environ.get("JAX_ENABLE_X64", "0") not in ("0", "", "false"))
    res = ex.load("fake", path=path)
    np.testing.assert_array_equal(res.metrics["curve"], np.arange(5.0))
    np.testing.assert_array_equal(res.metrics["nested"]["a"][0], np.ones(2))
    assert res.metrics["nested"]["a"][1] == 3
    assert not list(path.parent.glob("*.tmp"))
    assert not list(path.parent.glob("*.work"))  # the finished run's work folder is gone


def test_killed_run_resumes_without_redoing_finished_stages(project):
    root, env = project
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(root), "run", "fake", "--set",
                             "sleep=1.0"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    work = root / "results" / "fake"
    deadline = time.time() + 240
    while len(list(work.glob("*.work/stage-*.json"))) < 2 and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    finished = {p.stem.removeprefix("stage-s") for p in work.glob("*.work/stage-*.json")}
    assert len(finished) >= 2 and not list(work.glob("*.json"))
    out = cli(["run", "fake", "--set", "sleep=1.0"], env, root)
    assert out.returncode == 0, out.stderr
    runs = (root / "log").read_text().split()
    assert set(runs) == {"0", "1", "2", "3"}
    for stage in finished:  # work finished before the kill is never redone
        assert runs.count(stage) == 1
    assert not list(work.glob("*.work"))


def test_stages_of_edited_code_are_not_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log"))
    for folder, scale in (("old", 1), ("same", 1), ("new", 10)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "fake.py").write_text(FAKE.replace("SCALE = 1", f"SCALE = {scale}"))
    old, same, new = (_module(tmp_path / f / "fake.py") for f in ("old", "same", "new"))
    assert ex.code_hash(old) == ex.code_hash(same) != ex.code_hash(new)
    config, new_config = old.Config.smoke(), new.Config.smoke()
    assert ex.config_hash(config) == ex.config_hash(new_config)
    monkeypatch.setenv("FAKE_CRASH", "1")  # the old code finishes its stages, then dies
    with pytest.raises(RuntimeError, match="crashed"):
        ex.run_experiment(old, config, quiet=True)
    assert (ex.work_dir(old, config) / "stage-s1.json").exists()
    assert not ex.work_dir(new, new_config).exists()
    monkeypatch.delenv("FAKE_CRASH")
    result = ex.run_experiment(new, new_config, quiet=True)
    # Stage i of the new code returns 10 * i * [0, 1, 2]; the old code's stage files hold i * ...
    assert result.metrics["total"] == sum(10 * i * 3 for i in range(config.num_stages))
    assert (tmp_path / "log").read_text().split() == ["0", "1", "0", "1"]
    assert result.provenance["code_hash"] == ex.code_hash(new)
    assert not list((tmp_path / "results" / "fake").glob("*.work"))  # old and new cleaned up


def test_a_stage_log_line_per_stage_when_stderr_is_not_a_terminal(project):
    root, _ = project
    env = {k: v for k, v in project[1].items() if k != "CI"}
    out = cli(["run", "fake", "--smoke"], env, root)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    for stage in ("s0", "s1"):
        assert f"[fake] stage {stage}: started" in lines
        assert any(line.startswith(f"[fake] stage {stage}: finished in ") for line in lines)
    assert any(line.startswith("[fake] run finished in ") for line in lines)
    assert "\r" not in out.stderr  # no progress bar
    out = cli(["figures", "fakefig", "--smoke"], env, root)
    assert out.returncode == 0, out.stderr
    assert "landscape: experiment 1/1: fake (smoke config): stored result" in out.stderr
    assert "landscape: figure 1/1: fakefig" in out.stderr
    drawn = Path(out.stdout.strip())
    assert drawn == root / "results" / "figures-smoke" / "fakefig.txt"
    assert float(drawn.read_text()) == 3.0


def test_progress_style_follows_the_terminal_and_stays_quiet_under_pytest(monkeypatch):
    assert ex.RunContext(None).style == "off"  # PYTEST_CURRENT_TEST is set here
    assert ex.progress_style(quiet=True) == "off"
    assert ex.progress_style(quiet=False) == "lines"  # pytest captures stderr: not a tty
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert ex.progress_style(quiet=False) == "bar"
    monkeypatch.setenv("LANDSCAPE_PROGRESS", "lines")
    assert ex.progress_style() == "lines"
    monkeypatch.setenv("LANDSCAPE_PROGRESS", "loud")
    with pytest.raises(ex.UsageError, match="LANDSCAPE_PROGRESS"):
        ex.progress_style()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "nope"], "unknown experiment 'nope'"),
        (["run", "fake", "--set", "bogus=1"], "unknown config key 'bogus'"),
        (["run", "fake", "--set", "num_stages=many"], "expects int"),
        (["run", "fake", "--set", "flag=maybe"], "expects bool"),
        (["run", "fake", "--set", "num_stages"], "key=value"),
        (["figures", "nope"], "unknown figure"),
        (["show", "fake"], "no stored result for fake"),
        (["show", "fake", "--smoke"], "`landscape run fake --smoke` first"),
        (["run", "fake", "--set", "kinds=mlp,vit"], "'kinds' expects one of mlp, cnn; got 'vit'"),
        (["run", "fake", "--set", "num_stages=-3"], "'num_stages' must be > 0; got -3"),
        (["run", "fake", "--set", "widths=2,0"], "'widths' must be > 0; got 0"),
        (["figures", "fakefig", "--set", "bogus=1"], "no experiment of these figures"),
        (["show", "fake", "--run", "zzz"], "no stored run of fake"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(project, args, fragment):
    root, env = project
    out = cli(args, env, root)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("landscape: error: ") and fragment in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_unreadable_results_file_is_a_clean_error(project):
    root, env = project
    assert cli(["run", "fake", "--smoke"], env, root).returncode == 0
    (path,) = (root / "results" / "fake").glob("*.json")
    path.write_text("{ not json")
    out = cli(["show", "fake", "--smoke"], env, root)
    assert out.returncode == 2 and "cannot read results file" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_results_default_to_the_working_directory(project):
    root, env = project
    env = {k: v for k, v in env.items() if k != "LANDSCAPE_RESULTS"}
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    out = cli(["run", "fake", "--smoke"], env, root, cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).parent == elsewhere / "results" / "fake"


def test_installed_command_lists_the_registries_from_any_directory(tmp_path):
    import experiments
    import paper_figures

    env = _quiet_env()
    env.pop("PYTHONPATH", None)
    script = Path(sys.executable).parent / "landscape"
    commands = [[sys.executable, "-m", "experiments", "list"]]
    if script.exists():
        commands.append([str(script), "list"])
    for command in commands:
        out = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                             env=env)
        assert out.returncode == 0, out.stderr
        listed_experiments, listed_figures = out.stdout.split("figures:")
        # each experiment line is "  NAME" or "  NAME  (k stored)"
        assert [line.split()[0] for line in listed_experiments.splitlines()[1:]] == \
            experiments.names()
        assert listed_figures.split() == paper_figures.names()


def test_config_parsing_and_hash(project):
    root, _ = project
    fake = _module(root / "fake.py")
    a, b = ex.make_config(fake), ex.make_config(fake)
    c = ex.make_config(fake, overrides=["num_stages=5"])
    assert ex.config_hash(a) == ex.config_hash(b) != ex.config_hash(c)
    assert ex.make_config(fake, overrides=["widths=7"]).widths == (7,)
    assert ex.make_config(fake, smoke=True, overrides=["flag=yes"]).flag is True


def test_run_experiment_rejects_what_is_not_an_experiment(project):
    root, _ = project
    fake = _module(root / "fake.py")
    with pytest.raises(TypeError, match="experiment must be a module"):
        ex.run_experiment(json)
    with pytest.raises(TypeError, match="config must be a fake.Config"):
        ex.run_experiment(fake, {"seed": 0})


_OUTSIDE = re.compile(r"(experiments|paper_figures)([./]|$)")


def _references_outside(source: str) -> list[str]:
    """Imports of, and string constants naming, ``experiments`` or ``paper_figures``.

    Docstrings are left out; any other string that starts with either name (a folder to glob, a
    module to import by name) counts, as does every import statement of them.
    """
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if _OUTSIDE.match(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and _OUTSIDE.match(node.module):
            found.append(node.module)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings and _OUTSIDE.match(node.value)):
            found.append(node.value)
    return found


def test_the_library_imports_nothing_from_experiments_or_figures():
    # the check itself sees both ways in
    assert _references_outside("from experiments import cli") == ["experiments"]
    assert _references_outside('"""experiments/ doc"""\nf(root / "paper_figures/out")') == [
        "paper_figures/out"]
    files = sorted((REPO / "landscape").rglob("*.py"))
    assert len(files) > 10
    for path in files:
        source = path.read_text()
        assert not _references_outside(source), f"{path}: {_references_outside(source)}"
        assert "sys.path" not in source, f"{path} edits sys.path"


def test_the_runner_module_imports_no_jax():
    code = ("import sys, landscape.experiment as ex; ex.results_dir(); "
            "assert 'jax' not in sys.modules, 'imports jax'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr


# ----------------------------------------------------------------------------- results management


def _crash_env(env):
    return {**env, "FAKE_CRASH": "1"}


def test_force_recomputes_what_a_plain_rerun_reuses(project):
    root, env = project
    assert cli(["run", "fake", "--smoke"], _crash_env(env), root).returncode == 1
    assert cli(["run", "fake", "--smoke"], env, root).returncode == 0  # reuses s0, s1
    assert (root / "log").read_text().split() == ["0", "1"]
    out = cli(["run", "fake", "--smoke", "--force"], env, root)
    assert out.returncode == 0, out.stderr
    assert (root / "log").read_text().split() == ["0", "1", "0", "1"]
    assert Path(out.stdout.strip()).exists()


class _Planted:
    """Pickles into a call that creates the file ``marker``: proof that a pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_stages_are_stored_without_pickle_and_planted_pickles_never_run(project):
    import pickle

    root, env = project
    assert cli(["run", "fake", "--smoke"], _crash_env(env), root).returncode == 1
    (work,) = (root / "results" / "fake").glob("*.work")
    names = sorted(p.name for p in work.iterdir())
    assert names == ["attempts.json", "stage-s0.json", "stage-s0.npz", "stage-s1.json",
                     "stage-s1.npz"]
    marker = root / "pickle-ran"
    # A pickle left in the work folder under the old file name is ignored ...
    (work / "stage-s0.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    # ... and an archive of pickled objects in place of a stage's arrays is refused.
    np.savez(work / "stage-s1.npz", a0=np.array([_Planted(marker)], dtype=object))
    out = cli(["run", "fake", "--smoke"], env, root)
    assert out.returncode == 2 and not marker.exists()
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert f"stage file {work / 'stage-s1.json'}" in out.stderr
    assert "deleting it is safe" in out.stderr and "allow_pickle" not in out.stderr
    (work / "stage-s1.json").unlink()
    out = cli(["run", "fake", "--smoke"], env, root)
    assert out.returncode == 0, out.stderr
    assert not marker.exists()
    assert (root / "log").read_text().split() == ["0", "1", "1"]  # s0 reused, s1 recomputed


def test_stage_values_round_trip_with_their_types():
    import jax.numpy as jnp

    value = {"a": [1, 2.5, None, True, "x", float("nan")], (3, "w"): (np.float32(1.5),),
             7: {"arr": np.arange(6.0).reshape(2, 3), "zero_d": np.array(4, np.int16),
                 "jax": jnp.ones(3, jnp.float32)}}
    arrays = {}
    tree = ex.encode_stage(value, arrays)
    back = ex.decode_stage(json.loads(json.dumps(tree)), arrays)
    assert set(back) == {"a", (3, "w"), 7}
    assert back["a"][:5] == [1, 2.5, None, True, "x"] and np.isnan(back["a"][5])
    assert type(back[(3, "w")]) is tuple and type(back[(3, "w")][0]) is np.float32
    assert back[7]["zero_d"].shape == () and back[7]["zero_d"].dtype == np.int16
    assert type(back[7]["jax"]) is np.ndarray and back[7]["jax"].dtype == np.float32
    np.testing.assert_array_equal(back[7]["arr"], value[7]["arr"])
    from typing import NamedTuple

    class Pair(NamedTuple):
        a: int
        b: int

    with pytest.raises(TypeError, match="NamedTuple"):
        ex.encode_stage({"p": Pair(1, 2)}, {})
    with pytest.raises(TypeError, match="object array"):
        ex.encode_stage(np.array([object()]), {})


def test_resumed_run_records_the_compute_time_of_all_its_attempts(project):
    root, env = project
    args = ["run", "fake", "--smoke", "--set", "sleep=0.5"]
    assert cli(args, _crash_env(env), root).returncode == 1  # two stages of 0.5 s, then dies
    out = cli(args, env, root)
    assert out.returncode == 0, out.stderr
    prov = json.loads(Path(out.stdout.strip()).read_text())["provenance"]
    assert prov["attempts"] == 2
    assert prov["wall_time_s"] < 0.5  # the stages were reused
    assert prov["compute_time_s"] >= prov["wall_time_s"] + 1.0


def test_result_files_are_readable_by_everyone_who_can_read_the_folder(project):
    root, env = project
    old = os.umask(0o022)
    try:
        out = cli(["run", "fake", "--smoke"], env, root)
    finally:
        os.umask(old)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    for file in (path, path.with_suffix(".npz")):
        assert file.stat().st_mode & 0o777 == 0o644, oct(file.stat().st_mode)


def test_unwritable_results_folder_fails_before_any_work(project):
    root, env = project
    (root / "a-file").write_text("")
    env = {**env, "LANDSCAPE_RESULTS": str(root / "a-file" / "results")}
    out = cli(["run", "fake", "--smoke"], env, root)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "cannot write results to" in out.stderr and "LANDSCAPE_RESULTS" in out.stderr
    assert not (root / "log").exists()  # no stage ran


def test_corrupt_arrays_file_is_named_without_pickle_advice(project):
    root, env = project
    out = cli(["run", "fake", "--smoke"], env, root)
    npz = Path(out.stdout.strip()).with_suffix(".npz")
    np.savez(npz, x=np.array([{"a": 1}], dtype=object))
    out = cli(["show", "fake", "--smoke"], env, root)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert f"cannot read the arrays file {npz}" in out.stderr
    assert "allow_pickle" not in out.stderr
    npz.write_bytes(b"not a zip file")
    out = cli(["show", "fake", "--smoke"], env, root)
    assert out.returncode == 2 and f"cannot read the arrays file {npz}" in out.stderr


def test_show_summarises_lists_and_prints_json(project):
    root, env = project
    out = cli(["run", "fake", "--smoke", "--set", "flag=true"], env, root)
    stem = Path(out.stdout.strip()).stem
    listing = cli(["show", "fake"], env, root)  # the default config is not stored
    assert listing.returncode == 0, listing.stderr
    assert f"  {stem}  " in listing.stdout and "--smoke --set flag=True" in listing.stdout
    summary = cli(["show", "fake", "--run", stem[:5]], env, root)
    assert summary.returncode == 0, summary.stderr
    text = summary.stdout
    assert f"config {stem}: --smoke --set flag=True" in text
    assert "    total = 3" in text and "compute" in text and "float" in text
    assert "<array" not in text and len(text.splitlines()) < 40
    again = cli(["show", "fake", "--smoke", "--set", "flag=true"], env, root)
    assert again.stdout == summary.stdout
    full = json.loads(cli(["show", "fake", "--run", stem, "--json"], env, root).stdout)
    assert full["metrics"]["curve"] == "<array (5,) float64>"
    assert full["config"]["flag"] is True and "code_hash" in full["provenance"]
    listed = cli(["list"], env, root).stdout
    assert "  fake  (1 stored)" in listed.splitlines()
    rebuilt = ex.config_flags(_module(root / "fake.py"), full["config"])
    assert rebuilt == ["--smoke", "--set", "flag=True"]


def test_ctrl_c_prints_one_line_and_the_command_that_resumes(project):
    root, env = project
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(root), "run", "fake", "--set",
                             "sleep=1.0"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    work = root / "results" / "fake"
    deadline = time.time() + 240
    while not list(work.glob("*.work/stage-*.json")) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip() == ("landscape: interrupted; finished stages are kept, "
                           "`landscape run fake --set sleep=1.0` resumes")


def test_figures_with_set_draw_a_custom_run_elsewhere(project):
    root, env = project
    out = cli(["figures", "fakefig", "--smoke", "--set", "num_stages=3"], env, root)
    assert out.returncode == 0, out.stderr
    drawn = Path(out.stdout.strip())
    assert drawn == root / "results" / "figures-custom" / "fakefig.txt"
    assert float(drawn.read_text()) == sum(3 * i for i in range(3))

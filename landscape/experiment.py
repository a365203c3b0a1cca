"""Experiment runner: configs, resumable runs, results with provenance, and figures.

An experiment is a module ``experiments/NAME.py`` defining a frozen dataclass ``Config`` (every
field has a default: the default config is the real science; ``Config.smoke()`` is a tiny one)
and ``run(config, ctx=None) -> dict`` of JSON-serialisable metrics, where NumPy arrays may appear
anywhere. A figure is a module ``paper_figures/NAME.py`` defining ``EXPERIMENTS`` (the results it
reads) and ``draw(results, out_dir) -> list[Path]``; it never imports JAX.

The runner writes ``results/NAME/CONFIG_HASH.json`` (config, metrics, provenance) and, when the
metrics hold arrays, ``results/NAME/CONFIG_HASH.npz`` beside it. Both writes are atomic. Work in
progress lives in ``results/NAME/CONFIG_HASH.work/``: ``RunContext.stage`` memoises finished
units of work there, so a run killed halfway resumes without redoing them.

This module imports JAX only inside ``run_experiment`` (for provenance), so figure scripts can
use ``load`` without importing it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import os
import pickle
import platform
import subprocess
import sys
import time
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from landscape.checkpoint import atomic_write_bytes

__all__ = [
    "RunContext",
    "Result",
    "UsageError",
    "ResultsError",
    "root",
    "results_dir",
    "list_experiments",
    "list_figures",
    "load_experiment",
    "make_config",
    "config_hash",
    "run_experiment",
    "load",
    "ensure",
    "draw_figures",
]

T = TypeVar("T")


class UsageError(ValueError):
    """Bad user input to the runner (unknown experiment, unknown key, wrong value type)."""


class ResultsError(RuntimeError):
    """A stored results file that cannot be read."""


def root() -> Path:
    """The project root: ``$LANDSCAPE_ROOT``, else the checkout that holds this package."""
    env = os.environ.get("LANDSCAPE_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    return here if (here / "experiments").is_dir() else Path.cwd()


def results_dir() -> Path:
    """Where results go: ``$LANDSCAPE_RESULTS``, else ``ROOT/results``."""
    env = os.environ.get("LANDSCAPE_RESULTS")
    return Path(env).resolve() if env else root() / "results"


def _module_names(folder: str) -> list[str]:
    path = root() / folder
    if not path.is_dir():
        return []
    return sorted(p.stem for p in path.glob("*.py") if not p.stem.startswith("_"))


def list_experiments() -> list[str]:
    """Names of the experiments in ``experiments/``."""
    return _module_names("experiments")


def list_figures() -> list[str]:
    """Names of the figure scripts in ``paper_figures/``."""
    return _module_names("paper_figures")


def _import(folder: str, name: str) -> types.ModuleType:
    top = str(root())
    if top not in sys.path:
        sys.path.insert(0, top)
    return importlib.import_module(f"{folder}.{name}")


def load_experiment(name: str) -> types.ModuleType:
    """Import ``experiments/NAME.py``; ``UsageError`` if there is no such experiment."""
    names = list_experiments()
    if name not in names:
        raise UsageError(f"unknown experiment {name!r}; available: {', '.join(names) or 'none'}")
    return _import("experiments", name)


# ----------------------------------------------------------------------------- configs


def make_config(module: types.ModuleType, *, smoke: bool = False, overrides: Iterable[str] = ()):
    """The default (or smoke) ``Config`` of ``module`` with ``key=value`` overrides applied."""
    config = module.Config.smoke() if smoke else module.Config()
    hints = typing.get_type_hints(type(config))
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f"--set expects key=value; got {item!r}")
        if key not in fields:
            raise UsageError(f"unknown config key {key!r} for {module.__name__.split('.')[-1]}; "
                             f"known keys: {', '.join(sorted(fields))}")
        changes[key] = _parse(key, text, hints.get(key, str))
    return dataclasses.replace(config, **changes)


def _parse(key: str, text: str, tp) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none" and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    try:
        if origin is tuple:
            item = args[0] if args else str
            return tuple(_parse(key, t.strip(), item) for t in text.split(",") if t.strip())
        if tp is bool:
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no"):
                return False
            raise ValueError(text)
        if typing.get_origin(tp) is typing.Literal:
            if text not in [str(a) for a in typing.get_args(tp)]:
                raise ValueError(text)
            return text
        return tp(text)
    except (TypeError, ValueError):
        name = getattr(tp, "__name__", str(tp))
        raise UsageError(f"config key {key!r} expects {name}; got {text!r}") from None


def config_dict(config) -> dict:
    """The config as a JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=list))


def config_hash(config) -> str:
    """A short stable hash of the config's values (and the experiment's config class)."""
    blob = json.dumps({"cls": type(config).__qualname__, **config_dict(config)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- context


class RunContext:
    """Services the runner offers to ``run``: resumable stages, progress bars, scratch paths.

    ``RunContext.ephemeral()`` keeps nothing on disk (for direct calls and tests).
    """

    def __init__(self, work_dir: Path | None, *, quiet: bool | None = None):
        self.work_dir = work_dir
        if quiet is None:
            quiet = not sys.stderr.isatty() or bool(os.environ.get("CI"))
        self.quiet = quiet

    @classmethod
    def ephemeral(cls) -> RunContext:
        return cls(None, quiet=True)

    def stage(self, name: str, fn: Callable[[], T]) -> T:
        """Return ``fn()``, memoised on disk under ``name`` once it has finished."""
        if self.work_dir is None:
            return fn()
        path = self.work_dir / f"stage-{_safe(name)}.pkl"
        if path.exists():
            with open(path, "rb") as fh:
                return pickle.load(fh)
        value = fn()
        atomic_write_bytes(path, pickle.dumps(_to_numpy(value)))
        return value

    def path(self, name: str) -> Path:
        """A scratch path inside the run's work directory (a temp dir for ephemeral runs)."""
        if self.work_dir is None:
            import tempfile

            self.work_dir = Path(tempfile.mkdtemp(prefix="landscape-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir / _safe(name)

    def progress(self, iterable: Iterable[T], desc: str = "", total: int | None = None):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, disable=self.quiet, leave=False)

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


def _to_numpy(value):
    """Convert JAX arrays inside nested containers to NumPy (pickle-able, JAX-free to load)."""
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_numpy(v) for v in value)
    if hasattr(value, "__array__") and not isinstance(value, np.ndarray):
        return np.asarray(value)
    return value


# ----------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class Result:
    """A stored run: ``config`` (dict), ``metrics`` (dict, arrays restored), ``provenance``."""

    name: str
    config: dict
    metrics: dict
    provenance: dict
    path: Path


def _split_arrays(obj, prefix: str, arrays: dict):
    if isinstance(obj, dict):
        return {str(k): _split_arrays(v, f"{prefix}/{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_arrays(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        arr = np.asarray(obj)
        if arr.ndim == 0:
            return arr.item()
        arrays[prefix] = arr
        return {"__array__": prefix, "shape": list(arr.shape), "dtype": str(arr.dtype)}
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    raise TypeError(f"metric {prefix!r} has a value of type {type(obj).__name__} that cannot "
                    "be stored; return numbers, strings, lists, dicts or arrays")


def _join_arrays(obj, arrays):
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]]
        return {k: _join_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, arrays) for v in obj]
    return obj


def _result_paths(name: str, config) -> tuple[Path, Path, Path]:
    base = results_dir() / name / config_hash(config)
    return base.with_suffix(".json"), base.with_suffix(".npz"), base.with_suffix(".work")


def _git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root(), capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root(), capture_output=True, text=True, timeout=10).stdout
        return (sha or "unknown") + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _provenance(config, wall: float) -> dict:
    import importlib.metadata as md

    import jax

    versions = {}
    for pkg in ("landscape-jax", "jax", "jaxlib", "flax", "optax", "numpy", "scipy", "cvxpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    devices = jax.devices()
    return {
        "git_commit": _git_commit(),
        "versions": versions,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "seed": getattr(config, "seed", None),
        "wall_time_s": round(wall, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.machine(),
    }


def run_experiment(name: str, config=None, *, quiet: bool | None = None) -> Result:
    """Run experiment ``name`` with ``config`` (default: its default config) and store it."""
    module = load_experiment(name)
    config = module.Config() if config is None else config
    json_path, npz_path, work = _result_paths(name, config)
    ctx = RunContext(work, quiet=quiet)
    start = time.perf_counter()
    metrics = module.run(config, ctx)
    wall = time.perf_counter() - start
    arrays: dict[str, np.ndarray] = {}
    stored = _split_arrays(metrics, "metrics", arrays)
    record = {"name": name, "config_hash": config_hash(config), "config": config_dict(config),
              "metrics": stored, "provenance": _provenance(config, wall)}
    if arrays:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k.replace("/", "|"): v for k, v in arrays.items()})
        atomic_write_bytes(npz_path, buf.getvalue())
    atomic_write_bytes(json_path, json.dumps(record, indent=1, sort_keys=True).encode())
    return load(name, config)


def load(name: str, config=None, *, path: Path | None = None) -> Result:
    """Load the stored result of ``name`` for ``config`` (or from ``path``)."""
    if path is None:
        path = _result_paths(name, config)[0]
    try:
        record = json.loads(Path(path).read_text())
        arrays = {}
        npz = Path(path).with_suffix(".npz")
        if npz.exists():
            with np.load(npz) as f:
                arrays = {k.replace("|", "/"): f[k] for k in f.files}
        metrics = _join_arrays(record["metrics"], arrays)
        return Result(name, record["config"], metrics, record["provenance"], Path(path))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ResultsError(f"cannot read results file {path}: {exc}") from None


def ensure(name: str, config, *, quiet: bool | None = None) -> Result:
    """The stored result for ``config``, running the experiment first if it is missing."""
    if _result_paths(name, config)[0].exists():
        return load(name, config)
    return run_experiment(name, config, quiet=quiet)


def draw_figures(names: Iterable[str] | None = None, *, smoke: bool = False,
                 out_dir: Path | None = None, quiet: bool | None = None) -> list[Path]:
    """Run whatever results are missing, then draw the figures (PNG + PDF).

    Default configs draw into ``paper_figures/out``; smoke configs into
    ``RESULTS/figures-smoke`` so that they never overwrite the committed figures.
    """
    available = list_figures()
    names = list(names) if names else available
    for n in names:
        if n not in available:
            raise UsageError(f"unknown figure {n!r}; available: {', '.join(available)}")
    if out_dir is None:
        out_dir = results_dir() / "figures-smoke" if smoke else root() / "paper_figures/out"
    written: list[Path] = []
    for fig_name in names:
        fig = _import("paper_figures", fig_name)
        results = {}
        for exp in fig.EXPERIMENTS:
            config = make_config(load_experiment(exp), smoke=smoke)
            results[exp] = ensure(exp, config, quiet=quiet)
        written += fig.draw(results, Path(out_dir))
    return written

"""The library side of the runner: the plugin contract, configs, the results store, run contexts.

An *experiment* is any module that satisfies ``Experiment``: a frozen dataclass ``Config`` whose
every field has a default (the default config is the real science; ``Config.smoke()`` is a tiny
one that exercises every code path in seconds) and ``run(config, ctx) -> metrics``, a dict of
JSON-serialisable values where NumPy arrays may appear anywhere. A *figure* is any module that
satisfies ``Figure``: ``EXPERIMENTS`` (the names of the results it reads) and
``draw(results, out_dir) -> list[Path]``. This module defines the contract and stores results;
it does not know which experiments or figures exist. The ``experiments`` and ``paper_figures``
packages list their own members, and the ``landscape`` command lives in ``experiments.cli``.

Results go to ``$LANDSCAPE_RESULTS``, else to ``./results`` in the current working directory:
``RESULTS/NAME/CONFIG_HASH.json`` holds the config, the metrics and the provenance, and
``CONFIG_HASH.npz`` beside it holds the arrays of the metrics. Both writes are atomic. Work in
progress lives in ``RESULTS/NAME/CONFIG_HASH-CODE_HASH.work/``, where the code hash covers the
experiment's source (with the helper modules of its package that it uses) and the library
version: ``RunContext.stage`` memoises finished units of work there, so a killed run resumes
without redoing them, while an edited experiment never reuses the stages of its old code. The
work folders of a config are deleted once its result is stored.

Importing this module does not import JAX (``run_experiment`` imports it for the provenance),
so figure scripts and the ``list`` and ``show`` commands stay light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import types
import typing
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol, Self, TypeVar, runtime_checkable

import numpy as np

__all__ = [
    "Experiment",
    "ExperimentConfig",
    "Figure",
    "RunContext",
    "Result",
    "UsageError",
    "ResultsError",
    "results_dir",
    "progress_style",
    "format_duration",
    "experiment_name",
    "make_config",
    "check_fields",
    "config_flags",
    "stored_runs",
    "config_dict",
    "config_hash",
    "code_hash",
    "result_path",
    "work_dir",
    "run_experiment",
    "forget",
    "load",
    "ensure",
]

T = TypeVar("T")
M = TypeVar("M")


class UsageError(ValueError):
    """Bad user input to the runner (unknown experiment, unknown key, wrong value type)."""


class ResultsError(RuntimeError):
    """A stored results file that cannot be read."""


# ----------------------------------------------------------------------------- the contract


@runtime_checkable
class ExperimentConfig(Protocol):
    """The config of an experiment: a frozen dataclass whose every field has a default.

    The default config is the science run; ``smoke()`` returns a tiny config that finishes in
    seconds and exercises every code path (tests and CI run it).
    """

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @classmethod
    def smoke(cls) -> Self: ...


@runtime_checkable
class Experiment(Protocol):
    """An experiment module: ``Config`` and ``run(config, ctx)``.

    ``run`` returns the metrics, a dict of numbers, strings, lists, dicts and arrays, and uses
    ``ctx`` (a ``RunContext``) for resumable stages, progress and scratch files; called with
    ``ctx=None`` it must work without one. The experiments of this project also export their
    metric layout as a ``TypedDict`` named ``Metrics``.
    """

    Config: type[ExperimentConfig]

    def run(self, config: Any, ctx: RunContext | None = None) -> Mapping[str, Any]: ...


@runtime_checkable
class Figure(Protocol):
    """A figure module: ``EXPERIMENTS`` and ``draw(results, out_dir)``.

    ``results`` maps each name in ``EXPERIMENTS`` to its stored ``Result``; ``draw`` writes its
    files into ``out_dir`` and returns their paths. A figure never imports JAX and reads every
    parameter it shows from ``result.config``.
    """

    EXPERIMENTS: tuple[str, ...]

    def draw(self, results: Mapping[str, Result], out_dir: Path) -> list[Path]: ...


def experiment_name(experiment: types.ModuleType | str) -> str:
    """The name results are stored under: the last component of the module's name."""
    if isinstance(experiment, str):
        return experiment
    return experiment.__name__.rpartition(".")[2]


def _check_experiment(module) -> None:
    if not isinstance(module, Experiment):
        raise TypeError("experiment must be a module defining Config and run(config, ctx); "
                        f"got {module!r}")


# ----------------------------------------------------------------------------- configs


def make_config(module: types.ModuleType, *, smoke: bool = False, overrides: Iterable[str] = ()):
    """The default (or smoke) ``Config`` of ``module`` with ``key=value`` overrides applied."""
    name = experiment_name(module)
    config = module.Config.smoke() if smoke else module.Config()
    hints = typing.get_type_hints(type(config))
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f"--set expects key=value; got {item!r}")
        if key not in fields:
            raise UsageError(f"unknown config key {key!r} for {name}; "
                             f"known keys: {', '.join(sorted(fields))}")
        changes[key] = _parse(key, text, hints.get(key, str))
    try:  # the Config's own checks (__post_init__) run here, before any work
        return dataclasses.replace(config, **changes)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid config for {name}: {exc}") from None


def check_fields(config, *, positive: Iterable[str] = (), nonnegative: Iterable[str] = (),
                 unit: Iterable[str] = (), choices: Mapping[str, Iterable] | None = None) -> None:
    """Range checks for a ``Config.__post_init__``; raise ``ValueError`` naming the field.

    ``positive``: every value (every item, for a tuple) is ``> 0``; ``nonnegative``: ``>= 0``;
    ``unit``: in ``[0, 1]``; ``choices``: every item of a tuple field (or the value) is one of
    the given options. ``make_config`` turns the error into the CLI's one-line usage error, so
    a bad ``--set`` fails before any work starts.
    """

    def items(field):
        value = getattr(config, field)
        return value if isinstance(value, tuple) else (value,)

    rules = [(positive, lambda v: v > 0, "> 0"), (nonnegative, lambda v: v >= 0, ">= 0"),
             (unit, lambda v: 0 <= v <= 1, "in [0, 1]")]
    for fields, ok, text in rules:
        for field in fields:
            bad = [v for v in items(field) if v is not None and not ok(v)]
            if bad:
                raise ValueError(f"config key {field!r} must be {text}; got {bad[0]!r}")
    for field, options in (choices or {}).items():
        options = tuple(options)
        bad = [v for v in items(field) if v not in options]
        if bad:
            raise ValueError(f"config key {field!r}: {bad[0]!r} is not one of "
                             f"{', '.join(map(str, options))}")


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
            options = [str(a) for a in typing.get_args(tp)]
            if text not in options:
                raise UsageError(f"config key {key!r} expects one of {', '.join(options)}; "
                                 f"got {text!r}")
            return text
        return tp(text)
    except UsageError:
        raise
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


def code_hash(module: types.ModuleType) -> str:
    """A short hash of the code an experiment runs, for keying its unfinished work.

    It covers the module's source, the sources of the modules of its own package that it
    uses (``experiments._lmc`` for the mode-connectivity experiments), and the version of
    ``landscape``. Edits elsewhere in the library are not seen: bump the version, or delete the
    ``.work`` folder, when a library change must invalidate half-finished runs.
    """
    from landscape import __version__

    package = module.__name__.rpartition(".")[0]
    used = {module.__name__: module}
    for value in vars(module).values() if package else ():
        name = value.__name__ if isinstance(value, types.ModuleType) else getattr(
            value, "__module__", None)
        if isinstance(name, str) and name.startswith(package + ".") and name in sys.modules:
            used.setdefault(name, sys.modules[name])
    digest = hashlib.sha256(f"landscape {__version__}\n".encode())
    for name in sorted(used):
        digest.update(f"\n# {name}\n".encode())
        digest.update(inspect.getsource(used[name]).encode())
    return digest.hexdigest()[:12]


# ----------------------------------------------------------------------------- progress


ProgressStyle = Literal["off", "bar", "lines"]
_STYLES = ("off", "bar", "lines")


def progress_style(quiet: bool | None = None) -> ProgressStyle:
    """How the runner reports progress on stderr: ``"off"``, ``"bar"`` or ``"lines"``.

    ``quiet=True`` is ``"off"``. Otherwise ``$LANDSCAPE_PROGRESS`` (one of the three) decides
    when it is set; with ``quiet=None`` the runner stays silent under pytest and CI (``$CI``
    set); else it draws tqdm bars when stderr is a terminal and writes one line per stage when
    it is not (``landscape run NAME > log 2>&1``), so a log file shows what is happening.
    """
    if quiet:
        return "off"
    env = os.environ.get("LANDSCAPE_PROGRESS", "").strip().lower()
    if env:
        if env not in _STYLES:
            raise UsageError(f"LANDSCAPE_PROGRESS must be one of {', '.join(_STYLES)}; "
                             f"got {env!r}")
        return typing.cast(ProgressStyle, env)
    if quiet is None and (os.environ.get("CI") or "PYTEST_CURRENT_TEST" in os.environ):
        return "off"
    return "bar" if sys.stderr.isatty() else "lines"


def format_duration(seconds: float) -> str:
    """``seconds`` as ``"12.3 s"`` or ``"4 min 05 s"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s"


# ----------------------------------------------------------------------------- context


class RunContext:
    """Services the runner offers to ``run``: resumable stages, progress, scratch paths, logs.

    ``style`` is a ``progress_style``: with ``"bar"`` loops wrapped in ``progress`` show tqdm
    bars; with ``"lines"`` every stage writes a start line and a finish line with its elapsed
    time; ``log`` writes in both. ``name`` prefixes the lines. ``RunContext.ephemeral()`` keeps
    nothing on disk and says nothing (for direct calls and tests).
    """

    def __init__(self, work_dir: Path | None, *, quiet: bool | None = None, name: str = ""):
        self.work_dir = work_dir
        self.style = progress_style(quiet)
        self.name = name
        self.reused_seconds = 0.0  # compute time of the stages reused from earlier attempts

    @classmethod
    def ephemeral(cls) -> RunContext:
        return cls(None, quiet=True)

    @property
    def quiet(self) -> bool:
        return self.style == "off"

    def stage(self, name: str, fn: Callable[[], T]) -> T:
        """Return ``fn()``, memoised on disk under ``name`` once it has finished.

        The value is stored without pickle (``stage-NAME.json`` plus ``stage-NAME.npz`` for its
        arrays, see ``encode_stage``): dicts, lists, tuples, strings, numbers, None and arrays
        (JAX arrays come back as NumPy arrays). A fresh run returns the same decoded value that
        a resumed run reads back, so both see identical types.
        """
        path = None if self.work_dir is None else self.work_dir / f"stage-{_safe(name)}.json"
        if path is not None and path.exists():
            value, seconds = _read_stage(path)
            self.reused_seconds += seconds
            self._line(f"stage {name}: done in an earlier attempt, reused")
            return value
        self._line(f"stage {name}: started")
        start = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - start
        arrays: dict[str, np.ndarray] = {}
        try:
            tree = encode_stage(value, arrays)
        except TypeError as exc:
            raise TypeError(f"stage {name!r}: {exc}") from None
        if path is not None:
            _write_stage(path, tree, arrays, seconds)
        self._line(f"stage {name}: finished in {format_duration(seconds)}")
        return decode_stage(tree, arrays)

    def path(self, name: str) -> Path:
        """A scratch path inside the run's work directory (a temp dir for ephemeral runs)."""
        if self.work_dir is None:
            import tempfile

            self.work_dir = Path(tempfile.mkdtemp(prefix="landscape-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir / _safe(name)

    def progress(self, iterable: Iterable[T], desc: str = "", total: int | None = None):
        """``iterable`` with a tqdm bar when the style is ``"bar"``."""
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, disable=self.style != "bar", leave=False)

    def log(self, msg: str) -> None:
        """Write ``msg`` to stderr unless the context is quiet."""
        if self.style != "off":
            print(self._prefix() + msg, file=sys.stderr, flush=True)

    def _line(self, msg: str) -> None:
        if self.style == "lines":
            print(self._prefix() + msg, file=sys.stderr, flush=True)

    def _prefix(self) -> str:
        return f"[{self.name}] " if self.name else ""


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


def _atomic_write(path: Path, data: bytes) -> None:
    from landscape.checkpoint import atomic_write_bytes  # imports JAX: only when writing

    atomic_write_bytes(path, data)


def encode_stage(value, arrays: dict[str, np.ndarray]):
    """``value`` as a JSON-able tree; its arrays go into ``arrays`` (no pickle anywhere).

    Containers are tagged so they come back as they went in: ``{"list": [...]}``,
    ``{"tuple": [...]}``, ``{"dict": [[key, value], ...]}`` (keys may be numbers, strings or
    tuples of them), ``{"array": name}`` for an array (JAX arrays are stored as NumPy arrays)
    and ``{"scalar": name}`` for a NumPy scalar. Python ``None``, bools, ints, floats (NaN and
    infinities included) and strings are stored as themselves. Anything else (a NamedTuple, a
    dataclass, an object array) raises ``TypeError``: return its fields as a dict instead.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic) or hasattr(value, "__array__"):
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise TypeError("an object array cannot be stored without pickle")
        key = f"a{len(arrays)}"
        arrays[key] = arr
        return {"scalar" if isinstance(value, np.generic) else "array": key}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        raise TypeError(f"a {type(value).__name__} (NamedTuple) cannot be stored without "
                        "pickle; return value._asdict() instead")
    if type(value) in (list, tuple):
        return {type(value).__name__: [encode_stage(v, arrays) for v in value]}
    if type(value) is dict:
        return {"dict": [[encode_stage(k, arrays), encode_stage(v, arrays)]
                         for k, v in value.items()]}
    raise TypeError(f"a value of type {type(value).__name__} cannot be stored without pickle; "
                    "return dicts, lists, tuples, numbers, strings or arrays")


def decode_stage(tree, arrays):
    """The value ``encode_stage`` turned into ``tree`` (the inverse; tuples stay tuples)."""
    if not isinstance(tree, dict):
        return tree
    (tag, body), = tree.items()
    if tag == "array":
        return arrays[body]
    if tag == "scalar":
        return arrays[body][()]
    if tag == "list":
        return [decode_stage(v, arrays) for v in body]
    if tag == "tuple":
        return tuple(decode_stage(v, arrays) for v in body)
    if tag == "dict":
        return {_hashable(decode_stage(k, arrays)): decode_stage(v, arrays) for k, v in body}
    raise ValueError(f"unknown tag {tag!r}")


def _hashable(key):
    return key.item() if isinstance(key, np.generic) else key


def _write_stage(path: Path, tree, arrays: dict, seconds: float) -> None:
    """The arrays first, then the JSON (whose presence marks the stage as finished)."""
    if arrays:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        _atomic_write(path.with_suffix(".npz"), buf.getvalue())
    record = {"format": 1, "seconds": round(seconds, 3), "value": tree}
    _atomic_write(path, json.dumps(record).encode())


def _read_stage(path: Path):
    """``(value, seconds)`` of a finished stage; a damaged file raises ``ResultsError``."""
    try:
        record = json.loads(path.read_text())
        arrays = {}
        npz = path.with_suffix(".npz")
        if npz.exists():
            with np.load(npz, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        return decode_stage(record["value"], arrays), float(record.get("seconds", 0.0))
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise ResultsError(
            f"stage file {path} (or its .npz) is damaged ({_reason(exc)}); deleting it is safe: "
            "the stage is then recomputed") from None


def _reason(exc: BaseException) -> str:
    """A short cause for a file that could not be read, never NumPy's pickle advice."""
    text = str(exc)
    if "allow_pickle" in text or "Object arrays" in text:
        return "it holds pickled objects, which are never loaded"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ----------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class Result(Generic[M]):
    """A stored run: ``config`` (dict), ``metrics`` (arrays restored), ``provenance`` (dict).

    ``Result[Metrics]`` types the metrics with an experiment's layout, e.g.
    ``res: Result[Metrics] = results["baselines"]`` in a figure.
    """

    name: str
    config: dict
    metrics: M
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


def results_dir() -> Path:
    """Where results go: ``$LANDSCAPE_RESULTS``, else ``./results`` of the working directory."""
    env = os.environ.get("LANDSCAPE_RESULTS")
    return Path(env).resolve() if env else Path.cwd().resolve() / "results"


def result_path(experiment: types.ModuleType | str, config) -> Path:
    """The JSON file that holds (or will hold) the result of ``experiment`` for ``config``."""
    return results_dir() / experiment_name(experiment) / f"{config_hash(config)}.json"


def work_dir(module: types.ModuleType, config) -> Path:
    """The folder of the unfinished work of ``module`` on ``config`` with its current code."""
    name = f"{config_hash(config)}-{code_hash(module)}.work"
    return results_dir() / experiment_name(module) / name


def _git_commit(where: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=10).stdout
        return sha + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _provenance(module, config, wall: float, reused: float, attempts: int) -> dict:
    import importlib.metadata as md

    import jax

    versions = {}
    for pkg in ("landscape-jax", "jax", "jaxlib", "flax", "optax", "numpy", "scipy", "cvxpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    devices = jax.devices()
    source = getattr(module, "__file__", None)
    return {
        "git_commit": _git_commit(Path(source).resolve().parent) if source else "unknown",
        "code_hash": code_hash(module),
        "versions": versions,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "seed": getattr(config, "seed", None),
        "wall_time_s": round(wall, 3),
        "compute_time_s": round(wall + reused, 3),
        "attempts": attempts,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.machine(),
    }


def _check_writable(folder: Path) -> None:
    """Fail before any work when results cannot be stored in ``folder``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ResultsError(f"cannot write results to {folder} ({exc.strerror or exc}); set "
                           "LANDSCAPE_RESULTS to a writable folder") from None


def _count_attempt(work: Path) -> int:
    """Record one more attempt at the run in its work folder; return the count so far."""
    path = work / "attempts.json"
    try:
        count = int(json.loads(path.read_text())["attempts"]) + 1
    except (OSError, ValueError, KeyError, TypeError):
        count = 1
    _atomic_write(path, json.dumps({"attempts": count}).encode())
    return count


def forget(experiment: types.ModuleType | str, config) -> None:
    """Delete the stored result of ``experiment`` for ``config`` and its unfinished work."""
    path = result_path(experiment, config)
    for file in (path, path.with_suffix(".npz")):
        file.unlink(missing_ok=True)
    for folder in path.parent.glob(f"{config_hash(config)}*.work"):
        shutil.rmtree(folder, ignore_errors=True)


def run_experiment(module: types.ModuleType, config=None, *,
                   quiet: bool | None = None, force: bool = False) -> Result:
    """Run the experiment ``module`` on ``config`` (default: its default config) and store it.

    Finished stages of an earlier, killed attempt with the same config and code are reused
    (``force=True`` deletes them and any stored result first, and recomputes everything).
    The provenance records ``wall_time_s`` (this attempt), ``compute_time_s`` (this attempt
    plus the recorded time of the stages it reused) and ``attempts``. Once the result is stored,
    the work folders of this config are deleted. A results folder that cannot be written raises
    ``ResultsError`` before any work.
    """
    _check_experiment(module)
    name = experiment_name(module)
    config = module.Config() if config is None else config
    if not isinstance(config, module.Config):
        raise TypeError(f"config must be a {name}.Config; got {type(config).__name__}")
    json_path = result_path(module, config)
    _check_writable(json_path.parent)
    if force:
        forget(module, config)
    ctx = RunContext(work_dir(module, config), quiet=quiet, name=name)
    attempts = _count_attempt(ctx.work_dir)
    ctx._line(f"run started (config {config_hash(config)}, attempt {attempts})")
    start = time.perf_counter()
    metrics = module.run(config, ctx)
    wall = time.perf_counter() - start
    arrays: dict[str, np.ndarray] = {}
    stored = _split_arrays(metrics, "metrics", arrays)
    record = {"name": name, "config_hash": config_hash(config), "config": config_dict(config),
              "metrics": stored,
              "provenance": _provenance(module, config, wall, ctx.reused_seconds, attempts)}
    if arrays:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k.replace("/", "|"): v for k, v in arrays.items()})
        _atomic_write(json_path.with_suffix(".npz"), buf.getvalue())
    _atomic_write(json_path, json.dumps(record, indent=1, sort_keys=True).encode())
    for folder in json_path.parent.glob(f"{config_hash(config)}*.work"):
        shutil.rmtree(folder, ignore_errors=True)
    ctx._line(f"run finished in {format_duration(wall)}: {json_path}")
    return load(name, config)


def load(experiment: types.ModuleType | str, config=None, *, path: Path | None = None,
         arrays: bool = True) -> Result:
    """Load the stored result of ``experiment`` (a module or a name) for ``config``.

    ``path`` reads a given results file instead; ``arrays=False`` skips the ``.npz`` (the
    metrics then hold ``{"__array__", "shape", "dtype"}`` placeholders). A missing file raises
    ``FileNotFoundError``; an unreadable one ``ResultsError`` naming the file at fault. Arrays
    are loaded with ``allow_pickle=False``.
    """
    name = experiment_name(experiment)
    if path is None:
        if config is None:
            raise TypeError("load needs a config or a path")
        path = result_path(name, config)
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        metrics, config_, provenance = record["metrics"], record["config"], record["provenance"]
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ResultsError(f"cannot read results file {path}: {_reason(exc)}") from None
    npz = path.with_suffix(".npz")
    if arrays and npz.exists():
        try:
            with np.load(npz, allow_pickle=False) as f:
                stored = {k.replace("|", "/"): f[k] for k in f.files}
            metrics = _join_arrays(metrics, stored)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ResultsError(f"cannot read the arrays file {npz}: {_reason(exc)}; delete it "
                               f"and {path.name} to recompute the run") from None
    return Result(name, config_, metrics, provenance, path)


def stored_runs(experiment: types.ModuleType | str) -> list[Result]:
    """Every stored result of ``experiment``, newest first, without their arrays.

    Unreadable files are skipped (``load`` on their path says what is wrong with them).
    """
    name = experiment_name(experiment)
    runs = []
    for path in (results_dir() / name).glob("*.json"):
        try:
            runs.append(load(name, path=path, arrays=False))
        except ResultsError:
            continue
    return sorted(runs, key=lambda r: str(r.provenance.get("finished_at", "")), reverse=True)


def config_flags(module: types.ModuleType, config: dict) -> list[str]:
    """The command-line flags that rebuild the stored ``config`` (a ``Result.config`` dict):
    ``--smoke`` when it is closer to the smoke config, then one ``--set key=value`` per field
    that differs (tuples written comma-separated)."""
    def differences(base):
        base = config_dict(base)
        return {k: v for k, v in config.items() if base.get(k) != v}

    default, smoke = differences(module.Config()), differences(module.Config.smoke())
    flags, diff = (["--smoke"], smoke) if len(smoke) < len(default) else ([], default)
    for key, value in sorted(diff.items()):
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        flags += ["--set", f"{key}={text}"]
    return flags


def ensure(module: types.ModuleType, config, *, quiet: bool | None = None) -> Result:
    """The stored result of ``module`` for ``config``, running the experiment if it is missing."""
    if result_path(module, config).exists():
        return load(module, config)
    return run_experiment(module, config, quiet=quiet)

"""How every benchmark measures: thread pinning, paired timing, the machine record, the output.

One timing primitive serves all benchmarks:

* ``compare(ours, peers)`` warms every contender up, then times them round-robin (ours, peer,
  ours, peer, ... or ours, peer 1, peer 2, ours, peer 1, ...) for ``repeats`` rounds, so slow
  drifts of the machine's load hit every contender alike. Each round gives one ratio
  ``peer time / our time`` per peer; the result reports their median, their min-max range and a
  verdict: ``"faster"`` (ours is faster in every round: the whole range is above 1),
  ``"slower"`` (the whole range is below 1) or ``"tie"`` (the range includes 1).

Threads are pinned before NumPy, SciPy, JAX or PyTorch are imported (``pin_threads``), checked
and enforced after the imports (``enforce_threads``), and recorded with the load average and the
CPU model (``machine_info`` / ``finish_machine_info``; ``header`` prints them).

This module imports nothing heavy at module level, so that a script can import it, parse its
arguments and call ``pin_threads`` before the numerical libraries start their thread pools.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata

# Environment variables read by the thread pools of OpenBLAS (NumPy, SciPy), MKL, OpenMP
# (PyTorch's ATen and BLAS), Apple Accelerate and numexpr when those libraries are loaded.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
# The XLA:CPU flag that runs Eigen's matmuls and convolutions on the calling thread. XLA has no
# flag for the size of its intra-op pool: it sizes the pool from the cores the process may run on
# (its CPU affinity), so ``pin_threads`` bounds it with ``os.sched_setaffinity``.
XLA_SINGLE_THREAD_FLAG = "--xla_cpu_multi_thread_eigen=false"
_NUMERICAL_MODULES = ("numpy", "scipy", "jax", "torch")
_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

_pinned: dict = {}  # what pin_threads did, for the machine record


# --------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------


def pin_threads(n: int) -> dict:
    """Make NumPy/SciPy's BLAS, PyTorch and XLA use ``n`` threads; call before importing them.

    * sets ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` (and the macOS and
      numexpr equivalents) to ``n``, overriding any value already set;
    * restricts the process to ``n`` of the cores it may use (``os.sched_setaffinity``, Linux),
      which bounds XLA:CPU's intra-op thread pool and every pool sized from the core count;
    * for ``n == 1`` adds ``--xla_cpu_multi_thread_eigen=false`` to ``XLA_FLAGS``.

    Libraries imported before this call keep their thread pools; they are listed under
    ``imported_before_pinning`` in the record and ``enforce_threads`` then limits the BLAS and
    OpenMP pools with threadpoolctl. Returns the record (also kept for ``machine_info``).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    early = [m for m in _NUMERICAL_MODULES if m in sys.modules]
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n)
    affinity = None
    if hasattr(os, "sched_getaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if n < len(cores):
            os.sched_setaffinity(0, cores[:n])
        affinity = sorted(os.sched_getaffinity(0))
    if n == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if XLA_SINGLE_THREAD_FLAG not in flags.split():
            os.environ["XLA_FLAGS"] = f"{flags} {XLA_SINGLE_THREAD_FLAG}".strip()
    _pinned.clear()
    _pinned.update({"threads": n, "env": {v: os.environ[v] for v in THREAD_ENV_VARS},
                    "cores": affinity, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                    "imported_before_pinning": early})
    return dict(_pinned)


def pinned() -> dict:
    """What ``pin_threads`` did in this process (empty if it was not called)."""
    return dict(_pinned)


def enforce_threads(n: int) -> None:
    """After the imports: limit every loaded BLAS/OpenMP pool to ``n`` threads (threadpoolctl)
    and set PyTorch's intra- and inter-op threads to ``n`` if torch is imported.

    ``pin_threads`` already did this through the environment for libraries imported after it;
    this catches libraries imported earlier and anything that read the environment differently.
    Pools of libraries loaded after this call follow the environment variables.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)  # stays in force: the returned object is not used as a context
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # only allowed before torch's first inter-op parallel work
            pass


def thread_report() -> dict:
    """The thread counts in effect now: requested, cores, environment, every BLAS/OpenMP pool
    seen by threadpoolctl, PyTorch's intra-/inter-op threads, and XLA's bound (the cores)."""
    out = {"requested": _pinned.get("threads"),
           "cores_available_to_process": (len(os.sched_getaffinity(0))
                                          if hasattr(os, "sched_getaffinity") else os.cpu_count()),
           "env": {v: os.environ.get(v) for v in THREAD_ENV_VARS},
           "xla_flags": os.environ.get("XLA_FLAGS", ""),
           "imported_before_pinning": _pinned.get("imported_before_pinning")}
    try:
        from threadpoolctl import threadpool_info

        out["threadpools"] = [
            {k: p.get(k) for k in ("internal_api", "prefix", "version", "num_threads",
                                   "threading_layer", "filepath")}
            for p in threadpool_info()]
    except ImportError:
        out["threadpools"] = "threadpoolctl not installed"
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        out["torch_intra_op"] = torch.get_num_threads()
        out["torch_inter_op"] = torch.get_num_interop_threads()
    # XLA:CPU has no query for its pool; it is sized from (so bounded by) the usable cores.
    out["xla_intra_op_bound"] = out["cores_available_to_process"]
    return out


def thread_summary(report: dict) -> str:
    """One line: requested threads and the effective count of each pool."""
    parts = [f"threads {report['requested']}"]
    pools = report.get("threadpools")
    if isinstance(pools, list):
        for p in pools:
            parts.append(f"{p['internal_api']} ({p['prefix']}) {p['num_threads']}")
    if "torch_intra_op" in report:
        parts.append(f"torch {report['torch_intra_op']} intra-op / "
                     f"{report['torch_inter_op']} inter-op")
    parts.append(f"XLA <= {report['xla_intra_op_bound']} core(s)")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


VERSIONED = ("jax", "jaxlib", "numpy", "scipy", "torch", "pyhessian", "curvlinops-for-pytorch",
             "threadpoolctl", "landscape-jax")


def machine_info() -> dict:
    """The machine at the start of a run: CPU model, cores, threads in effect, load average,
    Python and package versions. Call after the imports and ``enforce_threads``."""
    info = {"cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
            "threads": thread_report(),
            "load_average_start": list(os.getloadavg()),
            "python": platform.python_version(),
            "versions": {d: _version(d) for d in VERSIONED}}
    if "jax" in sys.modules:
        jax = sys.modules["jax"]
        info["jax_backend"] = jax.default_backend()
        info["jax_enable_x64"] = bool(jax.config.jax_enable_x64)
    return info


def start_run(threads: int) -> dict:
    """Enforce ``threads`` (after the libraries are imported), print the thread pools in effect
    and the load average on stderr, and return ``machine_info()``: the opening of every
    benchmark script."""
    enforce_threads(threads)
    machine = machine_info()
    print(f"{thread_summary(machine['threads'])}; load average "
          f"{machine['load_average_start'][0]:.2f} at the start", file=sys.stderr, flush=True)
    return machine


def finish_machine_info(info: dict) -> dict:
    """Add the load average at the end and the thread counts then in effect (in place)."""
    info["load_average_end"] = list(os.getloadavg())
    info["threads_at_end"] = thread_report()
    return info


def header(info: dict, title: str) -> str:
    """The header every benchmark prints: title, CPU, threads, load before/after."""
    lines = [f"## {title}", "",
             f"Machine: {info['cpu_model']}, {info['cpu_count']} cores; "
             f"{thread_summary(info['threads'])}.",
             "Load average (1/5/15 min): before " + _load(info["load_average_start"])
             + ", after " + (_load(info["load_average_end"]) if "load_average_end" in info
                             else "-") + "."]
    v = info["versions"]
    lines.append("Versions: " + ", ".join(f"{d} {v[d]}" for d in VERSIONED
                                          if v.get(d, "not installed") != "not installed") + ".")
    return "\n".join(lines)


def _load(triple) -> str:
    return "/".join(f"{x:.2f}" for x in triple)


# --------------------------------------------------------------------------------------------
# Paired timing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    """Per-round ratios ``numerator time / denominator time`` and their summary.

    With the peer as numerator and ours as denominator, a ratio above 1 means ours is faster.
    ``verdict`` speaks for the denominator: ``"faster"`` if every ratio is above 1,
    ``"slower"`` if every ratio is below 1, ``"tie"`` if the min-max range includes 1.
    """

    numerator: str
    denominator: str
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def against(self, threshold: float) -> str:
        """``"above"``/``"below"`` if the whole range is above/below ``threshold``, else
        ``"tie"`` (used for targets such as "an HVP costs at most 2 gradients")."""
        if self.low > threshold:
            return "above"
        if self.high < threshold:
            return "below"
        return "tie"

    @property
    def verdict(self) -> str:
        return {"above": "faster", "below": "slower", "tie": "tie"}[self.against(1.0)]

    def text(self, verdict: bool = True) -> str:
        """``median (min-max)``, followed by the verdict unless ``verdict=False``."""
        s = f"{self.median:.3g} ({self.low:.3g}-{self.high:.3g})"
        return f"{s} {self.verdict}" if verdict else s

    def to_dict(self) -> dict:
        return {"of": f"{self.numerator} / {self.denominator}", "median": self.median,
                "min": self.low, "max": self.high, "verdict": self.verdict,
                "verdict_for": self.denominator, "values": list(self.values)}


@dataclass(frozen=True)
class Comparison:
    """The result of ``compare``: per-contender times (seconds per call) and ratios vs ours."""

    ours: str
    names: tuple[str, ...]  # round-robin order; ``ours`` first
    times: dict[str, list[float]]
    warmup_times: dict[str, list[float]]
    repeats: int
    warmup: int
    number: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    compiles: dict[str, int] = field(default_factory=dict)  # JAX compilations in timed rounds
    warmup_compiles: dict[str, int] = field(default_factory=dict)

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n != self.ours)

    @property
    def medians(self) -> dict[str, float]:
        return {n: statistics.median(t) for n, t in self.times.items()}

    def ratio(self, numerator: str, denominator: str | None = None) -> Ratio:
        """Per-round ``numerator / denominator`` times (default denominator: ours)."""
        den = self.ours if denominator is None else denominator
        vals = tuple(a / b for a, b in zip(self.times[numerator], self.times[den], strict=True))
        return Ratio(numerator, den, vals)

    @property
    def ratios(self) -> dict[str, Ratio]:
        """Every peer's ``peer / ours`` ratio."""
        return {p: self.ratio(p) for p in self.peers}

    def lines(self) -> list[str]:
        """Human-readable summary: median seconds per contender, each peer's ratio."""
        med = self.medians
        out = [f"{n}: {med[n]:.4g} s (median of {self.repeats})" for n in self.names]
        out += [f"{p} / {self.ours}: {r.text()}" for p, r in self.ratios.items()]
        return out

    def to_dict(self) -> dict:
        return {"ours": self.ours, "order": list(self.names),
                "method": (f"{self.warmup} warm-up round(s), then {self.repeats} round-robin "
                           f"rounds; each sample is the mean of {self.number} call(s)"),
                "repeats": self.repeats, "warmup": self.warmup, "calls_per_sample": self.number,
                "seconds": self.times, "median_seconds": self.medians,
                "warmup_seconds": self.warmup_times,
                "jax_compiles_in_timed_rounds": self.compiles,
                "jax_compiles_in_warmup": self.warmup_compiles,
                "load_average_before": list(self.load_before),
                "load_average_after": list(self.load_after),
                "ratios_peer_over_ours": {p: r.to_dict() for p, r in self.ratios.items()}}


def _block(result) -> None:
    """Wait for JAX's asynchronous dispatch (a no-op for other values or without JAX)."""
    if result is not None and "jax" in sys.modules:
        sys.modules["jax"].block_until_ready(result)


class _CompileCounter:
    """Counts JAX backend compilations, attributed to the contender running at the time."""

    def __init__(self):
        self.current = None
        self.counts: dict = {}
        self._jax = sys.modules.get("jax")

    def _listener(self, event, duration_secs=None, **kwargs):
        if event == _BACKEND_COMPILE_EVENT and self.current is not None:
            self.counts[self.current] = self.counts.get(self.current, 0) + 1

    def __enter__(self):
        if self._jax is not None:
            self._jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        if self._jax is not None:
            self._jax.monitoring.unregister_event_duration_listener(self._listener)
        return False


def compare(ours: Callable[[], object], peers: Callable[[], object] | Mapping[str, Callable],
            *, repeats: int = 5, warmup: int = 1, number: int = 1, ours_name: str = "ours",
            clock: Callable[[], float] = time.perf_counter) -> Comparison:
    """Time ``ours`` against one or more peers, alternating, and return a ``Comparison``.

    Args:
      ours: a function of no arguments doing our side of the work once.
      peers: one such function (named ``"peer"``) or a mapping ``name -> function``.
      repeats: timed rounds (at least 5 for a published claim). In each round every contender
        runs once, in the fixed order ours, then the peers in the given order.
      warmup: rounds run before the timed ones (compilation, caches); their times are kept
        in ``warmup_times`` and enter no ratio.
      number: calls per timed sample (the sample is their mean), for very short functions.
      ours_name: the name of our contender.
      clock: the timer (``time.perf_counter``; tests inject a fake).

    Every return value is passed to ``jax.block_until_ready`` inside the timed region when JAX
    is imported (a no-op for non-JAX values), so asynchronous dispatch cannot hide work; a
    function that returns something JAX cannot block on must block itself. JAX compilations
    during the warm-up and the timed rounds are counted per contender (a nonzero count in the
    timed rounds means that contender recompiles on every call).
    """
    contenders = {"peer": peers} if callable(peers) else dict(peers)
    if ours_name in contenders:
        raise ValueError(f"a peer is named like ours: {ours_name!r}")
    contenders = {ours_name: ours} | contenders
    if len(contenders) < 2:
        raise ValueError("compare needs at least one peer")
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0), ("number", number, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    def sample(fn, calls):
        t0 = clock()
        for _ in range(calls):
            _block(fn())
        return (clock() - t0) / calls

    names = tuple(contenders)
    times = {n: [] for n in names}
    warm = {n: [] for n in names}
    load_before = os.getloadavg()
    with _CompileCounter() as cc:
        for _ in range(warmup):
            for n in names:
                cc.current = ("warmup", n)
                warm[n].append(sample(contenders[n], number))
        for _ in range(repeats):
            for n in names:
                cc.current = ("timed", n)
                times[n].append(sample(contenders[n], number))
        cc.current = None
    load_after = os.getloadavg()
    return Comparison(
        ours=ours_name, names=names, times=times, warmup_times=warm, repeats=repeats,
        warmup=warmup, number=number, load_before=tuple(load_before),
        load_after=tuple(load_after),
        compiles={n: cc.counts.get(("timed", n), 0) for n in names},
        warmup_compiles={n: cc.counts.get(("warmup", n), 0) for n in names})


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def median_seconds(fn: Callable[[], object], repeats: int = 3, *, log=None):
    """Call ``fn`` once (compilation and warm-up), then ``repeats`` times; returns the median
    wall seconds of the timed calls and the last output. ``log(seconds)``, when given, receives
    the time of the first call. For one routine's absolute time; ratios against a peer go
    through :func:`compare`."""
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    if log is not None:
        log(time.perf_counter() - t0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _to_json(obj):
    if isinstance(obj, Comparison | Ratio):
        return _to_json(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): _to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_json(v) for v in obj]
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.ndarray):
            return _to_json(obj.tolist())
        if isinstance(obj, np.generic):
            return _to_json(obj.item())
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return str(obj)
    return obj


def write_json(results: dict, path) -> None:
    """Write ``results`` (Comparisons, Ratios and NumPy values allowed) atomically to ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(_to_json(results), f, indent=1)
    os.replace(tmp, path)


def _fmt(x, spec=".3g"):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, Ratio):
        return x.text()
    return format(x, spec)


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table; floats as 3 significant digits, Ratios as ``median (min-max) verdict``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

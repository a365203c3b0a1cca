"""Timing, machine description and the markdown table for the curvature benchmark."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from importlib import metadata

import numpy as np


def median_time(fn, repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    ``fn`` must block until its work is done (``jax.block_until_ready`` for JAX).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


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


def machine_info(threads: int) -> dict:
    """CPU model, cores, the cores this process may use, load, and package versions."""
    import jax
    import torch

    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cores_available_to_process": len(os.sched_getaffinity(0)),
        "threads_requested": threads,
        "torch_num_threads": torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "versions": {
            d: _version(d)
            for d in ("jax", "jaxlib", "numpy", "scipy", "torch", "pyhessian",
                      "curvlinops-for-pytorch", "landscape-jax")
        },
        "jax_backend": jax.default_backend(),
    }


def _to_json(obj):
    if isinstance(obj, dict):
        return {str(k): _to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _to_json(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def write_json(results: dict, path) -> None:
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
    return format(x, spec)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

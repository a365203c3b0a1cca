"""landscape: curvature, spectra, mode connectivity and SVM-equivalence checks in JAX.

Submodules are imported lazily, so that ``import landscape`` (and the figure scripts, which read
stored results only) never pays for, or depends on, importing JAX.

>>> from landscape import curvature, spectral, connectivity, attention, data, models
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "attention",
    "blockwise",
    "checkpoint",
    "connectivity",
    "conv_rewrite",
    "curvature",
    "data",
    "dynamics",
    "experiment",
    "losses",
    "models",
    "nnx",
    "parallel",
    "plotting",
    "spectral",
    "train",
    "tree",
    "typing",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"landscape.{name}")
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))

"""Offline datasets as pytrees of arrays with a leading example axis.

Every generator is deterministic given its ``jax.random`` key (or integer seed where the
upstream generator takes one). Nothing here touches the network.

Supervised datasets are dicts ``{"x": inputs, "y": labels}``; loaders return ``(train, test)``.

Modules: ``real`` (scikit-learn digits, mnist1d), ``synthetic`` (Gaussian mixtures),
``tokens`` (token-selection data for attention), ``icl`` (in-context linear regression).
Their public names are re-exported here.
"""

from __future__ import annotations

import importlib

_MODULES = ("real", "synthetic", "tokens", "icl")


def __getattr__(name: str):
    for mod in _MODULES:
        try:
            module = importlib.import_module(f"landscape.data.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name == f"landscape.data.{mod}":
                continue
            raise
        if name in getattr(module, "__all__", ()):
            return getattr(module, name)
    raise AttributeError(f"module 'landscape.data' has no attribute {name!r}")

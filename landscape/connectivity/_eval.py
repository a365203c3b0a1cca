"""Checks shared by the connectivity modules (dataset means live in ``landscape.batching``)."""

from __future__ import annotations

from landscape.validate import (  # noqa: F401  (re-exported for existing callers)
    check_models,
)



"""The experiments of the paper set, one module each, listed explicitly in ``REGISTRY``.

Every module satisfies ``landscape.experiment.Experiment`` (a frozen ``Config`` with
``Config.smoke()``, and ``run(config, ctx)``) and exports its metric layout ``Metrics``, a
``TypedDict`` defined in ``experiments.layouts.NAME``. The layouts never import JAX, so the
figure scripts import them to read their results through a typed view.

Importing this package imports no experiment (and so no JAX): ``get`` imports one on demand.
``python -m experiments`` and the ``landscape`` console script run ``experiments.cli``.

To add an experiment: write ``experiments/NAME.py`` and ``experiments/layouts/NAME.py``, add the
name to ``REGISTRY`` and a check of its smoke metrics to ``tests/test_experiments.py``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from landscape.experiment import UsageError

__all__ = ["REGISTRY", "names", "get"]

#: Experiment name -> module that implements it.
REGISTRY: dict[str, str] = {
    "adaptive_eos": "experiments.adaptive_eos",
    "barrier_vs_training": "experiments.barrier_vs_training",
    "barrier_vs_width": "experiments.barrier_vs_width",
    "baselines": "experiments.baselines",
    "batch_size_tests": "experiments.batch_size_tests",
    "blockwise_spectra": "experiments.blockwise_spectra",
    "central_flow": "experiments.central_flow",
    "coherence": "experiments.coherence",
    "data_diet": "experiments.data_diet",
    "edge_of_stability": "experiments.edge_of_stability",
    "gd_vs_flow": "experiments.gd_vs_flow",
    "hessian_outliers": "experiments.hessian_outliers",
    "hessian_spectrum": "experiments.hessian_spectrum",
    "icl_as_gd": "experiments.icl_as_gd",
    "implicit_bias_logistic": "experiments.implicit_bias_logistic",
    "large_batch": "experiments.large_batch",
    "matching_anatomy": "experiments.matching_anatomy",
    "merging": "experiments.merging",
    "opposing_signals": "experiments.opposing_signals",
    "optimizer_checks": "experiments.optimizer_checks",
    "optimizer_comparison": "experiments.optimizer_comparison",
    "small_scale_proxies": "experiments.small_scale_proxies",
    "surfaces": "experiments.surfaces",
    "svm_convergence": "experiments.svm_convergence",
    "svm_local": "experiments.svm_local",
    "svm_nonlinear": "experiments.svm_nonlinear",
    "svm_rank": "experiments.svm_rank",
}


def names() -> list[str]:
    """The registered experiment names, in registry order."""
    return list(REGISTRY)


def get(name: str) -> ModuleType:
    """Import the experiment ``name``; ``UsageError`` if it is not registered."""
    if name not in REGISTRY:
        raise UsageError(f"unknown experiment {name!r}; available: {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])

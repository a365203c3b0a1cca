"""The figures of the paper set, one script each, listed explicitly in ``REGISTRY``.

Every script satisfies ``landscape.experiment.Figure``: ``EXPERIMENTS`` (the results it reads)
and ``draw(results, out_dir)``. Scripts never import JAX; they read their results through the
metric layouts in ``experiments.layouts`` and every plotted parameter from the stored config.
``landscape figures`` (``experiments.cli``) runs missing results and draws them into ``OUT_DIR``
(this package's ``out/`` folder; the committed PNGs of the default configs live there) and
copies the JSON record of each default run it drew from (config, scalar metrics, provenance;
the arrays stay in the results folder) into ``RECORDS_DIR`` (``records/NAME.json`` here), so the
numbers behind every committed figure are in the repository.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from landscape.experiment import UsageError

__all__ = ["REGISTRY", "OUT_DIR", "RECORDS_DIR", "names", "get"]

#: Where ``landscape figures`` draws the figures of the default configs.
OUT_DIR = Path(__file__).resolve().parent / "out"

#: Where ``landscape figures`` copies the JSON record of each default run behind ``OUT_DIR``.
RECORDS_DIR = Path(__file__).resolve().parent / "records"

#: Figure name -> module that draws it.
REGISTRY: dict[str, str] = {
    "adaptive_eos": "paper_figures.adaptive_eos",
    "barrier_vs_training": "paper_figures.barrier_vs_training",
    "barrier_vs_width": "paper_figures.barrier_vs_width",
    "baselines": "paper_figures.baselines",
    "batch_size_tests": "paper_figures.batch_size_tests",
    "blockwise_spectra": "paper_figures.blockwise_spectra",
    "central_flow": "paper_figures.central_flow",
    "coherence": "paper_figures.coherence",
    "data_diet": "paper_figures.data_diet",
    "edge_of_stability": "paper_figures.edge_of_stability",
    "gd_vs_flow": "paper_figures.gd_vs_flow",
    "hessian_outliers": "paper_figures.hessian_outliers",
    "hessian_spectrum": "paper_figures.hessian_spectrum",
    "icl_as_gd": "paper_figures.icl_as_gd",
    "implicit_bias_logistic": "paper_figures.implicit_bias_logistic",
    "large_batch": "paper_figures.large_batch",
    "matching_anatomy": "paper_figures.matching_anatomy",
    "merging": "paper_figures.merging",
    "opposing_signals": "paper_figures.opposing_signals",
    "optimizer_checks": "paper_figures.optimizer_checks",
    "optimizer_comparison": "paper_figures.optimizer_comparison",
    "small_scale_proxies": "paper_figures.small_scale_proxies",
    "surfaces": "paper_figures.surfaces",
    "svm_convergence": "paper_figures.svm_convergence",
    "svm_local": "paper_figures.svm_local",
    "svm_nonlinear": "paper_figures.svm_nonlinear",
    "svm_rank": "paper_figures.svm_rank",
}


def names() -> list[str]:
    """The registered figure names, in registry order."""
    return list(REGISTRY)


def get(name: str) -> ModuleType:
    """Import the figure script ``name``; ``UsageError`` if it is not registered."""
    if name not in REGISTRY:
        raise UsageError(f"unknown figure {name!r}; available: {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])

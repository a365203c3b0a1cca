"""Spectral analysis of symmetric linear operators (Hessian, GGN, Fisher, dense matrices).

Every routine takes an operator following ``landscape.linop.LinearOperator``
(``op.dim``, ``op.dtype``, ``op.matvec``) and an explicit ``jax.random`` key, and returns a
NamedTuple carrying its provenance (products used, residuals, standard errors).

* ``eigsh``: extreme eigenpairs, Lanczos with full reorthogonalisation, certified residuals.
* ``power_iteration``: PyHessian's deflated power iteration (baseline only).
* ``trace``: Hutchinson / Hutch++ / XTrace with standard errors; ``diagonal``: Hutchinson.
* ``density``: stochastic Lanczos quadrature; ``kpm_density``: kernel polynomial method.
* ``directional_curvature``, ``gradient_fraction_in_topk``, ``negative_positive_ratio``,
  ``topk_condition_number``: scalar diagnostics.

>>> r = spectral.eigsh(op, k=5, which="LA", key=jax.random.key(0))
>>> d = spectral.density(op, key=key, num_probes=10, num_steps=80); d.pdf(grid, sigma=0.01)
"""

from landscape.spectral.density import SpectralDensity, density
from landscape.spectral.diagnostics import (
    directional_curvature,
    gradient_fraction_in_topk,
    negative_positive_ratio,
    topk_condition_number,
)
from landscape.spectral.eigsh import (
    EigshNotConverged,
    EigshResult,
    default_tol,
    eigsh,
    linearity_defect,
)
from landscape.spectral.kpm import KPMDensity, kpm_density, spectrum_bounds
from landscape.spectral.power import PowerIterationResult, power_iteration
from landscape.spectral.trace import DiagonalEstimate, TraceEstimate, diagonal, trace

__all__ = [
    "DiagonalEstimate",
    "EigshResult",
    "EigshNotConverged",
    "KPMDensity",
    "PowerIterationResult",
    "SpectralDensity",
    "TraceEstimate",
    "default_tol",
    "density",
    "diagonal",
    "directional_curvature",
    "eigsh",
    "linearity_defect",
    "gradient_fraction_in_topk",
    "kpm_density",
    "negative_positive_ratio",
    "power_iteration",
    "spectrum_bounds",
    "topk_condition_number",
    "trace",
]

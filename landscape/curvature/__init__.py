"""Curvature operators: Hessian, generalised Gauss-Newton, Fisher and empirical Fisher.

Every operator is a :class:`LinearOperator` over the ravelled parameters
(``jax.flatten_util.ravel_pytree`` order): ``op.dim``, ``op.dtype``, ``op.matvec(v)`` / ``op(v)``
for flat ``v`` of shape ``(dim,)``, ``op.matmat(V)`` for ``(dim, m)``. Products average exactly
over the whole dataset in batches of ``batch_size`` (memory bounded by one batch). Operators are
pytrees, so they can be passed as arguments to jitted spectral code.

>>> op = curvature.hessian(loss_fn, params, dataset, batch_size=256)
>>> op = curvature.ggn(apply_fn, "cross_entropy", params, dataset)
>>> op = curvature.fisher(apply_fn, "cross_entropy", params, dataset, key=key)
>>> op = curvature.empirical_fisher(apply_fn, "cross_entropy", params, dataset)
>>> layer = curvature.restrict(op, {"layer1": True, "layer2": False})
>>> curvature.hvp(loss_fn, params, batch, v)      # pytree in, pytree out
>>> curvature.dense(op)                            # (dim, dim), tiny models only
>>> fast = curvature.linearized(op)   # cache parameter-only work (memory: whole dataset)
"""

from landscape.curvature.dense import dense, from_matrix
from landscape.curvature.fisher import empirical_fisher, fisher
from landscape.curvature.gauss_newton import OutputCurvatureOperator, ggn
from landscape.curvature.hessian import HessianOperator, hessian, hvp
from landscape.curvature.linearized import LinearizedOperator, linearized
from landscape.curvature.probes import (
    DeterminismProbe,
    FiniteDifferenceCheck,
    SymmetryProbe,
    determinism_probe,
    finite_difference_check,
    symmetry_probe,
)
from landscape.curvature.restrict import RestrictedOperator, block_masks, mask_indices, restrict
from landscape.linop import LinearOperator, MatrixOperator

__all__ = [
    "LinearOperator",
    "MatrixOperator",
    "HessianOperator",
    "OutputCurvatureOperator",
    "RestrictedOperator",
    "LinearizedOperator",
    "linearized",
    "hvp",
    "hessian",
    "ggn",
    "fisher",
    "empirical_fisher",
    "restrict",
    "mask_indices",
    "block_masks",
    "dense",
    "from_matrix",
    "symmetry_probe",
    "SymmetryProbe",
    "determinism_probe",
    "DeterminismProbe",
    "finite_difference_check",
    "FiniteDifferenceCheck",
]

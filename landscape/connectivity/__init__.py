"""Linear mode connectivity: paths, barriers, permutation alignment, merging and slices.

Modules: ``paths`` (linear / simplex paths and barrier heights), ``spec`` (PermutationSpec,
apply/invert, check_spec), ``builders`` (mlp_spec, cnn_spec, resnet_spec), ``infer``
(infer_spec from the jaxpr), ``weight_matching``, ``activation_matching``, ``ste``, ``repair``
(REPAIR and BatchNorm reset), ``merge`` (multi-model alignment, PLeaS), ``layerwise``
(layer-wise barriers and the second-order predictor), ``diagnostics`` (Ito et al.),
``instability`` (Frankle et al.), ``bezier`` (Garipov et al.), ``slices`` (Li et al.).
"""

from landscape.connectivity.activation_matching import (
    UnitStats,
    activation_matching,
    correlation,
    mlp_features,
    unit_statistics,
)
from landscape.connectivity.bezier import BezierFit, bezier_path, bezier_point, fit_bezier
from landscape.connectivity.builders import cnn_spec, mlp_spec, resnet_spec
from landscape.connectivity.diagnostics import Overlap, l2_distances, subspace_overlap
from landscape.connectivity.infer import infer_spec
from landscape.connectivity.instability import Spawn, spawn_and_compare
from landscape.connectivity.layerwise import (
    SecondOrder,
    group_by_layer,
    layerwise_paths,
    second_order_barrier,
)
from landscape.connectivity.merge import align_models, average, pleas_merge
from landscape.connectivity.paths import (
    BARRIER_KINDS,
    Barrier,
    Path,
    SimplexPath,
    barrier,
    check_alphas,
    evaluate_path,
    interpolate,
    interpolate_simplex,
    simplex_barrier,
    simplex_grid,
)
from landscape.connectivity.repair import batchnorm_reset, mlp_producers, repair
from landscape.connectivity.slices import (
    Slice,
    gaussian_direction,
    hessian_directions,
    pca_directions,
    slice_1d,
    slice_2d,
)
from landscape.connectivity.spec import (
    PermutationSpec,
    SpecCheck,
    apply_inverse_permutation,
    apply_permutation,
    check_spec,
    check_spec_fits,
    compose_permutations,
    identity_permutation,
    invert_permutation,
    leaf_keys,
    make_spec,
    random_permutation,
)
from landscape.connectivity.ste import STEResult, ste_matching
from landscape.connectivity.weight_matching import (
    MatchResult,
    matching_objective,
    weight_matching,
)

__all__ = [
    "BARRIER_KINDS",
    "Barrier",
    "BezierFit",
    "MatchResult",
    "Overlap",
    "Path",
    "PermutationSpec",
    "STEResult",
    "SecondOrder",
    "SimplexPath",
    "Slice",
    "Spawn",
    "SpecCheck",
    "UnitStats",
    "activation_matching",
    "align_models",
    "apply_inverse_permutation",
    "apply_permutation",
    "average",
    "barrier",
    "batchnorm_reset",
    "bezier_path",
    "bezier_point",
    "check_alphas",
    "check_spec",
    "check_spec_fits",
    "cnn_spec",
    "compose_permutations",
    "correlation",
    "evaluate_path",
    "fit_bezier",
    "gaussian_direction",
    "group_by_layer",
    "hessian_directions",
    "identity_permutation",
    "infer_spec",
    "interpolate",
    "interpolate_simplex",
    "invert_permutation",
    "l2_distances",
    "layerwise_paths",
    "leaf_keys",
    "make_spec",
    "matching_objective",
    "mlp_features",
    "mlp_producers",
    "mlp_spec",
    "pca_directions",
    "pleas_merge",
    "random_permutation",
    "resnet_spec",
    "repair",
    "second_order_barrier",
    "simplex_barrier",
    "simplex_grid",
    "slice_1d",
    "slice_2d",
    "spawn_and_compare",
    "ste_matching",
    "subspace_overlap",
    "unit_statistics",
    "weight_matching",
]

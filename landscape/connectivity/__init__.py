"""Linear mode connectivity: paths, barriers, permutation alignment, merging and slices.

Modules: ``paths`` (linear / simplex paths and barrier heights), ``spec`` (PermutationSpec,
apply/invert, check_spec), ``builders`` (mlp_spec, cnn_spec, resnet_spec), ``infer``
(infer_spec from the jaxpr), ``weight_matching``, ``activation_matching``, ``ste``, ``repair``
(REPAIR and BatchNorm reset), ``merge`` (multi-model alignment, PLeaS), ``layerwise``
(layer-wise barriers and the second-order predictor), ``diagnostics`` (Ito et al.),
``instability`` (Frankle et al.), ``bezier`` (Garipov et al.), ``slices`` (Li et al.).
"""

from landscape.connectivity.builders import cnn_spec, mlp_spec
from landscape.connectivity.infer import infer_spec
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
from landscape.connectivity.weight_matching import (
    MatchResult,
    matching_objective,
    weight_matching,
)

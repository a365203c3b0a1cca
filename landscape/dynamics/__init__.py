"""Training dynamics: curvature along a trajectory, stability thresholds and flows.

* ``sharpness``: certified top-k eigenvalues of the full-dataset Hessian (or GGN) at the current
  params, warm-started from previous eigenvectors; ``sharpness_probe``: the same inside the
  compiled training loop of ``landscape.train`` (Cohen et al. 2021).
* ``preconditioned_sharpness``: ``lambda_max(P^-1 H)`` with ``P`` read from an optax state
  (Adam/AdamW, RMSProp, Adagrad, SGD) or given; ``stability_threshold``: ``2/eta``,
  ``(2 + 2 beta)/eta``, ``(2 + 2 b1)/((1 - b1) eta)`` ... (Cohen et al. 2022).
* ``gradient_flow``: ``dw/dtau = -grad L(w)`` by RK4 with the step set from the sharpness;
  ``compare_gd_flow`` / ``gd_flow_distance``: ``||w_GD(t) - w_flow(t eta)||``.
* ``central_flow`` (GD), ``rmsprop_central_flow``, ``scalar_rmsprop_central_flow``: the
  time-averaged dynamics at the edge of stability (Cohen, Damian, Talwalkar, Kolter, Lee 2025),
  with the oscillation covariance from ``solve_psd_complementarity`` inside ``jit``.
* ``per_example_grads``, ``gradient_statistics`` (variance, m-coherence, noise scale, SNR, the
  norm / inner-product / orthogonality batch-size tests), ``mlp_per_example_norms`` and
  ``gradient_probe``: per-example gradient statistics with memory bounded by a chunk size.
* ``robust_aggregation`` / ``robust_value_and_grad``: winsorised and median-of-means gradients
  (Chatterjee & Zielinski 2022); ``opposing_signals``: examples whose losses move against each
  other around loss spikes (Rosenfeld & Risteski 2024); ``weight_distance`` /
  ``fit_log_growth``: ``||w_t - w_0||`` per layer against ``a + b log t`` (Hoffer et al. 2017);
  ``el2n_scores`` / ``grand_scores`` / ``prune_indices``: data-pruning scores (Paul et al. 2021).

>>> r = dynamics.sharpness(loss_fn, params, data, key=key, k=1)   # r.eigenvalues[0]
>>> res = train.train(loss_fn, params, optax.sgd(eta), data, key=key, num_steps=1000,
...                   probes={"S": dynamics.sharpness_probe(loss_fn, data, every=1)})
>>> res.trace["S"]["eigenvalues"][:, 0] * eta / 2             # -> 1 at the edge of stability
"""

from landscape.dynamics.central_flow import (
    CentralFlowResult,
    central_flow,
    hessian_form_gradients,
    rmsprop_central_flow,
    scalar_rmsprop_central_flow,
)
from landscape.dynamics.complementarity import ComplementarityResult, solve_psd_complementarity
from landscape.dynamics.distance import (
    LogFit,
    WeightDistance,
    distance_probe,
    fit_log_growth,
    layer_name,
    weight_distance,
)
from landscape.dynamics.flow import (
    FlowNotFinished,
    GDFlowComparison,
    GDTrajectory,
    GradientFlowResult,
    compare_gd_flow,
    first_crossing,
    gd_flow_distance,
    gd_trajectory,
    gradient_flow,
    params_probe,
)
from landscape.dynamics.gradient_stats import (
    INNER_PRODUCT_THETA,
    NORM_TEST_ETA,
    ORTHOGONALITY_NU,
    BatchSizeTest,
    GradientStatistics,
    gradient_probe,
    gradient_statistics,
    mlp_per_example_norms,
    per_example_grads,
    per_example_norms,
)
from landscape.dynamics.opposing import (
    OpposingSignals,
    anti_phase,
    feature_groups,
    group_composition,
    group_losses,
    loss_spikes,
    opposing_signals,
    per_example_loss_probe,
    per_example_losses,
)
from landscape.dynamics.preconditioned import (
    RULES,
    preconditioned_operator,
    preconditioned_sharpness,
    preconditioner,
)
from landscape.dynamics.pruning import (
    el2n_scores,
    grand_scores,
    num_kept,
    prune_indices,
    random_indices,
)
from landscape.dynamics.robust import (
    AGGREGATIONS,
    median_of_means,
    robust_aggregation,
    robust_value_and_grad,
    winsorized_mean,
)
from landscape.dynamics.sharpness import (
    SharpnessState,
    curvature_operator,
    full_loss_and_grad,
    sharpness,
    sharpness_probe,
)
from landscape.dynamics.thresholds import THRESHOLD_RULES, stability_threshold

__all__ = [
    "INNER_PRODUCT_THETA",
    "NORM_TEST_ETA",
    "ORTHOGONALITY_NU",
    "BatchSizeTest",
    "GradientStatistics",
    "gradient_probe",
    "gradient_statistics",
    "mlp_per_example_norms",
    "per_example_grads",
    "per_example_norms",
    "CentralFlowResult",
    "ComplementarityResult",
    "central_flow",
    "hessian_form_gradients",
    "rmsprop_central_flow",
    "scalar_rmsprop_central_flow",
    "solve_psd_complementarity",
    "FlowNotFinished",
    "GDFlowComparison",
    "GDTrajectory",
    "GradientFlowResult",
    "compare_gd_flow",
    "first_crossing",
    "gd_flow_distance",
    "gd_trajectory",
    "gradient_flow",
    "params_probe",
    "RULES",
    "THRESHOLD_RULES",
    "SharpnessState",
    "curvature_operator",
    "full_loss_and_grad",
    "preconditioned_operator",
    "preconditioned_sharpness",
    "preconditioner",
    "sharpness",
    "sharpness_probe",
    "stability_threshold",
    "LogFit",
    "WeightDistance",
    "distance_probe",
    "fit_log_growth",
    "layer_name",
    "weight_distance",
    "OpposingSignals",
    "anti_phase",
    "feature_groups",
    "group_composition",
    "group_losses",
    "loss_spikes",
    "opposing_signals",
    "per_example_loss_probe",
    "per_example_losses",
    "el2n_scores",
    "grand_scores",
    "num_kept",
    "prune_indices",
    "random_indices",
    "AGGREGATIONS",
    "median_of_means",
    "robust_aggregation",
    "robust_value_and_grad",
    "winsorized_mean",
]

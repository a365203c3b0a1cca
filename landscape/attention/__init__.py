"""SVM-equivalence checks for attention and in-context learning.

Submodules (their public names are re-exported here):

- ``constraints``: the constraint algebra of the attention SVM: input validation, constraint
  rows, margins, the tie projector and the LP feasibility check.
- ``svm``: ``att_svm`` (Frobenius via a JAX dual QP with a Clarabel fallback, nuclear via a cvxpy
  SDP, general index sets); ``qp``: the dual QP solver itself.
- ``locality``: support tokens and local optimality of a token selection.
- ``training``: one-layer attention in ``W`` and ``(K, Q)`` trained by normalised GD, with SVM
  tracking.
- ``nonlinear``: nonlinear heads and the general SVM prediction.
- ``implicit_bias``: logistic regression on separable data (Soudry et al. 2018).
- ``icl``: linear self-attention as one step of GD (von Oswald et al. 2023).

References: Tarzanagh, Li, Zhang, Oymak (2023) "Max-margin token selection in attention
mechanism"; Tarzanagh, Li, Thrampoulidis, Oymak (2023) "Transformers as support vector machines";
Soudry et al. (2018) "The implicit bias of gradient descent on separable data"; von Oswald et al.
(2023) "Transformers learn in-context by gradient descent".
"""

from __future__ import annotations

from landscape.attention.constraints import (
    check_token_inputs,
    constraint_rows,
    onehot_constraint_rows,
    selection_feasible,
    svm_margins,
    tie_projector,
)
from landscape.attention.icl import (
    LSAvsGD,
    compare_with_gd,
    effective_weights,
    gd_step_prediction,
    init_lsa,
    lsa_construction,
    lsa_loss,
    lsa_predict,
    optimal_gd_learning_rate,
    train_lsa,
)
from landscape.attention.implicit_bias import (
    AsymptoticPrediction,
    ImplicitBiasMetrics,
    RateFit,
    asymmetric_separable_2d,
    asymptotic_prediction,
    fit_inverse_log_rate,
    hard_margin_svm,
    implicit_bias_metrics,
    logistic_gd,
    prune_near_support,
)
from landscape.attention.locality import (
    DetectedSelection,
    LocalOptimality,
    classify_selection,
    detect_selection,
    is_locally_optimal,
    support_tokens,
)
from landscape.attention.nonlinear import (
    GeneralSVMComparison,
    compare_general_svm,
    random_relu_head,
    relu_head,
    selected_set,
)
from landscape.attention.qp import (
    DualQPResult,
    solve_dual_qp,
    svm_from_rows,
)
from landscape.attention.svm import (
    AttSVMSolution,
    InfeasibleSVMError,
    UnconvergedSVMError,
    att_svm,
    fro_svm_jax,
)
from landscape.attention.training import (
    AttentionTrajectory,
    SVMTracking,
    attention_loss,
    attention_output,
    attention_probs,
    combined_W,
    linear_head,
    matrix_corr,
    normalize_per_leaf,
    normalized_gd,
    selected_tokens,
    track_svm,
    train_attention,
)

__all__ = [
    # constraints
    "check_token_inputs",
    "constraint_rows",
    "onehot_constraint_rows",
    "svm_margins",
    "tie_projector",
    "selection_feasible",
    # qp
    "DualQPResult",
    "solve_dual_qp",
    "svm_from_rows",
    # svm
    "AttSVMSolution",
    "InfeasibleSVMError",
    "UnconvergedSVMError",
    "att_svm",
    "fro_svm_jax",
    # locality
    "LocalOptimality",
    "support_tokens",
    "is_locally_optimal",
    "classify_selection",
    "DetectedSelection",
    "detect_selection",
    # training
    "normalize_per_leaf",
    "normalized_gd",
    "combined_W",
    "attention_probs",
    "attention_output",
    "attention_loss",
    "linear_head",
    "AttentionTrajectory",
    "train_attention",
    "SVMTracking",
    "matrix_corr",
    "track_svm",
    "selected_tokens",
    # nonlinear
    "relu_head",
    "random_relu_head",
    "selected_set",
    "GeneralSVMComparison",
    "compare_general_svm",
    # implicit_bias
    "asymmetric_separable_2d",
    "hard_margin_svm",
    "logistic_gd",
    "prune_near_support",
    "AsymptoticPrediction",
    "asymptotic_prediction",
    "ImplicitBiasMetrics",
    "implicit_bias_metrics",
    "RateFit",
    "fit_inverse_log_rate",
    # icl
    "lsa_construction",
    "init_lsa",
    "lsa_predict",
    "lsa_loss",
    "gd_step_prediction",
    "optimal_gd_learning_rate",
    "effective_weights",
    "LSAvsGD",
    "compare_with_gd",
    "train_lsa",
]

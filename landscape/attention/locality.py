"""Local optimality of a token selection (Tarzanagh et al. 2023, "Max-margin token selection").

For a selected index set ``alpha`` (one token per example) with a feasible Att-SVM solution
``W_alpha``, the *support tokens* of example ``i`` are the unselected tokens whose margin constraint
is tight, ``(x_{i,alpha_i} - x_it)^T W_alpha z_i = 1``. The selection is *locally optimal* when
the selected token of every example scores strictly higher than each of its support tokens,
``gamma_{i,alpha_i} > gamma_it`` for every support token ``t``. It is *globally optimal* when
``alpha`` is the highest-scoring token of every example. Gradient descent on attention can
converge in direction to ``W_alpha`` of any locally optimal ``alpha``.

Host-level functions on concrete arrays (they call ``att_svm``, which runs in float64).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from landscape import reprs
from landscape.attention.constraints import check_token_inputs
from landscape.attention.svm import AttSVMSolution, att_svm
from landscape.attention.training import attention_probs

__all__ = [
    "LocalOptimality", "support_tokens", "is_locally_optimal", "classify_selection",
    "DetectedSelection", "detect_selection",
]


class LocalOptimality(NamedTuple):
    """Verdict on one selection.

    Fields:
      locally_optimal: bool. globally_optimal: bool (selection = argmax of the scores; a global
        optimum is also locally optimal whenever its SVM is feasible).
      feasible: whether the Att-SVM of the selection is feasible.
      kind: ``"global"``, ``"local"`` or ``"none"``.
      offending: ``(n, T)`` bool, support tokens that score at least as high as the selected one.
      solution: the ``AttSVMSolution`` (``W`` NaN when infeasible).
    """

    locally_optimal: bool
    globally_optimal: bool
    feasible: bool
    kind: str
    offending: np.ndarray
    solution: AttSVMSolution

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.line("LocalOptimality", [
            f"kind={self.kind!r}", f"locally_optimal={self.locally_optimal}",
            f"globally_optimal={self.globally_optimal}", f"feasible={self.feasible}",
            f"offending={int(np.count_nonzero(self.offending))} tokens",
            f"objective={reprs.num(self.solution.objective)} ({self.solution.norm})"])


def support_tokens(X, Z, opt_index, *, norm: str = "fro", **svm_kwargs) -> np.ndarray:
    """``(n, T)`` bool mask of the support tokens of the Att-SVM for ``opt_index`` (see module)."""
    return att_svm(X, Z, opt_index, norm=norm, **svm_kwargs).support


def is_locally_optimal(X, Z, scores, opt_index, *, norm: str = "fro", **svm_kwargs):
    """Check the local optimality of ``opt_index`` (int ``(n,)``) given ``scores`` ``(n, T)``.

    Returns a ``LocalOptimality``. An infeasible selection is reported (``feasible=False``,
    ``kind="none"``) rather than raised. A feasible selection whose SVM no solver solves to
    tolerance raises ``UnconvergedSVMError`` (the support tokens would be unreliable); with
    ``on_unconverged="flag"`` in ``svm_kwargs`` it is reported as ``kind="none"`` with
    ``solution.converged=False``. ``norm="nuc"`` uses the nuclear-norm support tokens, the
    relevant notion for the ``(K, Q)`` parameterisation.
    """
    X, Z, mask = check_token_inputs(X, Z, opt_index)
    scores = np.asarray(scores, np.float64)
    if scores.shape != mask.shape:
        raise ValueError(f"scores must have shape (n, T) = {mask.shape}; got {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contains non-finite values")
    sol = att_svm(X, Z, opt_index, norm=norm, on_infeasible="flag", **svm_kwargs)
    sel_score = np.where(mask, scores, -np.inf).max(axis=1, keepdims=True)
    is_global = bool(np.all(sel_score[:, 0] >= scores.max(axis=1)))
    if not (sol.feasible and sol.converged):
        empty = np.zeros_like(mask)
        return LocalOptimality(False, is_global, sol.feasible, "none", empty, sol)
    offending = sol.support & (scores >= sel_score)
    local = not offending.any()
    kind = "global" if (local and is_global) else ("local" if local else "none")
    return LocalOptimality(local, is_global, True, kind, offending, sol)


def classify_selection(X, Z, scores, opt_index, *, norm: str = "fro", **svm_kwargs) -> str:
    """``"global"``, ``"local"`` or ``"none"`` for a selection (see ``is_locally_optimal``)."""
    return is_locally_optimal(X, Z, scores, opt_index, norm=norm, **svm_kwargs).kind


class DetectedSelection(NamedTuple):
    """The token selection a trained attention matrix has converged to.

    Fields:
      selection: ``(n,)`` int, the token of largest softmax weight per example.
      mass: smallest softmax weight on the selected token over the examples.
      converged: ``mass >= mass_threshold``.
      kind: ``"global"``, ``"local"`` or ``"none"`` (``"none"`` also when not converged).
      verdict: the ``LocalOptimality`` of ``selection``.
    """

    selection: np.ndarray
    mass: float
    converged: bool
    kind: str
    verdict: LocalOptimality

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.line("DetectedSelection", [
            f"kind={self.kind!r}", f"converged={self.converged}",
            f"mass={reprs.num(self.mass)}", f"selection={reprs.array(self.selection)}"])


def detect_selection(W, X, Z, scores, *, norm: str = "fro", mass_threshold: float = 0.99):
    """Classify the selection reached by ``W`` ``(d, d)`` as global, local or none.

    A selection counts only once the softmax has (nearly) committed to it: every example must put
    at least ``mass_threshold`` of its attention on one token; otherwise the kind is ``"none"``.
    """
    if not 0.0 < mass_threshold <= 1.0:
        raise ValueError(f"mass_threshold must lie in (0, 1]; got {mass_threshold!r}")
    probs = np.asarray(attention_probs(np.asarray(W), np.asarray(X), np.asarray(Z)))
    selection = probs.argmax(axis=1).astype(np.int32)
    mass = float(probs.max(axis=1).min())
    verdict = is_locally_optimal(X, Z, scores, selection, norm=norm)
    converged = mass >= mass_threshold
    kind = verdict.kind if converged else "none"
    return DetectedSelection(selection, mass, converged, kind, verdict)

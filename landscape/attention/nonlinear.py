"""Nonlinear heads and the general SVM equivalence (Tarzanagh et al., Transformers as SVMs, Sec 6).

With a nonlinear head ``h`` the loss may be minimised by *mixing* several tokens, so gradient
descent need not select one token per example. The general prediction: let ``O_i`` be the
tokens that keep a non-negligible softmax mass (above ``threshold``) at the end of training. Split
``W = W_fin + W_perp`` where ``W_fin`` lies in ``S_fin = span{(x_it - x_it') z_i^T : t, t' in O_i}``
(the directions that reweigh the selected tokens among themselves). Then ``W_fin`` converges to a
finite matrix, and ``W_perp`` grows in the direction of the general Att-SVM solution ``W_mm(O)``
(every selected token beats every unselected one by a margin, selected tokens tie; see
``att_svm`` with a boolean mask). ``compare_general_svm`` measures both predictions along a
trajectory: ``corr(W_perp(t), W_mm)`` should go to 1 and ``||W_fin(t)||`` should level off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from landscape.attention.svm import AttSVMSolution, att_svm, tie_projector
from landscape.attention.training import attention_probs
from landscape.data.tokens import check_token_inputs, constraint_rows

__all__ = [
    "relu_head",
    "random_relu_head",
    "selected_set",
    "GeneralSVMComparison",
    "compare_general_svm",
]


def relu_head(U, a) -> Callable[[jax.Array], jax.Array]:
    """The two-layer head ``h(u) = a^T relu(U u)`` for ``U`` ``(m, d)`` and ``a`` ``(m,)``."""
    return lambda u: jax.nn.relu(u @ U.T) @ a


def random_relu_head(key, d: int, width: int, dtype=None):
    """Random ``(U, a)``: rows of ``U`` on the unit sphere, ``a`` uniform signs / sqrt(width)."""
    dtype = dtype or jnp.result_type(float)
    ku, ka = jax.random.split(key)
    U = jax.random.normal(ku, (width, d), dtype)
    U = U / jnp.linalg.norm(U, axis=1, keepdims=True)
    a = jnp.where(jax.random.bernoulli(ka, 0.5, (width,)), 1.0, -1.0).astype(dtype)
    return U, a / np.sqrt(width)


def selected_set(W, X, Z, threshold: float = 1e-3) -> np.ndarray:
    """``(n, T)`` bool: tokens whose softmax weight under ``W`` exceeds ``threshold``."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1); got {threshold!r}")
    return np.asarray(attention_probs(jnp.asarray(W), X, Z) > threshold)


class GeneralSVMComparison(NamedTuple):
    """The general SVM prediction against a trajectory.

    Fields:
      selected: ``(n, T)`` bool, the token sets ``O_i``.
      solution: ``AttSVMSolution`` of the general (mask) Att-SVM, ``W`` NaN if infeasible.
      corr_perp: ``(R,)`` ``corr(W_perp(t), W_mm)``.
      corr_full: ``(R,)`` ``corr(W(t), W_mm)``.
      norm_fin: ``(R,)`` ``||W_fin(t)||_F``; norm_perp: ``(R,)`` ``||W_perp(t)||_F``.
      multi: number of examples with more than one (but not every) selected token.
      excluded: examples whose every token keeps mass (no constraint; left out of the SVM).
    """

    selected: np.ndarray
    solution: AttSVMSolution
    corr_perp: np.ndarray
    corr_full: np.ndarray
    norm_fin: np.ndarray
    norm_perp: np.ndarray
    multi: int
    excluded: int


def compare_general_svm(Ws, X, Z, selected) -> GeneralSVMComparison:
    """Compare records ``Ws`` ``(R, d, d)`` with the general Att-SVM of the mask ``selected``.

    Examples that keep every token are left out of the SVM (they constrain nothing).
    Host-level (float64 numpy). If the general SVM is infeasible the correlations are NaN and
    ``solution.feasible`` is False.
    """
    sel = np.asarray(selected, bool)
    keep = ~sel.all(axis=1)
    if not keep.any():
        raise ValueError("selected keeps every token of every example: there is no SVM to solve")
    X, Z, mask = check_token_inputs(np.asarray(X)[keep], np.asarray(Z)[keep], sel[keep],
                                    name_sel="selected")
    Ws = np.asarray(Ws, np.float64)
    R, d = Ws.shape[0], X.shape[2]
    if Ws.shape[1:] != (d, d):
        raise ValueError(f"Ws must have shape (R, d, d) with d = {d}; got {Ws.shape}")
    sol = att_svm(X, Z, mask, norm="fro", on_infeasible="flag")
    _, A_eq = constraint_rows(X.astype(np.float64), Z.astype(np.float64), mask)
    P = tie_projector(A_eq, d * d)
    flat = Ws.reshape(R, d * d)
    perp = flat @ P
    fin = flat - perp
    ref = sol.W.ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        corr_perp = perp @ ref / (np.linalg.norm(perp, axis=1) * np.linalg.norm(ref))
        corr_full = flat @ ref / (np.linalg.norm(flat, axis=1) * np.linalg.norm(ref))
    return GeneralSVMComparison(sel, sol, corr_perp, corr_full, np.linalg.norm(fin, axis=1),
                                np.linalg.norm(perp, axis=1), int((mask.sum(1) > 1).sum()),
                                int((~keep).sum()))

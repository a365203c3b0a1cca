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

How fast. Plain GD grows ``||W_perp||`` like ``log t`` (the unselected softmax mass decays like a
power of ``t``), so ``corr(W_perp(t), W_mm)`` approaches 1 at the slow ``1/log t`` rate of Soudry
et al. (2018): ``W_perp(t) = W_mm log(t)/c + r(t)`` with a bounded ``r``. The *growth direction*,
``W_perp(t) - W_perp(t')`` over a late window, removes ``r`` and is the sharp check
(``corr_growth``). Normalised GD, which makes ``||W||`` grow linearly when there is no finite part,
does not help here: its step stays ``eta`` in norm while ``W_fin`` needs a shrinking step to
settle, so ``W_fin`` keeps oscillating and ``||W_perp||`` again grows only like ``log t``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from landscape import reprs
from landscape.attention.constraints import check_token_inputs, constraint_rows, tie_projector
from landscape.attention.svm import AttSVMSolution, att_svm
from landscape.attention.training import attention_probs

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
      corr_growth: ``(R,)`` ``corr(W_perp(t_r) - W_perp(t_{r-lag}), W_mm)``, the direction in
        which ``W_perp`` grows over the last ``lag`` records (NaN for ``r < lag``).
      mass_out: ``(R,)`` the largest softmax mass any example puts outside its set ``O_i``
        (the prediction: decays to 0).
      mass_in_min: ``(R,)`` the smallest softmax weight of any selected token (the prediction:
        stays finite, set by ``W_fin``).
      multi: number of examples with more than one (but not every) selected token.
      excluded: examples whose every token keeps mass (no constraint; left out of the SVM).
    """

    selected: np.ndarray
    solution: AttSVMSolution
    corr_perp: np.ndarray
    corr_full: np.ndarray
    norm_fin: np.ndarray
    norm_perp: np.ndarray
    corr_growth: np.ndarray
    mass_out: np.ndarray
    mass_in_min: np.ndarray
    multi: int
    excluded: int

    @reprs.repr_method
    def __repr__(self) -> str:
        records = [f"{f}={reprs.ends(getattr(self, f))}"
                   for f in ("corr_perp", "corr_full", "mass_out", "mass_in_min", "norm_perp")]
        return reprs.line("GeneralSVMComparison", [
            f"feasible={self.solution.feasible}",
            f"objective={reprs.num(self.solution.objective)}",
            f"num_records={np.size(self.corr_perp)}", *records,
            f"multi={self.multi}", f"excluded={self.excluded}"])


def compare_general_svm(Ws, X, Z, selected, *, growth_lag: int = 1) -> GeneralSVMComparison:
    """Compare records ``Ws`` ``(R, d, d)`` with the general Att-SVM of the mask ``selected``.

    Examples that keep every token are left out of the SVM (they constrain nothing).
    ``growth_lag`` (records) sets the window of ``corr_growth``; with log-spaced records, the
    number of records per decade compares ``W_perp`` across a decade of ``t``.
    Host-level (float64 numpy). If the general SVM is infeasible the correlations are NaN and
    ``solution.feasible`` is False; if it is feasible but no solver solves it to tolerance,
    ``att_svm`` raises ``UnconvergedSVMError``.
    """
    if not isinstance(growth_lag, (int, np.integer)) or growth_lag < 1:
        raise ValueError(f"growth_lag must be an int >= 1; got {growth_lag!r}")
    sel = np.asarray(selected, bool)
    X_all, Z_all = X, Z  # every example, for the softmax masses (X, Z become the kept ones)
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
    growth = np.full_like(perp, np.nan)
    growth[growth_lag:] = perp[growth_lag:] - perp[:-growth_lag]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr_perp = perp @ ref / (np.linalg.norm(perp, axis=1) * np.linalg.norm(ref))
        corr_full = flat @ ref / (np.linalg.norm(flat, axis=1) * np.linalg.norm(ref))
        corr_growth = growth @ ref / (np.linalg.norm(growth, axis=1) * np.linalg.norm(ref))
    with jax.enable_x64(True):
        X64, Z64 = np.asarray(X_all, np.float64), np.asarray(Z_all, np.float64)
        probs = np.asarray(jax.vmap(lambda W: attention_probs(W, X64, Z64))(jnp.asarray(Ws)))
    mass_out = np.where(sel, 0.0, probs).sum(-1).max(-1)
    mass_in_min = np.where(sel, probs, np.inf).min(axis=(-2, -1))
    return GeneralSVMComparison(sel, sol, corr_perp, corr_full, np.linalg.norm(fin, axis=1),
                                np.linalg.norm(perp, axis=1), corr_growth, mass_out, mass_in_min,
                                int((mask.sum(1) > 1).sum()), int((~keep).sum()))

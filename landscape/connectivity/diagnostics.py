"""Ito, Yamada, Kumagai ("Analysis of linear mode connectivity via permutation-based weight
matching") diagnostics: what weight matching does and does not change.

* :func:`l2_distances`: ``||theta_A - theta_B||`` before and after alignment (weight matching
  barely reduces it);
* :func:`subspace_overlap`: per layer, the overlap of the top-``k`` left and right singular
  subspaces of A's and B's weight matrices, ``||U_A^T U_B||_F^2 / k`` in ``[0, 1]`` (1: the same
  subspace; about ``k / m`` for random subspaces of ``R^m``). Weight matching raises the
  overlap of the directions with large singular values. Conv kernels ``(..., c_in, c_out)``
  are reshaped to ``(prod(...) * c_in, c_out)``. SVDs in float64 on the host.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from landscape import reprs
from landscape import tree as T
from landscape.validate import check_models

__all__ = ["Overlap", "l2_distances", "subspace_overlap"]


def l2_distances(params_a, params_b, params_b_aligned) -> dict:
    """``{"before": ||A - B||, "after": ||A - pi(B)||, "norm_a": ||A||, "norm_b": ||B||}``."""
    check_models(params_a, params_b)
    check_models(params_a, params_b_aligned, "params_a", "params_b_aligned")
    return {"before": float(T.tree_norm(T.tree_sub(params_a, params_b))),
            "after": float(T.tree_norm(T.tree_sub(params_a, params_b_aligned))),
            "norm_a": float(T.tree_norm(params_a)), "norm_b": float(T.tree_norm(params_b))}


class Overlap(NamedTuple):
    """Per-layer singular-subspace overlaps: ``left``/``right`` ``(k,)`` overlap of the top-1..k
    subspaces (entry ``j`` uses the top ``j+1`` singular vectors), and the singular values
    ``sv_a``/``sv_b``."""

    left: np.ndarray
    right: np.ndarray
    sv_a: np.ndarray
    sv_b: np.ndarray

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.line("Overlap", [f"k={np.size(self.left)}"] + [
            f"{f}={reprs.trend(getattr(self, f))}" for f in self._fields])


def _overlaps(ua, ub, k):
    m = np.abs(ua[:, :k].T @ ub[:, :k]) ** 2
    return np.asarray([m[: j + 1, : j + 1].sum() / (j + 1) for j in range(k)])


def subspace_overlap(params_a, params_b, *, k: int = 8, min_ndim: int = 2) -> dict:
    """``{leaf key: Overlap}`` for every leaf with ``ndim >= min_ndim`` (weight matrices)."""
    check_models(params_a, params_b)
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    out = {}
    flat_b = dict(zip(*zip(*[(jax.tree_util.keystr(p), x) for p, x in
                             jax.tree_util.tree_flatten_with_path(params_b)[0]])))
    for path, wa in jax.tree_util.tree_flatten_with_path(params_a)[0]:
        if np.ndim(wa) < min_ndim:
            continue
        key = jax.tree_util.keystr(path)
        a = np.asarray(wa, np.float64).reshape(-1, np.shape(wa)[-1])
        b = np.asarray(flat_b[key], np.float64).reshape(a.shape)
        ua, sa, vat = np.linalg.svd(a, full_matrices=False)
        ub, sb, vbt = np.linalg.svd(b, full_matrices=False)
        kk = min(k, len(sa))
        out[key] = Overlap(_overlaps(ua, ub, kk), _overlaps(vat.T, vbt.T, kk), sa, sb)
    return out

"""Fira (``landscape.optim.fira``) and the SVD projector (``landscape.optim.projection``)
against the ``fira`` 1.0.2 reference (``FiraAdamW``), a NumPy transcription of the paper, and
the optax conventions.

Loading the reference: ``fira/fira_adamw.py`` imports ``transformers`` only for
``require_version("torch>=1.5.0")``; when ``transformers`` is not installed, a stub module
providing a no-op ``require_version`` is put in ``sys.modules`` for the import (and removed
after the test). The reference's ``GradientProjector.get_orthogonal_matrix`` is replaced by a
float64 SVD (the reference casts every gradient to float32 for its SVD, which would cap the
agreement near 1e-7); with ``align_signs`` it also gives each singular vector the sign of
``projection.fix_signs`` (largest-magnitude entry positive). The sign does not matter while
the basis is fixed (it cancels in ``P psi`` and in the norms), which the test without refresh
checks with the raw LAPACK signs; it matters after a refresh, because the Adam moments of ``R``
are carried over into the new basis.
"""

from __future__ import annotations

import _optim_conventions as conv
import _optim_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from landscape.optim.fira import fira
from landscape.optim.projection import fix_signs, projects_right, svd_projector

pytestmark = pytest.mark.single_dtype

SHAPES = {"w": (8, 6), "b": (6,), "c": (5, 4), "d": (3, 7)}
HP = dict(rank=2, update_proj_gap=50, alpha=0.5, b1=0.9, b2=0.999, eps=1e-6)
LR = 0.05
STEPS = 300


def _np_fix_signs(q):
    """Each column times the sign of its largest-magnitude entry (first on ties)."""
    pivot = q[np.argmax(np.abs(q), axis=0), np.arange(q.shape[1])]
    return q * np.where(pivot < 0, -1.0, 1.0)


def _reference(monkeypatch, align_signs: bool, **hp):
    torch, fira_adamw, projection = ref.import_fira(monkeypatch)

    def orthogonal_matrix(self, weights, rank, type):
        u, _, vh = torch.linalg.svd(weights, full_matrices=False)
        if type == "right":
            q = vh[:rank].T
        else:
            q = u[:, :rank]
        if align_signs:
            q = torch.as_tensor(_np_fix_signs(q.numpy()))
        return q.T.contiguous() if type == "right" else q

    monkeypatch.setattr(projection.GradientProjector, "get_orthogonal_matrix",
                        orthogonal_matrix)

    def make(params):
        groups = [{"params": [p for p in params if p.dim() != 2]},
                  {"params": [p for p in params if p.dim() == 2], "rank": hp["rank"],
                   "update_proj_gap": hp["update_proj_gap"], "alpha": hp["alpha"],
                   "proj_type": "std"}]
        return fira_adamw.AdamW(groups, lr=LR, betas=(hp["b1"], hp["b2"]), eps=hp["eps"],
                                weight_decay=0.0, no_deprecation_warning=True)

    return make


def _numpy_fira(params, grads, *, rank, update_proj_gap, alpha, b1, b2, eps, gamma=1.01,
                scaling="column"):
    """The paper's update in NumPy (Alg. 1 of Chen et al. with GaLore's projector): returns
    the trajectory and how many times the norm-growth limiter acted."""
    p = {k: v.copy() for k, v in params.items()}
    st = {k: {"m": 0.0, "v": 0.0, "q": None, "prev": None} for k in p}
    out, limited = [], 0
    for t, g in enumerate(grads, 1):
        bias = np.sqrt(1 - b2**t) / (1 - b1**t)
        for k, G in g.items():
            s = st[k]
            if G.ndim != 2:
                s["m"] = b1 * s["m"] + (1 - b1) * G
                s["v"] = b2 * s["v"] + (1 - b2) * G * G
                p[k] = p[k] - LR * bias * s["m"] / (np.sqrt(s["v"]) + eps)
                continue
            right = G.shape[0] >= G.shape[1]
            if (t - 1) % update_proj_gap == 0:
                u, _, vt = np.linalg.svd(G, full_matrices=False)
                r = min(rank, *G.shape)
                s["q"] = _np_fix_signs(vt[:r].T if right else u[:, :r])
            q = s["q"]
            R = G @ q if right else q.T @ G
            back = (lambda X, q=q: X @ q.T) if right else (lambda X, q=q: q @ X)
            s["m"] = b1 * s["m"] + (1 - b1) * R
            s["v"] = b2 * s["v"] + (1 - b2) * R * R
            psi = s["m"] / (np.sqrt(s["v"]) + eps)
            if scaling == "matrix":
                phi = np.linalg.norm(psi) / (np.linalg.norm(R) + 1e-8)
            else:
                ax = 0 if R.shape[0] < R.shape[1] else 1
                phi = (np.linalg.norm(psi, axis=ax, keepdims=True)
                       / (np.linalg.norm(R, axis=ax, keepdims=True) + 1e-8))
            S = phi * (G - alpha * back(R))
            norm = np.linalg.norm(S)
            if s["prev"] is not None and norm / (s["prev"] + 1e-8) > gamma:
                S = S * gamma * (s["prev"] + 1e-8) / norm
                limited += 1
            s["prev"] = np.linalg.norm(S)
            p[k] = p[k] - LR * bias * (alpha * back(psi) + S)
        out.append({k: v.copy() for k, v in p.items()})
    return out, limited


def test_matches_reference_with_refreshes(monkeypatch):
    """300 steps, rank 2, basis refreshed every 50 steps (signs aligned): rel. error <= 1e-10.
    The NumPy transcription of the paper (column-wise factor) agrees too, and the limiter
    acted in it."""
    grads = ref.gradients(SHAPES, STEPS, spikes=((120, 20.0),))
    params = ref.initial_params(SHAPES)
    ours = ref.optax_trajectory(fira(LR, **HP), params, grads)
    theirs = ref.torch_trajectory(_reference(monkeypatch, True, **HP), params, grads)
    err = ref.max_relative_error(ours, theirs)
    assert err <= 1e-10, err
    oracle, limited = _numpy_fira(params, grads, **HP)
    assert ref.max_relative_error(oracle, theirs) <= 1e-10
    assert limited > 10


def test_matches_reference_raw_signs_fixed_basis(monkeypatch):
    """One basis for all 150 steps: the reference with LAPACK's own signs agrees."""
    hp = {**HP, "update_proj_gap": 1000}
    grads = ref.gradients(SHAPES, 150, seed=7)
    params = ref.initial_params(SHAPES)
    ours = ref.optax_trajectory(fira(LR, **hp), params, grads)
    theirs = ref.torch_trajectory(_reference(monkeypatch, False, **hp), params, grads)
    err = ref.max_relative_error(ours, theirs)
    assert err <= 1e-10, err


def test_matrix_scaling_matches_paper_oracle():
    """``scaling="matrix"`` (one factor per matrix, the paper's equation) against NumPy."""
    grads = ref.gradients(SHAPES, 120, seed=9)
    params = ref.initial_params(SHAPES)
    ours = ref.optax_trajectory(fira(LR, **HP, scaling="matrix"), params, grads)
    oracle, _ = _numpy_fira(params, grads, **HP, scaling="matrix")
    assert ref.max_relative_error(ours, oracle) <= 1e-10
    column, _ = _numpy_fira(params, grads[:5], **HP)
    assert not np.allclose(column[4]["w"], oracle[4]["w"])


@pytest.mark.parametrize("shape, right", [((8, 6), True), ((3, 7), False)])
def test_svd_projector(shape, right):
    """``P R`` is the projection of ``G`` on its top-r singular vectors of the smaller side;
    the basis is orthonormal, sign-fixed, and has the shape ``init`` promises."""
    g = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    proj = svd_projector(2)
    q = proj.update(g)
    assert projects_right(shape, "std") == right
    assert q.shape == proj.init(g).shape == ((shape[1] if right else shape[0]), 2)
    np.testing.assert_allclose(q.T @ q, np.eye(2), atol=1e-5)
    assert np.all(np.take_along_axis(q, np.argmax(np.abs(q), 0)[None], 0) > 0)
    np.testing.assert_allclose(fix_signs(-g), _np_fix_signs(-np.asarray(g)))
    low = proj.project(g, q)
    assert low.shape == proj.low_rank_shape(shape)
    u, s, vt = np.linalg.svd(np.asarray(g, np.float64), full_matrices=False)
    want = g @ vt[:2].T @ vt[:2] if right else u[:, :2] @ u[:, :2].T @ g
    np.testing.assert_allclose(proj.project_back(low, q, shape), want, atol=1e-5)
    with pytest.raises(ValueError, match="side"):
        svd_projector(2, side="up")
    with pytest.raises(ValueError, match="rank"):
        svd_projector(0)


def _fira_rank2(learning_rate, update_proj_gap, alpha, b1, b2, eps, gamma, weight_decay):
    return fira(learning_rate, rank=2, update_proj_gap=update_proj_gap, alpha=alpha, b1=b1,
                b2=b2, eps=eps, gamma=gamma, weight_decay=weight_decay)


def test_optax_conventions():
    conv.check_convergence(fira(0.05, rank=1, update_proj_gap=20),
                           rosenbrock_tx=fira(0.02, rank=1))
    # inject_hyperparams and MultiSteps in float64: the SVD basis amplifies float32 rounding
    # (of a traced vs constant hyperparameter, of MultiSteps' running mean) by the inverse gap
    # between singular values, beyond the checks' float32 tolerances
    with jax.enable_x64(True):
        conv.check_inject_hyperparams(
            _fira_rank2, dict(learning_rate=0.1, update_proj_gap=3, alpha=0.5, b1=0.8, b2=0.99,
                              eps=1e-6, gamma=1.05, weight_decay=0.01), SHAPES)
        conv.check_multisteps(fira(0.1, rank=2, update_proj_gap=2), SHAPES)
    tx = fira(0.1, rank=2, update_proj_gap=2)
    conv.check_dtypes_and_state(tx, SHAPES)
    conv.check_weight_decay_mask(lambda **a: fira(0.1, rank=2, update_proj_gap=2, **a), {},
                                 SHAPES)
    with pytest.raises(ValueError, match="static"):
        jax.jit(lambda r: fira(0.1, rank=r).init({"w": jnp.ones((3, 2))}))(2)

"""The DCT projector (``landscape.optim.dct.dct_projector``, Modoranu et al. 2025) on its own,
inside Fira (``fira(..., projector=dct_projector(r))``) and inside FRUGAL
(``projection="dct"``).

Independent references: the DCT matrix is built with ``scipy.fft.dct(norm="ortho")`` (not our
cosine formula) and the ranking with NumPy. Fira: the authors' ``fira`` 1.0.2 ``FiraAdamW``
with its ``GradientProjector.get_orthogonal_matrix`` replaced by a DCT selection written in
torch in this file (the scipy matrix, ``torch.topk`` of the l1 norms of ``G Q`` columns /
``Q^T G`` rows, returned in the reference's layout: ``Q[:, I]^T`` on the right, ``Q[:, I]`` on
the left). ``fira/fira_adamw.py`` imports ``transformers`` only for ``require_version``; a stub
with a no-op ``require_version`` stands in for it during the test when ``transformers`` is
absent (as in ``tests/test_optim_fira.py``). FRUGAL with a DCT subspace exists in no
reference code, so a NumPy transcription of FRUGAL's update (``landscape.optim.frugal``'s
docstring, the same rule the FRUGAL oracle of ``tests/test_optim_frugal.py`` checks against
the authors' code) with the DCT selection is the oracle.
"""

from __future__ import annotations

import _optim_conventions as conv
import _optim_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft

from landscape.optim.dct import dct_projector
from landscape.optim.fira import fira, scale_by_fira
from landscape.optim.frugal import frugal
from landscape.optim.projection import Projector

pytestmark = pytest.mark.single_dtype

SHAPES = {"w": (8, 6), "b": (6,), "c": (5, 4), "d": (3, 7)}
HP = dict(rank=3, update_proj_gap=30, alpha=0.5, b1=0.9, b2=0.999, eps=1e-6)
LR = 0.05


def _q(size, basis="dct2"):
    """Orthonormal DCT matrix from scipy: ``x @ q = dct(x)`` (columns: DCT-II vectors)."""
    q = scipy.fft.dct(np.eye(size), norm="ortho", axis=-1)
    return q if basis == "dct2" else q.T


def _np_select(g, rank, right, basis="dct2", p=1.0):
    """Indices of the ``rank`` largest ``sum |.|^p`` columns of ``G Q`` (right) / rows of
    ``Q^T G`` (left), largest first, and the matrix ``Q``."""
    q = _q(g.shape[1] if right else g.shape[0], basis)
    s = g @ q if right else q.T @ g
    norms = np.sum(np.abs(s) ** p, axis=0 if right else 1)
    return np.argsort(-norms, kind="stable")[:rank], q


@pytest.mark.parametrize("shape, side, right, basis, p", [
    ((9, 6), "std", True, "dct2", 1.0), ((5, 8), "std", False, "dct2", 1.0),
    ((9, 6), "left", False, "dct3", 2.0), ((5, 8), "reverse_std", True, "dct2", 1.0)])
def test_projector_against_scipy(shape, side, right, basis, p):
    """Indices, ``project`` and ``project_back`` equal the explicit orthogonal projection on
    the chosen scipy DCT vectors (also on the long side, where ``Q`` is the larger one)."""
    with jax.enable_x64(True):
        g = np.random.default_rng(sum(shape)).normal(size=shape)
        proj = dct_projector(3, basis=basis, ell_norm=p, side=side)
        idx = proj.update(jnp.asarray(g))
        want, q = _np_select(g, 3, right, basis, p)
        np.testing.assert_array_equal(idx, want)
        init = proj.init(jnp.asarray(g))
        assert idx.dtype == init.dtype == jnp.int32 and idx.shape == init.shape == (3,)
        low = proj.project(jnp.asarray(g), idx)
        qi = q[:, want]
        np.testing.assert_allclose(low, g @ qi if right else qi.T @ g, atol=1e-13)
        assert low.shape == proj.low_rank_shape(shape)
        back = np.asarray(proj.project_back(low, idx, shape))
        np.testing.assert_allclose(back, g @ qi @ qi.T if right else qi @ qi.T @ g, atol=1e-13)
        again = proj.project_back(proj.project(jnp.asarray(back), idx), idx, shape)
        np.testing.assert_allclose(again, back, atol=1e-13)  # a projection: idempotent
        assert proj.update(jnp.asarray(g, jnp.bfloat16)).shape == (3,)


def test_projector_full_rank_and_errors():
    """At ``r = min(m, n)`` the projector is an orthogonal change of coordinates (norm kept,
    exact round trip); a rank above ``min(m, n)`` is clipped as in ``svd_projector``."""
    with jax.enable_x64(True):
        for shape in ((7, 4), (4, 7)):
            g = jnp.asarray(np.random.default_rng(1).normal(size=shape))
            proj = dct_projector(10)
            idx = proj.update(g)
            assert sorted(np.asarray(idx).tolist()) == list(range(4))
            low = proj.project(g, idx)
            np.testing.assert_allclose(jnp.linalg.norm(low), jnp.linalg.norm(g), rtol=1e-14)
            np.testing.assert_allclose(proj.project_back(low, idx, shape), g, atol=1e-13)
    for bad, match in ((dict(rank=0), "rank"), (dict(rank=2.0), "rank"),
                       (dict(rank=2, basis="dct4"), "basis"), (dict(rank=2, side="up"), "side"),
                       (dict(rank=2, ell_norm=0.0), "ell_norm")):
        with pytest.raises(ValueError, match=match):
            dct_projector(**bad)


def _fira_reference(monkeypatch):
    """``FiraAdamW`` with the DCT selection in place of its SVD."""
    torch, fira_adamw, projection = ref.import_fira(monkeypatch)

    def dct_matrix(self, weights, rank, type):
        right = type == "right"
        q = torch.as_tensor(_q(weights.shape[1] if right else weights.shape[0]))
        s = weights @ q if right else q.T @ weights
        idx = torch.topk(s.abs().sum(dim=0 if right else 1), rank, sorted=True).indices
        return q[:, idx].T.contiguous() if right else q[:, idx]

    monkeypatch.setattr(projection.GradientProjector, "get_orthogonal_matrix", dct_matrix)

    def make(params):
        groups = [{"params": [p for p in params if p.dim() != 2]},
                  {"params": [p for p in params if p.dim() == 2], "rank": HP["rank"],
                   "update_proj_gap": HP["update_proj_gap"], "alpha": HP["alpha"],
                   "proj_type": "std"}]
        return fira_adamw.AdamW(groups, lr=LR, betas=(HP["b1"], HP["b2"]), eps=HP["eps"],
                                weight_decay=0.0, no_deprecation_warning=True)

    return make


def test_fira_with_dct_matches_reference(monkeypatch):
    """120 steps (subspace refreshed every 30, a gradient spike at step 70 for the limiter):
    Fira with ``dct_projector(3)`` equals the reference Fira with a DCT selection to 1e-10."""
    grads = ref.gradients(SHAPES, 120, seed=5, spikes=((70, 20.0),))
    params = ref.initial_params(SHAPES)
    ours = ref.optax_trajectory(fira(LR, **HP, projector=dct_projector(HP["rank"])),
                                params, grads)
    theirs = ref.torch_trajectory(_fira_reference(monkeypatch), params, grads)
    err = ref.max_relative_error(ours, theirs)
    print(f"fira + dct_projector vs FiraAdamW with a DCT selection: {err:.2e}")
    assert err <= 1e-10, err


def _identity_projector():
    """Full-rank projector with ``R = G`` (no coordinates change), for the invariance."""
    return Projector(init=lambda p: jnp.zeros((0,), jnp.int32),
                     update=lambda g: jnp.zeros((0,), jnp.int32),
                     project=lambda g, b: g, project_back=lambda r, b, shape: r,
                     low_rank_shape=lambda shape: tuple(shape))


def _updates(tx, grads):
    with jax.enable_x64(True):
        state = tx.init({k: jnp.asarray(v) for k, v in grads[0].items()})
        step = jax.jit(tx.update)
        out = []
        for g in grads:
            u, state = step({k: jnp.asarray(v) for k, v in g.items()}, state)
            out.append({k: np.asarray(v) for k, v in u.items()})
        return out


def test_fira_full_rank_dct_is_a_change_of_coordinates():
    """At full rank (one subspace for all 120 steps), Fira's update with the DCT projector,
    rotated into the chosen DCT coordinates (``d Q_I`` right, ``Q_I^T d`` left; ``I`` from the
    first gradient, computed in NumPy), equals Fira with the identity projector fed the
    rotated gradients: the DCT projector is only an orthogonal change of coordinates."""
    hp = {**HP, "rank": 7, "update_proj_gap": 1000}
    grads = ref.gradients(SHAPES, 120, seed=11, spikes=((60, 10.0),))
    frames = {}
    for k, g in grads[0].items():
        if g.ndim == 2:
            right = g.shape[0] >= g.shape[1]
            idx, q = _np_select(g, min(g.shape), right)
            frames[k] = (right, q[:, idx])

    def rotate(tree, inverse=False):
        out = dict(tree)
        for k, (right, f) in frames.items():
            f = f.T if inverse else f
            out[k] = tree[k] @ f if right else f.T @ tree[k]
        return out

    dct = _updates(scale_by_fira(**hp, projector=dct_projector(7)), grads)
    plain = _updates(scale_by_fira(**hp, projector=_identity_projector()),
                     [rotate(g) for g in grads])
    err = ref.max_relative_error([rotate(d) for d in dct], plain)
    print(f"fira full-rank dct vs identity in dct coordinates: {err:.2e}")
    assert err <= 1e-12, err
    back = [rotate(p, inverse=True) for p in plain]  # and the rotation is not a no-op
    assert ref.max_relative_error(back, dct) <= 1e-12
    assert not np.allclose(plain[5]["w"], dct[5]["w"])


def _numpy_frugal_dct(params, grads, *, lr, wd, density, gap, reset, s, s_free,
                      b1=0.9, b2=0.999, eps=1e-8):
    """FRUGAL (state-full Adam on the DCT subspace, signSGD on the rest) in NumPy."""
    p = {k: v.copy() for k, v in params.items()}
    st = {k: {"m": 0.0, "v": 0.0} for k in p}
    out = []
    for t, g in enumerate(grads):
        for k, G in g.items():
            x = st[k]
            if G.ndim != 2:
                c, low = t + 1, G
            else:
                right = G.shape[0] >= G.shape[1]
                if t % gap == 0:
                    idx, q = _np_select(G, round(min(G.shape) * density), right)
                    x["f"] = q[:, idx]
                    if reset:
                        x["m"], x["v"] = 0.0, 0.0
                f = x["f"]
                c = t % gap + 1 if reset else t + 1
                low = G @ f if right else f.T @ G
                up = (lambda a, f=f: a @ f.T) if right else (lambda a, f=f: f @ a)
            x["m"] = b1 * x["m"] + (1 - b1) * low
            x["v"] = b2 * x["v"] + (1 - b2) * low * low
            adam = x["m"] / (1 - b1**c) / (np.sqrt(x["v"] / (1 - b2**c)) + eps)
            if G.ndim != 2:
                d = adam
            else:
                d = s * (up(adam) + s_free * np.sign(G - up(low)))
            p[k] = p[k] - lr * (d + wd * p[k])
        out.append({k: v.copy() for k, v in p.items()})
    return out


@pytest.mark.parametrize("reset", [True, False])
def test_frugal_dct_matches_numpy(reset):
    """FRUGAL with ``projection="dct"`` (density 0.5, refresh every 25 steps, 150 steps)
    against the NumPy transcription; the moments are reset or carried at refreshes.

    The DCT sizes are powers of two: for sizes such as 3 or 6 some DCT vectors have entries
    that are zero in exact arithmetic (``cos(pi/2)``), so the residual ``G - P G`` has entries
    that are only rounding noise, and signSGD's sign of that noise differs between any two
    implementations (ours computes ``cos(pi/2) = 6e-17``, scipy an exact 0)."""
    kw = dict(lr=1e-2, wd=0.1, density=0.5, gap=25, reset=reset, s=1.5, s_free=0.5)
    shapes = {"w": (8, 4), "b": (6,), "c": (2, 5), "e": (4, 8)}
    grads = ref.gradients(shapes, 150, seed=2)
    params = ref.initial_params(shapes)
    tx = frugal(kw["lr"], density=0.5, update_gap=25, projection="dct",
                inactive_lr_scale=0.5, proj_params_lr_scale=1.5, reset_statistics=reset,
                weight_decay=0.1)
    err = ref.max_relative_error(ref.optax_trajectory(tx, params, grads),
                                 _numpy_frugal_dct(params, grads, **kw))
    print(f"frugal dct (reset={reset}) vs numpy: {err:.2e}")
    assert err <= 1e-10, err


def test_conventions_with_dct():
    """Both optimizers keep dtypes, state shapes and the int32 indices in bfloat16/float32."""
    shapes = {"w": (5, 4), "b": (4,), "c": (3, 6)}
    conv.check_dtypes_and_state(fira(0.1, update_proj_gap=2, projector=dct_projector(2)),
                                shapes)
    conv.check_dtypes_and_state(frugal(0.1, density=0.5, update_gap=2, projection="dct"),
                                shapes)
    conv.check_convergence(fira(0.05, update_proj_gap=20, projector=dct_projector(1)),
                           rosenbrock_tx=fira(0.02, projector=dct_projector(1)))

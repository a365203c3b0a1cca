"""Tests of ``landscape.optim.dct``: the DCT projector and DCT-AdamW (Modoranu et al. 2025).

Reference: ``ista-daslab-optimizers`` 1.1.15 (``DCTAdamW``). Its package ``__init__`` imports
``wandb`` and CUDA-only kernels, so the test registers a bare stub package
``ista_daslab_optimizers`` (with the installed directory as ``__path__``) and imports only
``fft_low_rank.dct_adamw`` and what it imports (``utils.dct``, ``utils.quantizers``,
``utils.global_cache``, ``fft_low_rank.fft_projector``): all pure torch, they run on CPU.
Two documented patches of the reference for float64 equality: its ``dct3_matrix`` is
computed in float32 and cast, so it is replaced by the same matrix in float64 (built with
``scipy.fft.dct``); its ``torch.topk(sorted=False)`` returns the indices in an unspecified
order (which fixes the positions of the moment columns), so it runs with ``sorted=True``,
the order our ``lax.top_k`` uses; its FFT path (``sim_type="makhoul"``) builds the twiddle
factors in torch's default dtype (float32), so that test sets the default to float64 while
the reference runs (and clears its cache of twiddles).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import _optim_conventions as conv
import _optim_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft

import landscape.optim.dct as D

pytestmark = pytest.mark.single_dtype

SHAPES = {"w": (8, 6), "b": (6,), "c": (6, 9)}  # the reference shares one Q: equal min(n, m)


def test_basis_is_orthonormal_dct2():
    with jax.enable_x64(True):
        for n in (1, 5, 8):
            q = np.asarray(D.dct_basis(n, jnp.float64))
            np.testing.assert_allclose(q.T @ q, np.eye(n), atol=1e-14)
            x = np.random.default_rng(n).normal(size=(3, n))
            np.testing.assert_allclose(x @ q, scipy.fft.dct(x, norm="ortho", axis=-1),
                                       atol=1e-13)
            np.testing.assert_allclose(np.asarray(D.dct_basis(n, jnp.float64, "dct3")), q.T)
    with pytest.raises(ValueError, match="basis"):
        D.dct_basis(4, basis="dct4")


def test_projector_selects_largest_l1_and_round_trips():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        for shape in ((9, 6), (5, 8)):
            g = jnp.asarray(rng.normal(size=shape))
            side = D.dct_side(shape)
            q = scipy.fft.dct(np.eye(min(shape)), norm="ortho", axis=-1)  # x @ q = dct(x)
            s = np.asarray(g) @ q if side == "right" else q.T @ np.asarray(g)
            l1 = np.abs(s).sum(axis=0 if side == "right" else 1)
            idx = np.asarray(D.dct_update(g, 3))
            np.testing.assert_array_equal(idx, np.argsort(-l1)[:3])
            r = D.dct_project(g, idx)
            assert r.shape == ((shape[0], 3) if side == "right" else (3, shape[1]))
            qr = q[:, idx]
            want = np.asarray(g) @ qr @ qr.T if side == "right" else qr @ qr.T @ np.asarray(g)
            np.testing.assert_allclose(D.dct_project_back(r, idx, shape), want, atol=1e-13)
            full = D.dct_update(g, min(shape))
            np.testing.assert_allclose(D.dct_project_back(D.dct_project(g, full), full, shape),
                                       g, atol=1e-13)
        with pytest.raises(ValueError, match="rank"):
            D.dct_init((4, 3), 4)


def _projection_errors(rank=6, n=40, m=32, trials=20):
    """Relative Frobenius errors ``|G - P(G)| / |G|`` of rank-``rank`` projections (SVD,
    DCT, mean of random orthonormal frames) of ``G = U diag(0.8^i) V^T``."""
    rng = np.random.default_rng(1)
    u = np.linalg.qr(rng.normal(size=(n, m)))[0]
    v = np.linalg.qr(rng.normal(size=(m, m)))[0]
    s = 0.8 ** np.arange(m)
    g = (u * s) @ v.T
    svd = np.sqrt(np.sum(s[rank:] ** 2) / np.sum(s**2))
    with jax.enable_x64(True):
        idx = D.dct_update(jnp.asarray(g), rank)
        back = np.asarray(D.dct_project_back(D.dct_project(jnp.asarray(g), idx), idx, g.shape))
    dct = np.linalg.norm(g - back) / np.linalg.norm(g)
    rand = np.mean([np.linalg.norm(g - g @ f @ f.T) / np.linalg.norm(g) for f in
                    (np.linalg.qr(rng.normal(size=(m, rank)))[0] for _ in range(trials))])
    return svd, dct, rand


def test_projection_error_between_svd_and_random():
    svd, dct, rand = _projection_errors()
    print(f"projection error rank 6 of 40x32, s_i = 0.8^i: svd {svd:.4f} dct {dct:.4f} "
          f"random {rand:.4f}")
    assert svd < dct < rand


@pytest.fixture(scope="module")
def reference_dct_adamw():
    torch = pytest.importorskip("torch")
    spec = importlib.util.find_spec("ista_daslab_optimizers")
    if spec is None:
        pytest.skip("ista-daslab-optimizers is not installed")
    added = [k for k in ("ista_daslab_optimizers",) if k not in sys.modules]
    if added:
        stub = types.ModuleType("ista_daslab_optimizers")
        stub.__path__ = list(spec.submodule_search_locations)
        sys.modules["ista_daslab_optimizers"] = stub
    try:
        mod = importlib.import_module("ista_daslab_optimizers.fft_low_rank.dct_adamw")
    finally:
        for k in added:
            sys.modules.pop(k, None)

    def dct3_float64(n, dtype, device):  # the reference's matrix (rows: DCT-II vectors)
        c = scipy.fft.dct(np.eye(n), norm="ortho", axis=0)
        return torch.tensor(c, dtype=dtype, device=device)

    mod.dct3_matrix = dct3_float64
    return torch, mod


@pytest.mark.parametrize("sim_type,gap,rotate", [("matmul", 1, False), ("makhoul", 7, False),
                                                 ("matmul", 7, True)])
def test_matches_reference(reference_dct_adamw, monkeypatch, sim_type, gap, rotate):
    torch, mod = reference_dct_adamw
    topk = torch.topk
    monkeypatch.setattr(torch, "topk", lambda input, k, sorted=True, **kw: topk(
        input, k, sorted=True, **kw))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the FFT path's twiddles use the default dtype
    monkeypatch.setattr(mod.FFTLowRankProjector.__init__.__globals__["GlobalCache"],
                        "_instance", None)
    lr, wd, steps = 1e-2, 0.1, 300
    grads = ref.gradients(SHAPES, steps)
    params = ref.initial_params(SHAPES)
    try:
        theirs = ref.torch_trajectory(lambda ps: mod.DCTAdamW(
            ps, lr=lr, weight_decay=wd, rank=3, proj="dct", update_proj_gap=gap,
            rotate_subspace=rotate, sim_type=sim_type), params, grads)
    finally:
        torch.set_default_dtype(default)
    ours = ref.optax_trajectory(D.dct_adamw(
        lr, rank=3, update_proj_gap=gap, weight_decay=wd, rotate_subspace=rotate,
        basis="dct3" if sim_type == "matmul" else "dct2"), params, grads)
    err = ref.max_relative_error(ours, theirs)
    print(f"dct_adamw vs DCTAdamW({sim_type}, gap={gap}, rotate={rotate}): {err:.2e}")
    assert err <= 1e-10


def _factory(learning_rate, b1, b2, eps, weight_decay):
    return D.dct_adamw(learning_rate, rank=2, update_proj_gap=3, b1=b1, b2=b2, eps=eps,
                       weight_decay=weight_decay)


def test_conventions():
    conv.check_convergence(D.dct_adamw(0.05, rank=2, update_proj_gap=5))
    shapes = {"w": (5, 4), "b": (4,), "c": (3, 6)}
    tx = D.dct_adamw(0.1, rank=2, update_proj_gap=3)
    conv.check_dtypes_and_state(tx, shapes)
    conv.check_multisteps(tx, shapes)
    conv.check_inject_hyperparams(_factory, dict(learning_rate=0.1, b1=0.9, b2=0.99, eps=1e-8,
                                                 weight_decay=0.01), shapes, rtol=1e-5)
    conv.check_weight_decay_mask(lambda **kw: D.dct_adamw(0.1, rank=2, **kw), {}, shapes)
    with pytest.raises(TypeError, match="static_args"):
        D.scale_by_dct_adamw(rank=2.0)

"""M-FAC (``landscape.optim.mfac``) against dense oracles and the authors' code.

References:
- ``ista_daslab_optimizers`` 1.1.15 (``DenseMFAC``, ``DenseCoreMFAC``, pure-PyTorch path on
  CPU). Its package ``__init__`` and ``tools.py`` import ``wandb``, ``gpustat`` and
  ``ista_daslab_cuda_tools``, none of which the optimizer uses on CPU: the test puts empty stub
  modules (and a bare parent package that skips the package ``__init__``) into ``sys.modules``
  only while importing ``dense_mfac``, then removes them. ``DenseMFAC`` hard-codes a float32
  window (``torch.float``); the test overrides only ``_create_hinv`` to make it float64. Its
  ``setup`` calls ``torch.lu(A, pivot=False)``, which PyTorch implements only on CUDA: on CPU
  the reference module's ``torch`` is a proxy whose ``lu`` is a plain Doolittle loop, and its
  ``nn.parallel.parallel_apply`` (one call per GPU shard; needs an accelerator) calls the
  functions in turn.
- The original ``MFAC`` optimizer (github.com/IST-DASLab/M-FAC, ``optim.py``, not on PyPI)
  adds momentum and an L2 term to ``DenseCoreMFAC``'s product; its five-line ``step`` is
  transcribed here around the installed ``DenseCoreMFAC``.
- Dense oracles: ``np.linalg.solve`` with ``damp I + G^T G / m`` and the sequential
  Sherman-Morrison inverse (the reference repository's ``HInvSlow``), and the paper's
  recurrences for ``D`` and ``B`` written as loops.
"""

from __future__ import annotations

import importlib
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _optim_conventions import (
    check_convergence,
    check_dtypes_and_state,
    check_inject_hyperparams,
    check_multisteps,
    check_weight_decay_mask,
)
from _optim_reference import (
    gradients,
    initial_params,
    max_relative_error,
    optax_trajectory,
    torch_trajectory,
)

from landscape.optim.mfac import mfac, mfac_coefficients, mfac_ihvp, scale_by_mfac

pytestmark = pytest.mark.single_dtype

SHAPES = {"w": (8, 6), "b": (6,), "c": (5, 4)}


def _dense_ihvp(G, v, damp, m):
    d = G.shape[1]
    return np.linalg.solve(damp * np.eye(d) + G.T @ G / m, v)


def _sherman_morrison(G, damp):
    m, d = G.shape
    H = np.eye(d) / damp
    for g in G:
        Hg = H @ g
        H -= np.outer(Hg, Hg) / (m + g @ Hg)
    return H


def _paper_coefficients(dots, damp):
    m = dots.shape[0]
    lam = 1.0 / damp
    D = np.zeros((m, m))
    B = np.zeros((m, m))
    for i in range(m):
        D[i, i:] = lam * dots[i, i:] - sum(D[k, i] * D[k, i:] / (m + D[k, k]) for k in range(i))
        B[i] = lam * np.eye(m)[i] - sum(D[k, i] / (m + D[k, k]) * B[k] for k in range(i))
    return D, m + np.diag(D), B


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("damp", [1e-1, 1e-5])
def test_ihvp_equals_dense_inverse_and_woodbury(damp):
    rng = np.random.default_rng(0)
    m, d = 6, 20
    G = rng.normal(size=(m, d))
    v = rng.normal(size=d)
    with jax.enable_x64(True):
        ours = mfac_ihvp(jnp.asarray(G), jnp.asarray(v), damp)
        coef = mfac_coefficients(jnp.asarray(G @ G.T), damp)
    assert _rel(ours, _dense_ihvp(G, v, damp, m)) < 1e-10
    assert _rel(ours, _sherman_morrison(G, damp) @ v) < 1e-10
    D, denom, B = _paper_coefficients(G @ G.T, damp)
    assert _rel(coef.d, D) < 1e-10 and _rel(coef.denom, denom) < 1e-10
    assert _rel(coef.b, B) < 1e-10


def test_ring_buffer_and_partial_window():
    """Gradient t goes to slot t mod m; before m gradients the empty slots are zero and the
    normalisation stays 1/m; every direction is the dense inverse of the window's Fisher."""
    m, damp, steps = 4, 0.3, 7
    shapes = {"a": (3, 2), "b": (4,)}
    grads = gradients(shapes, steps, seed=5)
    flat = [np.concatenate([g["a"].ravel(), g["b"]]) for g in grads]
    with jax.enable_x64(True):
        tx = scale_by_mfac(m, damp)
        state = tx.init({k: jnp.zeros(s) for k, s in shapes.items()})
        step = jax.jit(tx.update)
        for t, g in enumerate(grads):
            u, state = step({k: jnp.asarray(v) for k, v in g.items()}, state)
            window = np.stack(flat[max(0, t + 1 - m):t + 1])
            want = _dense_ihvp(window, flat[t], damp, m)
            got = np.concatenate([np.ravel(u["a"]), u["b"]])
            assert _rel(got, want) < 1e-10, t
        slots = [flat[t] for t in (4, 5, 6, 3)]  # slot s holds the latest t with t % 4 == s
        G = np.concatenate([np.reshape(state.grads["a"], (m, -1)), state.grads["b"]], axis=1)
        np.testing.assert_array_equal(G, np.stack(slots))
        np.testing.assert_allclose(state.dots, G @ G.T, rtol=1e-12)
        assert int(state.count) == steps
        # the state form of mfac_ihvp uses the window as it is
        v = {"a": jnp.ones((3, 2)), "b": jnp.arange(4.0)}
        got = mfac_ihvp(state, v, damp)
        want = _dense_ihvp(G, np.concatenate([np.ones(6), np.arange(4.0)]), damp, m)
        assert _rel(np.concatenate([np.ravel(got["a"]), got["b"]]), want) < 1e-10


def _load_dense_mfac():
    """``ista_daslab_optimizers.dense_mfac.dense_mfac`` imported behind temporary stubs."""
    pytest.importorskip("torch")
    spec = importlib.util.find_spec("ista_daslab_optimizers")
    if spec is None:
        pytest.skip("ista_daslab_optimizers is not installed")
    added = []
    parent = types.ModuleType("ista_daslab_optimizers")
    parent.__path__ = list(spec.submodule_search_locations)
    stubs = {"wandb": {"log": lambda *a, **k: None}, "gpustat": {},
             "ista_daslab_cuda_tools": {}, "ista_daslab_optimizers": None}
    for name, attrs in stubs.items():
        if name not in sys.modules:
            module = parent if attrs is None else types.ModuleType(name)
            for k, v in (attrs or {}).items():
                setattr(module, k, v)
            sys.modules[name] = module
            added.append(name)
    try:
        return importlib.import_module("ista_daslab_optimizers.dense_mfac.dense_mfac")
    finally:
        for name in list(sys.modules):
            if name in added or (name.startswith("ista_daslab_optimizers.")
                                 and "ista_daslab_optimizers" in added):
                del sys.modules[name]


def _lu_without_pivoting(A, pivot=False):
    """Doolittle LU packed as ``torch.lu`` returns it: PyTorch implements ``torch.lu(A,
    pivot=False)``, which ``DenseCoreMFAC.setup`` calls, only on CUDA."""
    import torch

    assert not pivot
    n = A.shape[0]
    U, L = A.clone(), torch.eye(n, dtype=A.dtype)
    for k in range(n - 1):
        L[k + 1:, k] = U[k + 1:, k] / U[k, k]
        U[k + 1:, :] -= L[k + 1:, k, None] * U[k, :]
    return torch.triu(U) + torch.tril(L, -1), torch.arange(1, n + 1, dtype=torch.int32)


@pytest.fixture(scope="module")
def ref():
    import torch

    mod = _load_dense_mfac()
    core_globals = mod.DenseCoreMFAC.setup.__globals__  # the reference module's namespace
    proxy = types.ModuleType("torch_with_cpu_lu")
    proxy.__getattr__ = lambda name: getattr(torch, name)
    proxy.lu = _lu_without_pivoting
    core_globals["torch"] = proxy
    # nn.parallel.parallel_apply (one call per GPU shard) needs an accelerator: run it inline
    nn = types.ModuleType("nn_sequential_apply")
    nn.parallel = types.SimpleNamespace(
        parallel_apply=lambda fns, inputs: [f(x) for f, x in zip(fns, inputs, strict=True)])
    core_globals["nn"] = nn

    class DenseMFAC64(mod.DenseMFAC):
        def _create_hinv(self):
            self.hinv = mod.DenseCoreMFAC(
                grads=torch.zeros((self.m, self.model_size), dtype=torch.float64),
                dev=self.device, gpus=mod.get_gpus(), damp=self.damp, create_G=self.create_G)

    class OriginalMFAC:
        """The original repository's ``MFAC.step`` (L2 term, momentum) around the core."""

        def __init__(self, ps, lr, momentum, weight_decay, ngrads, damp):
            self.ps, self.lr, self.mu, self.wd = ps, lr, momentum, weight_decay
            d = sum(p.numel() for p in ps)
            self.hinv = mod.DenseCoreMFAC(torch.zeros((ngrads, d), dtype=torch.float64),
                                          dev="cpu", gpus=["cpu"], damp=damp)
            self.v = torch.zeros(d, dtype=torch.float64)

        @torch.no_grad()
        def step(self):
            g = torch.cat([(p.grad + self.wd * p).reshape(-1) for p in self.ps])
            u = self.hinv.integrate_gradient_and_precondition(g, g)
            self.v = self.mu * self.v + (1 - self.mu) * u
            i = 0
            for p in self.ps:
                p.add_(self.v[i:i + p.numel()].reshape(p.shape), alpha=-self.lr)
                i += p.numel()

    return DenseMFAC64, OriginalMFAC


def test_equals_dense_mfac_reference(ref):
    """300 steps, m = 8 (the window wraps many times): ``DenseMFAC`` decays ``(1 - wd) w``,
    which is our decoupled decay with ``weight_decay = wd / lr``."""
    dense_mfac, _ = ref
    lr, wd, m, damp = 0.01, 1e-3, 8, 1e-3
    grads = gradients(SHAPES, 300, seed=0)
    params = initial_params(SHAPES)
    theirs = torch_trajectory(lambda ps: dense_mfac(ps, lr=lr, weight_decay=wd, ngrads=m,
                                                    damp=damp), params, grads)
    ours = optax_trajectory(mfac(lr, m, damp, weight_decay=wd / lr), params, grads)
    err = max_relative_error(ours, theirs)
    assert err < 1e-10, err


def test_equals_original_mfac_with_momentum_and_l2(ref):
    _, original = ref
    lr, wd, mu, m, damp = 0.02, 1e-2, 0.9, 8, 1e-2
    grads = gradients(SHAPES, 300, seed=1)
    params = initial_params(SHAPES, seed=7)
    theirs = torch_trajectory(lambda ps: original(ps, lr, mu, wd, m, damp), params, grads)
    tx = optax.chain(optax.add_decayed_weights(wd), scale_by_mfac(m, damp, mu),
                     optax.scale_by_learning_rate(lr))
    err = max_relative_error(optax_trajectory(tx, params, grads), theirs)
    assert err < 1e-10, err


def test_optax_conventions():
    kw = {"learning_rate": 0.1, "num_grads": 4, "damp": 0.5}
    check_convergence(mfac(0.1, 4, 0.5), rosenbrock_tx=mfac(2e-3, 4, 1.0))
    check_inject_hyperparams(
        lambda learning_rate, damp, momentum: mfac(learning_rate, 4, damp, momentum),
        {"learning_rate": 0.1, "damp": 0.5, "momentum": 0.5}, SHAPES)
    check_dtypes_and_state(mfac(**kw), SHAPES)
    check_multisteps(mfac(**kw), SHAPES)
    check_weight_decay_mask(mfac, kw, SHAPES)


def test_errors():
    with pytest.raises(ValueError, match="num_grads"):
        scale_by_mfac(0)
    with pytest.raises(ValueError, match="damp"):
        scale_by_mfac(4, damp=0.0)
    tx = optax.inject_hyperparams(mfac)(0.1, 4)  # num_grads traced: a clear error
    p = {"x": jnp.ones(2)}
    with pytest.raises(TypeError, match="static_args"):
        jax.jit(tx.update)(p, tx.init(p))
    with pytest.raises(ValueError, match="v must have shape"):
        mfac_ihvp(jnp.ones((3, 5)), jnp.ones(4), 0.1)

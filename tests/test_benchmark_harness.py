"""The curvature benchmark's harness: the JAX -> PyTorch weight port and the peer shims.

Needs the ``compare`` extra (torch, PyHessian, curvlinops); skipped cleanly without it. The
port must give the same loss, gradient and Hessian-vector product in both frameworks, in the
dtype of the run (float32, or float64 under ``JAX_ENABLE_X64=1``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _digits_models as dm  # noqa: E402
import _torch_models as tm  # noqa: E402

from landscape import curvature  # noqa: E402

X64 = jax.config.read("jax_enable_x64")
JDTYPE = jnp.float64 if X64 else jnp.float32
TDTYPE = torch.float64 if X64 else torch.float32
RTOL = 1e-10 if X64 else 2e-5


def _problem(name, n=16, seed=0):
    data = dm.digits(num_examples=n, seed=seed)
    params = dm.MODELS[name][0](jax.random.key(seed))
    params = jax.tree.map(lambda a: jnp.asarray(a, JDTYPE), params)
    jdata = {"x": jnp.asarray(data["x"], JDTYPE), "y": jnp.asarray(data["y"])}
    return data, params, jdata, dm.make_loss(dm.MODELS[name][1])


def _torch_problem(name, n=16):
    """``_problem`` plus the same weights and data in PyTorch: ``(..., model, x, y)``."""
    data, params, jdata, loss_fn = _problem(name, n)
    model = tm.torch_model(name, params, dtype=TDTYPE)
    return data, params, jdata, loss_fn, model, *tm.torch_data(data, dtype=TDTYPE)


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_port_gives_same_loss_gradient_and_hvp(name):
    _, params, jdata, loss_fn, model, x, y = _torch_problem(name)
    loss, g = jax.value_and_grad(loss_fn)(params, jdata)
    tparams = list(model.parameters())
    tloss = torch.nn.functional.cross_entropy(model(x), y)
    (tg,) = [torch.autograd.grad(tloss, tparams, create_graph=True)]
    gflat = tm.jax_flat_to_torch_flat(name, params, np.asarray(ravel_pytree(g)[0]))
    assert abs(float(loss) - tloss.item()) <= RTOL * abs(float(loss))
    assert _rel(np.concatenate([t.detach().numpy().ravel() for t in tg]), gflat) < RTOL
    # Hessian-vector product: ours (forward-over-reverse) vs torch double backward.
    v_tree = dm.MODELS[name][0](jax.random.key(7))
    v_tree = jax.tree.map(lambda a: jnp.asarray(a, JDTYPE), v_tree)
    hv = curvature.hvp(loss_fn, params, jdata, v_tree)
    tv = [torch.as_tensor(a, dtype=TDTYPE) for a in tm.port_tree(name, v_tree)]
    thv = torch.autograd.grad(tg, tparams, grad_outputs=tv)
    thv = np.concatenate([t.numpy().ravel() for t in thv])
    hflat = tm.jax_flat_to_torch_flat(name, params, np.asarray(ravel_pytree(hv)[0]))
    assert _rel(thv, hflat) < 10 * RTOL


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_flat_vector_maps_are_inverse_permutations(name):
    _, params, _, _ = _problem(name, n=4)
    flat, _ = ravel_pytree(params)
    v = np.random.default_rng(0).standard_normal(flat.size)
    perm = tm.permutation(name, params)
    np.testing.assert_array_equal(np.sort(perm), np.arange(flat.size))  # a permutation
    w = tm.jax_flat_to_torch_flat(name, params, v)
    np.testing.assert_array_equal(tm.torch_flat_to_jax_flat(name, params, w), v)


def test_port_rejects_wrong_shapes():
    _, params, _, _ = _problem("mlp", n=4)
    params["dense0"]["w"] = params["dense0"]["w"][:, :5]
    with pytest.raises(ValueError, match="port mismatch"):
        tm.torch_model("mlp", params)


def test_torch_eig_patch_matches_eigh_and_is_removed_after():
    _peers = pytest.importorskip("_peers")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(6), rng.standard_normal(5)
    T = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
    before = getattr(torch, "eig", None)
    with _peers.pyhessian_eig_patch():
        vals, vecs = torch.eig(torch.as_tensor(T), eigenvectors=True)
    assert getattr(torch, "eig", None) is before
    np.testing.assert_allclose(vals[:, 0].numpy(), np.linalg.eigvalsh(T), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(vals[:, 1].numpy(), 0.0)
    V = vecs.numpy()
    np.testing.assert_allclose(T @ V, V * vals[:, 0].numpy(), atol=1e-12)


def test_pyhessian_counter_counts_every_product():
    pytest.importorskip("pyhessian")
    _peers = pytest.importorskip("_peers")
    *_, model, x, y = _torch_problem("mlp", n=32)
    H = _peers.pyhessian_hessian(model, x, y)
    torch.manual_seed(0)
    with _peers.PyHessianCounter() as c:
        H.eigenvalues(maxIter=4, tol=0.0, top_n=2)  # tol 0: never stops early
    assert c.count == 8


def test_curvlinops_counting_operator_matches_our_hvp():
    pytest.importorskip("curvlinops")
    _peers = pytest.importorskip("_peers")
    _, params, jdata, loss_fn, model, x, y = _torch_problem("mlp", n=32)
    S = _peers.counting_scipy(_peers.curvlinops_hessian(model, x, y), dtype=np.dtype(JDTYPE))
    flat, _ = ravel_pytree(params)
    v = np.random.default_rng(1).standard_normal(flat.size).astype(JDTYPE)
    ours = curvature.hessian(loss_fn, params, jdata, batch_size=32).matvec(jnp.asarray(v))
    theirs = S.matvec(tm.jax_flat_to_torch_flat("mlp", params, v))
    assert S.count == 1
    assert _rel(tm.torch_flat_to_jax_flat("mlp", params, theirs), ours) < 10 * RTOL


def test_shifted_matmul_cnn_is_the_same_function():
    data, params, jdata, _ = _problem("cnn", n=8)
    a = dm.apply_cnn(params, jdata["x"])
    b = dm.apply_cnn_shifted(params, jdata["x"])
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=10 * RTOL, atol=10 * RTOL)

"""Curvature operators against float64 dense oracles on a tiny nested-pytree MLP."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_curvature_oracles import (
    N,
    apply_fn,
    assert_close,
    dense_ggn64,
    dense_hessian64,
    loss_fn_for,
    make_data,
    make_params,
    per_example_grads64,
    tol,
)

from landscape import curvature, losses
from landscape.tree import ravel


@pytest.fixture(scope="module")
def ce():
    params = make_params(jax.random.key(0))
    data = make_data(jax.random.key(1), "cross_entropy")
    return params, data


@pytest.fixture(scope="module")
def reg():
    params = make_params(jax.random.key(2))
    data = make_data(jax.random.key(3), "mse")
    return params, data


@pytest.fixture(scope="module")
def ce_hessian_ref(ce):
    return dense_hessian64("cross_entropy", *ce)


@pytest.mark.parametrize("batch_size", [1, 7, 100])
def test_hessian_matches_dense_for_every_batch_size(ce, ce_hessian_ref, batch_size):
    params, data = ce
    op = curvature.hessian(loss_fn_for("cross_entropy"), params, data, batch_size=batch_size)
    assert op.dim == ce_hessian_ref.shape[0] == 31
    assert_close(curvature.dense(op), ce_hessian_ref)


def test_hessian_mse_matches_dense(reg):
    params, data = reg
    op = curvature.hessian(loss_fn_for("mse"), params, data, batch_size=5)
    assert_close(curvature.dense(op), dense_hessian64("mse", params, data))


def test_hvp_pytree_equals_flat_matvec(ce):
    params, data = ce
    loss = loss_fn_for("cross_entropy")
    v = jax.tree.map(lambda x: jnp.cos(jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape), params)
    hv_tree = curvature.hvp(loss, params, data, v)
    chex.assert_trees_all_equal_structs(hv_tree, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(hv_tree, params)
    op = curvature.hessian(loss, params, data, batch_size=N)
    assert_close(ravel(hv_tree)[0], op.matvec(ravel(v)[0]))
    assert_close(ravel(op.matvec_tree(v))[0], ravel(hv_tree)[0])


@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_ggn_matches_explicit_jacobians(ce, reg, kind):
    params, data = ce if kind == "cross_entropy" else reg
    ref = dense_ggn64(kind, params, data)
    assert_close(curvature.dense(curvature.ggn(apply_fn, kind, params, data, batch_size=6)), ref)
    # a callable output loss goes through the autodiff output Hessian: same matrix
    out_loss = losses.softmax_cross_entropy if kind == "cross_entropy" else losses.mse
    op = curvature.ggn(apply_fn, out_loss, params, data, batch_size=10)
    assert_close(curvature.dense(op), ref)
    assert np.linalg.eigvalsh(ref).min() > -1e-12  # PSD oracle, sanity of the reference itself


def test_ggn_is_hessian_for_linear_model_with_mse():
    # f linear in params => the network-curvature term vanishes and G == H exactly
    key = jax.random.key(4)
    params = {"w": jax.random.normal(key, (3, 2)), "b": [jnp.ones(2)]}
    lin = lambda p, x: x @ p["w"] + p["b"][0]
    data = make_data(jax.random.key(5), "mse")
    data = {"x": data["x"], "y": data["y"][:, :2]}
    loss = lambda p, b: losses.mse(lin(p, b["x"]), b["y"])
    G = curvature.dense(curvature.ggn(lin, "mse", params, data, batch_size=4))
    H = curvature.dense(curvature.hessian(loss, params, data, batch_size=9))
    assert_close(G, H)


def test_exact_fisher_equals_ggn_for_cross_entropy(ce):
    params, data = ce
    ref = dense_ggn64("cross_entropy", params, data)
    op = curvature.fisher(apply_fn, "cross_entropy", params, data, batch_size=4, exact=True)
    assert_close(curvature.dense(op), ref)


@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_monte_carlo_fisher_approaches_ggn(ce, reg, kind):
    params, data = ce if kind == "cross_entropy" else reg
    ref = dense_ggn64(kind, params, data)
    errors = []
    for num_samples in (16, 1024):
        op = curvature.fisher(
            apply_fn, kind, params, data, key=jax.random.key(6), num_samples=num_samples
        )
        errors.append(np.linalg.norm(np.asarray(curvature.dense(op)) - ref) / np.linalg.norm(ref))
    # unbiased MC: error shrinks ~ 1/sqrt(samples) (factor 8 here); demand a factor > 3
    assert errors[1] < 0.1 and errors[1] < errors[0] / 3, errors


def test_monte_carlo_fisher_is_a_fixed_matrix_independent_of_batching(ce):
    params, data = ce
    key = jax.random.key(7)
    a = curvature.fisher(apply_fn, "cross_entropy", params, data, batch_size=3, key=key)
    b = curvature.fisher(apply_fn, "cross_entropy", params, data, batch_size=50, key=key)
    v = jnp.linspace(-1.0, 1.0, a.dim)
    np.testing.assert_array_equal(np.asarray(a.matvec(v)), np.asarray(a.matvec(v)))
    assert_close(a.matvec(v), b.matvec(v))
    other = curvature.fisher(
        apply_fn, "cross_entropy", params, data, batch_size=3, key=jax.random.key(8)
    )
    assert not np.allclose(np.asarray(other.matvec(v)), np.asarray(a.matvec(v)))


@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_empirical_fisher_matches_per_example_gradients(ce, reg, kind):
    params, data = ce if kind == "cross_entropy" else reg
    g = per_example_grads64(kind, params, data)
    ref = g.T @ g / g.shape[0]
    assert_close(curvature.dense(curvature.empirical_fisher(apply_fn, kind, params, data, 5)), ref)
    out_loss = losses.softmax_cross_entropy if kind == "cross_entropy" else losses.mse
    op = curvature.empirical_fisher(apply_fn, out_loss, params, data, batch_size=8)
    assert_close(curvature.dense(op), ref)
    # it is a different matrix from the (exact) Fisher = GGN
    ggn = dense_ggn64(kind, params, data)
    assert np.linalg.norm(ref - ggn) > 0.05 * np.linalg.norm(ggn)


def test_restrict_to_layer_is_principal_submatrix(ce, ce_hessian_ref):
    params, data = ce
    op = curvature.hessian(loss_fn_for("cross_entropy"), params, data, batch_size=9)
    # ravel order: layer1/b (4), layer1/w (12), layer2/0 (12), layer2/1 (3)
    sub = curvature.restrict(op, {"layer1": True, "layer2": False})
    assert sub.dim == 16
    assert_close(curvature.dense(sub), ce_hessian_ref[:16, :16])
    masks = curvature.block_masks(params)
    assert set(masks) == {"['layer1']", "['layer2']"}
    sub2 = curvature.restrict(op, masks["['layer2']"])
    assert_close(curvature.dense(sub2), ce_hessian_ref[16:, 16:])
    # entry-wise boolean mask on one leaf: the bias of layer 2 only
    fine = {"layer1": False, "layer2": [False, np.array([True, False, True])]}
    idx = np.array([28, 30])
    np.testing.assert_array_equal(curvature.mask_indices(params, fine), idx)
    assert_close(curvature.dense(curvature.restrict(op, fine)), ce_hessian_ref[np.ix_(idx, idx)])
    assert_close(
        curvature.dense(curvature.restrict(op, jnp.array([30, 28]))),
        ce_hessian_ref[np.ix_(idx, idx)],
    )


def test_operator_passes_through_jit_as_argument(ce):
    params, data = ce
    op = curvature.ggn(apply_fn, "cross_entropy", params, data, batch_size=8)
    leaves, treedef = jax.tree.flatten(op)
    assert any(leaf is data["x"] for leaf in leaves)  # data is a child, not a constant
    rebuilt = jax.tree.unflatten(treedef, leaves)
    v = jnp.sin(jnp.arange(op.dim, dtype=op.dtype))
    f = jax.jit(lambda o, x: o.matvec(x) * 2.0)
    assert_close(f(op, v), 2.0 * rebuilt.matvec(v))
    assert_close(op.matmat(jnp.stack([v, 2 * v], 1))[:, 1], 2.0 * op(v))


@pytest.fixture(scope="module")
def symmetric_ops(ce):
    params, data = ce
    return [
        curvature.hessian(loss_fn_for("cross_entropy"), params, data, batch_size=8),
        curvature.fisher(
            apply_fn, "cross_entropy", params, data, batch_size=8, key=jax.random.key(9)
        ),
    ]


def test_linearized_operator_equals_its_base(ce, ce_hessian_ref):
    params, data = ce
    op = curvature.hessian(loss_fn_for("cross_entropy"), params, data, batch_size=7)
    lop = curvature.linearized(op)
    assert (lop.dim, lop.dtype) == (op.dim, op.dtype) and len(lop.residuals) > 0
    assert_close(curvature.dense(lop), ce_hessian_ref)
    v = jnp.sin(jnp.arange(op.dim, dtype=op.dtype))
    assert_close(jax.jit(lambda o, x: o.matvec(x))(lop, v), op.matvec(v))
    sub = curvature.restrict(lop, {"layer1": False, "layer2": True})
    assert_close(curvature.dense(sub), ce_hessian_ref[16:, 16:])


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_operators_are_symmetric(symmetric_ops, seed):
    for op in symmetric_ops:
        probe = curvature.symmetry_probe(op, jax.random.key(seed))
        assert probe.num_matvecs == 2
        assert float(probe.asymmetry) < 50 * float(jnp.finfo(op.dtype).eps)


def test_from_matrix_and_dense_roundtrip():
    a = jax.random.normal(jax.random.key(10), (6, 6))
    sym = a + a.T
    op = curvature.from_matrix(sym)
    np.testing.assert_array_equal(np.asarray(curvature.dense(op, chunk_size=4)), np.asarray(sym))
    with pytest.raises(ValueError, match="not symmetric"):
        curvature.from_matrix(a)
    with pytest.raises(ValueError, match="square"):
        curvature.from_matrix(jnp.ones((2, 3)))


def test_finite_difference_check_agrees_with_hvp(ce):
    params, data = ce
    v = jax.tree.map(jnp.ones_like, params)
    res = curvature.finite_difference_check(loss_fn_for("cross_entropy"), params, data, v)
    assert float(res.relative_error) < (1e-7 if jax.config.jax_enable_x64 else 1e-2)
    # a wrong "HVP" is caught: compare the finite difference against a scaled product
    fd = np.asarray(res.finite_difference)
    assert np.linalg.norm(1.1 * np.asarray(res.hvp) - fd) / np.linalg.norm(fd) > 0.05


def test_determinism_probe_accepts_pure_and_rejects_stateful(ce):
    params, data = ce
    loss = loss_fn_for("cross_entropy")
    res = curvature.determinism_probe(loss, params, data)
    assert res.jit_vs_eager <= tol()
    rng = np.random.default_rng(0)

    def noisy(p, b):  # a "dropout" drawn at the Python level on every call
        mask = jnp.asarray(rng.random(b["x"].shape) > 0.3, b["x"].dtype)
        return loss(p, {"x": b["x"] * mask, "y": b["y"]})

    with pytest.raises(ValueError, match="not deterministic"):
        curvature.determinism_probe(noisy, params, data)

"""Blockwise spectra (landscape.blockwise) against dense principal submatrices and scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from landscape import blockwise as bw
from landscape import curvature, models
from landscape.curvature import mask_indices
from landscape.nnx import functional


def _model():
    """A tiny nested-pytree model with coupled blocks of sizes 6, 4 and 3."""
    k = jax.random.split(jax.random.key(3), 4)
    dtype = jnp.zeros(()).dtype
    params = {"a": {"w": jax.random.normal(k[0], (3, 2), dtype)},
              "b": [jax.random.normal(k[1], (4,), dtype), {"c": 0.5 * jnp.ones((3,), dtype)}]}
    x = jax.random.normal(k[2], (16, 3), dtype)
    y = jax.random.normal(k[3], (16,), dtype)

    def loss(p, batch):
        h = jnp.tanh(batch["x"] @ p["a"]["w"])                      # (n, 2)
        z = h @ p["b"][0][:2] + jnp.sin(batch["x"] @ p["b"][1]["c"]) * p["b"][0][2:].sum()
        return jnp.mean((z - batch["y"]) ** 2)

    return loss, params, {"x": x, "y": y}


@pytest.fixture(scope="module")
def setting():
    loss, params, data = _model()
    op = curvature.hessian(loss, params, data)
    dense = np.asarray(curvature.dense(op), np.float64)
    blocks = bw.leaf_blocks(params)
    key = jax.random.key(0)
    # the Hessian's dense matrix (compiles in a fraction of the Hessian operator's time)
    matrix_op = curvature.from_matrix(curvature.dense(op))
    res = bw.blockwise_spectra(matrix_op, blocks, key=key, num_probes=2, num_steps=6, k=2,
                               params=params)
    return params, dense, blocks, key, res, op


def _tol(dtype):
    return 1e-9 if np.dtype(dtype) == np.float64 else 2e-4


def test_nodes_weights_and_top_eigenvalues_match_dense_submatrices(setting):
    params, dense, blocks, key, res, _ = setting
    scale = np.linalg.norm(dense, 2)
    tol = _tol(res.densities[0].nodes.dtype) * scale
    assert res.names == tuple(blocks)
    for b, mask in enumerate(blocks.values()):
        idx = mask_indices(params, mask)
        lam, vecs = np.linalg.eigh(dense[np.ix_(idx, idx)])
        assert res.dims[b] == idx.size
        d = res.densities[b]
        nodes, weights = np.asarray(d.nodes, np.float64), np.asarray(d.weights, np.float64)
        size = idx.size  # num_steps=6 >= every block: SLQ is exact up to the probe
        assert np.all(weights[:, size:] == 0)
        np.testing.assert_allclose(nodes[:, :size], np.tile(lam, (2, 1)), atol=tol)
        # weights = squared projections of the (known) unit probe on the eigenvectors
        k_den = jax.random.split(jax.random.fold_in(key, b), 3)[0]
        for i, kp in enumerate(jax.random.split(k_den, 2)):
            mask_vec = jnp.zeros(dense.shape[0], d.nodes.dtype).at[idx].set(1)
            v = np.asarray(bw._probe(jax.random.split(kp)[0], mask_vec), np.float64)[idx]
            expected = (vecs.T @ (v / np.linalg.norm(v))) ** 2
            np.testing.assert_allclose(weights[i, :size], expected, atol=50 * tol / scale)
        top = res.top[b]
        np.testing.assert_allclose(np.asarray(top.eigenvalues), lam[::-1][:2], atol=tol)
        assert bool(np.all(np.asarray(top.residuals) <= tol))
    assert res.num_matvecs >= sum(2 * s for s in res.dims)


def test_a_dataset_operator_supplies_its_params(setting):
    """The Hessian operator itself (params from ``op.params``) gives the same SLQ nodes."""
    params, dense, blocks, key, res, op = setting
    r = bw.blockwise_spectra(op, blocks, key=key, num_probes=2, num_steps=6, k=0)
    tol = _tol(res.densities[0].nodes.dtype) * np.linalg.norm(dense, 2)
    for d, ref in zip(r.densities, res.densities):
        np.testing.assert_allclose(np.asarray(d.nodes), np.asarray(ref.nodes), atol=tol)
        np.testing.assert_allclose(np.asarray(d.weights), np.asarray(ref.weights), atol=1e-4)


def test_js_matrix_matches_scipy_on_the_same_grid(setting):
    *_, res, _ = setting
    js = np.asarray(res.js, np.float64)
    pdfs = np.asarray(res.pdfs, np.float64)
    assert js.shape == (3, 3) and np.all(np.diag(js) == 0)
    np.testing.assert_array_equal(js, js.T)
    for b in range(3):
        for c in range(3):
            np.testing.assert_allclose(js[b, c], jensenshannon(pdfs[b], pdfs[c]), atol=1e-5)
    assert float(res.mean_js) == pytest.approx(np.mean(js[np.triu_indices(3, 1)]), abs=1e-6)


def test_js_distance_identical_symmetric_and_disjoint():
    p = jnp.array([0.0, 1.0, 3.0, 0.5, 0.0, 0.0])
    q = jnp.array([0.2, 0.0, 1.0, 1.0, 0.0, 0.0])
    far = jnp.array([0.0, 0.0, 0.0, 0.0, 2.0, 1.0])
    assert float(bw.js_distance(p, p)) == 0.0
    assert float(bw.js_distance(p, q)) == pytest.approx(float(bw.js_distance(q, p)), abs=1e-7)
    assert float(bw.js_distance(p, q)) == pytest.approx(jensenshannon(p, q), abs=1e-6)
    assert float(bw.js_distance(p, far)) == pytest.approx(np.sqrt(np.log(2)), abs=1e-6)
    assert bw.MAX_JS == pytest.approx(jensenshannon([1, 0], [0, 1]))
    with pytest.raises(ValueError, match="equal shape"):
        bw.js_distance(p, q[:3])


def test_scale_invariance_and_identical_blocks_on_a_planted_matrix():
    """Two blocks with the same spectrum are at distance 0; a block 100x larger is far; scaling
    the whole operator (here: its SLQ nodes, which Lanczos scales exactly) changes nothing."""
    lam = np.array([1.0, 2.0, 3.0, 4.0])
    A = np.diag(np.concatenate([lam, lam[::-1], 100 * lam])).astype(jnp.zeros(()).dtype)
    blocks = {"x": np.arange(4), "y": np.arange(4, 8), "big": np.arange(8, 12)}
    r = bw.blockwise_spectra(curvature.from_matrix(jnp.asarray(A)), blocks,
                             key=jax.random.key(1), num_probes=2, num_steps=4, k=0)
    assert r.top == (None, None, None)
    np.testing.assert_allclose(np.asarray(r.densities[2].nodes), 100 * np.tile(lam, (2, 1)),
                               rtol=1e-5)
    small = 1e-6 if A.dtype == np.float64 else 1e-3  # JS ~ sqrt(rounding) near 0 in float32
    for axis in ("asinh", "linear"):
        ref = np.asarray(bw.js_matrix(r.densities, axis=axis).js, np.float64)
        scaled = [d._replace(nodes=1e3 * d.nodes) for d in r.densities]
        np.testing.assert_allclose(bw.js_matrix(scaled, axis=axis).js, ref, atol=small)
        assert ref[0, 1] < small and ref[0, 2] > 0.5
    np.testing.assert_allclose(np.asarray(r.js), bw.js_matrix(r.densities).js, atol=1e-7)


def test_block_validation_errors():
    A = jnp.eye(6)
    op = curvature.from_matrix(A)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="unique"):
        bw.blockwise_spectra(op, [("a", np.arange(2)), ("a", np.arange(2, 4))], key=key, k=0,
                             num_steps=2)
    with pytest.raises(ValueError, match="overlap"):
        bw.blockwise_spectra(op, {"a": np.arange(3), "b": np.arange(2, 5)}, key=key, k=0,
                             num_steps=2)
    with pytest.raises(ValueError, match="block 'e'"):
        bw.blockwise_spectra(op, {"e": np.array([], int)}, key=key, k=0, num_steps=2)
    with pytest.raises(ValueError, match="at least one"):
        bw.blockwise_spectra(op, {}, key=key, k=0, num_steps=2)
    with pytest.raises(ValueError, match="params is required"):
        bw.blockwise_spectra(op, {"a": lambda path, leaf: True}, key=key, k=0, num_steps=2)
    with pytest.raises(ValueError, match="axis"):
        bw.js_matrix([], axis="log")


@pytest.mark.single_dtype
def test_partitions_of_a_transformer_are_exact():
    model = models.Transformer(5, 4, 2, 2, 3, key=jax.random.key(0))
    params = functional(model).params
    total = sum(np.size(x) for x in jax.tree.leaves(params))

    def union_disjoint(blocks):
        idx = [mask_indices(params, m) for m in blocks.values()]
        joined = np.concatenate(idx)
        assert joined.size == np.unique(joined).size  # disjoint
        return np.sort(joined)

    for blocks in (bw.leaf_blocks(params), bw.transformer_blocks(params),
                   bw.prefix_blocks(params, 2), bw.prefix_blocks(params, 1)):
        np.testing.assert_array_equal(union_disjoint(blocks), np.arange(total))
    assert "['blocks'][0]['attn']['qkv']['kernel'].k" in bw.transformer_blocks(params)
    # two layers, embed, head, pos, and ln_f's leaves (depth 2 reaches them)
    assert sorted(bw.prefix_blocks(params, 2))[:3] == ["['blocks'][0]", "['blocks'][1]",
                                                       "['embed']['embedding']"]
    assert len(bw.prefix_blocks(params, 2)) == 7
    heads = bw.head_blocks(params, 2)
    assert sorted(heads) == ["layer0.head0", "layer0.head1", "layer1.head0", "layer1.head1"]
    attention = lambda path, leaf: "['attn']" in path
    np.testing.assert_array_equal(union_disjoint(heads), mask_indices(params, attention))
    assert all(mask_indices(params, m).size == 4 * 4 * 2 for m in heads.values())
    # head 1 of layer 0: query columns 2..3, key 6..7, value 10..11, out rows 2..3
    qkv = heads["layer0.head1"]["blocks"][0]["attn"]["qkv"]["kernel"]
    np.testing.assert_array_equal(np.flatnonzero(qkv[0]), [2, 3, 6, 7, 10, 11])
    out = heads["layer0.head1"]["blocks"][0]["attn"]["out"]["kernel"]
    np.testing.assert_array_equal(np.flatnonzero(out[:, 0]), [2, 3])
    with pytest.raises(ValueError, match="num_heads=3"):
        bw.head_blocks(params, 3)
    with pytest.raises(ValueError, match="Transformer"):
        bw.head_blocks({"w": jnp.ones(3)}, 1)

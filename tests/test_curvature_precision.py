"""Mixed-precision curvature products (``compute_dtype``) against float64 dense oracles.

Each batch's pass runs in ``compute_dtype`` and the product is summed in the params dtype, so
the error of a product is that of the narrow format: about ``u = 2^-p`` per rounding
(bfloat16 ``p = 8``, float16 ``p = 11``, float32 ``p = 24``) times a modest growth factor.
Bound used here: ``16 u`` relative (2-norm) per product on the tiny tanh MLP of
``test_curvature_oracles``; and the error must be at least ``u / 64`` (the rounding really
happens) and shrink from bfloat16 to float16. With ``compute_dtype`` off (or equal to the params
dtype) the products are bit-identical to the full-precision ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_curvature_oracles import (
    apply_fn,
    dense_ggn64,
    dense_hessian64,
    loss_fn_for,
    make_data,
    make_params,
)

from landscape import curvature

UNIT = {"bfloat16": 2.0**-8, "float16": 2.0**-11, "float32": 2.0**-24}


def _setup(kind):
    params = make_params(jax.random.key(0))
    data = make_data(jax.random.key(1), kind, n=40)
    V = np.asarray(jax.random.normal(jax.random.key(2), (31, 4)), np.float64)
    return params, data, V


def _build(name, kind, params, data, compute_dtype):
    if name == "hessian":
        return curvature.hessian(loss_fn_for(kind), params, data, batch_size=16,
                                 compute_dtype=compute_dtype)
    return curvature.ggn(apply_fn, kind, params, data, batch_size=16,
                         compute_dtype=compute_dtype)


def _errors(op, V, M):
    """Relative 2-norm error of each product ``op @ V[:, j]`` against ``M @ V[:, j]``."""
    got = np.stack([np.asarray(op.matvec(jnp.asarray(V[:, j], op.dtype)), np.float64)
                    for j in range(V.shape[1])], axis=1)
    want = M @ V
    return np.linalg.norm(got - want, axis=0) / np.linalg.norm(want, axis=0)


def test_narrow_hessian_products_are_accurate_to_their_unit_roundoff():
    kind = "cross_entropy"
    params, data, V = _setup(kind)
    M = np.asarray(dense_hessian64(kind, params, data), np.float64)
    narrow = ["bfloat16", "float16"] + (["float32"] if jax.config.jax_enable_x64 else [])
    worst = {}
    for dt in narrow:
        op = _build("hessian", kind, params, data, jnp.dtype(dt))
        assert op.dtype == jax.tree.leaves(params)[0].dtype  # the operator keeps params' dtype
        assert op.compute_dtype == np.dtype(dt)
        err = _errors(op, V, M)
        worst[dt] = float(err.max())
        assert worst[dt] <= 16 * UNIT[dt], (dt, worst[dt])
        assert float(np.median(err)) >= UNIT[dt] / 64, (dt, err)  # the passes really are narrow
    assert worst["float16"] < worst["bfloat16"] / 2, worst
    if "float32" in worst:
        assert worst["float32"] < worst["float16"] / 100, worst


@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_ggn_in_bfloat16_is_accurate_to_its_unit_roundoff(kind):
    params, data, V = _setup(kind)
    M = np.asarray(dense_ggn64(kind, params, data), np.float64)
    err = _errors(_build("ggn", kind, params, data, jnp.bfloat16), V, M)
    assert UNIT["bfloat16"] / 64 <= np.median(err) and err.max() <= 16 * UNIT["bfloat16"], err


def test_fisher_and_empirical_fisher_take_the_option():
    kind = "cross_entropy"
    params, data, V = _setup(kind)
    # the exact Fisher equals the GGN: the bfloat16 product against the float64 dense GGN
    M = np.asarray(dense_ggn64(kind, params, data), np.float64)
    op = curvature.fisher(apply_fn, kind, params, data, batch_size=16, exact=True,
                          compute_dtype=jnp.bfloat16)
    assert op.compute_dtype == np.dtype(jnp.bfloat16) and op.dtype != np.dtype(jnp.bfloat16)
    err = _errors(op, V, M)
    assert UNIT["bfloat16"] / 64 <= np.median(err) and err.max() <= 16 * UNIT["bfloat16"], err
    # the empirical Fisher: bfloat16 against the full-precision operator's dense matrix
    full = curvature.empirical_fisher(apply_fn, kind, params, data, batch_size=16)
    narrow = curvature.empirical_fisher(apply_fn, kind, params, data, batch_size=16,
                                        compute_dtype=jnp.bfloat16)
    err = _errors(narrow, V, np.asarray(curvature.dense(full), np.float64))
    assert UNIT["bfloat16"] / 64 <= np.median(err) and err.max() <= 16 * UNIT["bfloat16"], err


@pytest.mark.parametrize("name", ["hessian", "ggn"])
def test_off_or_params_dtype_is_bit_identical(name):
    kind = "mse"
    params, data, V = _setup(kind)
    v = jnp.asarray(V[:, 0], jax.tree.leaves(params)[0].dtype)
    base = _build(name, kind, params, data, None)
    same = _build(name, kind, params, data, base.dtype)
    assert same.compute_dtype is None
    np.testing.assert_array_equal(np.asarray(same.matvec(v)), np.asarray(base.matvec(v)))
    # and the program has no narrow conversion in it
    text = jax.jit(lambda op, x: op.matvec(x)).lower(base, v).as_text()
    assert "bf16" not in text and "f16" not in text.replace("bf16", "")


def test_bad_compute_dtype_fails_naming_the_argument():
    params, data, _ = _setup("mse")
    lf = loss_fn_for("mse")
    with pytest.raises(TypeError, match="compute_dtype"):
        curvature.hessian(lf, params, data, compute_dtype=jnp.int32)
    with pytest.raises(TypeError, match="compute_dtype"):
        curvature.ggn(apply_fn, "mse", params, data, compute_dtype="not a dtype")
    narrow = jax.tree.map(lambda x: x.astype(jnp.float16), params)
    with pytest.raises(ValueError, match="compute_dtype.*no wider"):
        curvature.hessian(lf, narrow, data, compute_dtype=jnp.float32)

"""Token-selection and in-context-regression generators: determinism, definitions, errors."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from landscape import data


def test_token_data_is_deterministic_and_consistent():
    a = data.token_selection_data(jax.random.key(3), 4, 5, 6)
    b = data.token_selection_data(jax.random.key(3), 4, 5, 6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a.X.shape == (4, 5, 6) and a.Z.shape == (4, 6) and a.v.shape == (6,)
    assert set(np.asarray(a.Y).tolist()) <= {-1.0, 1.0}
    np.testing.assert_allclose(np.linalg.norm(np.asarray(a.X), axis=-1), 1.0, rtol=1e-5)
    # scores by an independent loop: gamma_it = Y_i v^T x_it
    X, Y, v = (np.asarray(t, np.float64) for t in (a.X, a.Y, a.v))
    ref = np.array([[Y[i] * v @ X[i, t] for t in range(5)] for i in range(4)])
    np.testing.assert_allclose(np.asarray(a.scores), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(a.opt_index), ref.argmax(1))
    assert np.all(np.asarray(data.score_gap(a.scores)) >= 0)


def test_selection_mask_and_score_gap():
    mask = np.asarray(data.selection_mask(jnp.array([1, 0]), 3))
    np.testing.assert_array_equal(mask, [[False, True, False], [True, False, False]])
    gap = data.score_gap(jnp.array([[0.1, 0.5, 0.2], [1.0, 1.0, -1.0]]))
    np.testing.assert_allclose(np.asarray(gap), [0.3, 0.0], atol=1e-6)


def test_generator_argument_errors():
    with pytest.raises(ValueError, match="T must be an int >= 2"):
        data.token_selection_data(jax.random.key(0), 2, 1, 3)
    with pytest.raises(ValueError, match="num_context"):
        data.linear_regression_tasks(jax.random.key(0), 2, 0, 3)
    with pytest.raises(ValueError, match="noise_std"):
        data.linear_regression_tasks(jax.random.key(0), 2, 3, 3, noise_std=-1.0)


@settings(max_examples=10, deadline=None)
@given(B=st.integers(1, 4), N=st.integers(1, 6), d=st.integers(1, 4), seed=st.integers(0, 99))
def test_icl_tasks_are_noiseless_linear_and_tokens_stack(B, N, d, seed):
    t = data.linear_regression_tasks(jax.random.key(seed), B, N, d)
    x, y, w = (np.asarray(t[k], np.float64) for k in ("x", "y", "w"))
    np.testing.assert_allclose(y, np.einsum("bnd,bd->bn", x, w), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(t["y_query"]), np.einsum("bd,bd->b", t["x_query"], w),
                               rtol=1e-5, atol=1e-5)
    assert np.all(np.abs(x) <= 1.0)
    tok = np.asarray(data.icl_tokens(t))
    assert tok.shape == (B, N + 1, d + 1)
    np.testing.assert_array_equal(tok[:, :N, :d], np.asarray(t["x"]))
    np.testing.assert_array_equal(tok[:, :N, d], np.asarray(t["y"]))
    np.testing.assert_array_equal(tok[:, N, d], 0.0)
    t2 = data.linear_regression_tasks(jax.random.key(seed), B, N, d)
    np.testing.assert_array_equal(np.asarray(t2["x"]), np.asarray(t["x"]))


def test_token_data_module_is_a_leaf():
    """data never imports attention (the SVM algebra lives in landscape.attention.constraints)."""
    code = ("import sys, landscape.data.tokens, landscape.data.icl; "
            "print(sorted(m for m in sys.modules if m.startswith('landscape.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "landscape.data.tokens" in out.stdout and "landscape.attention" not in out.stdout
    assert not hasattr(data, "selection_feasible") and not hasattr(data, "constraint_rows")

"""MLP: shapes, parameter counts, NumPy forward pass, residual permutation, errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models_common import FLOAT, TOL, _normal, _np, _params
from flax import nnx

from landscape.models import MLP, count_params

# ---------------------------------------------------------------- MLP


@pytest.mark.parametrize("depth", [0, 1, 3])
@pytest.mark.parametrize("norm", [None, "layer", "batch"])
def test_mlp_shapes_and_param_count(depth, norm):
    d, w, c = 12, 7, 4
    model = MLP(d, w, depth, c, norm=norm, rngs=nnx.Rngs(0))
    out = model(_normal(1, (5, 3, 4)))  # trailing shape (3, 4) flattens to 12 features
    chex.assert_shape(out, (5, c))
    chex.assert_type(out, FLOAT)
    if depth == 0:
        expected = d * c + c
    else:
        expected = d * w + w + (depth - 1) * (w * w + w) + w * c + c
        expected += 2 * w * depth if norm is not None else 0
    assert count_params(model) == expected


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_mlp_matches_numpy_forward(residual, activation):
    """The forward pass equals the formula computed by hand from the parameter arrays."""
    model = MLP(6, 5, 3, 3, activation=activation, residual=residual, rngs=nnx.Rngs(2))
    x = np.asarray(_normal(3, (4, 6)))
    p = _np(nnx.to_pure_dict(_params(model)))
    act = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
           "gelu": lambda z: np.asarray(jax.nn.gelu(z))}[activation]
    h = x
    for l in range(3):
        z = act(h @ p["hidden"][l]["kernel"] + p["hidden"][l]["bias"])
        h = h + z if (residual and l > 0) else z
    ref = h @ p["head"]["kernel"] + p["head"]["bias"]
    np.testing.assert_allclose(model(x), ref, rtol=10 * TOL, atol=10 * TOL)


def test_mlp_residual_shares_one_permutation():
    """Permuting every hidden layer by one permutation (the residual stream) keeps f unchanged."""
    model = MLP(4, 6, 3, 2, residual=True, norm="layer", rngs=nnx.Rngs(0))
    x = _normal(1, (5, 4))
    ref = model(x)
    perm = np.random.default_rng(0).permutation(6)
    p = nnx.to_pure_dict(_params(model))
    for l in range(3):
        p["hidden"][l]["kernel"] = p["hidden"][l]["kernel"][:, perm]
        if l > 0:
            p["hidden"][l]["kernel"] = p["hidden"][l]["kernel"][perm, :]
        p["hidden"][l]["bias"] = p["hidden"][l]["bias"][perm]
        p["norms"][l]["scale"] = p["norms"][l]["scale"][perm]
        p["norms"][l]["bias"] = p["norms"][l]["bias"][perm]
    p["head"]["kernel"] = p["head"]["kernel"][perm, :]
    state = _params(model)
    nnx.replace_by_pure_dict(state, p)
    nnx.update(model, state)
    np.testing.assert_allclose(model(x), ref, rtol=100 * TOL, atol=100 * TOL)


def test_mlp_bad_inputs():
    model = MLP(6, 5, 2, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="6 features"):
        model(jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="norm"):
        MLP(6, 5, 2, 3, norm="group", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="activation"):
        MLP(6, 5, 2, 3, activation="relu6x", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="width"):
        MLP(6, 0, 2, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="depth"):
        MLP(6, 5, -1, 3, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="param_dtype"):
        MLP(6, 5, 1, 3, param_dtype=jnp.int32, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="width"):
        MLP(6, 2.0, 1, 3, rngs=nnx.Rngs(0))
    # numpy integers (e.g. from a width sweep) are accepted and stored as Python ints
    assert MLP(np.int64(6), np.int64(5), 1, 3, rngs=nnx.Rngs(0)).width == 5

"""CNN1D and CNN2D: shapes, parameter counts, SciPy convolution oracle, errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models_common import TOL, _normal, _np, _params
from flax import nnx

from landscape import models
from landscape.models import CNN1D, CNN2D, count_params

# ---------------------------------------------------------------- CNNs


def _cnn_count(c_in, channels, k, classes, norm):
    total, prev = 0, c_in
    for c in channels:
        total += k * prev * c + c + (2 * c if norm else 0)
        prev = c
    return total + prev * classes + classes


@pytest.mark.parametrize("norm", [None, "layer", "batch"])
def test_cnn2d_shapes_and_param_count(norm):
    model = CNN2D(10, in_channels=1, width=4, num_layers=3, norm=norm, rngs=nnx.Rngs(0))
    chex.assert_shape(model(_normal(0, (3, 8, 8))), (3, 10))
    if norm is None:
        chex.assert_shape(model(_normal(0, (3, 8, 8, 1))), (3, 10))
        chex.assert_shape(model(_normal(0, (2, 5, 7, 1))), (2, 10))  # any spatial size
    assert count_params(model) == _cnn_count(1, [4, 8, 16], 9, 10, norm)
    assert count_params(model) == models.cnn_num_params(1, 4, 3, 10, 9, norm)


def test_cnn2d_digits_size_for_curvature_benchmark():
    """A BatchNorm-free digits CNN with 20k-60k parameters is buildable (default config)."""
    model = nnx.eval_shape(lambda: CNN2D(rngs=nnx.Rngs(0)))
    assert 20_000 <= count_params(model) <= 60_000
    assert count_params(model) == _cnn_count(1, [16, 32, 64], 9, 10, None)
    assert not jax.tree.leaves(nnx.state(model, nnx.BatchStat))


@pytest.mark.parametrize("norm", [None, "batch"])
def test_cnn1d_shapes_and_param_count(norm):
    model = CNN1D(10, width=4, num_layers=3, norm=norm, rngs=nnx.Rngs(0))
    chex.assert_shape(model(_normal(0, (3, 40))), (3, 10))
    if norm is None:
        chex.assert_shape(model(_normal(0, (3, 40, 1))), (3, 10))
    assert count_params(model) == _cnn_count(1, [4, 8, 16], 5, 10, norm)


def test_cnn_forward_matches_scipy_convolution():
    """One-layer CNN1D equals scipy's cross-correlation + ReLU + mean + linear head."""
    from scipy.signal import correlate

    model = CNN1D(3, in_channels=2, width=4, num_layers=1, kernel_size=3, rngs=nnx.Rngs(1))
    x = np.asarray(_normal(2, (2, 9, 2)))
    p = _np(nnx.to_pure_dict(_params(model)))
    k, b = p["convs"][0]["kernel"], p["convs"][0]["bias"]  # (3, 2, 4), (4,)
    feats = []
    for xi in x:
        maps = [sum(correlate(xi[:, ci], k[:, ci, co], mode="same") for ci in range(2)) + b[co]
                for co in range(4)]
        feats.append(np.maximum(np.stack(maps, -1), 0).mean(0))
    ref = np.stack(feats) @ p["head"]["kernel"] + p["head"]["bias"]
    np.testing.assert_allclose(model(x), ref, rtol=100 * TOL, atol=100 * TOL)


def test_cnn_bad_inputs():
    model = CNN2D(10, in_channels=3, width=2, num_layers=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must have shape \(n, \*, \*, 3\)"):
        model(jnp.ones((2, 8, 8, 1)))
    with pytest.raises(ValueError, match="CNN2D"):
        model(jnp.ones((2, 8, 8)))  # channel axis required when in_channels > 1
    with pytest.raises(ValueError, match="CNN1D"):
        CNN1D(rngs=nnx.Rngs(0))(jnp.ones((2, 40, 2)))
    with pytest.raises(ValueError, match="pool"):
        CNN1D(pool="median", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_layers"):
        CNN2D(num_layers=0, rngs=nnx.Rngs(0))

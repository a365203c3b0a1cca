"""Ghost batch norm (Hoffer et al. 2017): per-block train statistics, running statistics, errors.

References are plain ``nnx.BatchNorm`` applied to each block alone and explicit NumPy (float64)
computations of the statistics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from landscape import models
from landscape.models.layers import BATCHNORM_MOMENTUM, GhostBatchNorm, make_norm
from landscape.nnx import functional

FLOAT = jax.dtypes.canonicalize_dtype(jnp.float64)
TOL = 1e-10 if FLOAT == jnp.float64 else 2e-5


def _x(shape, seed=0):
    """Inputs with a per-block offset, so that block statistics differ from the batch's."""
    x = jax.random.normal(jax.random.key(seed), shape, FLOAT)
    offset = jnp.arange(shape[0], dtype=FLOAT).reshape((-1,) + (1,) * (len(shape) - 1))
    return x * 1.7 + 0.5 * offset


def _pair(features, g, seed=3):
    """A GhostBatchNorm and a plain BatchNorm with the same random scale/bias/statistics."""
    gbn = make_norm("batch", features, param_dtype=FLOAT, rngs=nnx.Rngs(0), ghost_batch_size=g)
    bn = make_norm("batch", features, param_dtype=FLOAT, rngs=nnx.Rngs(0))
    ks = jax.random.split(jax.random.key(seed), 4)
    vals = {"scale": 1 + 0.3 * jax.random.normal(ks[0], (features,), FLOAT),
            "bias": jax.random.normal(ks[1], (features,), FLOAT),
            "mean": jax.random.normal(ks[2], (features,), FLOAT),
            "var": jnp.exp(jax.random.normal(ks[3], (features,), FLOAT))}
    for layer in (gbn, bn):
        for name, v in vals.items():
            getattr(layer, name)[...] = v
    return gbn, bn, {k: np.asarray(v, np.float64) for k, v in vals.items()}


def _stats(layer):
    return np.asarray(layer.mean[...]), np.asarray(layer.var[...])


def test_ghost_size_equal_to_batch_is_plain_batchnorm():
    gbn, bn, _ = _pair(5, 12)
    x = _x((12, 5))
    np.testing.assert_allclose(gbn(x), bn(x), rtol=TOL, atol=TOL)
    for a, b in zip(_stats(gbn), _stats(bn)):
        np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL)


def test_each_block_is_batchnorm_of_that_block_alone():
    """(n, L, C) input: every block of g examples is normalised over its examples and L."""
    g, k = 4, 3
    gbn, bn, _ = _pair(3, g)
    x = _x((g * k, 6, 3))
    y = gbn(x)
    for j in range(k):
        ref = bn(x[j * g:(j + 1) * g])
        np.testing.assert_allclose(y[j * g:(j + 1) * g], ref, rtol=TOL, atol=TOL)


def test_running_statistics_against_numpy():
    """mean <- m mean + (1-m) avg_j mu_j, var <- m var + (1-m) avg_j var_j (biased)."""
    g, k, c = 3, 4, 2
    gbn, _, vals = _pair(c, g)
    x = _x((g * k, 5, c), seed=1)
    y = np.asarray(gbn(x), np.float64)
    xb = np.asarray(x, np.float64).reshape(k, g * 5, c)
    mu, var = xb.mean(axis=1), xb.var(axis=1)
    m = BATCHNORM_MOMENTUM
    mean_ref = m * vals["mean"] + (1 - m) * mu.mean(0)
    var_ref = m * vals["var"] + (1 - m) * var.mean(0)
    got_mean, got_var = _stats(gbn)
    np.testing.assert_allclose(got_mean, mean_ref, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(got_var, var_ref, rtol=TOL, atol=TOL)
    # the within-block variance average is below the whole batch's variance here
    assert var.mean(0).max() < xb.reshape(-1, c).var(0).min()
    # and the output, from the same formula
    y_ref = ((xb - mu[:, None]) / np.sqrt(var[:, None] + 1e-5) * vals["scale"] + vals["bias"])
    np.testing.assert_allclose(y, y_ref.reshape(y.shape), rtol=10 * TOL, atol=10 * TOL)


def test_eval_mode_is_unchanged_and_takes_any_batch_size():
    gbn, bn, _ = _pair(4, 8)
    gbn.eval()
    bn.eval()
    x = _x((7, 4))  # not a multiple of 8: fine in eval mode
    np.testing.assert_array_equal(gbn(x), bn(x))
    before = _stats(gbn)
    gbn(x)
    for a, b in zip(before, _stats(gbn)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.single_dtype
def test_errors_name_the_argument():
    gbn, _, _ = _pair(4, 8)
    with pytest.raises(ValueError, match="multiple of ghost_batch_size=8"):
        gbn(_x((12, 4)))
    with pytest.raises(ValueError, match="norm='batch'"):
        models.MLP(4, 3, 1, 2, norm="layer", ghost_batch_size=2, key=jax.random.key(0))
    for bad in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="ghost_batch_size"):
            models.MLP(4, 3, 1, 2, norm="batch", ghost_batch_size=bad, key=jax.random.key(0))
    with pytest.raises(ValueError, match="ghost_batch_size"):
        GhostBatchNorm(3, ghost_batch_size=0, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
def test_model_in_train_mode_equals_plain_model_per_block(name):
    """Whole network: the ghost model's outputs on block j are the plain model's on block j
    alone, and its new running statistics the average of the plain model's per-block ones
    (the momentum update is affine in the batch statistics)."""
    g, k = 4, 3
    if name == "mlp":
        make = lambda gs: models.MLP(6, 5, 2, 3, norm="batch", ghost_batch_size=gs,  # noqa: E731
                                     key=jax.random.key(1))
        x = _x((g * k, 6))
    else:
        make = lambda gs: models.CNN1D(3, width=2, num_layers=2, norm="batch",  # noqa: E731
                                       ghost_batch_size=gs, key=jax.random.key(1))
        x = _x((g * k, 8))
    ghost, plain = functional(make(g), mode="train"), functional(make(None), mode="train")
    out, state = ghost.apply_with_state(ghost.params, ghost.state, x)
    blocks = [plain.apply_with_state(plain.params, plain.state, x[j * g:(j + 1) * g])
              for j in range(k)]
    np.testing.assert_allclose(out, jnp.concatenate([b[0] for b in blocks]), rtol=TOL,
                               atol=TOL)
    avg = jax.tree.map(lambda *s: sum(s) / k, *[b[1] for b in blocks])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL), state, avg)
    assert jax.tree.map(lambda a: a.dtype, state) == jax.tree.map(lambda a: a.dtype, plain.state)

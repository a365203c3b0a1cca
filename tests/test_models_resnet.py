"""ResNet-20: layout, parameter count, forward pass, option-A shortcut, errors."""

from __future__ import annotations

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from _models_common import FLOAT, TOL, _normal
from flax import nnx

from landscape import models
from landscape.models import count_params

# ---------------------------------------------------------------- ResNet-20


def _modules(model, cls):
    return [m for _, m in nnx.iter_modules(model) if isinstance(m, cls)]


@pytest.mark.parametrize("mult", [1, 2])
@pytest.mark.parametrize("shortcut", ["projection", "padding"])
def test_resnet20_layout(mult, shortcut):
    """19 3x3 convs (stem + 3 stages x 3 blocks x 2), 1x1 projections, one linear head."""
    model = nnx.eval_shape(lambda: models.ResNet20(10, mult, norm="batch", in_channels=3,
                                                   shortcut=shortcut, rngs=nnx.Rngs(0)))
    convs = _modules(model, nnx.Conv)
    k3 = [c for c in convs if c.kernel.shape[:2] == (3, 3)]
    k1 = [c for c in convs if c.kernel.shape[:2] == (1, 1)]
    assert len(k3) == 1 + 3 * 3 * 2
    assert len(k1) == (2 if shortcut == "projection" else 0)
    assert len(convs) == len(k3) + len(k1)
    assert len(_modules(model, nnx.Linear)) == 1
    assert model.head.kernel.shape == (64 * mult, 10)
    assert model.stem.kernel.shape == (3, 3, 3, 16 * mult)
    for s, width in enumerate([16, 32, 64]):
        for block in model.stages[s]:
            assert block.conv1.kernel.shape[-1] == block.conv2.kernel.shape[-1] == width * mult
    # every conv is followed by a BatchNorm (stem, 2 per block, each projection)
    assert len(_modules(model, nnx.BatchNorm)) == len(convs)


@pytest.mark.parametrize("mult", [1, 2])
def test_resnet20_param_count(mult):
    """No norm, padding shortcuts: 3x3 convs with biases + linear head (hand formula)."""
    model = nnx.eval_shape(
        lambda: models.ResNet20(10, mult, norm=None, shortcut="padding", rngs=nnx.Rngs(0)))
    w = [16 * mult, 32 * mult, 64 * mult]
    conv = lambda a, b: 9 * a * b + b
    expected = conv(3, w[0])
    c_in = w[0]
    for c in w:
        expected += conv(c_in, c) + 5 * conv(c, c)
        c_in = c
    expected += w[2] * 10 + 10
    assert count_params(model) == expected
    if mult == 1:
        assert abs(expected - 0.27e6) < 0.01e6  # He et al. 2016, Table 6: 0.27M


@pytest.mark.parametrize("norm", ["layer", None])  # "batch": see the nnx-adapter test
def test_resnet20_forward_on_digits(norm):
    model = models.ResNet20(10, norm=norm, in_channels=1, rngs=nnx.Rngs(0))
    x = _normal(0, (2, 8, 8, 1))
    out = model(x)
    chex.assert_shape(out, (2, 10))
    chex.assert_tree_all_finite(out)
    model.eval()
    chex.assert_shape(model(x[..., 0]), (2, 10))  # (n, H, W) accepted for one channel


def test_resnet_padding_shortcut_is_option_a():
    """With zero residual branch, a padding block returns relu(zero-padded subsampled x)."""
    block = models.BasicBlock(2, 4, 2, norm=None, shortcut="padding",
                              param_dtype=FLOAT, rngs=nnx.Rngs(0))
    block.conv2.kernel[...] = jnp.zeros_like(block.conv2.kernel[...])
    x = np.asarray(_normal(1, (2, 5, 5, 2)))
    ref = np.zeros((2, 3, 3, 4), x.dtype)
    ref[..., 1:3] = x[:, ::2, ::2, :]
    np.testing.assert_allclose(block(x), np.maximum(ref, 0), rtol=TOL, atol=TOL)


def test_resnet_bad_inputs():
    model = models.ResNet20(10, norm=None, in_channels=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"ResNet20: x must have shape \(n, \*, \*, 3\)"):
        model(jnp.ones((2, 8, 8, 1)))
    with pytest.raises(ValueError, match="shortcut"):
        models.ResNet20(10, shortcut="B", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="width_multiplier"):
        models.ResNet20(10, 0, rngs=nnx.Rngs(0))


# ---------------------------------------------------------------- base width


def _resnet_count(w, c, k, norm, projection):
    """Hand count: 19 3x3 convs (bias or 2-per-channel norm), 1x1 projections, linear head."""
    conv = lambda a, b, kk: kk * a * b + (2 * b if norm else b)
    widths = [w, 2 * w, 4 * w]
    total, c_in = conv(c, w, 9), w
    for s, ch in enumerate(widths):
        total += conv(c_in, ch, 9) + 5 * conv(ch, ch, 9)
        if projection and s > 0:
            total += conv(c_in, ch, 1)
        c_in = ch
    return total + 4 * w * k + k


@pytest.mark.parametrize("norm", ["batch", None])
@pytest.mark.parametrize("shortcut", ["projection", "padding"])
@pytest.mark.parametrize("base_width, mult", [(4, 1), (4, 2), (16, 1)])
def test_resnet20_base_width_channels_and_count(norm, shortcut, base_width, mult):
    model = nnx.eval_shape(lambda: models.ResNet20(
        10, mult, norm=norm, in_channels=1, shortcut=shortcut, base_width=base_width,
        rngs=nnx.Rngs(0)))
    w = base_width * mult
    assert model.stem.kernel.shape == (3, 3, 1, w)
    for s, width in enumerate([w, 2 * w, 4 * w]):
        for block in model.stages[s]:
            assert block.conv1.kernel.shape[-1] == block.conv2.kernel.shape[-1] == width
    assert model.head.kernel.shape == (4 * w, 10)
    expected = _resnet_count(w, 1, 10, norm, shortcut == "projection")
    assert count_params(model) == expected
    # the closed form of the docstring
    closed = 1044 * w**2 + (9 + (86 if norm else 43)) * w + 4 * w * 10 + 10
    if shortcut == "projection":
        closed += 10 * w**2 + (12 if norm else 6) * w
    assert expected == closed
    if (base_width, mult, norm, shortcut) == (4, 1, "batch", "projection"):
        assert expected == 17_462
    if (base_width, mult, norm, shortcut) == (16, 1, "batch", "projection"):
        assert expected == 272_186  # the README's default ResNet20(10, in_channels=1)


def test_resnet20_default_base_width_is_unchanged():
    """Default = base_width 16: 269,034 params (paper); only w = base * mult matters for init."""
    shape = lambda **kw: nnx.eval_shape(lambda: models.ResNet20(
        10, norm=None, shortcut="padding", rngs=nnx.Rngs(0), **kw))
    assert count_params(shape()) == 269_034 == _resnet_count(16, 3, 10, None, False)
    default = nnx.state(models.ResNet20(10, norm="batch", in_channels=1, rngs=nnx.Rngs(3)))
    same = nnx.state(models.ResNet20(10, 2, norm="batch", in_channels=1, base_width=8,
                                     rngs=nnx.Rngs(3)))
    chex.assert_trees_all_equal(default, same)
    with pytest.raises(ValueError, match="base_width"):
        models.ResNet20(10, base_width=0, rngs=nnx.Rngs(0))

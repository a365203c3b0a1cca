"""ResNet-20 for small images (He, Zhang, Ren, Sun 2016, "Deep residual learning for image
recognition", Sec. 4.2, the CIFAR-10 architecture), with a base width and a width multiplier."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from landscape.models.conv import conv_class, resolve_conv_impl
from landscape.models.init import lecun_normal
from landscape.models.layers import (
    apply_norm,
    check_input,
    check_norm,
    make_norm,
    param_dtype_or_default,
    rngs_from,
)
from landscape.validate import check_positive_int

__all__ = ["ResNet20", "BasicBlock"]

SHORTCUTS = ("projection", "padding")


def _conv3x3(c_in, c_out, stride, *, bias, dtype, rngs, conv_impl="auto"):
    # Symmetric padding 1 (as in the paper/PyTorch), not flax's asymmetric "SAME" for stride 2.
    return conv_class(conv_impl)(c_in, c_out, (3, 3), strides=stride, padding=((1, 1), (1, 1)),
                    use_bias=bias, param_dtype=dtype, kernel_init=lecun_normal, rngs=rngs)


class BasicBlock(nnx.Module):
    """``relu(norm2(conv2(relu(norm1(conv1(x))))) + shortcut(x))`` with 3x3 convolutions.

    When the block changes shape (stride 2 or new channel count) the shortcut is either a
    1x1 strided convolution followed by the norm (``"projection"``, He et al.'s option B) or
    parameter-free subsampling plus zero-padding of the new channels (``"padding"``, option A,
    the one He et al. use for CIFAR). Otherwise it is the identity.
    Convolutions carry a bias only when ``norm is None``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, *, norm, shortcut: str,
                 param_dtype, rngs: nnx.Rngs, conv_impl: str = "auto"):
        bias = norm is None
        kw = dict(dtype=param_dtype, rngs=rngs, conv_impl=conv_impl)
        self.conv1 = _conv3x3(c_in, c_out, stride, bias=bias, **kw)
        self.norm1 = make_norm(norm, c_out, param_dtype=param_dtype, rngs=rngs)
        self.conv2 = _conv3x3(c_out, c_out, 1, bias=bias, **kw)
        self.norm2 = make_norm(norm, c_out, param_dtype=param_dtype, rngs=rngs)
        self.stride, self.c_in, self.c_out = stride, c_in, c_out
        self.changes_shape = stride != 1 or c_in != c_out
        self.shortcut = shortcut if self.changes_shape else "identity"
        projection = self.shortcut == "projection"
        self.proj = nnx.data(
            conv_class(conv_impl)(c_in, c_out, (1, 1), strides=stride, padding="VALID",
                                  use_bias=bias,
                     param_dtype=param_dtype, kernel_init=lecun_normal, rngs=rngs)
            if projection else None)
        self.proj_norm = nnx.data(
            make_norm(norm, c_out, param_dtype=param_dtype, rngs=rngs) if projection else None)

    def _shortcut(self, x):
        if self.shortcut == "identity":
            return x
        if self.shortcut == "projection":
            return apply_norm(self.proj_norm, self.proj(x))
        x = x[:, :: self.stride, :: self.stride, :]
        extra = self.c_out - self.c_in
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(apply_norm(self.norm1, self.conv1(x)))
        h = apply_norm(self.norm2, self.conv2(h))
        return jax.nn.relu(h + self._shortcut(x))


class ResNet20(nnx.Module):
    """CIFAR ResNet-20: 3x3 stem, 3 stages x 3 basic blocks, global average pool, linear head.

    With ``w = base_width * width_multiplier``, the stem and stage 1 have ``w`` channels, stage
    2 has ``2 w`` and stage 3 ``4 w`` (He et al.: ``base_width=16``, so 16/32/64); stages 2 and
    3 start with a stride-2 block. That makes 1 + 3*3*2 = 19 3x3 convolutions plus the head
    (the "20" layers), and with ``shortcut="projection"`` two 1x1 projection convolutions.
    Works on any NHWC image size, including 8x8 digits (8 -> 4 -> 2 spatially).

    Parameter count, for ``c`` input channels and ``K`` classes (each conv has either a bias,
    ``norm=None``, or a norm with scale and bias, 2 per channel):

    * ``norm=None``, ``shortcut="padding"``: ``1044 w^2 + (9 c + 43) w + 4 w K + K``; with
      ``w = 16, c = 3, K = 10`` that is 269,034, the paper's 0.27M;
    * a norm instead of biases adds ``43 w`` (``1044 w^2 + (9 c + 86) w + 4 w K + K``);
    * ``shortcut="projection"`` adds ``10 w^2 + 6 w`` without norm (two 1x1 convs with biases,
      2,656 for ``w = 16``) or ``10 w^2 + 12 w`` with a norm. The default
      ``ResNet20(10, in_channels=1)`` (BatchNorm, projection) has 272,186; with
      ``base_width=4`` it has 17,462. BatchNorm statistics (2 per normalised channel) are
      state, not parameters.

    Args:
      num_classes: outputs. width_multiplier: positive int scaling every channel count.
      base_width: positive int, the channels of the stem and stage 1 before the multiplier
        (default 16, as in the paper; e.g. 4 for quick CPU runs).
      norm: ``"batch"`` (default, as in the paper), ``"layer"`` (per-position over channels)
        or ``None``. in_channels: input channels (3 for CIFAR, 1 for digits).
      shortcut: ``"projection"`` (1x1 conv + norm, default; Git Re-Basin's choice) or
        ``"padding"`` (He et al.'s parameter-free option A).
      param_dtype: ``None`` = default float. rngs: ``nnx.Rngs``.
      conv_impl: ``"lax"``, ``"shift"`` (``landscape.models.conv.ShiftConv``: same function
        and parameters, faster curvature products and training loops on CPU) or ``"auto"``
        (default: ``"shift"`` on the CPU backend).

    Input ``(n, H, W, in_channels)`` (or ``(n, H, W)`` if ``in_channels == 1``); output
    ``(n, num_classes)`` logits. Param paths: ``stem``, ``stem_norm``, ``stages/<s>/<b>/
    {conv1,norm1,conv2,norm2,proj,proj_norm}``, ``head``.
    """

    def __init__(self, num_classes: int = 10, width_multiplier: int = 1, *,
                 norm: str | None = "batch", in_channels: int = 3,
                 shortcut: str = "projection", param_dtype=None, conv_impl: str = "auto",
                 base_width: int = 16, rngs: nnx.Rngs | None = None, key=None):
        rngs = rngs_from(rngs, key, "ResNet20")
        num_classes = check_positive_int(num_classes, "num_classes")
        width_multiplier = check_positive_int(width_multiplier, "width_multiplier")
        in_channels = check_positive_int(in_channels, "in_channels")
        base_width = check_positive_int(base_width, "base_width")
        check_norm(norm)
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}; got {shortcut!r}")
        dtype = param_dtype_or_default(param_dtype)
        self.num_classes, self.width_multiplier, self.in_channels = (
            num_classes, width_multiplier, in_channels)
        self.norm, self.shortcut, self.base_width = norm, shortcut, base_width
        w = base_width * width_multiplier
        widths = [w, 2 * w, 4 * w]
        self.conv_impl = resolve_conv_impl(conv_impl)  # validates before building anything
        self.stem = _conv3x3(in_channels, widths[0], 1, bias=norm is None, dtype=dtype, rngs=rngs,
                             conv_impl=conv_impl)
        self.stem_norm = make_norm(norm, widths[0], param_dtype=dtype, rngs=rngs)
        stages, c_in = [], widths[0]
        for s, c in enumerate(widths):
            blocks = []
            for b in range(3):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(BasicBlock(c_in, c, stride, norm=norm, shortcut=shortcut,
                                         param_dtype=dtype, rngs=rngs, conv_impl=conv_impl))
                c_in = c
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        self.head = nnx.Linear(widths[-1], num_classes, param_dtype=dtype,
                               kernel_init=lecun_normal, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Globally pooled features ``(n, 4 * base_width * width_multiplier)``."""
        if jnp.ndim(x) == 3 and self.in_channels == 1:
            x = x[..., None]
        check_input(x, "x", (None, None, self.in_channels), model="ResNet20")
        h = jax.nn.relu(apply_norm(self.stem_norm, self.stem(x)))
        for stage in self.stages:
            for block in stage:
                h = block(h)
        return jnp.mean(h, axis=(1, 2))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(n, num_classes)``."""
        return self.head(self.features(x))

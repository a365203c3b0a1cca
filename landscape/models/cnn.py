"""Small convolutional networks: ``CNN2D`` (NHWC images, e.g. 8x8 digits) and ``CNN1D`` (signals,
e.g. length-40 MNIST-1D)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from landscape.models.conv import conv_class, resolve_conv_impl
from landscape.models.init import lecun_normal
from landscape.models.layers import (
    activation_fn,
    apply_norm,
    check_ghost_batch_size,
    check_input,
    check_norm,
    make_norm,
    param_dtype_or_default,
    rngs_from,
)
from landscape.validate import check_positive_int

__all__ = ["CNN2D", "CNN1D", "cnn_num_params"]


def cnn_num_params(in_channels: int, width: int, num_layers: int, num_classes: int,
                   kernel_elems: int, norm: str | None = None) -> int:
    """Parameter count of ``CNN1D``/``CNN2D`` (``kernel_elems`` = 5 for 1D, 9 for 3x3 kernels).

    Layer ``i`` has ``c_i = width * 2**i`` channels: ``kernel_elems * c_{i-1} * c_i + c_i``
    weights and biases, plus ``2 * c_i`` for a norm; the head has ``c_last * C + C``.
    """
    total, c_prev = 0, in_channels
    for i in range(num_layers):
        c = width * 2**i
        total += kernel_elems * c_prev * c + c + (2 * c if norm is not None else 0)
        c_prev = c
    return total + c_prev * num_classes + num_classes


class _ConvNet(nnx.Module):
    """Shared body: ``[Conv -> norm -> act -> (2x pool)] * num_layers -> global avg -> Linear``."""

    spatial_dims: int = 2
    name: str = "CNN"

    def __init__(self, num_classes: int, *, in_channels: int, width: int, num_layers: int,
                 kernel_size: int, activation, norm, pool: str, param_dtype, rngs: nnx.Rngs,
                 conv_impl: str = "auto", ghost_batch_size: int | None = None):
        num_classes, in_channels, width, num_layers, kernel_size = (
            check_positive_int(value, arg) for value, arg in (
                (num_classes, "num_classes"), (in_channels, "in_channels"), (width, "width"),
                (num_layers, "num_layers"), (kernel_size, "kernel_size")))
        check_norm(norm)
        ghost = check_ghost_batch_size(ghost_batch_size, norm)
        if pool not in ("avg", "max"):
            raise ValueError(f"{self.name}: pool must be 'avg' or 'max'; got {pool!r}")
        dtype = param_dtype_or_default(param_dtype)
        self.num_classes, self.in_channels, self.width = num_classes, in_channels, width
        self.num_layers, self.norm, self.pool = num_layers, norm, pool
        self.ghost_batch_size = ghost
        self.activation = activation_fn(activation)
        channels = [in_channels] + [width * 2**i for i in range(num_layers)]
        kernel = (kernel_size,) * self.spatial_dims
        conv = conv_class(conv_impl)
        self.conv_impl = resolve_conv_impl(conv_impl)
        self.convs = nnx.List([
            conv(channels[i], channels[i + 1], kernel, padding="SAME", param_dtype=dtype,
                     use_bias=True, kernel_init=lecun_normal, rngs=rngs)
            for i in range(num_layers)
        ])
        self.norms = nnx.List(
            [make_norm(norm, c, param_dtype=dtype, rngs=rngs, ghost_batch_size=ghost)
             for c in channels[1:]]
            if norm is not None else []
        )
        self.head = nnx.Linear(channels[-1], num_classes, param_dtype=dtype,
                               kernel_init=lecun_normal, rngs=rngs)

    def _pool(self, h: jax.Array) -> jax.Array:
        # 2x downsampling along every spatial axis still at least 2 long (static shapes).
        window = tuple(2 if s >= 2 else 1 for s in h.shape[1:-1])
        if all(w == 1 for w in window):
            return h
        op = nnx.avg_pool if self.pool == "avg" else nnx.max_pool
        return op(h, window_shape=window, strides=window, padding="VALID")

    def features(self, x: jax.Array) -> jax.Array:
        """Globally averaged last feature map, shape ``(n, width * 2**(num_layers-1))``."""
        h = self._prepare(x)
        for i, conv in enumerate(self.convs):
            norm = self.norms[i] if self.norm is not None else None
            h = self.activation(apply_norm(norm, conv(h)))
            if i < self.num_layers - 1:
                h = self._pool(h)
        return jnp.mean(h, axis=tuple(range(1, 1 + self.spatial_dims)))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(n, num_classes)``."""
        return self.head(self.features(x))


class CNN2D(_ConvNet):
    """2D CNN for small NHWC images (default sized for 8x8x1 digits).

    Layer ``i`` (``i = 0..num_layers-1``) is a ``kernel_size``-square SAME convolution to
    ``width * 2**i`` channels (``width`` is the base width: the channels of layer 0, doubling
    at each layer), then ``norm``, then ``activation``; every layer but the last is
    followed by 2x2 pooling (``pool="avg"``/``"max"``; an axis already of length 1 is not
    pooled). A global average over space and a linear head give ``(n, num_classes)`` logits.

    Parameters (see ``cnn_num_params(in_channels, width, num_layers, C, 9, norm)``): the default
    ``width=16, num_layers=3`` without norm has 23,946 parameters for 1 input channel and 10
    classes; ``width=24, num_layers=3`` has 53,194 and ``width=32, num_layers=2`` has 19,466.

    Input: ``(n, H, W, in_channels)``, or ``(n, H, W)`` when ``in_channels == 1``. Inputs of any
    H, W work (the convolutions are SAME-padded and the head follows a global average).
    Param paths: ``convs/<i>/{kernel,bias}`` (kernel ``(k, k, c_in, c_out)``),
    ``norms/<i>/...``, ``head/{kernel,bias}``.

    ``conv_impl``: ``"lax"`` (library convolution), ``"shift"`` (``ShiftConv``: the same
    function and parameters as shifted matrix products, 10-13x faster for curvature products and
    training loops on CPU; see ``landscape.models.conv``) or ``"auto"`` (default: ``"shift"``
    on the CPU backend, ``"lax"`` otherwise). ``ghost_batch_size``: with ``norm="batch"``,
    train-mode BatchNorm statistics over consecutive virtual batches of that many examples
    (``landscape.models.layers.GhostBatchNorm``; Hoffer et al. 2017).
    """

    spatial_dims = 2
    name = "CNN2D"

    def __init__(self, num_classes: int = 10, *, in_channels: int = 1, width: int = 16,
                 num_layers: int = 3, kernel_size: int = 3, activation="relu",
                 norm: str | None = None, pool: str = "avg", param_dtype=None,
                 conv_impl: str = "auto", ghost_batch_size: int | None = None,
                 rngs: nnx.Rngs | None = None, key=None):
        rngs = rngs_from(rngs, key, "CNN2D")
        super().__init__(num_classes, in_channels=in_channels, width=width,
                         num_layers=num_layers, kernel_size=kernel_size, activation=activation,
                         norm=norm, pool=pool, param_dtype=param_dtype, rngs=rngs,
                         conv_impl=conv_impl, ghost_batch_size=ghost_batch_size)

    def _prepare(self, x):
        if jnp.ndim(x) == 3 and self.in_channels == 1:
            x = x[..., None]
        check_input(x, "x", (None, None, self.in_channels), model=self.name)
        return x


class CNN1D(_ConvNet):
    """1D CNN for signals (default sized for MNIST-1D: length 40, one channel, 10 classes).

    Same layout as ``CNN2D`` with 1D convolutions of width ``kernel_size`` (default 5) and
    length-2 pooling. Input ``(n, L, in_channels)`` or ``(n, L)`` when ``in_channels == 1``.
    Parameters: ``cnn_num_params(in_channels, width, num_layers, C, kernel_size, norm)``; the
    default ``width=16, num_layers=3`` has 13,642 for one channel and 10 classes.
    ``conv_impl`` and ``ghost_batch_size`` as for ``CNN2D``.
    """

    spatial_dims = 1
    name = "CNN1D"

    def __init__(self, num_classes: int = 10, *, in_channels: int = 1, width: int = 16,
                 num_layers: int = 3, kernel_size: int = 5, activation="relu",
                 norm: str | None = None, pool: str = "avg", param_dtype=None,
                 conv_impl: str = "auto", ghost_batch_size: int | None = None,
                 rngs: nnx.Rngs | None = None, key=None):
        rngs = rngs_from(rngs, key, "CNN1D")
        super().__init__(num_classes, in_channels=in_channels, width=width,
                         num_layers=num_layers, kernel_size=kernel_size, activation=activation,
                         norm=norm, pool=pool, param_dtype=param_dtype, rngs=rngs,
                         conv_impl=conv_impl, ghost_batch_size=ghost_batch_size)

    def _prepare(self, x):
        if jnp.ndim(x) == 2 and self.in_channels == 1:
            x = x[..., None]
        check_input(x, "x", (None, self.in_channels), model=self.name)
        return x

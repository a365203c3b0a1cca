"""Convolution as a sum of shifted matrix products, for fast derivatives inside loops on CPU.

``ShiftConv`` is a drop-in ``flax.nnx.Conv`` (same constructor, parameters ``kernel``
``(*kernel_size, c_in, c_out)`` and ``bias`` ``(c_out,)``, same initialisation and random-key use)
whose forward pass is

    y[p] = bias + sum_{o in offsets} x_pad[s * p + o] @ kernel[o],

one ``(N * prod(out), c_in) x (c_in, c_out)`` matrix product per kernel offset ``o`` (``s`` the
strides, ``x_pad`` the zero-padded input). The arithmetic equals the direct convolution's, but the
program contains only ``pad``, strided ``slice``, ``dot_general`` and ``add``, whose derivatives are
of the same kinds. Why it exists: XLA:CPU runs the derivative convolutions of ``lax.conv`` many
times slower inside a ``while_loop``/``scan`` body than at top level (measured 25-70x for the
MNIST-1D CNN; the loop body's fixed layouts miss the fast convolution path), and every Lanczos
iteration, dataset-mean operator and training chunk in this library runs inside such a loop.
On GPU the library convolution is the better choice; the models' default ``conv_impl="auto"``
picks ``ShiftConv`` on the CPU backend and ``nnx.Conv`` otherwise (decided when the model is
built). Measured by ``benchmarks/conv_impl.py`` on a 2-core CPU (2026-11-22), CNN1D on
MNIST-1D: top-5 Hessian eigenpairs 10.2x faster (55 s -> 5.4 s with compilation), a batched
dataset HVP 13.5x, 100 Adam steps in one ``fori_loop`` 12.9x; a single top-level gradient is
2.3x slower, which no loop in the library does.
``landscape.connectivity.infer_spec`` follows the shifted form as it follows ``lax.conv``
(slices keep the channel axis, the products join it with the kernel's input axis).

Supported: any number of spatial axes, ``padding`` ``"SAME"``, ``"VALID"`` or explicit pairs,
``strides``; not input/kernel dilation, feature groups or masks (a clear error says so).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

__all__ = ["ShiftConv", "CONV_IMPLS", "conv_class", "resolve_conv_impl"]

CONV_IMPLS = ("auto", "lax", "shift")


def _tuple(value, n: int) -> tuple[int, ...]:
    if value is None:
        return (1,) * n
    if isinstance(value, int):
        return (value,) * n
    return tuple(value)


def _pads(padding, sizes, kernel, strides) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return [(0, 0)] * len(sizes)
        if mode != "SAME":
            raise ValueError(
                f"ShiftConv: padding must be 'SAME', 'VALID' or pairs; got {padding!r}")
        out = []
        for n, k, s in zip(sizes, kernel, strides, strict=True):
            total = max((-(-n // s) - 1) * s + k - n, 0)  # lax's SAME convention
            out.append((total // 2, total - total // 2))
        return out
    if isinstance(padding, int):
        return [(padding, padding)] * len(sizes)
    pairs = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
    if len(pairs) != len(sizes):
        raise ValueError(f"ShiftConv: padding needs one pair per spatial axis; got {padding!r}")
    return pairs


class ShiftConv(nnx.Conv):
    """``nnx.Conv`` evaluated as shifted matrix products (see the module docstring).

    Input ``(n, *spatial, c_in)`` (channel-last, one batch axis); output
    ``(n, *spatial_out, c_out)`` with the sizes ``lax.conv_general_dilated`` gives.
    """

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        del out_sharding
        kernel_size = tuple(self.kernel_size)
        nd = len(kernel_size)
        if any(d != 1 for d in _tuple(self.input_dilation, nd) + _tuple(self.kernel_dilation, nd)):
            raise ValueError("ShiftConv does not support dilation; use conv_impl='lax'")
        if self.feature_group_count != 1 or self.mask is not None:
            raise ValueError("ShiftConv does not support feature groups or masks; "
                             "use conv_impl='lax'")
        if inputs.ndim != nd + 2:
            raise ValueError(f"ShiftConv expects input (n, {nd} spatial axes, c_in); "
                             f"got shape {inputs.shape}")
        strides = _tuple(self.strides, nd)
        sizes = inputs.shape[1:-1]
        pads = _pads(self.padding, sizes, kernel_size, strides)
        x = jnp.pad(inputs, [(0, 0), *pads, (0, 0)])
        padded = x.shape[1:-1]
        out = [(p - k) // s + 1 for p, k, s in zip(padded, kernel_size, strides, strict=True)]
        if any(o < 1 for o in out):
            raise ValueError(f"ShiftConv: kernel {kernel_size} larger than padded input {padded}")
        kernel = self.kernel[...]
        dtype = self.dtype or jnp.result_type(inputs, kernel)
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        n, c = x.shape[0], x.shape[-1]
        y = None
        for offset in itertools.product(*(range(k) for k in kernel_size)):
            limit = [o + (m - 1) * s + 1 for o, m, s in zip(offset, out, strides, strict=True)]
            window = lax.slice(x, (0, *offset, 0), (n, *limit, c), (1, *strides, 1))
            term = jnp.einsum("...c,co->...o", window, kernel[offset], precision=self.precision)
            y = term if y is None else y + term
        if self.use_bias:
            y = y + self.bias[...].astype(dtype)
        return y


def resolve_conv_impl(conv_impl: str) -> str:
    """``"auto"`` -> ``"shift"`` on the CPU backend, ``"lax"`` on GPU/TPU; others unchanged."""
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}; got {conv_impl!r}")
    if conv_impl == "auto":
        return "shift" if jax.default_backend() == "cpu" else "lax"
    return conv_impl


def conv_class(conv_impl: str) -> type[nnx.Conv]:
    """The module class for ``conv_impl``: ``nnx.Conv`` (``"lax"``) or ``ShiftConv``
    (``"shift"``); ``"auto"`` picks by backend (``resolve_conv_impl``)."""
    return ShiftConv if resolve_conv_impl(conv_impl) == "shift" else nnx.Conv

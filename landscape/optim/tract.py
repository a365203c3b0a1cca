"""TrAct (Petersen, Borgelt, Ermon, NeurIPS 2024): train the first layer's pre-activations.

Petersen, Borgelt, Ermon, "TrAct: Making First-layer Pre-Activations Trainable", NeurIPS 2024
(arXiv:2410.23970). Reference code: github.com/Felix-Petersen/tract, ``src/tract.py`` (a custom
backward of ``nn.Linear``/``nn.Conv2d``). Here it is a gradient transformation of the first
layer's kernel leaf, fed the layer's inputs through optax's extra arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.linalg import cho_factor, cho_solve

from landscape.optim.base import chain_with_decay_and_lr

__all__ = ["TrActState", "scale_by_tract", "tract", "tract_precondition", "conv_patches"]

_HIGHEST = jax.lax.Precision.HIGHEST
_LAYOUTS = ("in_out", "out_in")


class TrActState(NamedTuple):
    """State of ``scale_by_tract``: only the step count (int32); TrAct keeps no statistics."""

    count: jax.Array


def tract_precondition(grad: jax.Array, inputs: jax.Array, lambda_, *,
                       layout: str = "in_out") -> jax.Array:
    r"""The TrAct gradient of one first-layer kernel: ``(x^T x / b + lambda I)^{-1} grad``.

    ``inputs`` ``x``: the layer's inputs, shape ``(..., n)``, read as ``b`` rows of ``n``
    features (``b`` = the product of the leading axes: batch, and positions for a convolution's
    patches, see ``conv_patches``). ``grad``: the kernel's gradient; with ``layout="in_out"``
    (flax ``Dense``/``Conv``: ``(n, out)`` or ``(*window, c_in, out)``, so that the
    pre-activations are ``z = x @ W``) it is read as an ``(n, out)`` matrix ``G`` and the result
    is ``(x^T x / b + lambda I)^{-1} G``; with ``layout="out_in"`` (PyTorch: ``(out, n)`` or
    ``(out, c_in, *window)``) it is ``G (x^T x / b + lambda I)^{-1}``. The result has
    ``grad``'s shape and dtype; the algebra runs in at least float32 at the highest matmul
    precision.

    When ``b < n`` the same matrix is applied through the Woodbury identity with a ``b x b``
    solve, ``(1/lambda) (G - x^T (x x^T / b + lambda I)^{-1} x G / b)``, as the authors do.
    ``lambda > 0`` is required (the matrix is then symmetric positive definite). The Woodbury
    form divides a difference by ``lambda``, so for ``lambda`` far below the eigenvalues of
    ``x x^T / b`` it loses about ``log10(1 / lambda)`` digits (the authors' form does too).
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    n = inputs.shape[-1]
    shape = grad.shape
    n_kernel = int(np.prod(shape[:-1] if layout == "in_out" else shape[1:]))
    if grad.ndim < 2 or n_kernel != n:
        raise ValueError(
            f"tract_inputs: the kernel of shape {shape} (layout {layout!r}) takes "
            f"{n_kernel} input features, but tract_inputs has {n} (shape {inputs.shape})")
    dtype = jnp.promote_types(grad.dtype, jnp.float32)
    x = inputs.reshape(-1, n).astype(dtype)
    b = x.shape[0]
    g = grad.reshape(-1, shape[-1]) if layout == "in_out" else grad.reshape(shape[0], -1).T
    g = g.astype(dtype)
    lam = jnp.asarray(lambda_, dtype)
    if b >= n:
        gram = jnp.matmul(x.T, x, precision=_HIGHEST) / b + lam * jnp.eye(n, dtype=dtype)
        out = cho_solve(cho_factor(gram), g)
    else:
        gram = jnp.matmul(x, x.T, precision=_HIGHEST) / b + lam * jnp.eye(b, dtype=dtype)
        xg = jnp.matmul(x, g, precision=_HIGHEST)
        out = (g - jnp.matmul(x.T, cho_solve(cho_factor(gram), xg), precision=_HIGHEST) / b) / lam
    out = out.reshape(shape) if layout == "in_out" else out.T.reshape(shape)
    return out.astype(grad.dtype)


def scale_by_tract(lambda_: float = 0.1, *, kernels: Any,
                   layout: str = "in_out") -> optax.GradientTransformationExtraArgs:
    r"""TrAct: the first layer's kernel gradient made a step on its pre-activations.

    For the first layer ``z = x W`` (``x``: ``b x n`` inputs, ``W``: ``n x out``) TrAct takes
    a gradient step on the pre-activations, ``z* = z - eta b grad_z L`` (``b`` because ``L``
    is a batch mean), and finds the weight change that best reaches it with a ridge penalty::

        Delta W = argmin_D  ||x D - (z* - z)||^2 / b + lambda ||D||^2
                = -eta (x^T x / b + lambda I)^{-1} grad_W L,        grad_W L = x^T grad_z L.

    So the update is a gradient step with ``grad_W L`` replaced by ``(x^T x / b + lambda
    I)^{-1} grad_W L`` (``tract_precondition``). Large ``lambda`` gives SGD at rate
    ``eta / lambda``; ``lambda -> 0`` with ``b <= n`` reaches ``z*`` exactly. The paper (and
    the authors' ``TrActLinear``/``TrActConv2d``) apply it inside the backward pass, so any
    optimizer that follows sees the TrAct gradient; here it is this transformation, placed
    first in a chain: ``optax.chain(scale_by_tract(0.1, kernels=mask), optax.adam(lr))``.

    Arguments:
      lambda_: the ridge ``lambda > 0`` (the authors' default and recommendation: 0.1); it
        is relative to ``x^T x / b``, so it assumes standardised inputs.
      kernels: which leaves are first-layer kernels: a pytree of bools with the params'
        structure, or a function of the updates returning one (as in ``optax.masked``; under
        ``optax.inject_hyperparams`` a function must be named in ``static_args``). Other
        leaves (the bias among them: TrAct leaves it alone) pass through unchanged.
      layout: ``"in_out"`` (flax kernels, ``z = x @ W``) or ``"out_in"`` (PyTorch weights).

    ``update(updates, state, params=None, *, tract_inputs)``: ``tract_inputs`` is the batch's
    input to the first layer, shape ``(..., n)`` (for a convolution its patches, from
    ``conv_patches``); it is passed by keyword through ``optax.chain``, ``inject_hyperparams``
    and ``MultiSteps`` (``GradientTransformationExtraArgs``). The state is the count only.
    Under ``optax.MultiSteps(tract(...))`` TrAct is applied to the averaged gradient with the
    inputs passed at the emitting step; TrAct of each micro-batch is linear in its gradient
    but uses that micro-batch's inputs, so for exact per-micro-batch TrAct precondition each
    micro-batch's gradient with ``tract_precondition`` before accumulating.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    if isinstance(lambda_, int | float) and not lambda_ > 0:
        raise ValueError(f"lambda_ must be > 0, got {lambda_}")
    if kernels is None:
        raise ValueError("kernels: pass a pytree of bools (or a function of the params "
                         "returning one) selecting the first-layer kernel")

    def init(params):
        del params
        return TrActState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None, *, tract_inputs=None, **extra_args):
        del params, extra_args
        if tract_inputs is None:
            raise ValueError("scale_by_tract: update(...) needs tract_inputs=<the first "
                             "layer's inputs, shape (..., n)>")
        selected = kernels(updates) if callable(kernels) else kernels
        if jax.tree.structure(selected) != jax.tree.structure(updates):
            raise ValueError(
                f"kernels: expected a pytree of bools with the structure of the updates "
                f"{jax.tree.structure(updates)}, got {jax.tree.structure(selected)}")
        inputs = jnp.asarray(tract_inputs)
        out = jax.tree.map(
            lambda g, s: tract_precondition(g, inputs, lambda_, layout=layout) if s else g,
            updates, selected)
        return out, TrActState(count=optax.safe_increment(state.count))

    return optax.GradientTransformationExtraArgs(init, update)


def tract(learning_rate: optax.ScalarOrSchedule, lambda_: float = 0.1, *, kernels: Any,
          layout: str = "in_out", weight_decay: float = 0.0,
          mask: Any = None) -> optax.GradientTransformationExtraArgs:
    """SGD with TrAct on the first layer (the paper's plain-SGD setting):
    ``u_t = -eta_t (P g_t + weight_decay * w_t)`` with ``P`` the TrAct preconditioner on the
    ``kernels`` leaves and the identity elsewhere; see ``scale_by_tract``. For TrAct under
    another optimizer chain ``scale_by_tract`` in front of it."""
    return chain_with_decay_and_lr(scale_by_tract(lambda_, kernels=kernels, layout=layout),
                                   learning_rate, weight_decay, mask)


def conv_patches(x: jax.Array, window: Sequence[int], strides: int | Sequence[int] = 1,
                 padding: str | Sequence[tuple[int, int]] = "VALID") -> jax.Array:
    """The patches of a channels-last convolution, ordered like its flattened kernel.

    ``x``: ``(N, *spatial, c_in)`` with 1 to 3 spatial axes; ``window``: the kernel's spatial
    size. Returns ``(N, *spatial_out, prod(window) * c_in)`` such that ``patches @
    kernel.reshape(-1, c_out)`` equals ``lax.conv_general_dilated(x, kernel, strides,
    padding)`` for a kernel of shape ``(*window, c_in, c_out)`` (flax's layout): the
    ``tract_inputs`` of a convolutional first layer. Built as a convolution with the identity
    kernel, so the feature order is the kernel's by construction.
    """
    nd = len(window)
    if nd not in (1, 2, 3) or x.ndim != nd + 2:
        raise ValueError(f"x: expected (N, *spatial, c_in) with {nd} spatial axes for a "
                         f"window of {tuple(window)} (1 to 3 axes), got shape {x.shape}")
    n = int(np.prod(window)) * x.shape[-1]
    eye = jnp.eye(n, dtype=x.dtype).reshape(*window, x.shape[-1], n)
    strides = (strides,) * nd if isinstance(strides, int) else tuple(strides)
    spec = "DHW"[3 - nd:]
    numbers = jax.lax.conv_dimension_numbers(x.shape, eye.shape,
                                             (f"N{spec}C", f"{spec}IO", f"N{spec}C"))
    return jax.lax.conv_general_dilated(x, eye, strides, padding, dimension_numbers=numbers,
                                        precision=_HIGHEST)


"""Flax NNX models used by the experiments.

All models are standard ``nnx.Module``s: trainable arrays are ``nnx.Param``, BatchNorm
statistics are ``nnx.BatchStat``, fixed arrays (a frozen attention head) are ``Constant``
variables, and nothing draws random numbers in ``__call__`` (there is no dropout).
``__call__`` takes a batch with a leading example axis. BatchNorm starts in train mode
(batch statistics); ``model.eval()`` / ``landscape.nnx`` select the running averages. Turn a
model into pure functions with ``landscape.nnx``.

Parameters default to the default float dtype (float32, or float64 under ``JAX_ENABLE_X64``),
BatchNorm statistics included; pass ``param_dtype`` to choose. Kernels are LeCun-normal (flax's
default distribution) drawn by ``landscape.models.init``, which compiles one random program for
all shapes instead of one per shape (ResNet-20 builds in ~0.7 s of CPU instead of ~7 s).

* ``MLP`` (norm/residual variants), ``CNN2D`` (8x8 digits), ``CNN1D`` (MNIST-1D)
* ``ResNet20`` (He et al. 2016) with width multiplier and BatchNorm/LayerNorm/no norm
* ``Attention``: one-layer softmax attention, W or (K, Q) (Tarzanagh et al. 2023)
* ``LinearSelfAttention`` for in-context regression (von Oswald et al. 2023)
* ``Transformer``: small decoder-only, qk-layernorm option, ``z_loss`` (Wortsman et al. 2023)

Convolutional models take ``conv_impl="auto"`` (default), ``"lax"`` or ``"shift"``:
``ShiftConv`` computes the same convolution as shifted matrix products, which XLA:CPU
differentiates 10-13x faster inside loops (Lanczos, dataset-mean operators, training chunks);
``"auto"`` uses it on the CPU backend. See ``landscape.models.conv``.
"""

from landscape.models.attention import Attention
from landscape.models.cnn import CNN1D, CNN2D, cnn_num_params
from landscape.models.conv import ShiftConv
from landscape.models.layers import ACTIVATIONS, Constant, count_params
from landscape.models.lsa import LinearSelfAttention
from landscape.models.mlp import MLP
from landscape.models.resnet import BasicBlock, ResNet20
from landscape.models.transformer import CausalSelfAttention, Transformer, z_loss

__all__ = [
    "ACTIVATIONS",
    "Attention",
    "BasicBlock",
    "CNN1D",
    "CNN2D",
    "CausalSelfAttention",
    "Constant",
    "LinearSelfAttention",
    "MLP",
    "ResNet20",
    "ShiftConv",
    "Transformer",
    "cnn_num_params",
    "count_params",
    "z_loss",
]

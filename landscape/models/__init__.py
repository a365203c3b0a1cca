"""Flax NNX models used by the experiments.

All models are standard ``nnx.Module``s: trainable arrays are ``nnx.Param``, BatchNorm
statistics are ``nnx.BatchStat``, fixed arrays (a frozen head) are ``Constant`` variables, and
nothing draws random numbers in ``__call__``. ``__call__`` takes a batch with a leading example
axis. Turn a model into pure functions with ``landscape.nnx``.

Parameters default to the default float dtype (float32, or float64 under ``JAX_ENABLE_X64``);
pass ``param_dtype`` to choose.
"""

from landscape.models.cnn import CNN1D, CNN2D, cnn_num_params
from landscape.models.layers import ACTIVATIONS, Constant, count_params
from landscape.models.mlp import MLP

__all__ = [
    "ACTIVATIONS",
    "CNN1D",
    "CNN2D",
    "Constant",
    "MLP",
    "cnn_num_params",
    "count_params",
]

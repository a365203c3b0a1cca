"""The edge-of-stability setting shared by the training-dynamics experiments.

Full-batch training of a small tanh MLP (``landscape.models.MLP``) on a fixed subset of
scikit-learn's digits (8x8 images flattened to 64 features) or of MNIST-1D (40 features), inputs
centred per feature, with
either the square loss on one-hot targets (``0.5 ||f(x) - e_y||^2``, the loss Cohen et al. 2021
use for most of their runs) or softmax cross-entropy. The subset is the first ``num_examples``
training examples of ``landscape.data.digits`` under the split key; everything is a pure
function of ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

LOSSES = ("mse", "cross_entropy")


class Setting(NamedTuple):
    """``loss_fn(params, batch)``, ``apply_fn(params, x)``, initial ``params``, ``dataset``."""

    loss_fn: Callable
    apply_fn: Callable
    params: Any
    dataset: dict
    num_params: int


DATASETS = ("digits", "mnist1d")
MODELS = ("mlp", "cnn")


def setting(*, seed: int, num_examples: int, width: int, depth: int, loss: str,
            activation: str = "tanh", dataset: str = "digits", model: str = "mlp") -> Setting:
    """Build the setting in the default float dtype (float64 under x64).

    ``model="mlp"``: ``MLP(features, width, depth, 10)``; ``model="cnn"`` (MNIST-1D only):
    ``CNN1D(width=width, num_layers=depth)`` (channels ``width * 2^i``, kernel 5, average
    pooling), with the same activation.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}; got {model!r}")
    if model == "cnn" and dataset != "mnist1d":
        raise ValueError("model='cnn' is the 1D CNN of MNIST-1D; use dataset='mnist1d'")
    from landscape import data, losses, models, validate
    from landscape.nnx import functional

    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}; got {dataset!r}")
    dtype = jnp.result_type(float)
    k_split, k_init = jax.random.split(jax.random.key(seed))
    if dataset == "digits":
        train, _ = data.digits(k_split, flatten=True)
    else:
        train, _ = data.mnist1d(k_split, num_train=max(num_examples, 1), num_test=10)
    if not 1 <= num_examples <= train["x"].shape[0]:
        raise ValueError(f"num_examples must be in [1, {train['x'].shape[0]}]; got "
                         f"{num_examples}")
    x = train["x"][:num_examples].astype(dtype)
    x = x - jnp.mean(x, axis=0)
    labels = train["y"][:num_examples]
    if model == "mlp":
        net = models.MLP(x.shape[1], width, depth, 10, activation=activation, key=k_init)
    else:
        net = models.CNN1D(10, width=width, num_layers=depth, activation=activation, key=k_init)
    fm = functional(net, mode="eval")
    if loss == "mse":
        dataset = {"x": x, "y": jax.nn.one_hot(labels, 10, dtype=dtype)}
        out_loss = losses.mse
    else:
        dataset = {"x": x, "y": labels}
        out_loss = losses.softmax_cross_entropy

    def loss_fn(params, batch):
        return out_loss(fm.apply(params, batch["x"]), batch["y"])

    dim, _ = validate.flat_dim_dtype(fm.params)
    return Setting(loss_fn, fm.apply, fm.params, dataset, dim)

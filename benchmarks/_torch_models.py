"""PyTorch twins of the benchmark models in ``_digits_models.py``, and the weight port.

The port is exact (a transpose per tensor, no arithmetic):

* dense ``w`` (in, out) -> ``nn.Linear.weight`` (out, in);
* conv ``w`` HWIO (3, 3, in, out) -> ``nn.Conv2d.weight`` OIHW; ``padding=1`` is JAX "SAME";
* images NHWC -> NCHW; before flattening, the torch CNN permutes back to NHWC so that the
  flattened features are in the JAX (h, w, c) order and the dense weights need no reshuffle.

``port_tree`` maps *any* pytree shaped like the JAX params (weights, or a direction vector) to
the list of tensors in ``module.parameters()`` order, so flat vectors can be compared across
frameworks (``jax_flat_to_torch_flat``, ``permutation``).
"""

from __future__ import annotations

import jax
import numpy as np
import torch
from _digits_models import CNN_CHANNELS, CNN_HIDDEN, MLP_WIDTHS
from torch import nn


class TorchMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(MLP_WIDTHS[:-1], MLP_WIDTHS[1:])
        )

    def forward(self, x):
        h = x.flatten(1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.tanh(h)
        return h


class TorchCNN(nn.Module):
    def __init__(self):
        super().__init__()
        c0, c1, c2 = CNN_CHANNELS
        self.conv0 = nn.Conv2d(c0, c1, 3, padding=1)
        self.conv1 = nn.Conv2d(c1, c2, 3, padding=1)
        self.dense0 = nn.Linear(4 * 4 * c2, CNN_HIDDEN)
        self.dense1 = nn.Linear(CNN_HIDDEN, 10)

    def forward(self, x):
        h = torch.relu(self.conv0(x))
        h = torch.relu(self.conv1(h))
        h = nn.functional.avg_pool2d(h, 2)
        h = h.permute(0, 2, 3, 1).flatten(1)  # (h, w, c) order, as in JAX
        h = torch.relu(self.dense0(h))
        return self.dense1(h)


def _layer_order(name: str) -> list[str]:
    if name == "mlp":
        return [f"dense{i}" for i in range(len(MLP_WIDTHS) - 1)]
    return ["conv0", "conv1", "dense0", "dense1"]


def port_tree(name: str, tree) -> list[np.ndarray]:
    """JAX-layout pytree -> numpy arrays in torch ``parameters()`` order and layout."""
    out = []
    for layer in _layer_order(name):
        w = np.asarray(tree[layer]["w"])
        w = w.transpose(3, 2, 0, 1) if w.ndim == 4 else w.T
        out += [np.ascontiguousarray(w), np.asarray(tree[layer]["b"])]
    return out


def torch_model(name: str, params, dtype=torch.float32) -> nn.Module:
    """A torch module of kind ``name`` holding a copy of the JAX ``params``."""
    module = TorchMLP() if name == "mlp" else TorchCNN()
    module = module.to(dtype)
    with torch.no_grad():
        for p, value in zip(module.parameters(), port_tree(name, params), strict=True):
            if p.shape != value.shape:
                raise ValueError(f"port mismatch: torch {tuple(p.shape)} vs {value.shape}")
            p.copy_(torch.tensor(np.array(value), dtype=dtype))
    return module.eval()


def torch_data(data: dict, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """NHWC numpy digits -> (NCHW float tensor, int64 labels)."""
    x = torch.as_tensor(np.ascontiguousarray(np.asarray(data["x"]).transpose(0, 3, 1, 2)))
    return x.to(dtype), torch.as_tensor(np.asarray(data["y"]), dtype=torch.int64)


def permutation(name: str, params) -> np.ndarray:
    """Index array ``perm`` with ``torch_flat = jax_flat[perm]``.

    ``jax_flat`` is ``ravel_pytree(params)`` order (leaves in ``jax.tree.leaves`` order);
    ``torch_flat`` is the concatenation of ``module.parameters()``. Only shapes are used.
    """
    leaves, treedef = jax.tree.flatten(params)
    sizes = [int(np.size(a)) for a in leaves]
    ids = np.split(np.arange(sum(sizes)), np.cumsum(sizes)[:-1])
    index_tree = jax.tree.unflatten(treedef, [i.reshape(np.shape(a)) for i, a in zip(ids, leaves)])
    return np.concatenate([a.ravel() for a in port_tree(name, index_tree)])


def jax_flat_to_torch_flat(name: str, params, v: np.ndarray) -> np.ndarray:
    """A flat vector in JAX ``ravel_pytree(params)`` order -> the same vector in torch order."""
    return np.asarray(v)[permutation(name, params)]


def torch_flat_to_jax_flat(name: str, params, v: np.ndarray) -> np.ndarray:
    """Inverse of ``jax_flat_to_torch_flat``."""
    v = np.asarray(v)
    out = np.empty_like(v)
    out[permutation(name, params)] = v
    return out

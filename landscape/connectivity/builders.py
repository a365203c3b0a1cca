"""Permutation-spec builders for the chain-shaped models of ``landscape.models``.

``mlp_spec`` and ``cnn_spec`` read only the param tree. They recognise the layout of
``landscape.models.MLP``/``CNN1D``/``CNN2D`` (``landscape.nnx.functional(model).params``) and of
any tree laid out the same way:

* body layers: leaves named ``kernel`` (``(..., fan_in, fan_out)``: dense or conv) whose path
  holds an integer index (``hidden/<l>``, ``convs/<l>``, ``Dense_<l>``), in index order; a
  ``bias`` next to a kernel shares its output permutation;
* the head: the one kernel-bearing node without an index (``head``), or the last indexed one
  when there is no such node;
* normalisation layers: 1-D leaves of an indexed node without a kernel (``norms/<l>/scale``,
  ``bias``, and BatchNorm ``mean``/``var`` if the tree also holds the state), joined to body
  layer ``l``.

Pass ``{"params": params, "state": state}`` to also permute BatchNorm running statistics.
With ``residual=True`` (``MLP(residual=True)``) all hidden layers share one permutation, the
residual stream. ``resnet_spec`` covers ``landscape.models.ResNet20`` with projection
shortcuts. Always confirm a spec with :func:`check_spec` on the real ``apply_fn``; for other
architectures use :func:`infer_spec`.
"""

from __future__ import annotations

import re
from collections import defaultdict

import jax
import numpy as np

from landscape.connectivity.spec import PermutationSpec, make_spec

__all__ = ["mlp_spec", "cnn_spec", "resnet_spec"]


def _index(path) -> int | None:
    """The last integer index on ``path`` (a SequenceKey, an int dict key, or ``Name_<i>``)."""
    found = None
    for k in path:
        v = getattr(k, "idx", getattr(k, "key", getattr(k, "name", None)))
        if isinstance(v, int | np.integer):
            found = int(v)
        elif isinstance(v, str):
            m = re.fullmatch(r".*?_(\d+)", v)
            found = int(m.group(1)) if m else found
    return found


def _layout(tree):
    """``(body, head, norms)``: body = {idx: node}, head = node or None, norms = {idx: node};
    a node is ``{leaf name: (keystr, shape)}``."""
    nodes: dict[tuple, dict[str, tuple[str, tuple]]] = defaultdict(dict)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = getattr(path[-1], "key", getattr(path[-1], "name", str(path[-1])))
        nodes[tuple(path[:-1])][str(name)] = (jax.tree_util.keystr(path), np.shape(leaf))
    body, norms, heads = {}, defaultdict(dict), []
    for parent, leaves in nodes.items():
        idx = _index(parent)
        if "kernel" in leaves:
            (body.__setitem__(idx, leaves) if idx is not None else heads.append(leaves))
        elif idx is not None:
            norms[idx].update({k: v for k, v in leaves.items() if len(v[1]) == 1})
    if len(heads) > 1:
        raise ValueError("params have several kernel nodes without an index; cannot tell the "
                         "head apart (use infer_spec)")
    if not heads:
        if not body:
            raise ValueError("params hold no 'kernel' leaves; expected an MLP/CNN param tree")
        heads = [body.pop(max(body))]
    return dict(sorted(body.items())), heads[0], dict(norms)


def _chain_spec(tree, *, residual: bool, name: str) -> PermutationSpec:
    body, head, norms = _layout(tree)
    order = list(body)
    perms, sizes = {}, {}
    layers = [body[i] for i in order] + [head]
    for j, idx in enumerate(order):
        kernel_key, kshape = layers[j]["kernel"]
        pname = "P_res" if residual and j > 0 else f"P_{idx}"
        if residual and j == 0:
            pname = "P_res"
        axes = perms.setdefault(pname, [])
        sizes.setdefault(pname, kshape[-1])
        if sizes[pname] != kshape[-1]:
            raise ValueError(f"{name}: residual stream widths differ ({sizes[pname]} vs "
                             f"{kshape[-1]} at layer {idx})")
        axes.append((kernel_key, len(kshape) - 1))
        if "bias" in layers[j]:
            axes.append((layers[j]["bias"][0], 0))
        for key, shape in norms.get(idx, {}).values():
            if shape[0] != kshape[-1]:
                raise ValueError(f"{name}: norm leaf {key} has size {shape[0]}, expected "
                                 f"{kshape[-1]} (layer {idx})")
            axes.append((key, 0))
        nxt_key, nxt_shape = layers[j + 1]["kernel"]
        axes.append((nxt_key, len(nxt_shape) - 2))
    return make_spec({k: tuple(v) for k, v in perms.items()}, sizes)


def mlp_spec(params, *, residual: bool = False) -> PermutationSpec:
    """Spec of an MLP param tree: one permutation ``P_<l>`` per hidden layer (``P_res`` for a
    residual MLP), acting on the layer's kernel columns, bias, norm parameters and the next
    layer's kernel rows. See the module docstring for the layouts it recognises."""
    return _chain_spec(params, residual=residual, name="mlp_spec")


def cnn_spec(params) -> PermutationSpec:
    """Spec of a plain CNN (conv -> norm -> act -> pool, then global average and a linear head):
    one permutation per conv layer over its output channels (kernel axis -1, bias, norms) and
    the next layer's input channels (axis -2). A dense layer after a channel-last flatten is a
    block axis (see ``spec``)."""
    return _chain_spec(params, residual=False, name="cnn_spec")


def _names(path) -> list:
    return [getattr(k, "key", getattr(k, "idx", getattr(k, "name", None))) for k in path]


def _resnet_axes(names, ndim):
    """``[(perm, axis), ...]`` for one ResNet20 leaf given its path names."""
    leaf = names[-1]
    if "head" in names:
        return [("P_stage2", 0)] if leaf == "kernel" else []
    if "stem" in names or "stem_norm" in names:
        return [("P_stage0", ndim - 1 if leaf == "kernel" else 0)]
    i = names.index("stages")
    s, b, module = int(names[i + 1]), int(names[i + 2]), names[i + 3]
    stream, inner = f"P_stage{s}", f"P_stage{s}_block{b}"
    stream_in = stream if (b > 0 or s == 0) else f"P_stage{s - 1}"
    if module == "conv1":
        return [(stream_in, 2), (inner, 3)] if leaf == "kernel" else [(inner, 0)]
    if module == "norm1":
        return [(inner, 0)]
    if module in ("conv2", "proj"):
        if leaf == "kernel":
            return [(inner if module == "conv2" else stream_in, 2), (stream, 3)]
        return [(stream, 0)]
    if module in ("norm2", "proj_norm"):
        return [(stream, 0)]
    raise ValueError(f"resnet_spec: unexpected module {module!r} in {names}")


def resnet_spec(params) -> PermutationSpec:
    """Spec of ``landscape.models.ResNet20`` (``shortcut="projection"``, any norm/width).

    One permutation per stage for its residual stream (``P_stage<s>``: the stem or the stage's
    block outputs, conv2/proj output channels, their norms, the next convs' input channels and
    the head rows) and one per block for the inner channels (``P_stage<s>_block<b>``: conv1
    outputs, norm1, conv2 inputs). Pass ``{"params": p, "state": s}`` to include BatchNorm
    statistics. The parameter-free ``"padding"`` shortcut pins channels to fixed positions
    and is not covered (use :func:`infer_spec`, which leaves such axes fixed).
    """
    perms: dict[str, list] = {}
    sizes: dict[str, int] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = _names(path)
        if not any(n in ("stem", "stem_norm", "stages", "head") for n in names):
            continue
        key, shape = jax.tree_util.keystr(path), np.shape(leaf)
        for pname, axis in _resnet_axes(names, len(shape)):
            perms.setdefault(pname, []).append((key, axis))
            if sizes.setdefault(pname, shape[axis]) != shape[axis]:
                raise ValueError(f"resnet_spec: {key} axis {axis} has size {shape[axis]}, "
                                 f"expected {sizes[pname]} for {pname}")
    if not perms:
        raise ValueError("params do not look like a ResNet20 tree (stem/stages/head)")
    return make_spec({k: tuple(v) for k, v in perms.items()}, sizes)

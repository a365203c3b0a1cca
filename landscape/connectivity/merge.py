"""Merging models: multi-model alignment and PLeaS.

**Multi-model alignment.** :func:`align_models` aligns every model to a common reference by
weight matching, then (``num_rounds > 1``) re-aligns each model to the average of the current
aligned set, a simple MergeMany-style refinement (Ainsworth et al. 2023, Sec. 4). :func:`average`
is the uniform (or weighted) parameter average.

**PLeaS** (Nasery et al., "PLeaS: Merging Models with Permutations and Least Squares") merges two
MLPs of hidden width ``h`` into one of width ``w`` (``h <= w <= 2h``) per hidden layer:

1. *partial matching*: pair A's and B's units by activation correlation (linear assignment) and
   merge only the ``k = 2h - w`` most correlated pairs; the other ``h - k`` units of each model
   are kept as they are;
2. *layer-wise least squares*: layer by layer, fit the merged layer's weights so that, on data,
   its pre-activations reproduce the targets (the mean of the two models' pre-activations for a
   merged pair, the model's own for a kept unit), given the merged network's actual inputs;
   the head reproduces the mean of the two models' logits. Ridge ``lambda`` relative to the
   mean diagonal of ``X^T X``; solved in float64 on the host.

At ``w = 2h`` nothing is merged and the merged network reproduces the logit average of the two
models exactly (up to the ridge), which the tests check. Scope: ``landscape.models.MLP`` params
with ``norm=None``, no residual connections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from landscape.connectivity.spec import PermutationSpec, apply_permutation
from landscape.connectivity.weight_matching import weight_matching
from landscape.validate import check_models

__all__ = ["average", "align_models", "pleas_merge"]


def average(params_list: Sequence, weights=None):
    """``sum_i w_i theta_i`` with uniform weights by default."""
    if len(params_list) < 1:
        raise ValueError("params_list is empty")
    for i, p in enumerate(params_list[1:], 1):
        check_models(params_list[0], p, "params_list[0]", f"params_list[{i}]")
    w = np.full(len(params_list), 1.0 / len(params_list)) if weights is None else \
        np.asarray(weights, np.float64)
    if w.shape != (len(params_list),) or abs(w.sum() - 1) > 1e-9:
        raise ValueError("weights must have one entry per model and sum to 1")
    return jax.tree.map(lambda *xs: sum(float(wi) * x for wi, x in zip(w, xs)), *params_list)


def align_models(spec: PermutationSpec, params_list: Sequence, *, key, reference: int = 0,
                 num_rounds: int = 1, num_restarts: int = 1):
    """Align every model of ``params_list`` to a common reference by weight matching.

    Round 1 aligns each model to ``params_list[reference]``; each further round re-aligns each
    model to the average of the others' current aligned versions. Returns ``(aligned, perms)``
    where ``perms[i]`` maps the original model ``i`` to its aligned version.
    """
    if len(params_list) < 2:
        raise ValueError("need at least two models to align")
    if not 0 <= reference < len(params_list):
        raise ValueError(f"reference must index params_list; got {reference}")
    aligned, perms = list(params_list), [None] * len(params_list)
    for r in range(num_rounds):
        for i, p in enumerate(params_list):
            if r == 0 and i == reference:
                continue
            others = [aligned[j] for j in range(len(aligned)) if j != i]
            target = params_list[reference] if r == 0 else average(others)
            res = weight_matching(spec, target, p, key=jax.random.fold_in(key, r * 1000 + i),
                                  num_restarts=num_restarts, init_perm=perms[i])
            perms[i], aligned[i] = res.perm, apply_permutation(spec, res.perm, p)
    ident = {n: jnp.arange(s) for n, s in spec.sizes.items()}
    return aligned, [p if p is not None else ident for p in perms]


def _forward(layers, x, activation):
    """Pre-activations of every hidden layer and the logits of an MLP given as (W, b) pairs."""
    h, pre = x.reshape(x.shape[0], -1), []
    for w, b in layers[:-1]:
        z = h @ w + b
        pre.append(z)
        h = activation(z)
    return pre, h @ layers[-1][0] + layers[-1][1]


def _layers(params):
    """``[(W, b), ...]`` in float64 for the hidden layers and the head of an MLP param tree."""
    pick = lambda node: (np.asarray(node["kernel"], np.float64),
                         np.asarray(node["bias"], np.float64))
    return [pick(params["hidden"][l]) for l in sorted(params["hidden"])] + [pick(params["head"])]


def _lstsq(x, y, ridge):
    xa = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    g = xa.T @ xa
    lam = ridge * np.trace(g) / g.shape[0]
    sol = np.linalg.solve(g + lam * np.eye(g.shape[0]), xa.T @ y)
    return sol[:-1], sol[-1]


def _partial_match(za, zb, width):
    h = za.shape[1]
    if not h <= width <= 2 * h:
        raise ValueError(f"widths must lie in [h, 2h] = [{h}, {2 * h}]; got {width}")
    a = (za - za.mean(0)) / (za.std(0) + 1e-12)
    b = (zb - zb.mean(0)) / (zb.std(0) + 1e-12)
    corr = a.T @ b / za.shape[0]
    rows, cols = linear_sum_assignment(corr, maximize=True)
    k = 2 * h - width
    best = np.argsort(-corr[rows, cols], kind="stable")[:k]
    merged = [(rows[i], cols[i]) for i in best]
    keep_a = sorted(set(range(h)) - {i for i, _ in merged})
    keep_b = sorted(set(range(h)) - {j for _, j in merged})
    target = np.concatenate([(za[:, [i for i, _ in merged]] + zb[:, [j for _, j in merged]]) / 2,
                             za[:, keep_a], zb[:, keep_b]], axis=1)
    return target


def pleas_merge(params_a, params_b, x, widths: Sequence[int], *,
                activation: Callable = jax.nn.relu, ridge: float = 1e-6):
    """Merge two ``landscape.models.MLP`` param trees into one with hidden ``widths`` (PLeaS).

    ``x`` is the data the matching and least squares are fitted on, ``(n, ...)``. Returns an
    MLP param tree (same layout, new widths; dtype of ``params_a``).
    """
    check_models(params_a, params_b)
    la, lb = _layers(params_a), _layers(params_b)
    if len(widths) != len(la) - 1:
        raise ValueError(f"widths needs one entry per hidden layer ({len(la) - 1}); got {widths}")
    act = lambda z: np.asarray(activation(jnp.asarray(z)))
    xf = np.asarray(x, np.float64).reshape(len(x), -1)
    pre_a, out_a = _forward(la, xf, act)
    pre_b, out_b = _forward(lb, xf, act)
    h, merged = xf, []
    dtype = jax.tree.leaves(params_a)[0].dtype
    for l, width in enumerate(widths):
        w, b = _lstsq(h, _partial_match(pre_a[l], pre_b[l], int(width)), ridge)
        merged.append((w, b))
        h = act(h @ w + b)
    w, b = _lstsq(h, (out_a + out_b) / 2, ridge)
    hidden = {l: {"kernel": jnp.asarray(wl, dtype), "bias": jnp.asarray(bl, dtype)}
              for l, (wl, bl) in zip(sorted(params_a["hidden"]), merged)}
    return {"hidden": hidden, "head": {"kernel": jnp.asarray(w, dtype),
                                       "bias": jnp.asarray(b, dtype)}}

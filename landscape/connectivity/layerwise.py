"""Layer-wise linear mode connectivity and the second-order barrier predictor.

Singh et al. ("Landscaping linear mode connectivity"): interpolate only one layer (or block) of
the parameters, hold the others at model A, and measure the barrier of that partial path.

The second-order predictor Taylor-expands the loss around each endpoint along
``delta = theta_B - theta_A``. With ``g`` the gradient and ``H`` the Hessian,

    L(1/2) ~ L_A + (1/2) g_A . delta + (1/8) delta^T H_A delta
           ~ L_B - (1/2) g_B . delta + (1/8) delta^T H_B delta,

so the predicted midpoint barrier (``midpoint_minus_mean``) is the average of the two,
``(1/4)(g_A - g_B) . delta + (1/8) delta^T Hbar delta`` with ``Hbar = (H_A + H_B) / 2``. At
minima the first term vanishes and the predictor is ``(1/8) delta^T Hbar delta``. The curvature
``delta^T H(theta_mid) delta`` at the midpoint is also returned (for a quadratic loss it equals
``-8`` times the barrier). Hessian-vector products are exact dataset means
(``landscape.curvature.hvp`` per batch, forward-over-reverse), so no Hessian is formed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from landscape import curvature, reprs
from landscape import tree as T
from landscape.batching import check_batch_size, dataset_mean, num_examples
from landscape.connectivity.paths import Path, check_alphas, evaluate_path
from landscape.validate import check_models

__all__ = ["SecondOrder", "second_order_barrier", "layerwise_paths", "group_by_layer"]


class SecondOrder(NamedTuple):
    """Second-order barrier prediction (all scalars; see the module docstring).

    Attributes:
      predicted: ``first_order + (1/8) curvature_endpoints``, the predicted midpoint barrier.
      first_order: ``(1/4) (g_A - g_B) . delta``.
      curvature_endpoints: ``delta^T Hbar delta``.
      curvature_midpoint: ``delta^T H(theta_mid) delta``.
      measured: ``L(theta_mid) - (L_A + L_B) / 2``.
      num_hvps: Hessian-vector products used (each a full pass over the dataset).
    """

    predicted: jax.Array
    first_order: jax.Array
    curvature_endpoints: jax.Array
    curvature_midpoint: jax.Array
    measured: jax.Array
    num_hvps: int

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.namedtuple_repr(self, ["predicted", "measured", "first_order",
                                            "curvature_endpoints", "curvature_midpoint",
                                            "num_hvps"])


def second_order_barrier(loss_fn: Callable, params_a, params_b, dataset, *,
                         batch_size: int | None = None) -> SecondOrder:
    """Predict the midpoint barrier from gradients and Hessians at the endpoints (jit-compiled).

    Exact for a quadratic loss on each side; the tests check the terms against dense
    ``jax.hessian`` in float64.
    """
    check_models(params_a, params_b)
    check_batch_size(batch_size)
    num_examples(dataset, "dataset")

    @jax.jit
    def run(pa, pb, data):
        delta = T.tree_sub(pb, pa)
        mid = T.tree_lerp(pa, pb, 0.5)

        def per_batch(batch):
            out = {}
            for name, p in (("a", pa), ("b", pb), ("mid", mid)):
                loss, g = jax.value_and_grad(loss_fn)(p, batch)
                out[name] = (loss, T.tree_vdot(g, delta),
                             T.tree_vdot(delta, curvature.hvp(loss_fn, p, batch, delta)))
            return out

        return dataset_mean(per_batch, data, batch_size)

    s = run(params_a, params_b, dataset)
    first = 0.25 * (s["a"][1] - s["b"][1])
    curv = 0.5 * (s["a"][2] + s["b"][2])
    measured = s["mid"][0] - 0.5 * (s["a"][0] + s["b"][0])
    return SecondOrder(first + curv / 8, first, curv, s["mid"][2], measured, 3)


def group_by_layer(params, depth: int = 1) -> dict[str, list[str]]:
    """Group leaf keys by the first ``depth`` (or ``depth+1`` if the next is an index) path
    entries: ``hidden/0/kernel`` and ``hidden/0/bias`` form the group ``"['hidden'][0]"``."""
    groups: dict[str, list[str]] = {}
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        d = depth
        if len(path) > d and isinstance(getattr(path[d], "key", getattr(path[d], "idx", None)),
                                        int):
            d += 1
        groups.setdefault(jax.tree_util.keystr(path[:d]), []).append(jax.tree_util.keystr(path))
    return groups


def _partial_point(alpha, ends):
    pa, pb, mask = ends
    return jax.tree.map(lambda a, b, m: a + (alpha * m) * (b - a), pa, pb, mask), None


def layerwise_paths(loss_fn: Callable, params_a, params_b, dataset,
                    groups: Mapping[str, list[str]] | None = None, *, num_points: int = 11,
                    error_fn=None, batch_size: int | None = None) -> dict[str, Path]:
    """One :class:`Path` per group: interpolate only that group's leaves, the rest held at A.

    ``groups`` maps a name to leaf keys (default :func:`group_by_layer`). Each path is one
    compiled call; the interpolation mask is an argument, so all groups share one compilation.
    """
    check_models(params_a, params_b)
    groups = group_by_layer(params_a) if groups is None else groups
    alphas = check_alphas(jnp.linspace(0.0, 1.0, num_points))
    known = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params_a)[0]}
    out = {}
    for name, keys in groups.items():
        bad = set(keys) - known
        if bad:
            raise ValueError(f"groups[{name!r}] names leaves not in params: {sorted(bad)}")
        chosen = set(keys)
        mask = jax.tree_util.tree_map_with_path(
            lambda p, x, chosen=chosen: jnp.asarray(jax.tree_util.keystr(p) in chosen, x.dtype),
            params_a)
        res = evaluate_path(_partial_point, alphas, (params_a, params_b, mask), loss_fn, dataset,
                            error_fn=error_fn, batch_size=batch_size)
        out[name] = Path(alphas, res["loss"], res.get("error"),
                         num_examples=num_examples(dataset))
    return out

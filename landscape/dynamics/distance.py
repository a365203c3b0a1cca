"""Distance travelled from initialisation, per layer, and its ``a + b log t`` growth.

Hoffer, Hubara, Soudry 2017, "Train longer, generalize better: closing the generalization gap in
large batch training of neural networks" (section 3): under SGD the weights move away from their
initialisation like an "ultra-slow diffusion", ``||w_t - w_0|| ~ a + b log t``, much slower than
the ``sqrt(t)`` of a random walk; a large batch, given the same number of epochs, makes fewer
updates and so ends closer to ``w_0``.

* :func:`weight_distance`: ``||w - w_0||`` in total, per leaf and per layer;
* :func:`distance_probe`: the same recorded inside the compiled loop of ``landscape.train``;
* :func:`fit_log_growth`: least-squares fit of ``d_t ~ a + b log t`` with its ``R^2``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from landscape import tree as T
from landscape.train import Probe, ProbeContext, probe
from landscape.validate import check_same_structure, is_concrete

__all__ = ["WeightDistance", "LogFit", "weight_distance", "layer_name", "distance_probe",
           "fit_log_growth"]


class WeightDistance(NamedTuple):
    """Distances of ``params`` from ``params0`` (scalars in the params' dtype).

    Attributes:
      total: ``||w - w_0||`` over all leaves together.
      per_leaf: a pytree like ``params`` whose leaves are ``||w_leaf - w0_leaf||``.
      per_layer: ``{layer name: ||w_layer - w0_layer||}`` with the leaves grouped by their
        parent path (see :func:`layer_name`): e.g. ``"hidden/0"`` holds ``hidden/0/kernel`` and
        ``hidden/0/bias``. ``sum(per_layer**2) == sum(per_leaf**2) == total**2``.
    """

    total: jax.Array
    per_leaf: Any
    per_layer: dict[str, jax.Array]


def layer_name(path) -> str:
    """The layer a leaf belongs to: its key path without the last key, joined by ``/``.

    ``("hidden", 0, "kernel") -> "hidden/0"``; a leaf at the top level is its own layer
    (``("w",) -> "w"``) and a bare array is ``""``.
    """
    parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
    return "/".join(parts[:-1] if len(parts) > 1 else parts)


def _squares(params, params0):
    return jax.tree.map(lambda a, b: jnp.sum(jnp.square(a - b)), params, params0)


def weight_distance(params, params0) -> WeightDistance:
    """``||w - w_0||``: total, per leaf and per layer (jit-able).

    Args:
      params, params0: pytrees of the same structure and leaf shapes (e.g. ``w_t`` and the
        initialisation ``w_0``).

    Returns:
      :class:`WeightDistance`. Squares are summed in the params' dtype (float32 gives about
      ``1e-6`` relative accuracy, float64 ``1e-15``).
    """
    check_same_structure(params0, params, "params0", "params")
    sq = _squares(params, params0)
    layers: dict[str, list] = {}
    for path, s in jax.tree_util.tree_flatten_with_path(sq)[0]:
        layers.setdefault(layer_name(path), []).append(s)
    per_layer = {name: jnp.sqrt(sum(parts)) for name, parts in layers.items()}
    total = T.tree_norm(T.tree_sub(params, params0))
    return WeightDistance(total, jax.tree.map(jnp.sqrt, sq), per_layer)


def distance_probe(*, every: int = 1, per_layer: bool = True) -> Probe:
    """A ``landscape.train`` probe recording ``||w_t - w_0||`` every ``every`` steps.

    ``w_0`` is the params the run starts from (the probe's state; one params-sized copy).
    ``w_t`` is the params before the update of step ``t``, so the record at step 0 is 0.
    Records (``result.trace[name]``, leading record axis): ``total`` and, with
    ``per_layer=True``, ``per_layer`` (the dict of :class:`WeightDistance`).
    ``landscape.dynamics.gradient_probe`` records the total too, alongside gradient
    statistics; this probe costs one pass over the params.
    """

    def init(params, data):
        return params

    def fn(ctx: ProbeContext, w0):
        wd = weight_distance(ctx.params, w0)
        rec = {"total": wd.total}
        if per_layer:
            rec["per_layer"] = wd.per_layer
        return rec, w0

    return probe(fn, every=every, init=init)


class LogFit(NamedTuple):
    """``d_t ~ intercept + slope * log t`` fitted by least squares over ``t >= t_min``.

    Attributes (shape ``d.shape[:-1]``, one fit per series):
      intercept: ``a``. slope: ``b``.
      r2: ``1 - SS_res / SS_tot`` over the points used (NaN when those ``d`` are all equal).
      num_points: the number of points used (an int, the same for every series).
    """

    intercept: jax.Array
    slope: jax.Array
    r2: jax.Array
    num_points: int


def fit_log_growth(t, d, *, t_min: float = 1.0) -> LogFit:
    """Fit ``d_t ~ a + b log t`` (natural log) by ordinary least squares.

    Only the points with ``t >= t_min`` enter the fit (default ``t_min = 1``: ``t = 0``, the
    initialisation where ``d = 0``, has no logarithm; pass a larger ``t_min`` to leave out an
    initial transient). With ``x = log t`` over those points,
    ``b = sum (x - xbar)(d - dbar) / sum (x - xbar)^2``, ``a = dbar - b xbar`` and
    ``R^2 = 1 - sum (d - a - b x)^2 / sum (d - dbar)^2``.

    Args:
      t: ``(T,)`` step indices (or times), concrete.
      d: ``(..., T)`` distances (any leading axes: one fit per series; may be traced).
      t_min: positive; the smallest ``t`` used. At least two distinct ``t >= t_min`` are
        needed.

    Returns:
      :class:`LogFit`. Reference: Hoffer, Hubara, Soudry 2017, section 3.
    """
    t = np.asarray(t, np.float64)
    if t.ndim != 1:
        raise ValueError(f"t must be a 1-D array of steps; got shape {t.shape}")
    if not np.isfinite(t_min) or t_min <= 0:
        raise ValueError(f"t_min must be positive (log t needs t > 0); got {t_min!r}")
    if jnp.ndim(d) < 1 or jnp.shape(d)[-1] != t.shape[0]:
        raise ValueError(f"d must have shape (..., {t.shape[0]}) to match t; got "
                         f"{jnp.shape(d)}")
    used = t >= t_min
    if np.unique(t[used]).size < 2:
        raise ValueError(f"fit_log_growth needs at least two distinct t >= t_min={t_min}; "
                         f"got {np.unique(t[used]).size}")
    if is_concrete(d) and not np.all(np.isfinite(np.asarray(d)[..., used])):
        raise ValueError("d must be finite at the fitted points (t >= t_min)")
    d = jnp.asarray(d)
    dtype = jnp.result_type(d, float)
    x = jnp.asarray(np.log(t[used]), dtype)
    y = d[..., np.flatnonzero(used)].astype(dtype)
    xc = x - jnp.mean(x)
    ybar = jnp.mean(y, axis=-1, keepdims=True)
    yc = y - ybar
    slope = jnp.sum(xc * yc, axis=-1) / jnp.sum(xc * xc)
    intercept = ybar[..., 0] - slope * jnp.mean(x)
    ss_res = jnp.sum(jnp.square(yc - slope[..., None] * xc), axis=-1)
    ss_tot = jnp.sum(jnp.square(yc), axis=-1)
    r2 = jnp.where(ss_tot > 0, 1.0 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1.0), jnp.nan)
    return LogFit(intercept, slope, r2, int(used.sum()))

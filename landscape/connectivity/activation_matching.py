"""Activation matching and the per-unit statistics REPAIR and PLeaS need.

Activation matching (Ainsworth et al. 2023, Sec. 3.1; Li et al. 2016) pairs hidden unit ``i``
of model A with unit ``j`` of model B to maximise the summed Pearson correlation of their
activations on data. For a non-residual network the layers decouple: one linear assignment per
permutation, ``linear_sum_assignment(corr, maximize=True)``.

Statistics are *exact* dataset means, streamed over batches (``lax.scan``, exact weighting of
a short last batch): ``E[a]``, ``E[b]``, ``E[a^2]``, ``E[b^2]`` and the cross moment ``E[a b^T]``,
accumulated in the params' dtype at HIGHEST matmul precision. Correlations are then formed on
the host in float64. In float32, correlations are accurate to ~1e-5.

``features_fn(params, batch) -> {perm name: array (..., n)}`` gives the activations each
permutation acts on, units on the last axis; leading axes (examples, positions, pixels) are
all treated as samples. :func:`mlp_features` provides it for ``landscape.models.MLP`` params.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from landscape import reprs
from landscape.batching import check_batch_size, dataset_mean, num_examples
from landscape.connectivity.spec import PermutationSpec, check_spec_fits
from landscape.connectivity.weight_matching import MatchResult
from landscape.validate import check_models

__all__ = ["UnitStats", "unit_statistics", "activation_matching", "mlp_features",
           "correlation"]

HIGHEST = jax.lax.Precision.HIGHEST


class UnitStats(NamedTuple):
    """Exact per-unit moments over a dataset, one entry per feature name.

    Attributes: ``mean_a``, ``mean_b``, ``sq_a``, ``sq_b`` (``(n,)`` means of ``a``, ``b``,
    ``a^2``, ``b^2``) and ``cross`` (``(n, n)``, ``E[a_i b_j]``), all dicts keyed by name.
    """

    mean_a: dict
    mean_b: dict
    sq_a: dict
    sq_b: dict
    cross: dict

    @reprs.repr_method
    def __repr__(self) -> str:
        names = [f"{k}: {np.size(v)} units" for k, v in list(self.mean_a.items())[:reprs.MAX_KEYS]]
        if len(self.mean_a) > reprs.MAX_KEYS:
            names.append(f"... (+{len(self.mean_a) - reprs.MAX_KEYS})")
        return reprs.line("UnitStats", ["features={" + ", ".join(names) + "}"])

    def std(self, which: str = "a") -> dict:
        m, s = (self.mean_a, self.sq_a) if which == "a" else (self.mean_b, self.sq_b)
        return {k: np.sqrt(np.maximum(np.asarray(s[k], np.float64)
                                      - np.asarray(m[k], np.float64) ** 2, 0.0)) for k in m}


def _moments(fa: jax.Array, fb: jax.Array):
    a = fa.reshape(-1, fa.shape[-1])
    b = fb.reshape(-1, fb.shape[-1])
    rows = a.shape[0]
    return (jnp.mean(a, 0), jnp.mean(b, 0), jnp.mean(a * a, 0), jnp.mean(b * b, 0),
            jnp.matmul(a.T, b, precision=HIGHEST) / rows)


def unit_statistics(features_fn: Callable, params_a, params_b, dataset, *,
                    batch_size: int | None = None) -> UnitStats:
    """Stream the moments of ``features_fn(params_a, .)`` and ``features_fn(params_b, .)``."""
    check_batch_size(batch_size)
    num_examples(dataset, "dataset")

    @jax.jit
    def run(pa, pb, data):
        def per_batch(batch):
            fa, fb = features_fn(pa, batch), features_fn(pb, batch)
            return {k: _moments(fa[k], fb[k]) for k in fa}

        return dataset_mean(per_batch, data, batch_size)

    out = run(params_a, params_b, dataset)
    return UnitStats(*({k: np.asarray(v[i]) for k, v in out.items()} for i in range(5)))


def correlation(stats: UnitStats, name: str, eps: float = 1e-12) -> np.ndarray:
    """Pearson correlation matrix ``(n, n)`` between units of A (rows) and B (columns)."""
    ma, mb = np.asarray(stats.mean_a[name], np.float64), np.asarray(stats.mean_b[name], np.float64)
    cov = np.asarray(stats.cross[name], np.float64) - np.outer(ma, mb)
    sa, sb = stats.std("a")[name], stats.std("b")[name]
    return cov / (np.outer(sa, sb) + eps)


def activation_matching(spec: PermutationSpec, features_fn: Callable, params_a, params_b,
                        dataset, *, batch_size: int | None = None) -> MatchResult:
    """Permutations of model B maximising the correlation of matched activations.

    ``features_fn(params, batch)`` must return a dict with one entry per spec permutation (units
    on the last axis). Valid for networks whose layers decouple (no shared residual stream:
    there the stream's activations are matched at every block output together). Returns a
    :class:`MatchResult` whose ``objective`` is the summed correlation of matched pairs.
    """
    check_spec_fits(spec, params_a, "params_a")
    check_models(params_a, params_b)
    stats = unit_statistics(features_fn, params_a, params_b, dataset, batch_size=batch_size)
    missing = set(spec.names) - set(stats.mean_a)
    if missing:
        raise ValueError(f"features_fn must return activations for every permutation; "
                         f"missing {sorted(missing)}")
    perm, total = {}, 0.0
    for name, size, _ in spec.entries:
        corr = correlation(stats, name)
        if corr.shape != (size, size):
            raise ValueError(f"features_fn[{name!r}] has {corr.shape[0]} units, spec says {size}")
        _, cols = linear_sum_assignment(corr, maximize=True)
        perm[name] = jnp.asarray(cols)
        total += float(corr[np.arange(size), cols].sum())
    hist = np.asarray([total])
    return MatchResult(perm, total, hist, 1, True, hist)


def mlp_features(params: Mapping, batch, *, activation: Callable = jax.nn.relu,
                 residual: bool = False, pre_activation: bool = False) -> dict:
    """Hidden activations of a ``landscape.models.MLP`` param tree (``norm=None``), keyed like
    :func:`mlp_spec`: ``P_<l>`` per hidden layer (``P_res``: the stream after every layer).

    ``batch`` is ``{"x": ...}`` or an array. ``pre_activation=True`` gives ``h W + b`` before
    the nonlinearity (REPAIR's statistics). Checked against the flax model in the tests.
    """
    x = batch["x"] if isinstance(batch, Mapping) else batch
    h = x.reshape(x.shape[0], -1)
    out = {}
    hidden = params["hidden"]
    for l in sorted(hidden):
        z = jnp.matmul(h, hidden[l]["kernel"], precision=HIGHEST) + hidden[l]["bias"]
        a = activation(z)
        h = h + a if (residual and l > 0) else a
        out[f"P_{l}"] = z if pre_activation else h
    if residual:  # one stream: every block output is a sample of the same units
        return {"P_res": jnp.concatenate([out[k] for k in out], axis=0)}
    return out

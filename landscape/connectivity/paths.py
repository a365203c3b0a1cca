"""Loss and error along linear paths between models, and barrier heights.

The linear path is ``theta(alpha) = (1 - alpha) theta_A + alpha theta_B``. :func:`interpolate`
evaluates the mean loss (and error, when ``error_fn`` is given) over the whole dataset, and over
a test set when given, at every alpha in ONE jit-compiled call: alphas are processed with
``lax.map`` (one at a time, or in vmapped chunks of ``chunk_size``, bounding memory to
``chunk_size`` models times one batch), and the dataset with ``lax.scan`` over batches of
``batch_size``, averaging exactly. The compiled evaluator is cached on the functions and sizes.

Non-parameter state (BatchNorm running statistics) follows an explicit ``state_policy``:
``"interpolate"`` (lerp the states like the params) or ``"recompute"`` (call
``recompute_state(params, state, dataset)`` at every alpha: the "BN reset" of Jordan et al.
2023). With state, ``loss_fn(params, batch, state)`` and ``error_fn(params, batch, state)``.

Barrier kinds: ``max_minus_mean`` = max L(alpha) - (L_A + L_B)/2 (Frankle, Dziugaite, Roy,
Carbin 2020, "Linear mode connectivity and the lottery ticket hypothesis"), ``max_minus_linear``
= max [L(alpha) - ((1 - alpha) L_A + alpha L_B)] (Entezari, Sedghi, Saukh, Neyshabur 2022, "The
role of permutation invariance in linear mode connectivity of neural networks"),
``midpoint_minus_mean`` = L(1/2) - (L_A + L_B)/2 (Jordan, Sedghi, Saukh, Entezari, Neyshabur
2023, "REPAIR: REnormalizing permuted activations for interpolation repair").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from landscape import reprs, validate
from landscape import tree as T
from landscape.batching import check_batch_size, dataset_mean, num_examples
from landscape.validate import check_models

__all__ = [
    "Path",
    "Barrier",
    "SimplexPath",
    "interpolate",
    "evaluate_path",
    "barrier",
    "BARRIER_KINDS",
    "simplex_grid",
    "interpolate_simplex",
    "simplex_barrier",
    "check_alphas",
]

BARRIER_KINDS = ("max_minus_mean", "max_minus_linear", "midpoint_minus_mean")


class Path(NamedTuple):
    """Metrics along a one-parameter path of models.

    Attributes:
      alphas: ``(P,)`` path coordinates, ``alphas[0] == 0`` and ``alphas[-1] == 1``.
      losses: ``(P,)`` mean train loss at each alpha.
      errors: ``(P,)`` mean train error (``None`` without ``error_fn``).
      test_losses: ``(P,)`` or ``None`` without ``test_dataset``.
      test_errors: ``(P,)`` or ``None``.
      state_policy: ``"none"``, ``"interpolate"`` or ``"recompute"``.
      num_examples: number of train examples averaged over.
    """

    alphas: jax.Array
    losses: jax.Array
    errors: jax.Array | None = None
    test_losses: jax.Array | None = None
    test_errors: jax.Array | None = None
    state_policy: str = "none"
    num_examples: int = 0

    @reprs.repr_method
    def __repr__(self) -> str:
        curves = [None if getattr(self, f) is None
                  else f"{f}={reprs.curve(self.alphas, getattr(self, f))}"
                  for f in ("losses", "errors", "test_losses", "test_errors")]
        return reprs.line("Path", [
            f"num_points={reprs.host(self.alphas).size}", *curves,
            f"state_policy={self.state_policy!r}",
            f"num_examples={self.num_examples}" if self.num_examples else None])

    @property
    def accuracies(self):
        return None if self.errors is None else 1.0 - self.errors

    @property
    def test_accuracies(self):
        return None if self.test_errors is None else 1.0 - self.test_errors


class Barrier(NamedTuple):
    """A barrier height: ``value`` and the ``alpha`` where it peaks; ``kind`` and ``metric``."""

    value: jax.Array
    alpha: jax.Array
    kind: str
    metric: str

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.line("Barrier", [
            f"value={reprs.num(self.value)} at alpha={reprs.num(self.alpha)}",
            f"kind={self.kind!r}", f"metric={self.metric!r}"])


def check_alphas(alphas, name: str = "alphas") -> jax.Array:
    """Validate a path grid: 1-D, strictly increasing, starting at 0 and ending at 1."""
    a = np.asarray(alphas, dtype=np.float64)
    if a.ndim != 1 or a.size < 2:
        raise ValueError(f"{name} must be a 1-D grid of at least 2 points; got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(np.diff(a) <= 0):
        raise ValueError(f"{name} must be finite and strictly increasing")
    if abs(a[0]) > 1e-12 or abs(a[-1] - 1) > 1e-12:
        raise ValueError(f"{name} must start at 0 and end at 1 (the endpoints); "
                         f"got {a[0]:g} ... {a[-1]:g}")
    return jnp.asarray(alphas)


def _metrics_fn(loss_fn, error_fn, has_state):
    def metrics(params, state, batch):
        args = (params, batch, state) if has_state else (params, batch)
        out = {"loss": loss_fn(*args)}
        if error_fn is not None:
            out["error"] = error_fn(*args)
        return out

    return metrics


def evaluate_path(point_fn: Callable, coords, endpoints, loss_fn, dataset, *, error_fn=None,
                  test_dataset=None, batch_size=None, chunk_size=None, recompute_state=None):
    """Evaluate metrics at ``point_fn(coord, endpoints) -> (params, state)`` for each coordinate.

    The engine behind :func:`interpolate`, the simplex path, Bezier curves and layer-wise paths.
    ``state`` is ``None`` for stateless models. Returns a dict of ``(P,)`` arrays with keys
    ``loss``/``error`` and ``test_loss``/``test_error``. One ``jax.jit`` call, cached on the
    (hashable) functions and sizes, so calling again with the same ``loss_fn`` does not
    recompile.
    """
    check_batch_size(batch_size)
    check_batch_size(chunk_size, "chunk_size")
    num_examples(dataset, "dataset")
    if test_dataset is not None:
        num_examples(test_dataset, "test_dataset")
    run = _compiled(point_fn, loss_fn, error_fn, recompute_state, batch_size,
                    None if chunk_size is None else min(int(chunk_size), len(coords)))
    return run(coords, endpoints, dataset, test_dataset)


@functools.lru_cache(maxsize=64)
def _compiled(point_fn, loss_fn, error_fn, recompute_state, batch_size, chunk_size):
    """One jitted evaluator per (functions, sizes): repeated calls reuse the compilation."""

    def one(coord, endpoints, data, test):
        params, state = point_fn(coord, endpoints)
        metrics = _metrics_fn(loss_fn, error_fn, state is not None)
        if recompute_state is not None:
            state = recompute_state(params, state, data)
        out = dataset_mean(lambda b: metrics(params, state, b), data, batch_size)
        if test is not None:
            tout = dataset_mean(lambda b: metrics(params, state, b), test, batch_size)
            out.update({f"test_{k}": v for k, v in tout.items()})
        return out

    @jax.jit
    def run(coords, endpoints, data, test):
        return jax.lax.map(lambda c: one(c, endpoints, data, test), coords,
                           batch_size=chunk_size)

    return run


def _lerp_point(alpha, ends):
    pa, pb, sa, sb = ends
    state = None if sa is None else T.tree_lerp(sa, sb, alpha)
    return T.tree_lerp(pa, pb, alpha), state


def interpolate(loss_fn, params_a, params_b, dataset, num_points: int = 25, *, alphas=None,
                error_fn=None, test_dataset=None, batch_size: int | None = None,
                chunk_size: int | None = None, state_a=None, state_b=None,
                state_policy: str = "interpolate", recompute_state=None) -> Path:
    """Loss (and error) along ``(1 - alpha) params_a + alpha params_b``, in one compiled call.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss (``(params, batch, state)`` when
        ``state_a``/``state_b`` are given). ``error_fn`` has the same signature.
      dataset, test_dataset: pytrees with a leading example axis; exact means over all examples.
      num_points: grid size of ``linspace(0, 1)``, ignored when ``alphas`` is given (which must
        start at 0, end at 1 and increase).
      batch_size: examples per scanned batch (``None``: the whole dataset at once).
      chunk_size: alphas evaluated together under ``vmap`` (default ``None``: one at a time
        in a compiled ``lax.map`` loop, the smallest memory; whether chunks are faster depends
        on the machine: measure with ``benchmarks/connectivity_vs_numpy.py``). Memory grows
        with ``chunk_size * batch_size``.
      state_policy: ``"interpolate"`` or ``"recompute"`` (then ``recompute_state(params, state,
        dataset) -> state`` is called at each alpha, starting from the lerped state).

    Returns a :class:`Path`. Accuracy: float32 metrics are accurate to ~1e-6 relative.
    """
    check_models(params_a, params_b)
    if alphas is None:
        if not isinstance(num_points, int | np.integer) or num_points < 2:
            raise ValueError(f"num_points must be an int >= 2; got {num_points!r}")
        alphas = jnp.linspace(0.0, 1.0, num_points, dtype=jnp.result_type(float))
    alphas = check_alphas(alphas)
    has_state = state_a is not None or state_b is not None
    if has_state:
        if state_a is None or state_b is None:
            raise ValueError("give both state_a and state_b, or neither")
        validate.check_same_structure(state_a, state_b, "state_a", "state_b")
        if state_policy not in ("interpolate", "recompute"):
            raise ValueError(f"state_policy must be 'interpolate' or 'recompute'; "
                             f"got {state_policy!r}")
        if state_policy == "recompute" and recompute_state is None:
            raise ValueError("state_policy='recompute' needs recompute_state(params, state, data)")
    policy = state_policy if has_state else "none"
    out = evaluate_path(_lerp_point, alphas, (params_a, params_b, state_a, state_b), loss_fn,
                        dataset, error_fn=error_fn, test_dataset=test_dataset,
                        batch_size=batch_size, chunk_size=chunk_size,
                        recompute_state=recompute_state if policy == "recompute" else None)
    return Path(alphas, out["loss"], out.get("error"), out.get("test_loss"),
                out.get("test_error"), policy, num_examples(dataset))


def _values(path, metric: str, split: str):
    if metric not in ("loss", "error"):
        raise ValueError(f"metric must be 'loss' or 'error'; got {metric!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    field = ("test_" if split == "test" else "") + ("losses" if metric == "loss" else "errors")
    values = getattr(path, field)
    if values is None:
        raise ValueError(f"path has no {field} (pass error_fn / test_dataset to interpolate)")
    return values


def barrier(path: Path, kind: str = "max_minus_mean", *, metric: str = "loss",
            split: str = "train") -> Barrier:
    """Barrier height of ``path`` for ``metric`` (``"loss"``/``"error"``) on ``split``.

    ``kind`` is one of :data:`BARRIER_KINDS`. ``midpoint_minus_mean`` needs ``alpha = 1/2`` on
    the grid. Returns :class:`Barrier` with the value and the alpha at the peak (1/2 for the
    midpoint kind). Jit-able when the grid is concrete.
    """
    if kind not in BARRIER_KINDS:
        raise ValueError(f"kind must be one of {BARRIER_KINDS}; got {kind!r}")
    alphas, values = jnp.asarray(path.alphas), jnp.asarray(_values(path, metric, split))
    if values.shape != alphas.shape:
        raise ValueError(f"path values {values.shape} do not match alphas {alphas.shape}")
    if not isinstance(alphas, jax.core.Tracer):
        check_alphas(alphas, "path.alphas")
    ends = (values[0] + values[-1]) / 2
    if kind == "max_minus_mean":
        i = jnp.argmax(values)
        return Barrier(values[i] - ends, alphas[i], kind, metric)
    if kind == "max_minus_linear":
        gap = values - ((1 - alphas) * values[0] + alphas * values[-1])
        i = jnp.argmax(gap)
        return Barrier(gap[i], alphas[i], kind, metric)
    mid = jnp.argmin(jnp.abs(alphas - 0.5))
    if not isinstance(alphas, jax.core.Tracer) and abs(float(alphas[mid]) - 0.5) > 1e-6:
        raise ValueError("midpoint_minus_mean needs alpha = 0.5 on the grid (use an odd "
                         "num_points)")
    return Barrier(values[mid] - ends, alphas[mid], kind, metric)


class SimplexPath(NamedTuple):
    """Metrics over the simplex of N models.

    Attributes:
      weights: ``(P, N)`` barycentric coordinates (rows sum to one); vertices included.
      losses, errors, test_losses, test_errors: ``(P,)`` (``None`` where not computed).
    """

    weights: jax.Array
    losses: jax.Array
    errors: jax.Array | None = None
    test_losses: jax.Array | None = None
    test_errors: jax.Array | None = None

    @reprs.repr_method
    def __repr__(self) -> str:
        w = reprs.host(self.weights)
        vertex = np.isclose(w.max(-1), 1.0)

        def summary(values):
            y = reprs.host(values).reshape(-1)
            if np.all(np.isnan(y)):
                return "nan"
            i = int(np.nanargmax(y))
            at_vertices = y[vertex & ~np.isnan(y)]
            top = reprs.num(at_vertices.max()) if at_vertices.size else "nan"
            return (f"max {reprs.num(y[i])} at weights={reprs.array(w[i])} "
                    f"(vertices max {top})")

        return reprs.line("SimplexPath", [
            f"num_points={w.shape[0]}", f"num_models={w.shape[-1]}",
            *(None if getattr(self, f) is None else f"{f}={summary(getattr(self, f))}"
              for f in ("losses", "errors", "test_losses", "test_errors"))])


def simplex_grid(num_models: int, resolution: int) -> np.ndarray:
    """All barycentric points ``k / resolution`` with non-negative integer ``k`` summing to it."""
    if num_models < 2 or resolution < 1:
        raise ValueError("need num_models >= 2 and resolution >= 1")

    def rec(left, slots):
        if slots == 1:
            return [[left]]
        return [[i] + r for i in range(left, -1, -1) for r in rec(left - i, slots - 1)]

    return np.asarray(rec(resolution, num_models), dtype=np.float64) / resolution


def _simplex_point(w, ends):
    stacked = ends
    return jax.tree.map(lambda x: jnp.tensordot(w.astype(x.dtype), x, axes=1), stacked), None


def interpolate_simplex(loss_fn, params_list: Sequence, dataset, resolution: int = 8, *,
                        error_fn=None, test_dataset=None, batch_size=None,
                        chunk_size=None) -> SimplexPath:
    """Loss over the simplex ``sum_i w_i theta_i`` of three or more models, in one compiled call."""
    if len(params_list) < 2:
        raise ValueError("params_list needs at least two models")
    for i, p in enumerate(params_list[1:], 1):
        check_models(params_list[0], p, "params_list[0]", f"params_list[{i}]")
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *params_list)
    weights = jnp.asarray(simplex_grid(len(params_list), resolution), jnp.result_type(float))
    out = evaluate_path(_simplex_point, weights, stacked, loss_fn, dataset, error_fn=error_fn,
                        test_dataset=test_dataset, batch_size=batch_size, chunk_size=chunk_size)
    return SimplexPath(weights, out["loss"], out.get("error"), out.get("test_loss"),
                       out.get("test_error"))


def simplex_barrier(path: SimplexPath, *, metric: str = "loss", split: str = "train") -> Barrier:
    """``max_w L(w) - mean_i L(e_i)`` over the simplex; ``alpha`` holds the argmax weights."""
    values = jnp.asarray(_values(path, metric, split))
    w = jnp.asarray(path.weights)
    vertex = jnp.max(w, axis=1) > 1 - 1e-6
    mean_vertices = jnp.sum(jnp.where(vertex, values, 0)) / jnp.sum(vertex)
    i = jnp.argmax(values)
    return Barrier(values[i] - mean_vertices, w[i], "max_minus_mean", metric)

"""1D and 2D loss-surface slices (Li, Xu, Taylor, Studer, Goldstein 2018, "Visualizing the loss
landscape of neural nets").

``theta(x, y) = theta* + x d1 + y d2``. Directions are drawn from a standard *Gaussian* (not
U[0,1): all-positive directions tilt the slice) and normalised per filter (``"filter"``: each
output unit/filter of a kernel, indexed by its last axis, gets the norm of the same filter of
``theta*``), per leaf (``"layer"``), or not at all (``None``). 1-D leaves (biases, norm
parameters) get a zero direction by default (``ignore_1d=True``), as in Li et al. Directions can
also be the top PCA directions of a training trajectory, or the top Hessian eigenvectors from
``landscape.spectral.eigsh``. Grids are evaluated in one compiled call, chunked with
``chunk_size`` points under ``vmap``. Results carry the direction seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from landscape import reprs, validate
from landscape import tree as T
from landscape.connectivity.paths import evaluate_path

__all__ = ["Slice", "gaussian_direction", "slice_1d", "slice_2d", "pca_directions",
           "hessian_directions"]

NORMALIZATIONS = ("filter", "layer", None)


class Slice(NamedTuple):
    """A loss slice. ``xs`` ``(nx,)``, ``ys`` ``(ny,)`` (empty for 1D), ``losses``/``errors``
    ``(ny, nx)`` (``(nx,)`` for 1D), ``seeds`` (the direction seeds, or ``()``)."""

    xs: jax.Array
    ys: jax.Array
    losses: jax.Array
    errors: jax.Array | None
    seeds: tuple

    @reprs.repr_method
    def __repr__(self) -> str:
        xs, ys = reprs.host(self.xs), reprs.host(self.ys)
        grid = f"{ys.size}x{xs.size}" if ys.size else f"{xs.size}"

        def rng(a):
            return f"[{reprs.num(a.min())}, {reprs.num(a.max())}]" if a.size else None

        return reprs.line("Slice", [
            f"grid={grid}", f"x={rng(xs)}", f"y={rng(ys)}" if ys.size else None,
            f"losses={reprs.span(self.losses)}",
            None if self.errors is None else f"errors={reprs.span(self.errors)}",
            f"seeds={reprs.value(tuple(self.seeds))}" if len(self.seeds) else None])


def _normalize(d, p, normalization):
    if normalization is None:
        return d
    if normalization == "layer":
        return d * (jnp.linalg.norm(p) / (jnp.linalg.norm(d) + 1e-12))
    axes = tuple(range(d.ndim - 1))  # filter = last axis index
    return d * (jnp.sqrt(jnp.sum(p * p, axes)) / (jnp.sqrt(jnp.sum(d * d, axes)) + 1e-12))


def gaussian_direction(key, params, normalization: str | None = "filter", *,
                       ignore_1d: bool = True):
    """A Gaussian direction like ``params``, normalised as in the module docstring."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}; got {normalization!r}")
    d = T.tree_random_normal(key, params)

    def fix(di, pi):
        if ignore_1d and di.ndim <= 1:
            return jnp.zeros_like(di)
        return _normalize(di, pi, normalization if di.ndim > 1 else
                          ("layer" if normalization else None))

    return jax.tree.map(fix, d, params)


def _point(c, ends):
    p, dirs = ends
    return jax.tree.map(lambda x, *ds: x + sum(ci * di for ci, di in zip(c, ds)), p, *dirs), None


def slice_1d(loss_fn, params, direction, dataset, xs, *, error_fn=None, batch_size=None,
             chunk_size=None, seeds: Sequence = ()) -> Slice:
    """Loss along ``params + x * direction`` for ``x`` in ``xs``."""
    validate.check_same_structure(params, direction, "params", "direction")
    xs = jnp.asarray(xs)
    out = evaluate_path(_point, xs[:, None], (params, (direction,)), loss_fn, dataset,
                        error_fn=error_fn, batch_size=batch_size, chunk_size=chunk_size)
    return Slice(xs, jnp.zeros((0,)), out["loss"], out.get("error"), tuple(seeds))


def slice_2d(loss_fn, params, d1, d2, dataset, xs, ys, *, error_fn=None, batch_size=None,
             chunk_size=None, seeds: Sequence = ()) -> Slice:
    """Loss on the grid ``params + x d1 + y d2``; ``losses[j, i]`` is at ``(xs[i], ys[j])``."""
    validate.check_same_structure(params, d1, "params", "d1")
    validate.check_same_structure(params, d2, "params", "d2")
    xs, ys = jnp.asarray(xs), jnp.asarray(ys)
    gx, gy = jnp.meshgrid(xs, ys)
    coords = jnp.stack([gx.ravel(), gy.ravel()], axis=1)
    out = evaluate_path(_point, coords, (params, (d1, d2)), loss_fn, dataset, error_fn=error_fn,
                        batch_size=batch_size, chunk_size=chunk_size)
    shape = (len(ys), len(xs))
    errors = None if "error" not in out else out["error"].reshape(shape)
    return Slice(xs, ys, out["loss"].reshape(shape), errors, tuple(seeds))


def pca_directions(trajectory: Sequence, final=None, k: int = 2):
    """Top-``k`` PCA directions of ``theta_t - theta_final`` over a trajectory (Li et al. Sec. 7).

    Returns ``(directions, explained_variance_ratio (k,), coords (T, k))``; ``coords`` are the
    trajectory's projections onto the (orthonormal) directions.
    """
    final = trajectory[-1] if final is None else final
    flat_f, unravel = T.ravel(final)
    m = np.stack([np.asarray(T.ravel(p)[0] - flat_f, np.float64) for p in trajectory])
    if k > min(m.shape):
        raise ValueError(f"k={k} exceeds the rank bound {min(m.shape)} of the trajectory")
    _, s, vt = np.linalg.svd(m, full_matrices=False)
    ratio = s**2 / np.sum(s**2)
    dirs = [unravel(jnp.asarray(v, flat_f.dtype)) for v in vt[:k]]
    return dirs, ratio[:k], m @ vt[:k].T


def hessian_directions(loss_fn, params, dataset, *, key, k: int = 2, batch_size: int = 256):
    """Top-``k`` Hessian eigenvectors (``spectral.eigsh``, "LA") as unit-norm pytrees; also
    returns the eigsh result (eigenvalues, residuals, convergence)."""
    from landscape import curvature, spectral

    op = curvature.hessian(loss_fn, params, dataset, batch_size=batch_size)
    res = spectral.eigsh(op, k=k, which="LA", key=key)
    unravel = T.ravel(params)[1]
    return [unravel(res.eigenvectors[:, i]) for i in range(k)], res

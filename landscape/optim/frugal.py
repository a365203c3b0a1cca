"""FRUGAL: a state-full subspace updated by AdamW, the state-free rest by signSGD (or SGD).

Zmushko, Beznosikov, Takac, Horvath (2024), "FRUGAL: Memory-efficient optimization by
reducing state overhead for scalable training" (arXiv:2411.07837). Reference code:
github.com/philipzmushko/FRUGAL (``frugal/proj_optimizer_templates.py``, ``adamw.py``,
``galore_projector.py``, ``coordinate_projector.py``), which this module follows.

For a projected leaf with gradient ``G`` (``n x m``) and a subspace with projector
``P`` (``project``/``project_back``, refreshed every ``T = update_gap`` steps):

    a_t   = project(G_t)                                 (state-full part, low-dimensional)
    m_t   = b1 m_{t-1} + (1 - b1) a_t,    v_t = b2 v_{t-1} + (1 - b2) a_t^2
    d_t   = s * project_back( m_t / (1 - b1^c) / (sqrt(v_t / (1 - b2^c)) + eps) )
          + s * s_free * sign(G_t - project_back(a_t))   ("sign_sgd"; "sgd": no sign; "no": 0)

and the alias's update is ``-eta_t (d_t + lambda w_t)`` (decoupled decay, see
``landscape.optim.base``). ``s = proj_params_lr_scale``, ``s_free = inactive_lr_scale``. ``c``
counts the steps since the last refresh when ``reset_statistics`` (the reference's default:
at every refresh the Adam moments are zeroed and the bias correction restarts), otherwise
since the start (the moments are then carried over into the new subspace's coordinates
unchanged). Refreshes happen at steps ``0, T, 2T, ...`` from the gradient of that step.
Leaves outside the projected set (default: every leaf that is not 2-D) get plain Adam.

``projection`` chooses the subspace:

* ``"svd"``: the top-``r`` right (``n >= m``) or left (``n < m``) singular vectors of the
  gradient, ``r = round(density * m)`` (resp. ``n``): GaLore's projector.
* ``"random"``: a Haar-random ``r``-dimensional orthonormal frame on the same side.
* ``"dct"``: the ``r`` DCT vectors on the same side whose coefficients in the gradient have
  the largest l1 norm (Modoranu et al. 2025, :func:`landscape.optim.dct.dct_update`), stored
  as ``r`` int32 indices: an SVD-free alternative to ``"svd"`` (not in the FRUGAL
  reference code).
* ``"columns"``, ``"rows"``, ``"entries"``: ``floor(density * size)`` random coordinates
  (RandK); ``project`` gathers them, ``project_back`` scatters into zeros, so the state-free
  part is exactly the complement.
* ``"block"``: ``round(density * L)`` of the ``L`` projected leaves are active (full Adam),
  the others get the state-free rule; ``block_order`` ``"random"`` draws them, ``"ascending"``
  / ``"descending"`` cycle through the leaves (BAdam-style). At each refresh all moments are
  zeroed (the reference clears the state of every block).

Random choices use the ``key`` held in the state (split at each refresh). The NumPy oracle
in ``tests/test_optim_frugal.py`` transcribes the reference code.

Deviations from the reference: (1) JAX needs static shapes, so ``"block"`` keeps zeroed
moments for the inactive leaves too (the update is the reference's, the memory saving is
not realised); (2) the reference draws its random frames in float32 (``torch.nn.init.
orthogonal_`` without dtype) and casts them, ours are orthonormal in the leaf's dtype; (3)
only the reference's default ``proj_side="std"`` and the ``density``-based ranks exist here.
Paper vs code: Algorithm 1 of the paper resets the state-full optimizer's state at each
subspace change, as the code's default ``reset_statistics=True`` does.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from landscape.optim.base import chain_with_decay_and_lr
from landscape.optim.dct import dct_project, dct_project_back, dct_side, dct_update

__all__ = ["FrugalState", "scale_by_frugal", "frugal"]

_PROJECTIONS = ("svd", "random", "dct", "columns", "rows", "entries", "block")
_INACTIVE = ("sign_sgd", "sgd", "no")
_BLOCK_ORDERS = ("random", "ascending", "descending")


class FrugalState(NamedTuple):
    """State of :func:`scale_by_frugal`.

    ``count``: int32 steps taken; ``key``: PRNG key for the next refresh; ``mu``/``nu``:
    Adam moments per leaf, in the subspace's coordinates (``(n, r)`` right, ``(r, m)`` left,
    also for dct; ``(n, k)`` columns, ``(k, m)`` rows, ``(k,)`` entries, full shape for Adam
    and block leaves); ``basis`` per leaf: the ``(r, m)`` / ``(n, r)`` frame (svd, random),
    the ``(r,)`` int32 DCT indices (dct) or coordinate indices, a bool "active" flag (block),
    or an empty int32 array (plain Adam).
    """

    count: jax.Array
    key: jax.Array
    mu: Any
    nu: Any
    basis: Any


def _plan(shape, projected: bool, projection: str, density: float):
    """``(kind, k)`` of one leaf: how it is projected and the subspace size."""
    if not projected:
        return "adam", 0
    if projection == "block":
        return "block", 0
    if len(shape) != 2:
        raise ValueError(f"projection={projection!r} needs 2-D projected leaves; got a leaf "
                         f"of shape {shape} (exclude it with proj_mask)")
    n, m = shape
    if projection in ("svd", "random"):
        kind, k = ("right", round(m * density)) if n >= m else ("left", round(n * density))
    elif projection == "dct":
        kind, k = "dct", round(min(n, m) * density)
    else:
        size = {"columns": m, "rows": n, "entries": n * m}[projection]
        kind, k = projection, int(size * density)
    if k < 1:
        raise ValueError(f"density={density} gives an empty state-full subspace for the leaf "
                         f"of shape {shape} (projection={projection!r})")
    return kind, k


def _mu_shape(kind, k, shape):
    if kind == "dct":
        kind = dct_side(shape)
    return {"right": lambda: (shape[0], k), "left": lambda: (k, shape[1]),
            "columns": lambda: (shape[0], k), "rows": lambda: (k, shape[1]),
            "entries": lambda: (k,)}.get(kind, lambda: tuple(shape))()


def _init_basis(kind, k, shape, dtype):
    if kind == "right":
        return jnp.zeros((k, shape[1]), dtype)
    if kind == "left":
        return jnp.zeros((shape[0], k), dtype)
    if kind == "dct":
        return jnp.arange(k, dtype=jnp.int32)
    if kind in ("columns", "rows", "entries"):
        return jnp.zeros((k,), jnp.int32)
    if kind == "block":
        return jnp.zeros((), bool)
    return jnp.zeros((0,), jnp.int32)


def _new_basis(kind, k, g, key, projection):
    """The subspace drawn at a refresh from the current gradient ``g``."""
    n, m = g.shape
    if kind in ("right", "left"):
        wide = jnp.promote_types(g.dtype, jnp.float32)
        if projection == "svd":
            u, _, vh = jnp.linalg.svd(g.astype(wide), full_matrices=False)
            frame = vh[:k] if kind == "right" else u[:, :k]
        else:
            q, _ = jnp.linalg.qr(jax.random.normal(key, (m if kind == "right" else n, k), wide))
            frame = q.T if kind == "right" else q
        return frame.astype(g.dtype)
    if kind == "dct":
        return dct_update(g.astype(jnp.promote_types(g.dtype, jnp.float32)), k)
    size = {"columns": m, "rows": n, "entries": n * m}[kind]
    return jax.random.permutation(key, size)[:k].astype(jnp.int32)


def _project(kind, basis, g):
    if kind == "right":
        return g @ basis.T
    if kind == "left":
        return basis.T @ g
    if kind == "dct":
        return dct_project(g, basis)
    if kind == "columns":
        return g[:, basis]
    if kind == "rows":
        return g[basis]
    return g.reshape(-1)[basis]


def _project_back(kind, basis, a, shape):
    if kind == "right":
        return a @ basis
    if kind == "left":
        return basis @ a
    if kind == "dct":
        return dct_project_back(a, basis, shape)
    z = jnp.zeros(shape, a.dtype)
    if kind == "columns":
        return z.at[:, basis].set(a)
    if kind == "rows":
        return z.at[basis].set(a)
    return z.reshape(-1).at[basis].set(a).reshape(shape)


def _block_choice(key, refresh_index, num_blocks, num_active, order):
    """Bool vector of the active blocks after the ``refresh_index``-th refresh."""
    if order == "random":
        idx = jax.random.permutation(key, num_blocks)[:num_active]
    elif order == "ascending":
        idx = (refresh_index * num_active + jnp.arange(num_active)) % num_blocks
    else:
        idx = (num_blocks - 1 - refresh_index * num_active - jnp.arange(num_active)) % num_blocks
    return jnp.zeros((num_blocks,), bool).at[idx].set(True)


def _resolve_mask(proj_mask, tree):
    if proj_mask is None:
        return jax.tree.map(lambda x: jnp.ndim(x) == 2, tree)
    return proj_mask(tree) if callable(proj_mask) else proj_mask


def _check_static(density, projection, inactive_update_rule, block_order):
    if isinstance(density, jax.Array) or not isinstance(density, int | float):
        raise TypeError("density sets the state shapes and must be a Python float; under "
                        "optax.inject_hyperparams pass static_args=('density',)")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must lie in (0, 1]; got {density}")
    for name, value, allowed in (("projection", projection, _PROJECTIONS),
                                 ("inactive_update_rule", inactive_update_rule, _INACTIVE),
                                 ("block_order", block_order, _BLOCK_ORDERS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}; got {value!r}")


def scale_by_frugal(
    density: float = 0.25,
    update_gap: int = 200,
    projection: str = "svd",
    inactive_update_rule: str = "sign_sgd",
    inactive_lr_scale: float = 1.0,
    proj_params_lr_scale: float = 1.0,
    reset_statistics: bool = True,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    key: jax.Array | None = None,
    block_order: str = "random",
    proj_mask: Any = None,
) -> optax.GradientTransformation:
    """FRUGAL's direction ``d_t`` (module docstring); ``key`` is required unless
    ``projection="svd"`` or a deterministic ``block_order``. ``proj_mask`` (pytree of bools,
    or a function of the params returning one) selects the projected leaves; default: the
    2-D leaves. ``density`` must be static (it sets the state shapes)."""
    _check_static(density, projection, inactive_update_rule, block_order)
    random_choice = projection in ("random", "columns", "rows", "entries") or (
        projection == "block" and block_order == "random")
    if key is None:
        if random_choice:
            raise ValueError(f"projection={projection!r} draws random subspaces: pass key=")
        key = jax.random.PRNGKey(0)

    def plans(tree):
        mask = jax.tree.leaves(_resolve_mask(proj_mask, tree))
        leaves, treedef = jax.tree.flatten(tree)
        if len(mask) != len(leaves):
            raise ValueError("proj_mask must have one bool per leaf of the params")
        return [_plan(jnp.shape(x), bool(p), projection, density)
                for x, p in zip(leaves, mask, strict=True)], leaves, treedef

    def init_fn(params):
        ps, leaves, treedef = plans(params)
        mu = [jnp.zeros(_mu_shape(kd, k, x.shape), x.dtype) for (kd, k), x in zip(ps, leaves)]
        basis = [_init_basis(kd, k, x.shape, x.dtype) for (kd, k), x in zip(ps, leaves)]
        unflat = lambda xs: jax.tree.unflatten(treedef, xs)  # noqa: E731
        return FrugalState(jnp.zeros([], jnp.int32), key, unflat(mu),
                           unflat([jnp.zeros_like(x) for x in mu]), unflat(basis))

    def update_fn(updates, state, params=None):
        del params
        ps, grads, treedef = plans(updates)
        mus, nus, bases = (treedef.flatten_up_to(t) for t in (state.mu, state.nu, state.basis))
        t = state.count
        refresh = (t % update_gap) == 0
        next_key, sub = jax.random.split(state.key)
        new_key = jax.tree.map(lambda a, b: jnp.where(refresh, a, b), next_key, state.key)
        leaf_keys = jax.random.split(sub, len(grads))
        blocks = [i for i, (kd, _) in enumerate(ps) if kd == "block"]
        if blocks:
            num_active = round(len(blocks) * density)
            current = jnp.stack([bases[i] for i in blocks])
            active = jax.lax.cond(refresh, lambda: _block_choice(
                sub, t // update_gap, len(blocks), num_active, block_order), lambda: current)
            for j, i in enumerate(blocks):
                bases[i] = active[j]
        out_d, out_mu, out_nu, out_basis = [], [], [], []
        for (kind, k), g, mu, nu, basis, lk in zip(ps, grads, mus, nus, bases, leaf_keys):
            d, mu, nu, basis = _leaf_step(kind, k, g, mu, nu, basis, lk, t, refresh)
            out_d.append(d.astype(g.dtype))
            out_mu.append(mu.astype(g.dtype))
            out_nu.append(nu.astype(g.dtype))
            out_basis.append(basis)
        unflat = lambda xs: jax.tree.unflatten(treedef, xs)  # noqa: E731
        return unflat(out_d), FrugalState(t + 1, new_key, unflat(out_mu), unflat(out_nu),
                                          unflat(out_basis))

    def adam(a, mu, nu, c):
        wide = jnp.promote_types(a.dtype, jnp.float32)
        a, mu, nu, c = a.astype(wide), mu.astype(wide), nu.astype(wide), c.astype(wide)
        mu = b1 * mu + (1 - b1) * a
        nu = b2 * nu + (1 - b2) * a * a
        bc1, bc2 = 1 - b1**c, 1 - b2**c
        return mu / (jnp.sqrt(nu) / jnp.sqrt(bc2) + eps) / bc1, mu, nu

    def free(r):
        if inactive_update_rule == "sign_sgd":
            return inactive_lr_scale * jnp.sign(r)
        if inactive_update_rule == "sgd":
            return inactive_lr_scale * r
        return jnp.zeros_like(r)

    def _leaf_step(kind, k, g, mu, nu, basis, key, t, refresh):
        if kind == "adam":
            d, mu, nu = adam(g, mu, nu, t + 1)
            return d, mu, nu, basis
        reset = refresh & (reset_statistics or kind == "block")
        c = jnp.where(reset_statistics or kind == "block", t % update_gap, t) + 1
        mu, nu = jnp.where(reset, 0, mu), jnp.where(reset, 0, nu)
        if kind == "block":
            d, mu2, nu2 = adam(g, mu, nu, c)
            d = jnp.where(basis, proj_params_lr_scale * d, proj_params_lr_scale * free(g))
            return d, jnp.where(basis, mu2, 0), jnp.where(basis, nu2, 0), basis
        basis = jax.lax.cond(refresh, lambda: _new_basis(kind, k, g, key, projection),
                             lambda: basis)
        a = _project(kind, basis, g)
        d, mu, nu = adam(a, mu, nu, c)
        d = _project_back(kind, basis, d, g.shape) + free(g - _project_back(kind, basis, a,
                                                                            g.shape))
        return proj_params_lr_scale * d, mu, nu, basis

    return optax.GradientTransformation(init_fn, update_fn)


def frugal(
    learning_rate: optax.ScalarOrSchedule,
    density: float = 0.25,
    update_gap: int = 200,
    projection: str = "svd",
    inactive_update_rule: str = "sign_sgd",
    inactive_lr_scale: float = 1.0,
    proj_params_lr_scale: float = 1.0,
    reset_statistics: bool = True,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    key: jax.Array | None = None,
    block_order: str = "random",
    proj_mask: Any = None,
    weight_decay: float = 0.0,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """FRUGAL with decoupled weight decay: ``u_t = -eta_t (d_t + weight_decay * w_t)``
    (see :func:`scale_by_frugal` for ``d_t``; the reference's ``AdamW`` wrappers
    ``GaloreAdamW``/``CoordAdamW``/``BlockAdamW`` with ``lr=learning_rate``)."""
    return chain_with_decay_and_lr(
        scale_by_frugal(density, update_gap, projection, inactive_update_rule,
                        inactive_lr_scale, proj_params_lr_scale, reset_statistics, b1, b2, eps,
                        key, block_order, proj_mask),
        learning_rate, weight_decay, mask)

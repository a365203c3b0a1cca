"""SVD-free low-rank gradient projection with a fixed DCT basis, and DCT-AdamW.

Modoranu, Safaryan, Robert, Alistarh et al. (2025), "SVD-free low-rank adaptive gradient
optimization for large language models". Reference code: ``ista-daslab-optimizers`` 1.1.15,
``fft_low_rank/dct_adamw.py`` (``DCTAdamW``), ``fft_low_rank/fft_projector.py`` and
``utils/dct.py``.

The projector. ``Q`` is the orthonormal ``s x s`` DCT-II basis, ``s = min(n, m)``, column
``j`` the ``j``-th cosine: ``Q[i, j] = sqrt(2/s) c_j cos(pi (2i + 1) j / (2s))``,
``c_0 = 1/sqrt 2``, ``c_j = 1`` else, so that ``G Q = scipy.fft.dct(G, norm="ortho")`` along
the last axis. For a gradient ``G`` (``n x m``) with ``n >= m`` ("right" side) the projector
keeps the indices ``I`` of the ``r`` columns of ``S = G Q`` with the largest l1 norm
(``ell_norm``), stored as int32; ``project(G) = G Q[:, I]`` (``n x r``) and
``project_back(R) = R Q[:, I]^T``. For ``n < m`` ("left") it ranks the rows of ``Q^T G``:
``project(G) = Q[:, I]^T G`` (``r x m``), ``project_back(R) = Q[:, I] R``. Finding ``I``
costs one ``n m s`` matmul (or an FFT) and no SVD, and the state is ``r`` integers instead of
an ``m x r`` frame. ``basis="dct3"`` uses the transposed matrix ``Q^T`` instead (columns are
DCT-III vectors), which is what the reference's default ``sim_type="matmul"`` does; its
``sim_type="makhoul"`` (FFT) path is ``basis="dct2"``.

DCT-AdamW (the reference's ``DCTAdamW`` with ``proj="dct"``, no error feedback, no
quantisation): for a 2-D leaf, with ``c = t`` the 1-based global step,

    I_t   = select(G_t)  at steps c = 1 and c = 0 mod T, else I_{t-1}
    a_t   = project(G_t);  m_t = b1 m_{t-1} + (1-b1) a_t;  v_t = b2 v_{t-1} + (1-b2) a_t^2
    d_t   = project_back( m_t / (sqrt(v_t) + eps sqrt(1 - b2^c)) ) sqrt(1 - b2^c) / (1 - b1^c)

(the moments stay in place when ``I`` changes, unless ``rotate_subspace``: then they are
multiplied by ``R = Q[:, I_old]^T Q[:, I_new]`` and ``v`` made non-negative, as the
reference does). Other leaves, and 2-D leaves with ``min(n, m) < rank``, get plain Adam.
Deviations from the reference: it builds one ``Q`` from the first 2-D parameter and reuses
it for all (so it fails unless every 2-D parameter has the same ``min(n, m)``); here each
leaf gets the ``Q`` of its size. Its ``Q`` is computed in float32 and cast; ours is float64
(cast to the leaf's dtype). Its top-k is unsorted (order unspecified); ours is sorted by
decreasing norm (ties: lower index first), which fixes the order of the moment columns. Its
special case for (1024, 4096) and (512, 3584) layers (projected on the long side) is not
reproduced.

How this plugs into a GaLore-style optimizer: replace the SVD frame (state ``m x r``) by
``dct_update`` at each refresh (state: ``r`` int32 indices) and the two matmuls by
``dct_project`` / ``dct_project_back``. :func:`dct_projector` packages these as a
:class:`landscape.optim.projection.Projector` for Fira (``fira(..., projector=
dct_projector(r))``); FRUGAL takes ``projection="dct"``. ``optax.contrib.galore`` (0.2.8)
cannot take it: its SVD is written inside its ``update`` and its state holds the float frame.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from landscape.optim.base import chain_with_decay_and_lr
from landscape.optim.projection import Projector, projects_right

__all__ = ["dct_basis", "dct_side", "dct_init", "dct_update", "dct_project",
           "dct_project_back", "dct_projector", "DCTAdamWState", "scale_by_dct_adamw",
           "dct_adamw"]

_BASES = ("dct2", "dct3")


def dct_basis(size: int, dtype=None, basis: str = "dct2") -> jax.Array:
    """The orthonormal ``size x size`` DCT matrix ``Q`` (``Q^T Q = I``) whose column ``j`` is
    the ``j``-th DCT-II cosine (``basis="dct2"``) or its transpose (``"dct3"``). Computed in
    float64 NumPy, cast to ``dtype`` (default: the default float dtype)."""
    if basis not in _BASES:
        raise ValueError(f"basis must be one of {_BASES}; got {basis!r}")
    i = np.arange(size)[:, None]
    j = np.arange(size)[None, :]
    q = np.sqrt(2.0 / size) * np.cos(np.pi * (2 * i + 1) * j / (2 * size))
    q[:, 0] *= np.sqrt(0.5)
    q = q if basis == "dct2" else q.T
    return jnp.asarray(q, dtype or jnp.result_type(float))


def dct_side(shape) -> str:
    """``"right"`` (rank the columns of ``G Q``) when ``n >= m``, else ``"left"``."""
    n, m = shape
    return "right" if n >= m else "left"


def dct_init(shape, rank: int) -> jax.Array:
    """Initial (placeholder) indices: ``arange(rank)`` as int32; checks ``rank``."""
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= min(shape):
        raise ValueError(f"rank must be an int in [1, min(shape)] = [1, {min(shape)}]; "
                         f"got {rank!r} for shape {tuple(shape)}")
    return jnp.arange(rank, dtype=jnp.int32)


def _similarity(g, q, side):
    return g @ q if side == "right" else q.T @ g


def _basis_size(shape, side):
    """The DCT's size: the number of columns (right) or rows (left) it transforms; this is
    ``min(shape)`` under the default side rule."""
    return shape[1] if side == "right" else shape[0]


def dct_update(g: jax.Array, rank: int, *, basis: str = "dct2", ell_norm: float = 1.0,
               side: str | None = None) -> jax.Array:
    """The ``rank`` int32 indices of the DCT vectors with the largest ``ell_norm`` of
    ``G Q`` columns (right) / ``Q^T G`` rows (left), in decreasing order. ``side`` defaults
    to :func:`dct_side`; ``Q`` has the size of the transformed axis (columns on the right,
    rows on the left)."""
    side = side or dct_side(g.shape)
    q = dct_basis(_basis_size(g.shape, side), g.dtype, basis)
    s = _similarity(g, q, side)
    # sum |s|^p ranks like the p-norm and lets ``ell_norm`` be traced (inject_hyperparams)
    norms = jnp.sum(jnp.abs(s) ** ell_norm, axis=0 if side == "right" else 1)
    return jax.lax.top_k(norms, rank)[1].astype(jnp.int32)


def dct_project(g: jax.Array, indices: jax.Array, *, basis: str = "dct2",
                side: str | None = None) -> jax.Array:
    """``G Q[:, I]`` (``n x r``, right) or ``Q[:, I]^T G`` (``r x m``, left)."""
    side = side or dct_side(g.shape)
    q = dct_basis(_basis_size(g.shape, side), g.dtype, basis)[:, indices]
    return _similarity(g, q, side)


def dct_project_back(a: jax.Array, indices: jax.Array, shape, *, basis: str = "dct2",
                     side: str | None = None) -> jax.Array:
    """``R Q[:, I]^T`` (right) or ``Q[:, I] R`` (left): back to ``shape``."""
    side = side or dct_side(shape)
    q = dct_basis(_basis_size(shape, side), a.dtype, basis)[:, indices]
    return a @ q.T if side == "right" else q @ a


def dct_projector(rank: int, *, basis: str = "dct2", ell_norm: float = 1.0,
                  side: str = "std") -> Projector:
    r"""The DCT projector (Modoranu et al. 2025) as a :class:`~landscape.optim.projection.
    Projector` for the GaLore-style optimizers (``fira(..., projector=dct_projector(r))``).

    For a leaf ``G`` (``m x n``) projected on the right (``side`` as in
    :func:`landscape.optim.projection.projects_right`; ``"std"``: right when ``m >= n``), with
    ``Q`` the orthonormal ``n x n`` DCT matrix of ``basis`` (:func:`dct_basis`) and
    ``r = min(rank, m, n)``:

        update(G)           = I: the r indices j of the largest sum_i |(G Q)_ij|^ell_norm,
                              by decreasing norm (ties: lower index first), int32
        project(G, I)       = G Q[:, I]                    (m x r)
        project_back(R, I)  = R Q[:, I]^T                  (m x n)

    and on the left ``Q`` is ``m x m``, the rows of ``Q^T G`` are ranked, ``project(G) =
    Q[:, I]^T G`` (``r x n``) and ``project_back(R) = Q[:, I] R``. ``project_back(project(G))``
    is the orthogonal projection of ``G`` on the chosen DCT vectors, the best choice of ``r``
    of them in Frobenius norm when ``ell_norm=2``; the paper (and its code) ranks by the l1
    norm (``ell_norm=1``). At ``r = n`` (right) the map ``G -> G Q[:, I]`` is an orthogonal
    change of coordinates.

    State: only the ``r`` int32 indices per leaf (``init`` gives ``arange(r)``); ``Q`` is a
    constant of the compiled program (built in float64 NumPy, cast to the gradient's dtype),
    never stored in the optimizer state, and the refresh needs one ``m n^2`` matmul and a
    top-``k``, no SVD. The ranking is computed in the gradient's dtype promoted to float32;
    ``project``/``project_back`` in the gradient's dtype. ``rank``, ``basis``, ``ell_norm`` and
    ``side`` are static (they are closed over).
    """
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise ValueError(f"rank must be a positive int, got {rank!r}")
    if basis not in _BASES:
        raise ValueError(f"basis must be one of {_BASES}; got {basis!r}")
    if not ell_norm > 0:
        raise ValueError(f"ell_norm must be positive; got {ell_norm!r}")
    projects_right((1, 1), side)  # validates side

    def which(shape):
        return "right" if projects_right(tuple(shape), side) else "left"

    def init(param):
        return jnp.arange(min(rank, *jnp.shape(param)), dtype=jnp.int32)

    def update(grad):
        wide = jnp.promote_types(jnp.result_type(grad), jnp.float32)
        return dct_update(grad.astype(wide), min(rank, *grad.shape), basis=basis,
                          ell_norm=ell_norm, side=which(grad.shape))

    def project(grad, indices):
        return dct_project(grad, indices, basis=basis, side=which(grad.shape))

    def project_back(low, indices, shape):
        return dct_project_back(low, indices, shape, basis=basis, side=which(shape))

    def low_rank_shape(shape):
        m, n = shape
        r = min(rank, m, n)
        return (m, r) if which(shape) == "right" else (r, n)

    return Projector(init, update, project, project_back, low_rank_shape)


class DCTAdamWState(NamedTuple):
    """``count`` (int32), Adam moments ``mu``/``nu`` per leaf (``(n, r)`` right, ``(r, m)``
    left, full shape for plain-Adam leaves) and the int32 ``indices`` per leaf (empty for
    plain-Adam leaves)."""

    count: jax.Array
    mu: Any
    nu: Any
    indices: Any


def _low_rank(shape, rank):
    return len(shape) == 2 and rank <= min(shape)


def scale_by_dct_adamw(rank: int = 32, update_proj_gap: int = 1, b1: float = 0.9,
                       b2: float = 0.999, eps: float = 1e-8, basis: str = "dct2",
                       ell_norm: float = 1.0,
                       rotate_subspace: bool = False) -> optax.GradientTransformation:
    """DCT-AdamW's direction ``d_t`` (module docstring). ``rank`` must be a static int."""
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise TypeError("rank sets the state shapes and must be a positive Python int; under "
                        f"optax.inject_hyperparams pass static_args=('rank',); got {rank!r}")
    if basis not in _BASES:
        raise ValueError(f"basis must be one of {_BASES}; got {basis!r}")

    def init_fn(params):
        def leaf(p):
            if not _low_rank(p.shape, rank):
                return jnp.zeros_like(p), jnp.zeros((0,), jnp.int32)
            n, m = p.shape
            low = (n, rank) if dct_side(p.shape) == "right" else (rank, m)
            return jnp.zeros(low, p.dtype), dct_init(p.shape, rank)

        pairs = jax.tree.map(leaf, params)
        mu = jax.tree.map(lambda _, x: x[0], params, pairs)
        idx = jax.tree.map(lambda _, x: x[1], params, pairs)
        return DCTAdamWState(jnp.zeros([], jnp.int32), mu, jax.tree.map(jnp.zeros_like, mu),
                             idx)

    def update_fn(updates, state, params=None):
        del params
        c = state.count + 1
        refresh = (c == 1) | (c % update_proj_gap == 0)
        leaves, treedef = jax.tree.flatten(updates)
        mus, nus, idxs = (treedef.flatten_up_to(t) for t in (state.mu, state.nu,
                                                            state.indices))
        out = [_leaf(g, mu, nu, idx, c, refresh) for g, mu, nu, idx in
               zip(leaves, mus, nus, idxs, strict=True)]
        unflat = lambda k: jax.tree.unflatten(treedef, [o[k] for o in out])  # noqa: E731
        return unflat(0), DCTAdamWState(c, unflat(1), unflat(2), unflat(3))

    def _leaf(g, mu, nu, idx, c, refresh):
        wide = jnp.promote_types(g.dtype, jnp.float32)
        cw = c.astype(wide)
        sqrt_bc2, bc1 = jnp.sqrt(1 - b2**cw), 1 - b1**cw
        if not _low_rank(g.shape, rank):
            a, back, new_idx = g.astype(wide), (lambda u: u), idx
        else:
            side = dct_side(g.shape)
            gw = g.astype(wide)
            new_idx = jax.lax.cond(refresh, lambda: dct_update(
                gw, rank, basis=basis, ell_norm=ell_norm, side=side), lambda: idx)
            a = dct_project(gw, new_idx, basis=basis, side=side)
            back = lambda u: dct_project_back(u, new_idx, g.shape, basis=basis,  # noqa: E731
                                              side=side)
            if rotate_subspace:
                mu, nu = _rotate(mu, nu, idx, new_idx, refresh & (c > 1), side, g, basis)
        mu = b1 * mu.astype(wide) + (1 - b1) * a
        nu = b2 * nu.astype(wide) + (1 - b2) * a * a
        d = back(mu / (eps * sqrt_bc2 + jnp.sqrt(nu))) * (sqrt_bc2 / bc1)
        return d.astype(g.dtype), mu.astype(g.dtype), nu.astype(g.dtype), new_idx

    return optax.GradientTransformation(init_fn, update_fn)


def _rotate(mu, nu, old, new, when, side, g, basis):
    """Moments into the new index set: ``m R`` / ``|v R|`` (right), ``R m`` / ``|R v|``
    (left), with ``R`` the ``r x r`` overlap of the old and new DCT columns."""
    q = dct_basis(min(g.shape), jnp.promote_types(g.dtype, jnp.float32), basis)
    if side == "right":
        r = q[:, old].T @ q[:, new]
        m2, v2 = mu @ r, jnp.abs(nu @ r)
    else:
        r = q[:, new].T @ q[:, old]
        m2, v2 = r @ mu, jnp.abs(r @ nu)
    return jnp.where(when, m2, mu), jnp.where(when, v2, nu)


def dct_adamw(learning_rate: optax.ScalarOrSchedule, rank: int = 32, update_proj_gap: int = 1,
              b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, basis: str = "dct2",
              ell_norm: float = 1.0, rotate_subspace: bool = False, weight_decay: float = 0.0,
              mask: Any = None) -> optax.GradientTransformationExtraArgs:
    """DCT-AdamW with decoupled weight decay: ``u_t = -eta_t (d_t + weight_decay * w_t)``
    (the reference decays ``p <- p (1 - lr wd)`` before the step: the same update)."""
    return chain_with_decay_and_lr(
        scale_by_dct_adamw(rank, update_proj_gap, b1, b2, eps, basis, ell_norm,
                           rotate_subspace), learning_rate, weight_decay, mask)

"""Blockwise Hessian spectra and their heterogeneity (Zhang, Chen, Li, Ding, Sun, Luo 2024).

Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024), split the
parameters into blocks (one per parameter tensor, with GPT-2's fused query/key/value matrix split
into its three parts), estimate the spectral density of every diagonal block ``H[S_b, S_b]`` of
the Hessian by stochastic Lanczos quadrature (SLQ), and compare the densities pairwise with the
Jensen-Shannon (JS) distance. They find the blocks of a CNN alike (small JS distances) and those
of a transformer unlike (large ones), and the mean over pairs at initialisation, ``JS^0``,
predicts how far SGD falls behind Adam.

``blockwise_spectra(op, blocks, key=...)`` does this for any curvature operator: for each block
``b`` (a set ``S_b`` of coordinates of the ravelled parameters) it runs SLQ and, when ``k > 0``,
``spectral.eigsh`` (top ``k``, certified residuals) on the principal submatrix
``A_b = A[S_b, S_b]`` (what ``curvature.restrict`` builds; here applied through the full-size
:class:`BlockOperator` so that one compilation serves every block), and compares the block
densities with :func:`js_matrix`.

**How densities are compared** (:func:`js_matrix`). The paper does not spell out the grid or
the smoothing of its JS computation (its released SLQ code smooths each node with a Gaussian of
fixed absolute width ``sqrt(1e-5)`` on a linear grid from the smallest node minus 1 to the
largest plus 1, and renormalises). An absolute width depends on the units of the loss, and on
a linear axis a single block with large eigenvalues (a transformer's embeddings behind a
LayerNorm: curvature ~ 1 / ||x||^2 ~ 2500 at init) squeezes every other block into one spike at
0. So here, by default:

* eigenvalues are mapped to ``x = asinh(lambda / tau)``, ``tau = tau_rel * median_b max
  |node_b|`` (``tau_rel = 1e-3`` of the typical block's scale; linear below ``tau``,
  logarithmic in ``|lambda|`` above: the symmetric-log axis of the figures; ``axis="linear"``
  keeps ``x = lambda``);
* all blocks share one uniform grid ``x_1 .. x_G`` over ``[lo - 4 sigma, hi + 4 sigma]``,
  ``lo``/``hi`` the smallest/largest transformed SLQ node of any block;
* each block's density of ``x`` is its SLQ measure smoothed by a Gaussian of the same width
  ``sigma = sigma_rel * (hi - lo)``, so multiplying the whole operator by a constant changes
  no distance, while blocks whose eigenvalues differ in scale look different, as they should
  (scale differences between blocks are the heterogeneity the paper measures; nodes are not
  normalised per block unless ``normalize=True``, which divides each block's nodes by its
  largest ``|node|`` and so compares shapes only);
* on the grid, ``p_i = pdf(x_i) / sum_j pdf(x_j)`` (a probability vector), and

      JS(p, q) = sqrt( KL(p || m) / 2 + KL(q || m) / 2 ),   m = (p + q) / 2,
      KL(p || m) = sum_i p_i ln(p_i / m_i),

  in natural logarithms, so ``0 <= JS <= sqrt(ln 2) ~ 0.8326`` (``= 1`` in base 2); this is
  ``scipy.spatial.distance.jensenshannon(p, q)`` with its default base. JS is 0 for identical
  densities, symmetric, and reaches ``sqrt(ln 2)`` for densities whose supports do not overlap
  on the grid. ``mean_js`` is the mean over the ``B (B - 1) / 2`` pairs ``b < c``.

The distance depends on ``sigma_rel``, ``tau_rel`` and the axis (a smaller width resolves more
detail and raises every distance towards the maximum) and on the SLQ budget; compare models at
equal settings.

Blocks are disjoint by default (the paper's partitions; ``allow_overlap=True`` permits overlap,
e.g. one per-head block family alongside per-layer blocks) and need not cover every parameter.
Each block costs ``num_probes * min(num_steps, |S_b|)`` products of the full operator for the
density plus the ``eigsh`` products; SLQ and ``eigsh`` compile once per operator.

Partitions: :func:`leaf_blocks` (one per parameter tensor), :func:`prefix_blocks` (by the first
``depth`` keys of the path, e.g. one per layer), :func:`transformer_blocks` (leaves, with the
fused ``qkv`` kernel of ``landscape.models.Transformer`` split into query, key and value, as the
paper splits GPT-2's ``c_attn``) and :func:`head_blocks` (per attention head).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from landscape import reprs, validate
from landscape.curvature import mask_indices
from landscape.linop import LinearOperator, operator_dataclass, static
from landscape.spectral import SpectralDensity, eigsh
from landscape.spectral.lanczos import lanczos_init, lanczos_steps, tridiagonal

__all__ = [
    "BlockOperator",
    "BlockwiseSpectra",
    "blockwise_spectra",
    "JSComparison",
    "js_distance",
    "js_matrix",
    "leaf_blocks",
    "prefix_blocks",
    "transformer_blocks",
    "head_blocks",
]

MAX_JS = float(np.sqrt(np.log(2.0)))  #: the largest JS distance (natural log): sqrt(ln 2)


class BlockwiseSpectra(NamedTuple):
    """Result of :func:`blockwise_spectra` (``B`` blocks, ``G`` grid points).

    Attributes:
      names: ``B`` block names, in the order given.
      dims: ``B`` block sizes ``|S_b|``.
      densities: ``B`` SLQ estimates (``SpectralDensity``) of the blocks ``A[S_b, S_b]``.
      top: ``B`` ``EigshResult`` (top ``k``, "LA") of the blocks, or ``None`` when ``k = 0``.
      grid: ``(G,)`` the common grid of the comparison.
      pdfs: ``(B, G)`` smoothed densities on ``grid`` (each integrates to about 1).
      js: ``(B, B)`` pairwise Jensen-Shannon distances (natural log; module docstring).
      mean_js: ``()`` mean of ``js`` over pairs ``b < c`` (``JS^0`` of the paper at init).
      sigma: ``()`` the Gaussian width used (``sigma_rel`` times the node range).
      tau: ``()`` the scale of the asinh axis (0 for ``axis="linear"``).
      num_matvecs: products with the blocks' operators (each one full product of ``op``).
    """

    names: tuple
    dims: tuple
    densities: tuple
    top: tuple
    grid: jax.Array
    pdfs: jax.Array
    js: jax.Array
    mean_js: jax.Array
    sigma: jax.Array
    tau: jax.Array
    num_matvecs: int

    @property
    def top_eigenvalues(self) -> dict:
        """``{name: (k,) eigenvalues}`` (empty when ``k = 0``)."""
        return {n: t.eigenvalues for n, t in zip(self.names, self.top) if t is not None}

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.line("BlockwiseSpectra", [
            f"blocks={len(self.names)}", f"dims=[{min(self.dims)}..{max(self.dims)}]",
            f"mean_js={reprs.num(self.mean_js)}", f"sigma={reprs.num(self.sigma)}",
            f"num_matvecs={self.num_matvecs}"])


class JSComparison(NamedTuple):
    """Output of :func:`js_matrix`: ``grid (G,)``, ``pdfs (B, G)``, ``js (B, B)``, ``sigma``
    (Gaussian width on the axis) and ``tau`` (scale of the asinh axis; 0 on a linear one)."""

    grid: jax.Array
    pdfs: jax.Array
    js: jax.Array
    sigma: jax.Array
    tau: jax.Array


def js_distance(p, q) -> jax.Array:
    """Jensen-Shannon distance between two nonnegative vectors on the same grid.

    ``p`` and ``q`` (same shape ``(G,)``, not all zero) are normalised to sum 1; returns
    ``sqrt(KL(p||m)/2 + KL(q||m)/2)``, ``m = (p+q)/2``, natural log: in ``[0, sqrt(ln 2)]``,
    equal to ``scipy.spatial.distance.jensenshannon(p, q)``.
    """
    p, q = jnp.asarray(p), jnp.asarray(q)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"p and q must be 1-D of equal shape; got {p.shape} and {q.shape}")
    p, q = p / jnp.sum(p), q / jnp.sum(q)
    s = p + q  # p ln(p / m) = p ln(2 p / (p + q)): no underflow of m = (p + q) / 2 at tiny p
    term = lambda a: jnp.where(a > 0, a * jnp.log(jnp.where(a > 0, 2 * a / s, 1.0)), 0.0)
    div = 0.5 * jnp.sum(term(p)) + 0.5 * jnp.sum(term(q))
    return jnp.sqrt(jnp.maximum(div, 0.0))


def js_matrix(densities, *, axis: str = "asinh", tau_rel: float = 1e-3,
              sigma_rel: float = 0.02, num_grid: int = 2048, normalize: bool = False):
    """Common grid, smoothed densities and pairwise JS distances of SLQ densities.

    Args:
      densities: a sequence of ``B >= 1`` ``SpectralDensity`` (or objects with ``nodes`` and
        ``weights`` of shape ``(probes, steps)``).
      axis: ``"asinh"`` compares the densities of ``x = asinh(lambda / tau)``, ``tau =
        tau_rel * median_b max |node_b|`` (the median over blocks of each block's largest
        ``|node|``, so one extreme block does not set it; linear for ``|lambda| << tau``,
        ``sign ln(2 |lambda| / tau)`` beyond: a factor 10 between two blocks' scales is a
        shift of 2.3); ``"linear"`` compares the densities of ``lambda`` itself.
      tau_rel: the linear zone of the asinh axis, relative to that typical block scale (> 0).
      sigma_rel: Gaussian width relative to the range of all (transformed) nodes (> 0).
      num_grid: grid points ``G >= 2``.
      normalize: divide each block's nodes by its largest ``|node|`` first (shape only).

    Returns:
      :class:`JSComparison` ``(grid (G,), pdfs (B, G), js (B, B), sigma, tau)``; ``grid``,
      ``pdfs`` and ``sigma`` are in the coordinate of ``axis`` (``tau = 0`` for "linear").
      See the module docstring for the formula.
    """
    if axis not in ("asinh", "linear"):
        raise ValueError(f"axis must be 'asinh' or 'linear'; got {axis!r}")
    tau_rel = validate.check_positive(tau_rel, "tau_rel")
    sigma_rel = validate.check_positive(sigma_rel, "sigma_rel")
    num_grid = validate.check_int(num_grid, "num_grid", low=2)
    if len(densities) < 1:
        raise ValueError("densities must hold at least one density")
    if len({jnp.shape(d.nodes) for d in densities}) != 1:
        raise ValueError("densities must all have nodes of one shape (probes, steps)")
    nodes = jnp.stack([jnp.asarray(d.nodes) for d in densities])
    weights = jnp.stack([jnp.asarray(d.weights, nodes.dtype) for d in densities])
    return _js_matrix(nodes, weights, axis=axis, tau_rel=tau_rel, sigma_rel=sigma_rel,
                      num_grid=num_grid, normalize=bool(normalize))


@partial(jax.jit, static_argnames=("axis", "tau_rel", "sigma_rel", "num_grid", "normalize"))
def _js_matrix(nodes, weights, *, axis, tau_rel, sigma_rel, num_grid, normalize):
    """:func:`js_matrix` on stacked ``(B, probes, steps)`` nodes and weights."""
    tiny = jnp.finfo(nodes.dtype).tiny
    if normalize:
        nodes = nodes / jnp.maximum(jnp.max(jnp.abs(nodes), axis=(1, 2), keepdims=True), tiny)
    if axis == "asinh":
        tau = tau_rel * jnp.maximum(jnp.median(jnp.max(jnp.abs(nodes), axis=(1, 2))), tiny)
        nodes = jnp.arcsinh(nodes / tau)
    else:
        tau = jnp.zeros((), nodes.dtype)
    lo, hi = jnp.min(nodes), jnp.max(nodes)
    width = hi - lo
    width = jnp.where(width > 0, width, jnp.maximum(jnp.abs(hi), 1.0))  # one shared point
    sigma = sigma_rel * width
    grid = jnp.linspace(lo - 4 * sigma, hi + 4 * sigma, num_grid)
    pdf = lambda n, w: SpectralDensity(n, w, 0).pdf(grid, sigma)
    pdfs = jax.vmap(pdf)(nodes, weights)
    js = jax.vmap(lambda p: jax.vmap(lambda q: js_distance(p, q))(pdfs))(pdfs)
    js = 0.5 * (js + js.T)  # exactly symmetric
    js = js * (1 - jnp.eye(nodes.shape[0], dtype=js.dtype))  # exactly 0 on the diagonal
    return JSComparison(grid, pdfs, js, sigma, tau)


def _named_masks(blocks):
    if isinstance(blocks, Mapping):
        items = list(blocks.items())
    else:
        try:
            items = [tuple(item) for item in blocks]
        except TypeError:
            raise TypeError("blocks must be a mapping {name: mask} or a sequence of "
                            f"(name, mask) pairs; got {type(blocks).__name__}") from None
        if any(len(item) != 2 for item in items):
            raise TypeError("blocks must be a mapping {name: mask} or a sequence of "
                            "(name, mask) pairs")
    if not items:
        raise ValueError("blocks must hold at least one block")
    names = [name for name, _ in items]
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"block names must be non-empty strings; got {name!r}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"block names must be unique; repeated: {dup}")
    return items


def _indices(op, params, name, mask) -> np.ndarray:
    if isinstance(mask, (np.ndarray, jax.Array)) and jnp.issubdtype(mask.dtype, jnp.integer):
        idx = np.unique(np.asarray(mask))
        if idx.size == 0 or idx[0] < 0 or idx[-1] >= op.dim:
            raise ValueError(f"block {name!r}: indices must be non-empty and in [0, {op.dim})")
        return idx
    if params is None:
        raise ValueError(f"block {name!r}: params is required to read a pytree or callable mask "
                         "(the operator carries none)")
    try:
        return mask_indices(params, mask)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"block {name!r}: {exc}") from None


def _check_overlap(names, indices, dim):
    owner = np.full(dim, -1)
    for b, idx in enumerate(indices):
        taken = owner[idx] >= 0
        if taken.any():
            other = names[int(owner[idx][taken][0])]
            raise ValueError(f"blocks {other!r} and {names[b]!r} overlap ({int(taken.sum())} "
                             "shared coordinates); pass allow_overlap=True to allow it")
        owner[idx] = b


@operator_dataclass
class BlockOperator(LinearOperator):
    """``M A M + shift (I - M)`` for the 0/1 diagonal ``M = diag(mask)`` of a block ``S``.

    On vectors supported on ``S`` it acts as the principal submatrix ``A[S, S]``
    (``curvature.restrict``) while keeping the full dimension, so that one compiled Lanczos
    serves every block of a model whatever its size (the mask and shift are traced data). Its
    spectrum is that of ``A[S, S]`` plus ``shift`` with multiplicity ``dim - |S|``.
    """

    base: LinearOperator
    mask: jax.Array
    shift: jax.Array
    dim: int = static()
    dtype: Any = static()

    def _matvec(self, v):
        inside = self.mask * v
        return self.mask * self.base._matvec(inside) + self.shift * (v - inside)


def _block_operator(op, idx, shift=0.0) -> BlockOperator:
    mask = jnp.zeros((op.dim,), op.dtype).at[jnp.asarray(idx)].set(1)
    return BlockOperator(base=op, mask=mask, shift=jnp.asarray(shift, op.dtype), dim=op.dim,
                         dtype=op.dtype)


def _probe(key, mask):
    """The Rademacher probe of one SLQ run, supported on the block: ``(dim,)``."""
    return jax.random.rademacher(key, mask.shape, mask.dtype) * mask


@partial(jax.jit, static_argnames=("num_probes", "num_steps"))
def _block_slq(bop, size, key, *, num_probes, num_steps):
    """SLQ of ``A[S, S]`` through ``bop`` with ``size = min(num_steps, |S|)`` (traced) steps.

    Probe ``i`` is ``_probe(k_i, mask)`` with ``k_i, k_loop = split(split(key, P)[i])``. Rows
    ``size ..`` of the ``num_steps`` buffer are inactive: their weights are 0 and their nodes
    repeat the smallest active node, so ``nodes.min()/max()`` stay genuine Ritz values.
    """
    def one(k):
        k_probe, k_loop = jax.random.split(k)
        state = lanczos_init(_probe(k_probe, bop.mask), num_steps, k_loop)
        state = lanczos_steps(bop, state, 0, size)
        T, _ = tridiagonal(state.alpha, state.beta, size)
        theta, S = jnp.linalg.eigh(T)  # ascending: the inactive (c, e_i) pairs come last
        active = jnp.arange(num_steps) < size
        return jnp.where(active, theta, theta[0]), jnp.where(active, S[0] ** 2, 0.0)

    nodes, weights = jax.lax.map(one, jax.random.split(key, num_probes))
    return SpectralDensity(nodes, weights, num_probes * size)


def blockwise_spectra(op, blocks, *, key, num_probes: int = 4, num_steps: int = 40, k: int = 1,
                      axis: str = "asinh", tau_rel: float = 1e-3, sigma_rel: float = 0.02,
                      num_grid: int = 2048, params=None, allow_overlap: bool = False,
                      normalize: bool = False,
                      eigsh_options: Mapping | None = None) -> BlockwiseSpectra:
    """SLQ density and top eigenvalues of every diagonal block, and their JS heterogeneity.

    Args:
      op: a ``LinearOperator`` over the ravelled parameters (a curvature operator; dataset
        operators carry their ``params``).
      blocks: ``{name: mask}`` or a sequence of ``(name, mask)`` pairs; a mask is anything
        ``curvature.restrict`` accepts (bool prefix pytree, callable ``(path, leaf) -> bool``,
        or an int array of flat indices). Names must be unique non-empty strings, every block
        non-empty; blocks must be disjoint unless ``allow_overlap``.
      key: ``jax.random`` key; block ``b`` uses ``fold_in(key, b)``.
      num_probes, num_steps: SLQ probes and Lanczos steps; a block runs ``min(num_steps,
        |S_b|)`` steps (with ``|S_b|`` steps SLQ's nodes are the block's eigenvalues).
      k: top eigenvalues per block by ``spectral.eigsh`` (``which="LA"``, capped at the block
        size; ``0`` skips it).
      axis, tau_rel, sigma_rel, num_grid, normalize: the comparison (:func:`js_matrix`).
      params: the parameter pytree defining the ravel order (default ``op.params``).
      eigsh_options: extra keyword arguments for ``spectral.eigsh`` (e.g. ``max_steps``).

    How: every block runs on the full-size :class:`BlockOperator` ``M A M + shift (I - M)``
    from a start vector supported on ``S_b``, so the Krylov space, the SLQ quadrature and the
    Ritz values are those of ``A[S_b, S_b] = curvature.restrict(op, mask)`` (equal in exact
    arithmetic), and one compilation serves all blocks of a model (a compilation per block
    size costs seconds to a minute each for a transformer's products). SLQ uses ``shift = 0``.
    ``eigsh`` starts from a random vector on ``S_b`` (``warm_noise=0``) with ``shift`` set a
    full node range below the block's smallest SLQ node, so eigenvectors outside the block,
    reachable only after a Lanczos breakdown, are never among the ``k`` largest; its
    certificates (``residuals``) hold for ``BlockOperator``, whose other eigenvalue is that
    ``shift``, and its rounding floor uses the full ``dim``.

    Returns:
      :class:`BlockwiseSpectra`. Cost: ``num_probes * min(num_steps, |S_b|)`` products of
      ``op`` per block for the density plus the ``eigsh`` products.
    """
    validate.check_key(key)
    num_probes = validate.check_int(num_probes, "num_probes", low=1)
    num_steps = validate.check_int(num_steps, "num_steps", low=1, high=op.dim)
    k = validate.check_int(k, "k", low=0)
    items = _named_masks(blocks)
    params = getattr(op, "params", None) if params is None else params
    names = tuple(name for name, _ in items)
    indices = [_indices(op, params, name, mask) for name, mask in items]
    if not allow_overlap:
        _check_overlap(names, indices, op.dim)
    dens, tops, matvecs = [], [], 0
    for b, idx in enumerate(indices):
        k_den, k_eig, k_v0 = jax.random.split(jax.random.fold_in(key, b), 3)
        size = min(num_steps, idx.size)
        d = _block_slq(_block_operator(op, idx), jnp.asarray(size), k_den,
                       num_probes=num_probes, num_steps=num_steps)
        dens.append(d)
        matvecs += num_probes * size
        top = None
        if k > 0:
            lo, hi = float(jnp.min(d.nodes)), float(jnp.max(d.nodes))
            shift = lo - max(hi - lo, abs(lo), abs(hi), float(jnp.finfo(op.dtype).tiny))
            bop = _block_operator(op, idx, shift)
            options = dict(eigsh_options or {})
            options.setdefault("warm_noise", 0.0)
            top = eigsh(bop, k=min(k, idx.size), which="LA", key=k_eig,
                        v0=_probe(k_v0, bop.mask), **options)
            matvecs += int(top.num_matvecs)
        tops.append(top)
    grid, pdfs, js, sigma, tau = js_matrix(dens, axis=axis, tau_rel=tau_rel,
                                           sigma_rel=sigma_rel, num_grid=num_grid,
                                           normalize=normalize)
    nb = len(names)
    upper = np.triu(np.ones((nb, nb), bool), 1)
    mean_js = jnp.sum(jnp.where(upper, js, 0.0)) / max(1, upper.sum())
    return BlockwiseSpectra(names, tuple(int(i.size) for i in indices), tuple(dens), tuple(tops),
                            grid, pdfs, js, mean_js, sigma, tau, matvecs)


# ----------------------------------------------------------------------------- partitions


def _leaves(params):
    return [(jax.tree_util.keystr(p), np.shape(x))
            for p, x in jax.tree_util.tree_flatten_with_path(params)[0]]


def _select(params, chosen: Mapping[str, np.ndarray]):
    """Full boolean pytree: ``chosen[path]`` at the named leaves, all False elsewhere."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: chosen.get(jax.tree_util.keystr(p), np.zeros(np.shape(x), bool)), params)


def leaf_blocks(params) -> dict:
    """One block per parameter leaf: ``{keystr(path): mask}`` (the paper's partition)."""
    return {path: _select(params, {path: np.ones(shape, bool)})
            for path, shape in _leaves(params)}


def prefix_blocks(params, depth: int = 1) -> dict:
    """One block per distinct first ``depth`` keys of the leaf paths (leaves shallower than
    ``depth`` are their own block). ``depth=1`` gives ``curvature.block_masks``' top-level
    entries; ``depth=2`` on a ``Transformer`` gives one block per layer (``['blocks'][l]``)."""
    depth = validate.check_int(depth, "depth", low=1)
    groups: dict[str, dict] = {}
    for p, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = jax.tree_util.keystr(p[:depth])
        groups.setdefault(name, {})[jax.tree_util.keystr(p)] = np.ones(np.shape(x), bool)
    return {name: _select(params, chosen) for name, chosen in groups.items()}


def _attention_kernels(params):
    """``[(layer, qkv_path, qkv_shape, out_path, out_shape)]`` of a ``models.Transformer``."""
    layers = params.get("blocks") if isinstance(params, Mapping) else None
    if not isinstance(layers, Mapping) or not layers:
        raise ValueError("params must be those of landscape.models.Transformer (a 'blocks' "
                         "entry with per-layer 'attn' kernels)")
    out = []
    for layer in sorted(layers):
        try:
            attn = layers[layer]["attn"]
            qkv, proj = attn["qkv"]["kernel"], attn["out"]["kernel"]
        except (KeyError, TypeError):
            raise ValueError(f"params['blocks'][{layer!r}] has no attn.qkv/out kernels: not a "
                             "landscape.models.Transformer") from None
        base = f"['blocks'][{layer!r}]['attn']"
        out.append((layer, f"{base}['qkv']['kernel']", np.shape(qkv),
                    f"{base}['out']['kernel']", np.shape(proj)))
    return out


def transformer_blocks(params) -> dict:
    """Leaf blocks of a ``models.Transformer``, with every fused ``qkv`` kernel ``(d, 3d)``
    split into its query, key and value columns (names ending ``.q``, ``.k``, ``.v``)."""
    blocks = {}
    fused = {qkv: shape for _, qkv, shape, _, _ in _attention_kernels(params)}
    for path, shape in _leaves(params):
        if path not in fused:
            blocks[path] = _select(params, {path: np.ones(shape, bool)})
            continue
        d = shape[1] // 3
        for s, part in enumerate("qkv"):
            cols = np.zeros(shape, bool)
            cols[:, s * d:(s + 1) * d] = True
            blocks[f"{path}.{part}"] = _select(params, {path: cols})
    return blocks


def head_blocks(params, num_heads: int) -> dict:
    """Per attention head of a ``models.Transformer``: block ``"layer{l}.head{h}"`` holds head
    ``h``'s query, key and value columns of the fused ``qkv`` kernel (columns ``s d + h hd ..
    s d + (h+1) hd - 1`` for ``s = 0, 1, 2``, ``hd = d / num_heads``) and its rows
    ``h hd .. (h+1) hd - 1`` of the output projection. The heads of a layer partition its
    ``qkv`` and ``out`` kernels exactly; the shared qk-LayerNorm parameters belong to no head.
    """
    num_heads = validate.check_int(num_heads, "num_heads", low=1)
    blocks = {}
    for layer, qkv, qshape, out, oshape in _attention_kernels(params):
        d = oshape[0]
        if qshape != (d, 3 * d) or oshape != (d, d) or d % num_heads:
            raise ValueError(f"num_heads={num_heads} does not fit layer {layer}: qkv kernel "
                             f"{qshape}, out kernel {oshape}")
        hd = d // num_heads
        for h in range(num_heads):
            qmask, omask = np.zeros(qshape, bool), np.zeros(oshape, bool)
            for s in range(3):
                qmask[:, s * d + h * hd:s * d + (h + 1) * hd] = True
            omask[h * hd:(h + 1) * hd, :] = True
            blocks[f"layer{layer}.head{h}"] = _select(params, {qkv: qmask, out: omask})
    return blocks

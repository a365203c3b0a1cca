"""Permutation specs: which parameter axes each hidden-unit permutation acts on.

A hidden layer's units can be reordered without changing the function a network computes, as
long as every parameter axis indexed by those units is reordered the same way (Ainsworth,
Hayase, Srinivasa 2023, "Git Re-Basin"). A :class:`PermutationSpec` names each such permutation,
its size ``n`` and the ``(leaf, axis)`` pairs it acts on. Leaves are identified by their key path
string, ``jax.tree_util.keystr(path)``, e.g. ``"['Dense_0']['kernel']"``, so a spec works with
any pytree of params (nested dicts, lists, ``landscape.nnx.functional(model).params``).

**Block axes.** An axis of size ``m * n`` under a permutation of size ``n`` is viewed as
``(m, n)`` and permuted along the fast (last) factor. This is the channel-last flatten of a
convolutional feature map ``(..., L, C) -> (..., L * C)`` into a dense layer.

**Convention.** ``perm[name]`` is an integer array ``p`` of shape ``(n,)``; applying it takes
``x[..., p, ...]`` along every listed axis, so unit ``i`` of the result is unit ``p[i]`` of the
input. :func:`weight_matching` returns the ``perm`` that, applied to ``params_b``, aligns it to
``params_a``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from landscape import reprs

__all__ = [
    "PermutationSpec",
    "make_spec",
    "leaf_keys",
    "check_spec_fits",
    "apply_permutation",
    "apply_inverse_permutation",
    "invert_permutation",
    "compose_permutations",
    "identity_permutation",
    "random_permutation",
    "check_spec",
    "SpecCheck",
]

Axes = tuple[tuple[str, int], ...]


@dataclasses.dataclass(frozen=True)
class PermutationSpec:
    """Hidden-unit permutations of a network and the parameter axes each acts on.

    Attributes:
      entries: tuple of ``(name, size, axes)`` with ``axes`` a tuple of ``(leaf_key, axis)``.
        Hashable, so a spec can be a static argument of ``jax.jit``.
    """

    entries: tuple[tuple[str, int, Axes], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e[0] for e in self.entries)

    @property
    def sizes(self) -> dict[str, int]:
        return {name: size for name, size, _ in self.entries}

    @property
    def perm_to_axes(self) -> dict[str, Axes]:
        return {name: axes for name, _, axes in self.entries}

    @property
    def axes_to_perm(self) -> dict[str, dict[int, str]]:
        """``leaf_key -> {axis: perm name}``."""
        out: dict[str, dict[int, str]] = {}
        for name, _, axes in self.entries:
            for key, axis in axes:
                out.setdefault(key, {})[axis] = name
        return out

    def __repr__(self) -> str:
        lines = [f"  {n} (n={s}): " + ", ".join(f"{k}[{a}]" for k, a in ax)
                 for n, s, ax in self.entries]
        return "PermutationSpec(\n" + "\n".join(lines) + "\n)"


def make_spec(perm_to_axes: Mapping[str, Axes], sizes: Mapping[str, int]) -> PermutationSpec:
    """Build a spec from ``{name: ((leaf_key, axis), ...)}`` and ``{name: size}``."""
    if set(perm_to_axes) != set(sizes):
        raise ValueError("perm_to_axes and sizes must name the same permutations")
    entries = tuple(
        (str(n), int(sizes[n]), tuple((str(k), int(a)) for k, a in perm_to_axes[n]))
        for n in perm_to_axes
    )
    seen: dict[tuple[str, int], str] = {}
    for name, _, axes in entries:
        for ka in axes:
            if ka in seen:
                raise ValueError(f"axis {ka} is claimed by two permutations: {seen[ka]}, {name}")
            seen[ka] = name
    return PermutationSpec(entries)


def leaf_keys(params) -> dict[str, jax.Array]:
    """``{keystr(path): leaf}`` for every leaf of ``params``, in flatten order."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(p): x for p, x in flat}


def natural_key(s: str):
    """Sort key that orders ``Dense_2`` before ``Dense_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def check_spec_fits(spec: PermutationSpec, params, name: str = "params") -> None:
    """Raise ``ValueError`` unless every ``(leaf, axis)`` of ``spec`` exists in ``params``
    with a size equal to (or a multiple of, for block axes) the permutation size."""
    if not isinstance(spec, PermutationSpec):
        raise TypeError(f"spec must be a PermutationSpec; got {type(spec).__name__}")
    leaves = leaf_keys(params)
    for pname, size, axes in spec.entries:
        for key, axis in axes:
            if key not in leaves:
                raise ValueError(
                    f"spec permutation {pname!r} refers to leaf {key} which is not in {name} "
                    f"(leaves: {list(leaves)[:8]}...)")
            shape = np.shape(leaves[key])
            if not -len(shape) <= axis < len(shape):
                raise ValueError(f"spec permutation {pname!r}: axis {axis} out of range for "
                                 f"{name} leaf {key} of shape {shape}")
            if shape[axis] % size != 0:
                raise ValueError(
                    f"spec permutation {pname!r} has size {size} but {name} leaf {key} has "
                    f"size {shape[axis]} on axis {axis} (expected {size} or a multiple)")


def _check_perm(spec: PermutationSpec, perm, name: str = "perm") -> None:
    if not isinstance(perm, Mapping):
        raise TypeError(f"{name} must be a dict of permutation name -> index array")
    if set(perm) != set(spec.names):
        raise ValueError(f"{name} keys {sorted(perm)} do not match spec permutations "
                         f"{sorted(spec.names)}")
    for pname, size in spec.sizes.items():
        if tuple(np.shape(perm[pname])) != (size,):
            raise ValueError(f"{name}[{pname!r}] must have shape ({size},); "
                             f"got {np.shape(perm[pname])}")


def take_axis(x: jax.Array, p: jax.Array, axis: int, n: int) -> jax.Array:
    """Permute ``x`` along ``axis`` by ``p`` (block view ``(m, n)`` if the axis has size m*n)."""
    axis = axis % x.ndim
    size = x.shape[axis]
    if size == n:
        return jnp.take(x, p, axis=axis)
    shape = x.shape[:axis] + (size // n, n) + x.shape[axis + 1:]
    return jnp.take(x.reshape(shape), p, axis=axis + 1).reshape(x.shape)


def apply_permutation(spec: PermutationSpec, perm: Mapping, params, *, except_axis=None):
    """Return ``pi(params)``: every axis of the spec permuted by its permutation.

    Jit-able in ``perm`` and ``params``. ``except_axis=(leaf_key, axis)`` leaves that one axis
    alone (used by weight matching).
    """
    check_spec_fits(spec, params)
    _check_perm(spec, perm)
    sizes, a2p = spec.sizes, spec.axes_to_perm

    def permute(path, x):
        key = jax.tree_util.keystr(path)
        for axis, pname in a2p.get(key, {}).items():
            if (key, axis) != except_axis:
                x = take_axis(x, jnp.asarray(perm[pname]), axis, sizes[pname])
        return x

    return jax.tree_util.tree_map_with_path(permute, params)


def invert_permutation(perm: Mapping) -> dict:
    """``perm^{-1}``: ``apply(inv, apply(perm, params)) == params``."""
    return {k: jnp.argsort(jnp.asarray(p)) for k, p in perm.items()}


def apply_inverse_permutation(spec: PermutationSpec, perm: Mapping, params):
    """Undo :func:`apply_permutation`."""
    return apply_permutation(spec, invert_permutation(perm), params)


def compose_permutations(outer: Mapping, inner: Mapping) -> dict:
    """The permutation ``c`` with ``apply(c, x) == apply(outer, apply(inner, x))``."""
    return {k: jnp.asarray(inner[k])[jnp.asarray(outer[k])] for k in outer}


def identity_permutation(spec: PermutationSpec) -> dict:
    return {name: jnp.arange(size) for name, size, _ in spec.entries}


def random_permutation(spec: PermutationSpec, key: jax.Array) -> dict:
    """Independent uniformly random permutations, one per spec entry."""
    keys = jax.random.split(key, max(len(spec.entries), 1))
    return {name: jax.random.permutation(k, size)
            for k, (name, size, _) in zip(keys, spec.entries)}


class SpecCheck(NamedTuple):
    """Result of :func:`check_spec`.

    Attributes:
      passed: every trial agreed to tolerance.
      max_abs_diff: largest ``|f(pi(theta), x) - f(theta, x)|`` over trials.
      scale: ``max |f(theta, x)|`` (the tolerance is relative to it).
      num_trials: number of random permutations tried.
    """

    passed: bool
    max_abs_diff: float
    scale: float
    num_trials: int

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.namedtuple_repr(self)


def check_spec(spec, apply_fn, params, example_input, *, key, num_trials: int = 3,
               rtol: float | None = None, raise_on_failure: bool = True) -> SpecCheck:
    """Check that ``apply_fn(pi(params), x) == apply_fn(params, x)`` for random ``pi``.

    A spec that omits an axis (or permutes an axis that must stay fixed) fails for almost every
    random ``pi``. The default tolerance is ``1e-4`` relative in float32 and ``1e-10`` in float64.
    Raises ``ValueError`` on failure unless ``raise_on_failure=False``. ``apply_fn`` is
    jit-compiled once and reused for every trial.
    """
    check_spec_fits(spec, params)
    apply_fn = jax.jit(apply_fn)
    ref = np.asarray(apply_fn(params, example_input))
    if rtol is None:
        rtol = 1e-10 if ref.dtype == np.float64 else 1e-4
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    worst = 0.0
    for k in jax.random.split(key, num_trials):
        out = np.asarray(apply_fn(apply_permutation(spec, random_permutation(spec, k), params),
                                  example_input))
        worst = max(worst, float(np.max(np.abs(out - ref))))
    passed = worst <= rtol * max(scale, 1.0)
    if not passed and raise_on_failure:
        raise ValueError(f"spec is not a symmetry of apply_fn: permuted outputs differ by "
                         f"{worst:.3g} (output scale {scale:.3g}, rtol {rtol:g})")
    return SpecCheck(bool(passed), worst, scale, int(num_trials))

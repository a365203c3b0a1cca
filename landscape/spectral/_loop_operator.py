"""Operators whose products run fast inside compiled loops (private).

The spectral routines call ``op.matvec`` inside ``lax.while_loop`` / ``fori_loop`` / ``map``
bodies. On the CPU backend XLA brings convolutions into the form of its fast Eigen kernel only
in the entry computation of a program, so a product that contains convolutions (a user's
``lax.conv`` CNN) runs 25-70x slower there than at the top level (``landscape.conv_rewrite``
explains why). :func:`loop_operator` returns an operator whose ``matvec`` has its convolutions
rewritten into that form (:func:`landscape.conv_rewrite.rewrite_convs`), and
:func:`wants_rewrite` decides when: on the CPU backend, for operators whose product contains a
convolution. The decision is made from shapes and dtypes alone (one abstract trace of the
product, cached per operator structure), so it is the same under ``jax.jit`` as outside.
"""

from __future__ import annotations

import jax

from landscape import conv_rewrite

_CACHE: dict = {}
_CACHE_SIZE = 64


def _product(op, v):
    return op.matvec(v)


def wants_rewrite(op, rewrite: bool | None) -> bool:
    """``rewrite`` if given; otherwise whether ``op`` runs on the CPU backend and its product
    contains a ``lax.conv_general_dilated``."""
    return conv_rewrite.wanted(rewrite, lambda: _contains_conv(op))


def _contains_conv(op) -> bool:
    """Whether ``op``'s product runs a convolution: one abstract trace, cached per operator
    structure (treedef and leaf shapes/dtypes)."""
    leaves, treedef = jax.tree.flatten(op)
    avals = [jax.ShapeDtypeStruct(jax.numpy.shape(x), jax.numpy.result_type(x)) for x in leaves]
    try:
        key = (treedef, tuple((a.shape, a.dtype) for a in avals))
        hash(key)
    except TypeError:  # unhashable static metadata: decide without caching
        key = None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    v = jax.ShapeDtypeStruct((op.dim,), op.dtype)
    found = conv_rewrite.contains_conv(
        lambda leaves, v: _product(jax.tree.unflatten(treedef, leaves), v), avals, v)
    if key is not None:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = found
    return found


class _RewrittenOperator:
    """``op`` with the convolutions of its product rewritten (built inside a trace)."""

    def __init__(self, op):
        self.op, self.dim, self.dtype = op, op.dim, op.dtype
        self._matvec = conv_rewrite.rewrite_convs(_product)

    def matvec(self, v):
        return self._matvec(self.op, v)


def loop_operator(op, rewrite: bool):
    """``op`` itself, or (``rewrite``) an operator with the same ``dim``, ``dtype`` and products
    (equal to rounding; bit-identical for ungrouped float32 convolutions) whose ``matvec`` has
    its convolutions in XLA:CPU's fast form. Call inside the compiled function."""
    return _RewrittenOperator(op) if rewrite else op

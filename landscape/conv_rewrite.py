"""Rewrite the convolutions of a traced JAX function into slices and matrix products.

Why: XLA:CPU brings a convolution into the canonical form its fast Eigen kernel needs (input
``NHWC``, kernel ``HWIO``) in one pass, ``ConvCanonicalization``, and that pass walks only the
*entry* computation of the compiled program. Convolutions inside a ``while_loop``, ``scan``,
``fori_loop`` or ``cond`` body keep the dimension labels that differentiation gave them (the
weight gradient of an ``NHWC`` convolution is ``f01b_i01o->01bf``, the input gradient
``b01f_01oi->b01f``), fail the Eigen test, and are emitted by the generic element-wise loop
emitter, 25-70x slower than at the top level of the same program (measured on a 21k-parameter
CNN, jaxlib 0.10.2; cf. jax-ml/jax#12868). No ``XLA_FLAGS`` option changes this (XNNPACK,
oneDNN and the thunk-runtime switches were measured: 25-41x either way). Curvature products,
Lanczos and training loops all run the model inside such bodies.

What: :func:`rewrite_convs` turns ``fn`` into a function that traces ``fn`` to a jaxpr and
evaluates it with every ``conv_general_dilated`` replaced by the same convolution written as
pads, strided slices and ``dot_general`` s (general strides, padding, lhs/rhs dilation, feature
and batch groups, any dimension numbers). With kernel window positions ``k`` and output
positions ``p`` (``s`` strides, ``r`` rhs dilation, ``X`` the padded and lhs-dilated input in
channels-last order)

    out[n, p, o] = sum_k sum_c X[n, p * s + k * r, c] W[k, c, o],

written either as ``sum_k slice_k(X) @ W[k]`` (one matrix product per kernel position) or as one
product per output position of the window ``X[n, p * s + k * r, :]`` against all of ``W``,
whichever needs fewer terms (the weight gradient has a large "kernel", the output-gradient map,
and a small output, the kernel's shape). The derivatives of the rewritten function are then
built from slices, pads and matrix products too, which XLA:CPU runs fast in loop bodies. The
result equals the convolution up to float rounding (summation order).

Sub-computations (``scan``, ``while``, ``cond`` bodies, nested ``jit``, ``remat``, ``custom_jvp``
/ ``custom_vjp`` functions) are rewritten recursively; nested ``jit`` and ``remat`` calls are
inlined. A computation without convolutions is left exactly as it is, so
``rewrite_convs(fn)`` computes bit-identical results for such ``fn``.

References: XLA ``xla/service/cpu/conv_canonicalization.cc`` (the entry-computation-only pass);
Chellapilla, Puri, Simard (2006) for convolution as matrix products.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

__all__ = ["rewrite_convs", "contains_conv", "wanted", "canonical_conv", "conv_as_matmuls",
           "MAX_TERMS"]

# More than this many slice-and-multiply terms per convolution (e.g. a 16x16 kernel on a 16x16
# output) and the convolution is kept: the unrolled graph would compile slowly.
MAX_TERMS = 256

_CALLS = ("pjit", "jit", "closed_call", "core_call", "remat", "checkpoint")


def _sub_jaxprs(params):
    """``(name, index, jaxpr)`` for every (Closed)Jaxpr in an equation's params."""
    for name, value in params.items():
        items = value if isinstance(value, tuple | list) else (value,)
        for i, item in enumerate(items):
            if isinstance(item, jcore.ClosedJaxpr | jcore.Jaxpr):
                yield name, (i if isinstance(value, tuple | list) else None), item


def _jaxpr_has_conv(jaxpr) -> bool:
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        if eqn.primitive is lax.conv_general_dilated_p:
            return True
        if any(_jaxpr_has_conv(j) for _, _, j in _sub_jaxprs(eqn.params)):
            return True
    return False


def contains_conv(fn, *args) -> bool:
    """Whether ``fn(*args)`` runs a ``lax.conv_general_dilated`` anywhere in its computation
    (including loop bodies and nested calls). Traces ``fn`` once on the abstract values of
    ``args``; computes nothing."""
    return _jaxpr_has_conv(jax.make_jaxpr(fn)(*args))


def wanted(rewrite_convs, detect) -> bool:
    """The ``rewrite_convs=`` argument of the library's loops, resolved: the bool if given;
    ``None``: ``detect()`` (does the computation contain a convolution?) on the CPU backend,
    ``False`` elsewhere (other backends canonicalise convolutions in loops themselves).

    Raises:
      ValueError: ``rewrite_convs`` is neither a bool nor None.
    """
    if rewrite_convs is not None:
        if not isinstance(rewrite_convs, bool):
            raise ValueError(f"rewrite_convs must be True, False or None; got {rewrite_convs!r}")
        return rewrite_convs
    return jax.default_backend() == "cpu" and bool(detect())


def rewrite_convs(fn):
    """``fn`` with every convolution written as slices and matrix products (module docstring).

    Args:
      fn: a function of pytrees of arrays, traceable by JAX.

    Returns:
      A function with ``fn``'s signature and outputs (equal up to float rounding; bit-identical
      when ``fn`` runs no convolution). It can be jitted, differentiated and vmapped like ``fn``.
      Keyword arguments are passed through as static values of the trace.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable; got {type(fn).__name__}")

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        leaves, treedef = jax.tree.flatten(args)
        flat_fn = lambda *xs: fn(*jax.tree.unflatten(treedef, xs), **kwargs)
        closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*leaves)
        if not _jaxpr_has_conv(closed):
            return fn(*args, **kwargs)
        outs = _eval(closed.jaxpr, closed.consts, leaves)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return wrapped


def _eval(jaxpr, consts, args):
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts, strict=True):
        env[v] = x
    for v, x in zip(jaxpr.invars, args, strict=True):
        env[v] = x
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        outs = _eval_eqn(eqn, invals)
        if not eqn.primitive.multiple_results:
            outs = [outs]
        for v, x in zip(eqn.outvars, outs, strict=True):
            env[v] = x
    return [read(v) for v in jaxpr.outvars]


def _eval_eqn(eqn, invals):
    prim, params = eqn.primitive, eqn.params
    if prim is lax.conv_general_dilated_p:
        out = canonical_conv(*invals, **params)
        return _bind(eqn, invals, params) if out is None else out
    subs = list(_sub_jaxprs(params))
    if not subs or not any(_jaxpr_has_conv(j) for _, _, j in subs):
        return _bind(eqn, invals, params)
    if prim.name in _CALLS and len(subs) == 1:  # inline nested jit / remat
        _, _, sub = subs[0]
        if isinstance(sub, jcore.ClosedJaxpr):
            return _eval(sub.jaxpr, sub.consts, invals)
        return _eval(sub, [], invals)
    new = dict(params)
    for name, index, sub in subs:
        rewritten = _rewrite_jaxpr(sub)
        if rewritten is None:
            return _bind(eqn, invals, params)
        if index is None:
            new[name] = rewritten
        else:
            items = list(new[name])
            items[index] = rewritten
            new[name] = type(params[name])(items)
    try:
        return _bind(eqn, invals, new)
    except Exception:  # a primitive whose params we cannot rebuild: keep it as it was
        return _bind(eqn, invals, params)


def _bind(eqn, invals, params):
    with eqn.ctx.manager:
        return eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(params))


def _rewrite_jaxpr(sub):
    """A jaxpr of the same signature with its convolutions rewritten, or ``None``."""
    closed = isinstance(sub, jcore.ClosedJaxpr)
    jaxpr, consts = (sub.jaxpr, sub.consts) if closed else (sub, [])
    avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype, weak_type=v.aval.weak_type)
             for v in jaxpr.invars]
    new = jax.make_jaxpr(lambda *xs: _eval(jaxpr, consts, xs))(*avals)
    if [v.aval for v in new.jaxpr.outvars] != [v.aval for v in jaxpr.outvars]:
        return None
    if closed:
        return new
    return new.jaxpr if not new.consts else None


# dtypes for which XLA:CPU has its Eigen convolution kernel
_EIGEN_DTYPES = ("float16", "float32")


def _out_perm(out_spec, nsp):
    """Permutation taking the canonical ``(N, *spatial, O)`` output to ``out_spec``'s order."""
    perm = [0] * (nsp + 2)
    perm[out_spec[0]], perm[out_spec[1]] = 0, nsp + 1
    for d in range(nsp):
        perm[out_spec[2 + d]] = 1 + d
    return perm


def canonical_conv(lhs, rhs, **params):
    """The convolution of the ``conv_general_dilated`` primitive with ``params``, in the form
    XLA:CPU's Eigen kernel takes, wherever it appears.

    Ungrouped float16/float32 convolutions: the input is transposed to ``(N, *spatial, C)``, the
    kernel to ``(*spatial, I, O)``, the convolution runs with those canonical dimension numbers
    (the same window, padding and dilations) and the output is transposed back; the values are
    bit-identical to the original convolution's (only data movement is added). This is what
    XLA's ``ConvCanonicalization`` pass does, for the entry computation only. Grouped
    convolutions and other dtypes, which the Eigen kernel does not take: :func:`conv_as_matmuls`.
    Returns ``None`` when neither applies (the caller keeps the convolution).
    """
    groups = params["feature_group_count"] * params["batch_group_count"]
    if groups > 1 or jnp.dtype(lhs.dtype).name not in _EIGEN_DTYPES:
        return conv_as_matmuls(lhs, rhs, **params)
    lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
    nsp = len(lhs_spec) - 2
    x = jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
    w = jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
    io = (0, nsp + 1, *range(1, nsp + 1))
    canon = lax.ConvDimensionNumbers(io, (nsp + 1, nsp, *range(nsp)), io)
    out = lax.conv_general_dilated_p.bind(x, w, **(params | {"dimension_numbers": canon}))
    return jnp.transpose(out, _out_perm(out_spec, nsp))


def conv_as_matmuls(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation,
                    dimension_numbers, feature_group_count, batch_group_count, precision=None,
                    preferred_element_type=None, **_):
    """``lax.conv_general_dilated`` with these parameters as pads, slices and ``dot_general``.

    Takes the parameters of the ``conv_general_dilated`` primitive (``dimension_numbers`` a
    ``ConvDimensionNumbers`` of ``(batch, feature, spatial...)`` axis indices). Returns the
    convolution's output, or ``None`` when it would need more than ``MAX_TERMS`` products.
    """
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    nsp = len(lhs_spec) - 2
    # channels-last canonical forms: X (N, *S, C), W (*K, I, O)
    x = jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
    w = jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
    zero = jnp.zeros((), x.dtype)
    x = lax.pad(x, zero, [(0, 0, 0)] + [(lo, hi, d - 1) for (lo, hi), d in
                                        zip(padding, lhs_dilation, strict=True)] + [(0, 0, 0)])
    K = w.shape[:nsp]
    P = tuple((x.shape[1 + d] - (K[d] - 1) * rhs_dilation[d] - 1) // window_strides[d] + 1
              for d in range(nsp))
    if min(math.prod(K), math.prod(P)) > MAX_TERMS:
        return None
    N, C, O = x.shape[0], x.shape[-1], w.shape[-1]
    # groups G as a leading batch axis: X (G, N', *S, Cg), W (G, *K, Cg, Og)
    if batch_group_count > 1:
        G = batch_group_count
        x = jnp.moveaxis(x.reshape(G, N // G, *x.shape[1:]), 0, 0)
    else:
        G = feature_group_count
        x = jnp.moveaxis(x.reshape(*x.shape[:-1], G, C // G), -2, 0)
    w = jnp.moveaxis(w.reshape(*K, w.shape[-2], G, O // G), -2, 0)
    dot = functools.partial(lax.dot_general, precision=precision,
                            preferred_element_type=preferred_element_type)
    s, r = window_strides, rhs_dilation
    if math.prod(K) <= math.prod(P):  # one product per kernel position
        out = None
        for k in itertools.product(*(range(n) for n in K)):
            start = (0, 0, *(k[d] * r[d] for d in range(nsp)), 0)
            limit = (*x.shape[:2], *(k[d] * r[d] + (P[d] - 1) * s[d] + 1 for d in range(nsp)),
                     x.shape[-1])
            xs = lax.slice(x, start, limit, (1, 1, *s, 1))  # (G, N', *P, Cg)
            term = dot(xs, w[(slice(None), *k)], (((nsp + 2,), (1,)), ((0,), (0,))))
            out = term if out is None else out + term  # (G, N', *P, Og)
    else:  # one product per output position
        terms = []
        for p in itertools.product(*(range(n) for n in P)):
            start = (0, 0, *(p[d] * s[d] for d in range(nsp)), 0)
            limit = (*x.shape[:2], *(p[d] * s[d] + (K[d] - 1) * r[d] + 1 for d in range(nsp)),
                     x.shape[-1])
            xw = lax.slice(x, start, limit, (1, 1, *r, 1))  # (G, N', *K, Cg)
            contract = tuple(range(2, nsp + 3))
            terms.append(dot(xw, w, ((contract, tuple(range(1, nsp + 2))), ((0,), (0,)))))
        out = jnp.stack(terms, axis=2).reshape(G, x.shape[1], *P, -1)  # (G, N', *P, Og)
    out = jnp.moveaxis(out, 0, -2)  # (N', *P, G, Og)
    out = out.reshape(*out.shape[:-2], O)  # (N', *P, O)
    return jnp.transpose(out, _out_perm(out_spec, nsp))

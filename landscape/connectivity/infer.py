"""Infer a permutation spec by tracing the network to a jaxpr.

``infer_spec(apply_fn, params, example_input)`` traces ``apply_fn(params, x)`` with
``jax.make_jaxpr`` and groups array axes into classes that must be permuted together, with a
union-find over ``(variable, axis)`` nodes:

* elementwise ops (add, mul, max, exp, ... with size-1 broadcasting), ``broadcast_in_dim``,
  ``transpose``, ``squeeze`` and reductions join each output axis to the matching input axes
  (a residual ``add`` therefore puts both branches in one class: one residual-stream
  permutation);
* ``dot_general`` joins contracted axes with each other and free axes with the output;
  ``conv_general_dilated`` joins input features with the kernel's input features and the
  kernel's output features with the output channels;
* ``reduce_window`` (pooling), static ``slice``, ``pad`` and ``concatenate`` join the axes they
  leave untouched (so convolutions written as shifted matrix products, ``ShiftConv``, are
  followed like ``conv_general_dilated``);
* ``reshape`` joins unchanged axes; a merge ``(..., A, L, C) -> (..., A*L*C)`` links the merged
  axis to its *fastest* factor ``C`` as a *block* axis (feature ``l*|C| + c`` belongs to unit
  ``c``: a channel-last flatten into a dense layer, ``tile``) and fixes the slower factors
  ``A, L``. A permutation of a slow factor moves contiguous blocks of the flat axis (an NCHW
  flatten ``(N, C, H, W) -> (N, C*H*W)``, ``repeat``), which a spec cannot express. Chains of
  merges resolve to the innermost fast factor; a flat class reached from two different unit
  classes is fixed with both. A split ``(..., L*C) -> (..., L, C)`` is the mirror image;
* calls (``jit``, ``custom_jvp_call``, ``custom_vjp_call``, remat) are followed inside, when
  the called jaxpr has the call's input and output shapes;
* loops share one permutation across iterations: for ``scan`` (and ``fori_loop`` with a static
  trip count) and ``while`` (``fori_loop`` with traced bounds, ``while_loop``) the initial
  carry, the carry into the body (and the condition), the carry out of the body and the final
  carry are joined axis by axis; loop constants are joined with the body's. A scanned operand
  ``xs`` of shape ``(T, *s)`` reaches the body as slices of shape ``s``: slice axis ``k`` is
  joined with axis ``k + 1`` of ``xs`` (and likewise for the stacked outputs ``ys``), and the
  scanned axis 0 is fixed. Params stacked along a leading layer axis and scanned over therefore
  get one permutation per class, shared by all layers, never on the layer axis. An RNN's
  recurrent matrix gets the hidden permutation on both of its axes;
* equations whose results never reach the outputs are dropped first (dead-code elimination),
  so side computations such as BatchNorm running-statistic updates do not pin any axis.

Every axis of the input ``x``, of the outputs and of closed-over constant arrays, every axis an
unknown primitive touches (including ``cond``), and axes with a role that does not commute with
permutations (conv spatial axes, ``argmax``, ``cumsum``, ``sort``, gathers ...) are *fixed*, and
so is every class that contains one. Each remaining class that contains a parameter axis and at
least one intermediate activation axis is one permutation (the weight-space symmetry of
Ainsworth, Hayase, Srinivasa 2023, "Git Re-Basin"). The result is conservative (it never
permutes an axis it does not understand); confirm it with :func:`check_spec`. Scope: MLPs
(plain, residual, LayerNorm, BatchNorm in eval or train mode), CNNs, ResNets, RNNs written with
``scan``/``fori_loop``/``while_loop``, layer stacks under ``scan``; attention heads split by
``reshape`` are left fixed.
"""

from __future__ import annotations

from collections import defaultdict

import jax
from jax.extend import core as jcore

from landscape.connectivity.spec import PermutationSpec, make_spec

__all__ = ["infer_spec"]

_ELEMENTWISE = {
    "add", "sub", "mul", "div", "max", "min", "pow", "select_n", "and", "or", "xor", "ne", "eq",
    "gt", "lt", "ge", "le", "atan2", "rem", "add_any", "nextafter", "clamp", "neg", "exp",
    "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sqrt", "rsqrt", "cbrt", "abs", "sign",
    "integer_pow", "square", "convert_element_type", "erf", "erfc", "erf_inv", "sin", "cos",
    "tan", "floor", "ceil", "round", "is_finite", "stop_gradient", "copy", "copy_p",
    "reduce_precision", "not", "asinh", "acosh", "atanh", "sinh", "cosh", "imag", "real",
}
_REDUCE = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or"}
_WINDOW = {"reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window"}


class _Graph:
    """Union-find over ``(var, axis)`` nodes with a fixed flag per class and block links."""

    def __init__(self):
        self.parent: dict = {}
        self.fixed: set = set()
        self.links: list = []  # (merged node, inner node)

    def find(self, n):
        self.parent.setdefault(n, n)
        while self.parent[n] != n:
            self.parent[n] = self.parent[self.parent[n]]
            n = self.parent[n]
        return n

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb

    def fix(self, n):
        self.fixed.add(n)
        self.find(n)

    def fix_var(self, v):
        for ax in range(len(_shape(v))):
            self.fix((v, ax))


class _Q:
    """A jaxpr variable qualified by its call site (a cached sub-jaxpr is shared by calls)."""

    __slots__ = ("ctx", "var")

    def __init__(self, ctx: int, var):
        self.ctx, self.var = ctx, var

    def __eq__(self, other):
        return isinstance(other, _Q) and self.ctx == other.ctx and self.var is other.var

    def __hash__(self):
        return hash((self.ctx, id(self.var)))

    @property
    def aval(self):
        return self.var.aval


def _shape(v):
    return tuple(getattr(v.aval, "shape", ()))


def _vars(vs):
    return [v for v in vs if not isinstance(v, jcore.Literal)]


def _join_same(g, ins, out):
    """Elementwise: join out axis i with every operand axis i of the same (non-1) size."""
    so = _shape(out)
    for v in _vars(ins):
        sv = _shape(v)
        if len(sv) != len(so):
            continue
        for ax, (a, b) in enumerate(zip(sv, so)):
            if a == b and a != 1:
                g.union((v, ax), (out, ax))


def _dot_general(g, eqn):
    lhs, rhs = eqn.invars
    out = eqn.outvars[0]
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    for a, b in zip(lc, rc):
        g.union((lhs, a), (rhs, b))
    for k, (a, b) in enumerate(zip(lb, rb)):
        g.union((lhs, a), (rhs, b))
        g.union((lhs, a), (out, k))
    k = len(lb)
    for v, used in ((lhs, set(lc) | set(lb)), (rhs, set(rc) | set(rb))):
        for ax in range(len(_shape(v))):
            if ax not in used:
                g.union((v, ax), (out, k))
                k += 1


def _conv(g, eqn):
    lhs, rhs = eqn.invars
    out = eqn.outvars[0]
    dn = eqn.params["dimension_numbers"]
    if eqn.params["feature_group_count"] != 1 or eqn.params["batch_group_count"] != 1:
        return _fix_all(g, eqn)
    g.union((lhs, dn.lhs_spec[0]), (out, dn.out_spec[0]))
    g.union((lhs, dn.lhs_spec[1]), (rhs, dn.rhs_spec[1]))
    g.union((rhs, dn.rhs_spec[0]), (out, dn.out_spec[1]))
    for v, spec in ((lhs, dn.lhs_spec), (rhs, dn.rhs_spec), (out, dn.out_spec)):
        for ax in spec[2:]:
            g.fix((v, ax))


def _reshape(g, eqn):
    (v,), (out,) = _vars(eqn.invars), eqn.outvars
    si, so = _shape(v), _shape(out)
    ii = [i for i, s in enumerate(si) if s != 1]
    oo = [o for o, s in enumerate(so) if s != 1]
    i = o = 0
    while i < len(ii) and o < len(oo):
        gi, go = [ii[i]], [oo[o]]
        pi, po = si[ii[i]], so[oo[o]]
        while pi != po:
            if pi < po:
                i += 1
                gi.append(ii[i])
                pi *= si[ii[i]]
            else:
                o += 1
                go.append(oo[o])
                po *= so[oo[o]]
        if len(gi) == 1 and len(go) == 1:
            g.union((v, gi[0]), (out, go[0]))
        elif len(go) == 1:
            # (..., A, B, C) -> (..., A*B*C): only the fastest factor C maps to a block axis
            # (a unit c of C owns entries c, c + |C|, ... ); a permutation of a slower factor
            # moves contiguous blocks, which a spec cannot express, so those factors are fixed
            g.links.append(((out, go[0]), (v, gi[-1])))
            for ax in gi[:-1]:
                g.fix((v, ax))
        elif len(gi) == 1:
            g.links.append(((v, gi[0]), (out, go[-1])))
            for ax in go[:-1]:
                g.fix((out, ax))
        else:
            for ax in gi:
                g.fix((v, ax))
            for ax in go:
                g.fix((out, ax))
        i, o = i + 1, o + 1


def _join_or_fix(g, v, out, ax, untouched: bool):
    """Join axis ``ax`` of ``v`` and ``out`` if the op leaves it untouched, else fix both."""
    if untouched:
        g.union((v, ax), (out, ax))
    else:
        g.fix((v, ax))
        g.fix((out, ax))


def _windowed(g, eqn):
    v, out = _vars(eqn.invars)[0], eqn.outvars[0]
    win, strides = eqn.params["window_dimensions"], eqn.params["window_strides"]
    pads = eqn.params["padding"]
    for ax, (w, s, p) in enumerate(zip(win, strides, pads)):
        _join_or_fix(g, v, out, ax, w == 1 and s == 1 and tuple(p) == (0, 0))


def _sliced(g, eqn):
    """A static ``slice`` keeps an axis it takes whole (start 0, full limit, stride 1)."""
    v, out = _vars(eqn.invars)[0], eqn.outvars[0]
    strides = eqn.params["strides"] or (1,) * len(_shape(v))
    for ax, (lo, hi, st) in enumerate(zip(eqn.params["start_indices"],
                                          eqn.params["limit_indices"], strides)):
        _join_or_fix(g, v, out, ax, lo == 0 and hi == _shape(v)[ax] and st == 1)


def _padded(g, eqn):
    """``pad`` keeps an axis it does not pad; the padding value is a scalar."""
    v, out = eqn.invars[0], eqn.outvars[0]
    if isinstance(v, jcore.Literal):
        g.fix_var(out)
        return
    for ax, cfg in enumerate(eqn.params["padding_config"]):
        _join_or_fix(g, v, out, ax, tuple(int(c) for c in cfg) == (0, 0, 0))


def _concatenated(g, eqn):
    """``concatenate`` joins the other axes of all operands; the joined axis is fixed."""
    out, dim = eqn.outvars[0], eqn.params["dimension"]
    for v in eqn.invars:
        if not isinstance(v, jcore.Literal):
            for ax in range(len(_shape(v))):
                _join_or_fix(g, v, out, ax, ax != dim)


def _fix_all(g, eqn):
    for v in _vars(eqn.invars) + list(eqn.outvars):
        g.fix_var(v)


def _subjaxpr(eqn):
    """The body of a call-like equation: a jaxpr whose inputs and outputs have exactly the
    equation's shapes (so ``scan``, whose body sees slices, never matches)."""
    same = lambda a, b: len(a) == len(b) and all(
        _shape(x) == _shape(y) for x, y in zip(a, b))
    for p in eqn.params.values():
        jaxpr = getattr(p, "jaxpr", p)
        if isinstance(jaxpr, jcore.Jaxpr) and same(jaxpr.invars, eqn.invars) and \
                same(jaxpr.outvars, eqn.outvars):
            return jaxpr
    return None


def _bind(g, outer, inner, shift: int = 0):
    """Join axis ``ax`` of ``inner`` with axis ``ax + shift`` of ``outer``; the leading
    ``shift`` axes of ``outer`` (a scanned axis) are fixed. A literal on either side (a
    constant) fixes the other side."""
    lit_o, lit_i = isinstance(outer, jcore.Literal), isinstance(inner, jcore.Literal)
    if lit_o or lit_i:
        for v, is_lit in ((outer, lit_o), (inner, lit_i)):
            if not is_lit:
                g.fix_var(v)
        return
    for ax in range(shift):
        g.fix((outer, ax))
    for ax in range(len(_shape(inner))):
        g.union((outer, ax + shift), (inner, ax))


def _open(jaxpr):
    """The ``Jaxpr`` of a ``ClosedJaxpr`` (its consts are constvars, fixed by ``_walk``)."""
    return getattr(jaxpr, "jaxpr", jaxpr)


def _qualify(vs, ctx):
    return [v if isinstance(v, jcore.Literal) else _Q(ctx, v) for v in vs]


def _scan(g, eqn, counter):
    """``scan``: operands are ``consts + init carry + xs``, results ``final carry + ys``;
    the body maps ``consts + carry + x slices`` to ``carry + y slices``. The carry going in and
    coming out of the body share every class (one permutation for all iterations); a slice
    axis ``ax`` is axis ``ax + 1`` of its stacked array, whose scanned axis 0 is fixed."""
    body = _open(eqn.params["jaxpr"])
    nc, nk = eqn.params["num_consts"], eqn.params["num_carry"]
    counter[0] += 1
    ctx = counter[0]
    b_in, b_out = _qualify(body.invars, ctx), _qualify(body.outvars, ctx)
    ins, outs = eqn.invars, eqn.outvars
    for k in range(nc + nk):
        _bind(g, ins[k], b_in[k])
    for k in range(nk):
        _bind(g, b_in[nc + k], b_out[k])
        _bind(g, outs[k], b_out[k])
    for o, i in zip(ins[nc + nk:], b_in[nc + nk:]):
        _bind(g, o, i, shift=1)
    for o, i in zip(outs[nk:], b_out[nk:]):
        _bind(g, o, i, shift=1)
    _walk(g, body, ctx, counter)


def _while(g, eqn, counter):
    """``while`` (and ``fori_loop`` with traced bounds): operands are ``cond consts + body
    consts + init carry``, results the final carry. The carry into the condition, into the
    body, out of the body and out of the loop share every class."""
    cond, body = _open(eqn.params["cond_jaxpr"]), _open(eqn.params["body_jaxpr"])
    cn, bn = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
    ins, outs = eqn.invars, eqn.outvars
    carry = ins[cn + bn:]
    for jaxpr, consts in ((cond, ins[:cn]), (body, ins[cn:cn + bn])):
        counter[0] += 1
        ctx = counter[0]
        j_in = _qualify(jaxpr.invars, ctx)
        for o, i in zip(list(consts) + list(carry), j_in):
            _bind(g, o, i)
        if jaxpr is body:
            for k, out in enumerate(_qualify(jaxpr.outvars, ctx)):
                _bind(g, j_in[bn + k], out)
                _bind(g, outs[k], out)
        _walk(g, jaxpr, ctx, counter)


class _Eqn:
    """An equation with call-site-qualified variables."""

    def __init__(self, eqn, ctx):
        self.primitive, self.params = eqn.primitive, eqn.params
        self.invars = [v if isinstance(v, jcore.Literal) else _Q(ctx, v) for v in eqn.invars]
        self.outvars = [_Q(ctx, v) for v in eqn.outvars]


def _walk(g, jaxpr, ctx=0, counter=None):
    counter = counter if counter is not None else [0]
    for c in jaxpr.constvars:  # closed-over arrays are constants: never permuted
        g.fix_var(_Q(ctx, c))
    for raw in jaxpr.eqns:
        eqn = _Eqn(raw, ctx)
        name = eqn.primitive.name
        ins, outs = eqn.invars, eqn.outvars
        if name in _ELEMENTWISE:
            for out in outs:
                _join_same(g, ins, out)
        elif name == "broadcast_in_dim":
            v = ins[0]
            if not isinstance(v, jcore.Literal):
                for j, d in enumerate(eqn.params["broadcast_dimensions"]):
                    if _shape(v)[j] == _shape(outs[0])[d]:
                        g.union((v, j), (outs[0], d))
        elif name == "transpose":
            for k, j in enumerate(eqn.params["permutation"]):
                g.union((ins[0], j), (outs[0], k))
        elif name in _REDUCE or name == "squeeze":
            drop = set(eqn.params.get("axes", eqn.params.get("dimensions", ())))
            kept = [ax for ax in range(len(_shape(ins[0]))) if ax not in drop]
            for k, ax in enumerate(kept):
                g.union((ins[0], ax), (outs[0], k))
        elif name == "dot_general":
            _dot_general(g, eqn)
        elif name == "conv_general_dilated":
            _conv(g, eqn)
        elif name == "reshape" and eqn.params.get("dimensions") is None:
            _reshape(g, eqn)
        elif name in _WINDOW:
            _windowed(g, eqn)
        elif name == "slice":
            _sliced(g, eqn)
        elif name == "pad":
            _padded(g, eqn)
        elif name == "concatenate":
            _concatenated(g, eqn)
        elif name == "scan":
            _scan(g, eqn, counter)
        elif name == "while":
            _while(g, eqn, counter)
        elif (sub := _subjaxpr(eqn)) is not None:
            counter[0] += 1
            sub_ctx = counter[0]
            for outer, inner in zip(ins, sub.invars):
                if not isinstance(outer, jcore.Literal):
                    for ax in range(len(_shape(outer))):
                        g.union((outer, ax), (_Q(sub_ctx, inner), ax))
            _walk(g, sub, sub_ctx, counter)
            for outer, inner in zip(outs, sub.outvars):
                if isinstance(inner, jcore.Literal):
                    g.fix_var(outer)
                    continue
                for ax in range(len(_shape(outer))):
                    g.union((outer, ax), (_Q(sub_ctx, inner), ax))
        else:
            _fix_all(g, eqn)


def _classes(g, param_vars):
    """Resolve fixed classes and block links, and collect param axes.

    A block link ``merged -> inner`` says the merged class is the inner class's block axis. A
    fixed merged class fixes its inner class; a merged class linked to two different inner
    classes is fixed with them (no single permutation fits both); a chain of merges
    ``(A, B, C) -> (A, B*C) -> (A*B*C)`` resolves to its innermost class (the fastest factor).
    Returns ``fixed_roots``, ``linked`` (merged root -> innermost root, for the merged classes
    that are permuted), ``merged`` (every merged root) and the param members per root.
    """
    fixed_roots = {g.find(n) for n in g.fixed}
    inner_of = defaultdict(set)  # merged root -> its inner roots
    for m, i in g.links:
        inner_of[g.find(m)].add(g.find(i))
    changed = True
    while changed:
        changed = False
        for m, inners in inner_of.items():
            if m in fixed_roots or len(inners) > 1:
                group = {m} | inners
                if not group <= fixed_roots:
                    fixed_roots |= group
                    changed = True

    def innermost(r):  # sizes strictly shrink along a chain, so it ends
        while r in inner_of and r not in fixed_roots:
            (r,) = inner_of[r]
        return None if r in fixed_roots else r

    linked = {m: r for m in inner_of if (r := innermost(m)) is not None}
    members = defaultdict(list)
    first_activation: dict = {}  # root -> creation index of its first activation axis
    for i, node in enumerate(list(g.parent)):
        r = g.find(node)
        if node[0] in param_vars:
            members[r].append(node)
        else:
            first_activation.setdefault(r, i)
    return fixed_roots, linked, set(inner_of), members, first_activation


def _dead_code_removed(jaxpr):
    """Drop equations that do not reach the outputs (e.g. BatchNorm running-stat updates in
    train mode), keeping every input. Uses JAX's internal DCE when available."""
    try:
        from jax._src.interpreters import partial_eval as pe

        return pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars), instantiate=True)[0]
    except Exception:  # pragma: no cover - internal API moved: analyse the full jaxpr
        return jaxpr


def infer_spec(apply_fn, params, example_input) -> PermutationSpec:
    """Derive the hidden-unit permutation spec of ``apply_fn(params, x)`` from its jaxpr.

    ``example_input`` is one batch (at least 2 examples, so the batch axis is not size 1);
    the leaves of ``params`` may include non-parameter state if ``apply_fn`` reads it. See the
    module docstring for the rules and scope. Permutations are named ``P_0, P_1, ...`` in order
    of their first parameter leaf. Raises ``ValueError`` when no permutation symmetry is found.
    """
    closed = jax.make_jaxpr(apply_fn)(params, example_input)
    jaxpr = _dead_code_removed(closed.jaxpr)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    keys = [jax.tree_util.keystr(p) for p, _ in flat]
    invars = [_Q(0, v) for v in jaxpr.invars]
    param_vars = dict(zip(invars[: len(keys)], keys))
    g = _Graph()
    for v in invars[len(keys):]:
        g.fix_var(v)
    for v in invars:
        for ax in range(len(_shape(v))):
            g.find((v, ax))
    _walk(g, jaxpr)
    for v in _vars(jaxpr.outvars):
        g.fix_var(_Q(0, v))
    fixed, linked, merged, members, has_act = _classes(g, param_vars)
    order = {k: i for i, k in enumerate(keys)}
    roots = [r for r in members if r not in fixed and r in has_act and r not in merged
             and _shape(r[0])[r[1]] > 1]
    roots.sort(key=lambda r: has_act[r])  # in order of computation
    perms, sizes = {}, {}
    for j, r in enumerate(roots):
        name = f"P_{j}"
        axes = [(param_vars[v], ax) for v, ax in members[r]]
        for m, inner in linked.items():
            if inner == r:
                axes += [(param_vars[v], ax) for v, ax in members[m]]
        axes.sort(key=lambda ka: (order[ka[0]], ka[1]))
        perms[name] = tuple(axes)
        sizes[name] = int(_shape(members[r][0][0])[members[r][0][1]])
    if not perms:
        raise ValueError("infer_spec found no hidden-unit permutation symmetry in apply_fn")
    return make_spec(perms, sizes)

"""Short, readable ``repr`` for the library's result types (one shared formatter).

A result printed in Jupyter should say what a researcher looks at first (an estimate with its
standard error, eigenvalues with their residuals, a barrier with the alpha where it peaks), not
dump every array. The result NamedTuples keep their fields, ``_replace``, unpacking and pytree
behaviour; they only gain a ``__repr__`` built from the helpers here. The rules:

* numbers carry 4 significant digits (``f"{x:.4g}"``); integers and booleans print exactly;
* an array of at most ``SMALL`` (8) elements prints its values, a larger one prints as
  ``dtype[shape]``, e.g. ``float32[272474, 5]`` (no data is read);
* ``None`` fields are left out;
* a repr never raises and never forces device work under tracing: when any leaf of the result
  is a JAX tracer (``repr`` called inside ``jit``/``vmap``/``grad``), or when building the
  readable form fails for any reason, it falls back to :func:`shapes_repr` (field names with
  ``dtype[shape]`` only);
* a repr is a few lines at most: one line when it fits in ``WIDTH`` (96) characters, otherwise
  the same items wrapped; tables (eigenpairs) show at most ``MAX_ROWS`` (10) rows, then
  ``...``.

Each class writes its own ``__repr__`` with :func:`repr_method` and the formatters below; the
two longest are here, :func:`eigsh_repr` (a table of eigenpairs, for
``landscape.spectral.eigsh.EigshResult``) and :func:`train_result_repr` (a pytree summary, for
``landscape.train.TrainResult``), attached as ``__repr__ = reprs.eigsh_repr``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

__all__ = [
    "SMALL", "WIDTH", "MAX_ROWS", "MAX_KEYS", "DIGITS",
    "is_traced", "shape", "num", "array", "value", "tree", "host", "span", "ends", "trend",
    "curve", "pm", "count", "perm_summary", "line", "fields", "namedtuple_repr", "table",
    "repr_method", "shapes_repr", "eigsh_repr", "train_result_repr",
]

SMALL = 8       # arrays with at most this many elements print their values
WIDTH = 96      # a repr longer than this wraps its items over several lines
MAX_ROWS = 10   # rows of a per-eigenpair table before "..."
MAX_KEYS = 4    # dict entries shown before "..."
DIGITS = 4      # significant digits of a printed number

EIGSH_STATUS = {0: "converged", 1: "step budget spent", 2: "rounding floor reached"}


# --- leaves -------------------------------------------------------------------------------------

def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def is_traced(obj) -> bool:
    """Whether any pytree leaf of ``obj`` is a JAX tracer (``repr`` inside a transformation)."""
    return any(_is_tracer(leaf) for leaf in jax.tree_util.tree_leaves(obj))


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def shape(x) -> str:
    """``dtype[shape]`` of an array (``float32[272474, 5]``; ``float32[]`` for a scalar); reads
    only metadata, so it is safe on tracers and on arrays that live on a device."""
    dims = ", ".join(str(d) for d in np.shape(x))
    try:
        name = np.dtype(x.dtype).name if _is_array(x) else np.asarray(x).dtype.name
    except TypeError:  # e.g. a typed PRNG key array
        name = str(getattr(x, "dtype", type(x).__name__))
    return f"{name}[{dims}]"


def num(x, digits: int = DIGITS) -> str:
    """One number: ``12.31`` (``digits`` significant digits), ``30``, ``True``, ``nan``.

    ``None`` gives ``"None"``; a tracer its ``dtype[]``; an array of more than one element
    goes to :func:`array`.
    """
    if x is None:
        return "None"
    if _is_tracer(x):
        return shape(x)
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.{digits}g}"
    a = np.asarray(x)
    if a.size != 1:
        return array(a)
    v = a.reshape(()).item()
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (float, complex)):
        return f"{v:.{digits}g}"
    return str(v)


def _nested(a: np.ndarray) -> str:
    if a.ndim == 0:
        return num(a)
    return "[" + ", ".join(_nested(row) for row in a) + "]"


def array(x, small: int = SMALL) -> str:
    """Values of a small array (``[1.5, 2, 3]``), else ``dtype[shape]``; a tracer is always
    ``dtype[shape]``."""
    if _is_tracer(x):
        return shape(x)
    if int(np.prod(np.shape(x))) > small:
        return shape(x)
    return _nested(np.asarray(x))


def tree(x) -> str:
    """A pytree (e.g. params) as ``pytree[6 leaves, 1,234 values]`` (metadata only)."""
    leaves = jax.tree_util.tree_leaves(x)
    size = sum(int(np.prod(np.shape(leaf))) for leaf in leaves)
    count_leaves = f"{len(leaves)} leaf" if len(leaves) == 1 else f"{len(leaves)} leaves"
    return f"pytree[{count_leaves}, {size:,} value{'' if size == 1 else 's'}]"


def _dict(d: Mapping, concrete: bool) -> str:
    items = [f"{k}: {value(v, concrete)}" for k, v in list(d.items())[:MAX_KEYS]]
    if len(d) > MAX_KEYS:
        items.append(f"... (+{len(d) - MAX_KEYS})")
    return "{" + ", ".join(items) + "}"


def value(x, concrete: bool = True) -> str:
    """Any field value: numbers and small arrays by value, large arrays as ``dtype[shape]``,
    strings quoted, a dict of arrays entry by entry (first ``MAX_KEYS``), any other pytree as
    :func:`tree`. ``concrete=False`` prints arrays as ``dtype[shape]`` only."""
    if x is None or isinstance(x, (str, bool, int, float, np.bool_, np.number)):
        return repr(x) if isinstance(x, str) else num(x)
    if _is_array(x):
        return array(x) if concrete and not _is_tracer(x) else shape(x)
    if isinstance(x, Mapping) and all(_is_array(v) or v is None for v in x.values()):
        return _dict(x, concrete)
    if (isinstance(x, (tuple, list)) and len(x) <= SMALL
            and all(isinstance(v, (str, bool, int, float, np.number)) for v in x)):
        inner = ", ".join(value(v) for v in x)
        return f"({inner}{',' if len(x) == 1 else ''})" if isinstance(x, tuple) else f"[{inner}]"
    return tree(x)


# --- summaries of one array ---------------------------------------------------------------------

def host(x) -> np.ndarray:
    """``x`` as a NumPy array (reads device data: only call it on concrete values)."""
    return np.asarray(x)


def span(x) -> str:
    """A small array by value, a large one as ``float32[1000] in [-0.1, 3.2]`` (finite range)."""
    if _is_tracer(x):
        return shape(x)
    a = host(x)
    if a.size <= SMALL:
        return _nested(a)
    finite = a[np.isfinite(a)] if np.issubdtype(a.dtype, np.inexact) else a
    if finite.size == 0:
        return f"{shape(a)} (no finite value)"
    return f"{shape(a)} in [{num(finite.min())}, {num(finite.max())}]"


def ends(x) -> str:
    """First and last entry of a 1-D record: ``2.303 -> 0.0123`` (one value if only one)."""
    a = host(x).reshape(-1)
    if a.size == 0:
        return "[]"
    return num(a[0]) if a.size == 1 else f"{num(a[0])} -> {num(a[-1])}"


def trend(x) -> str:
    """A record over steps: small by value, else ``float32[100]: 2.303 -> 0.0123`` (first and
    last entries)."""
    if _is_tracer(x) or np.size(x) <= SMALL:
        return array(x)
    return f"{shape(x)}: {ends(x)}"


def curve(xs, ys, at: str = "alpha") -> str:
    """A 1-D curve ``ys`` over ``xs``: ``0.1234 -> 0.1301 (max 0.5412 at alpha=0.5)``: the
    values at both ends and the largest one with its coordinate (NaNs ignored)."""
    x, y = host(xs).reshape(-1), host(ys).reshape(-1)
    if y.size == 0 or not np.any(~np.isnan(y)):
        return ends(y)
    i = int(np.nanargmax(y))
    return f"{ends(y)} (max {num(y[i])} at {at}={num(x[i])})"


def pm(estimate, stderr) -> str:
    """``12.31 ± 0.4213``: an estimate with its standard error (arrays: :func:`array` each)."""
    return f"{value(estimate)} ± {value(stderr)}"


def count(mask) -> str:
    """``3/40``: the number of ``True`` entries of a boolean array out of its size."""
    a = host(mask)
    return f"{int(np.count_nonzero(a))}/{a.size}"


def perm_summary(perm: Mapping) -> str:
    """A permutation dict ``{name: (n,) int}`` as ``120/192 units moved (2 groups)``: the units
    that the permutations do not map to themselves."""
    sizes = moved = 0
    for p in perm.values():
        p = host(p).reshape(-1)
        sizes += p.size
        moved += int(np.count_nonzero(p != np.arange(p.size)))
    groups = f"{len(perm)} group" + ("" if len(perm) == 1 else "s")
    return f"{moved}/{sizes} units moved ({groups})"


# --- layout -------------------------------------------------------------------------------------

def line(name: str, parts: Iterable[str | None], width: int = WIDTH) -> str:
    """``name(part, part, ...)`` on one line, or, when longer than ``width``, the same parts
    wrapped onto continuation lines indented by 2; ``None`` parts are dropped."""
    parts = [p for p in parts if p is not None]
    rows, current, limit = [], "", width - len(name) - 1
    for p in parts:
        candidate = f"{current}, {p}" if current else p
        if current and len(candidate) + 1 > limit:
            rows.append(current + ",")
            current, limit = p, width - 2
        else:
            current = candidate
    rows.append(current)
    return f"{name}(" + "\n  ".join(rows) + ")"


def fields(obj, order: Sequence[str] | None = None, *, pm_pairs: Mapping[str, str] | None = None,
           skip: Iterable[str] = (), concrete: bool = True) -> list[str]:
    """``["name=value", ...]`` for the fields of NamedTuple ``obj`` (in ``order``, default
    all), ``None`` fields left out. ``pm_pairs={"estimate": "stderr"}`` prints
    ``estimate=12.31 ± 0.4213`` and drops the ``stderr`` field."""
    pm_pairs = dict(pm_pairs or {})
    skip = set(skip) | set(pm_pairs.values())
    out = []
    for f in (order if order is not None else obj._fields):
        v = getattr(obj, f)
        if f in skip or v is None:
            continue
        if f in pm_pairs and concrete:
            out.append(f"{f}={pm(v, getattr(obj, pm_pairs[f]))}")
        else:
            out.append(f"{f}={value(v, concrete)}")
    return out


def namedtuple_repr(obj, order: Sequence[str] | None = None, *,
                    pm_pairs: Mapping[str, str] | None = None, skip: Iterable[str] = ()) -> str:
    """The one-liner ``TraceEstimate(estimate=12.31 ± 0.4213, num_matvecs=30)`` (see
    :func:`fields`)."""
    return line(type(obj).__name__, fields(obj, order, pm_pairs=pm_pairs, skip=skip))


def table(headers: Sequence[str], columns: Sequence[Sequence[str]],
          max_rows: int = MAX_ROWS) -> list[str]:
    """Right-aligned text table: a header line, then at most ``max_rows`` rows and ``...``."""
    n = len(columns[0]) if columns else 0
    shown = min(n, max_rows)
    widths = [max([len(h)] + [len(c) for c in col[:shown]]) for h, col in zip(headers, columns)]
    rows = [headers] + [[col[i] for col in columns] for i in range(shown)]
    out = ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    if n > shown:
        out.append(f"  ... ({n - shown} more)")
    return out


# --- safety -------------------------------------------------------------------------------------

def shapes_repr(obj) -> str:
    """The fallback: every field as ``dtype[shape]`` (static Python values as they are), no
    data read. Works on any NamedTuple, traced or not."""
    name = type(obj).__name__
    try:
        return line(name, fields(obj, concrete=False))
    except Exception:  # a repr must not raise
        return f"{name}(...)"


def repr_method(build: Callable[[object], str]) -> Callable[[object], str]:
    """Wrap ``build(result) -> str`` into a ``__repr__`` that never raises and falls back to
    :func:`shapes_repr` when the result holds tracers (inside ``jit``/``vmap``) or when
    ``build`` fails (e.g. a deleted or donated buffer)."""

    @functools.wraps(build)
    def __repr__(self) -> str:
        try:
            if is_traced(self):
                return shapes_repr(self)
            return build(self)
        except Exception:  # a repr must not raise
            return shapes_repr(self)

    return __repr__


# --- the two longest: eigenpairs and training runs ------------------------------------------

def _eigsh_build(r) -> str:
    lam = host(r.eigenvalues).reshape(-1)
    res = host(r.residuals).reshape(-1)
    conv = host(r.converged).reshape(-1)
    status = getattr(r, "status", None)
    status = None if status is None else EIGSH_STATUS.get(int(np.asarray(status)), num(status))
    head = line(type(r).__name__, [
        f"k={lam.size}", f"dim={np.shape(r.eigenvectors)[0]}",
        f"converged={int(np.count_nonzero(conv))}/{conv.size}",
        None if status is None else f"status={status!r}",
        f"num_matvecs={num(r.num_matvecs)}", f"num_steps={num(r.num_steps)}",
        f"tol={num(r.tol)}", f"rounding_floor={num(r.rounding_floor)}"])
    rows = table(["i", "eigenvalue", "residual", "converged"],
                 [[str(i) for i in range(lam.size)], [num(v) for v in lam],
                  [num(v) for v in res], [str(bool(c)) for c in conv]])
    return "\n".join([head] + rows)


eigsh_repr = repr_method(_eigsh_build)
eigsh_repr.__name__ = eigsh_repr.__qualname__ = "eigsh_repr"
eigsh_repr.__doc__ = """``repr`` of an ``EigshResult``: a header line (``k``, ``dim``, how many
converged, ``status`` when the result has one (0 converged, 1 step budget spent, 2 rounding
floor reached), products, steps, ``tol``, rounding floor), then the table
``i  eigenvalue  residual  converged`` (at most ``MAX_ROWS`` rows). Attach with
``__repr__ = reprs.eigsh_repr``."""


def _train_build(r) -> str:
    history = r.history or {}
    last = {}
    for key in ("step", "loss"):
        values = history.get(key)
        if values is not None and np.size(values):
            last[key] = f"final_{key}={num(host(values).reshape(-1)[-1])}"
    names = list(dict.fromkeys([*(r.trace or {}), *(r.trace_steps or {}),
                                *(r.probe_states or {})]))
    steps = r.trace_steps or {}
    probes = [f"{n}: {np.size(steps[n])} records" if n in steps else n for n in names[:MAX_KEYS]]
    if len(names) > MAX_KEYS:
        probes.append(f"... (+{len(names) - MAX_KEYS})")
    return line(type(r).__name__, [
        f"params={tree(r.params)}", last.get("step"), last.get("loss"),
        f"resumed_from={num(r.resumed_from)}",
        ("probes={" + ", ".join(probes) + "}") if probes else None])


train_result_repr = repr_method(_train_build)
train_result_repr.__name__ = train_result_repr.__qualname__ = "train_result_repr"
train_result_repr.__doc__ = """``repr`` of a ``TrainResult``: the number of parameters (sum of
the leaf sizes), the final recorded step and loss of ``history``, ``resumed_from``, and the
probe names with their record counts (``probes={sharpness: 100 records}``). Attach with
``__repr__ = reprs.train_result_repr``."""

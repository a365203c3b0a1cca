"""Readable reprs of the result types: key numbers with 4 significant digits, large arrays as
``dtype[shape]``, a few lines at most, shapes only under tracing, NamedTuple behaviour kept."""

import importlib
import inspect
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from landscape import attention as A
from landscape import connectivity as C
from landscape import curvature as CU
from landscape import data, reprs
from landscape import spectral as S
from landscape import train as TR

KEY = jax.random.key(0)
FLOAT = jnp.dtype(jnp.result_type(float)).name  # "float32", or "float64" under x64
INT = jnp.dtype(jnp.result_type(int)).name


def _f(x):
    return jnp.asarray(x, jnp.result_type(float))


def _one_line(text):
    return " ".join(text.split())


def _check_short(text, max_lines=6):
    assert len(text.splitlines()) <= max_lines, text
    assert "Array(" not in text and "array(" not in text and "Traced<" not in text, text
    assert max(len(line) for line in text.splitlines()) <= 110, text


# --- the shared formatters ----------------------------------------------------------------------

def test_numbers_have_four_significant_digits_and_exact_integers():
    assert reprs.num(12.3145) == "12.31"
    assert reprs.num(np.float32(0.000123456)) == "0.0001235"
    assert reprs.num(jnp.asarray(1234567.0)) == "1.235e+06"
    assert reprs.num(jnp.int32(30)) == "30" and reprs.num(7) == "7"
    assert reprs.num(jnp.asarray(True)) == "True" and reprs.num(np.bool_(False)) == "False"
    assert reprs.num(float("nan")) == "nan" and reprs.num(None) == "None"


def test_small_arrays_show_values_and_large_ones_dtype_and_shape():
    assert reprs.array(np.arange(8.0) / 3) == "[0, 0.3333, 0.6667, 1, 1.333, 1.667, 2, 2.333]"
    assert reprs.array(np.eye(2, dtype=np.float32)) == "[[1, 0], [0, 1]]"
    assert reprs.array(np.zeros((272474, 5), np.float32)) == "float32[272474, 5]"
    assert reprs.array(jnp.zeros(9, jnp.int32)) == "int32[9]"
    assert reprs.value(None) == "None" and reprs.value("fro") == "'fro'"
    assert reprs.value({"P_0": np.arange(64), "P_1": np.arange(2)}) == (
        "{P_0: int64[64], P_1: [0, 1]}")
    params = {"w": np.ones((3, 4)), "b": {"c": np.ones(5)}}
    assert reprs.value(params) == reprs.tree(params) == "pytree[2 leaves, 17 values]"


def test_span_ends_curve_and_pm():
    assert reprs.span(np.linspace(-1.0, 3.0, 100)) == "float64[100] in [-1, 3]"
    assert reprs.span(np.array([np.nan] * 9)) == "float64[9] (no finite value)"
    assert reprs.ends(np.array([2.30259, 1.0, 0.0123])) == "2.303 -> 0.0123"
    assert reprs.trend(np.arange(100.0)) == "float64[100]: 0 -> 99"
    assert reprs.curve([0, 0.25, 0.5, 0.75, 1], [1, 4, 3, np.nan, 3]) == (
        "1 -> 3 (max 4 at alpha=0.25)")
    assert reprs.pm(jnp.asarray(12.3145), jnp.asarray(0.42134)) == "12.31 ± 0.4213"


def test_line_wraps_long_items_and_tables_stop_after_max_rows():
    one = reprs.line("R", ["a=1", None, "b=2"])
    assert one == "R(a=1, b=2)"
    long = reprs.line("R", [f"field_{i}=123.456" for i in range(20)])
    assert long.startswith("R(field_0=123.456, ") and long.endswith(" field_19=123.456)")
    assert all(row.startswith("  field_") for row in long.splitlines()[1:])
    assert _one_line(long) == "R(" + ", ".join(f"field_{i}=123.456" for i in range(20)) + ")"
    assert all(len(x) <= reprs.WIDTH for x in long.splitlines()) and len(long.splitlines()) <= 5
    rows = reprs.table(["i", "x"], [[str(i) for i in range(25)], ["1"] * 25])
    assert len(rows) == 1 + reprs.MAX_ROWS + 1 and rows[-1].strip() == "... (15 more)"


# --- one instance of every result type, with known numbers --------------------------------------

def _path(errors=None):
    return C.Path(_f(jnp.linspace(0, 1, 5)), _f([1.0, 4.0, 3.0, 2.5, 3.0]), errors,
                  state_policy="recompute", num_examples=1000)


def _svm():
    support = np.zeros((2, 4), bool)
    support[0, 1:] = True
    return A.AttSVMSolution(np.eye(3), support, np.ones((2, 4)), ~support, "fro", 2.34567,
                            True, True, "optimal", "jax-dual-qp", 1.2344e-9, 120, 3e-11,
                            "feasible")


def _perm():
    p = np.arange(64)
    p[[0, 1]] = [1, 0]
    return {"P_0": p}


CASES = {
    # class name: (instance factory, substrings the repr must contain)
    "TraceEstimate": (lambda: S.TraceEstimate(_f(12.3145), _f(0.42134), jnp.int32(30)),
                      ["TraceEstimate(estimate=12.31 ± 0.4213, num_matvecs=30)"]),
    "DiagonalEstimate": (lambda: S.DiagonalEstimate(_f(jnp.arange(20.0)), _f(jnp.full(20, 0.5)),
                                                    30),
                         [f"estimate={FLOAT}[20] in [0, 19]", "sum=190", "max_stderr=0.5",
                          "num_matvecs=30"]),
    "SpectralDensity": (lambda: S.SpectralDensity(_f([[1.0, 2.0], [3.0, 4.0]]),
                                                  _f(jnp.full((2, 2), 0.5)), 4),
                        # per probe 1.5 and 3.5: mean 2.5, std sqrt(2), stderr sqrt(2)/sqrt(2)
                        ["num_probes=2", "num_steps=2", "support=[1, 4]",
                         "mean_eigenvalue=2.5 ± 1,", "num_matvecs=4"]),
    "PowerIterationResult": (lambda: S.PowerIterationResult(
        _f([9.87654, 3.5]), _f(jnp.zeros((100, 2))), _f([1.5e-3, 2e-2]), jnp.array([12, 30]), 42),
        ["k=2, dim=100, num_matvecs=42", "9.877", "0.0015", "0.02", "iterations", "30"]),
    "KPMDensity": (lambda: S.KPMDensity(_f([1.0, 0.5, 0.1]), _f([0.0, 0.02, 0.01]), _f(2.0),
                                        _f(4.0), 25),
                   # mean eigenvalue = center + half_width * moment_1 = 4, stderr 4 * 0.02
                   ["num_moments=3", "interval=[-2, 6]", "mean_eigenvalue=4 ± 0.08"]),
    "Path": (lambda: _path(_f([0.0, 0.5, 0.25, 0.125, 0.0])),
             ["num_points=5", "losses=1 -> 3 (max 4 at alpha=0.25)",
              "errors=0 -> 0 (max 0.5 at alpha=0.25)", "state_policy='recompute'",
              "num_examples=1000"]),
    "Barrier": (lambda: C.Barrier(_f(0.43214), _f(0.5), "max_minus_mean", "loss"),
                ["Barrier(value=0.4321 at alpha=0.5, kind='max_minus_mean', metric='loss')"]),
    "SimplexPath": (lambda: C.SimplexPath(_f(C.simplex_grid(3, 2)),
                                          _f([0.1, 0.5, 0.2, 0.7, 0.4, 0.3])),
                    ["num_points=6", "num_models=3", "losses=max 0.7 at weights="]),
    "MatchResult": (lambda: C.MatchResult(_perm(), 123.456, np.array([100.1, 120.0, 123.456]),
                                          2, True, np.array([123.456, 120.1])),
                    ["objective=123.5", "converged=True", "num_sweeps=2",
                     "history=100.1 -> 123.5", "restarts=2 (best 123.5, worst 120.1)",
                     "perm=2/64 units moved (1 group)"]),
    "BezierFit": (lambda: C.BezierFit({"w": jnp.ones((2, 3)), "b": jnp.ones(4)},
                                      _f(jnp.arange(100.0))),
                  ["bend=pytree[2 leaves, 10 values]", f"losses={FLOAT}[100]: 0 -> 99"]),
    "STEResult": (lambda: C.STEResult(_perm(), np.linspace(2.0, 0.5, 16), 10, 16),
                  ["best_step=10", "num_steps=16", "loss_at_best_step=1", "2 -> 0.5",
                   "perm=2/64 units moved (1 group)"]),
    "Slice": (lambda: C.Slice(_f(jnp.linspace(-1, 1, 11)), _f(jnp.linspace(-2, 2, 21)),
                              _f(jnp.arange(231.0).reshape(21, 11)), None, (0, 1)),
              ["grid=21x11", "x=[-1, 1]", "y=[-2, 2]", f"losses={FLOAT}[21, 11] in [0, 230]",
               "seeds=(0, 1)"]),
    "Overlap": (lambda: C.diagnostics.Overlap(np.linspace(1, 0.5, 10), np.linspace(1, 0.4, 10),
                                              np.arange(10.0, 0, -1), np.arange(10.0, 0, -1)),
                ["k=10", "left=float64[10]: 1 -> 0.5", "right=float64[10]: 1 -> 0.4",
                 "sv_a=float64[10]: 10 -> 1"]),
    "SecondOrder": (lambda: C.SecondOrder(_f(0.123456), _f(0.1), _f(0.18), _f(0.2), _f(0.11111),
                                          4),
                    ["SecondOrder(predicted=0.1235, measured=0.1111, first_order=0.1,",
                     "num_hvps=4"]),
    "UnitStats": (lambda: C.UnitStats({"P_0": np.zeros(8), "P_1": np.zeros(4)}, {}, {}, {}, {}),
                  ["UnitStats(features={P_0: 8 units, P_1: 4 units})"]),
    "SpecCheck": (lambda: C.SpecCheck(True, 2.384e-7, 13.95, 3),
                  ["SpecCheck(passed=True, max_abs_diff=2.384e-07, scale=13.95, num_trials=3)"]),
    "Spawn": (lambda: C.Spawn(_path(), 0.0512, {"w": jnp.ones(6)}, {"w": jnp.ones(6)}),
              ["barrier=0.0512", "num_points=5", "losses=1 -> 3 (max 4 at alpha=0.25)",
               "children=2 x pytree[1 leaf, 6 values]"]),
    "SymmetryProbe": (lambda: CU.SymmetryProbe(_f(1.5e-8), _f(-118.8), _f(-118.8), 2),
                      ["SymmetryProbe(asymmetry=1.5e-08, u_Av=-118.8, v_Au=-118.8, "
                       "num_matvecs=2)"]),
    "DeterminismProbe": (lambda: CU.DeterminismProbe(_f(2.5), 1.589e-7),
                         ["DeterminismProbe(value=2.5, jit_vs_eager=1.589e-07)"]),
    "FiniteDifferenceCheck": (lambda: CU.FiniteDifferenceCheck(_f(8.713e-5), _f(jnp.ones(67)),
                                                               _f(jnp.ones(67)), 0.00477),
                              ["relative_error=8.713e-05, eps=0.00477", f"hvp={FLOAT}[67]"]),
    "AttSVMSolution": (_svm, ["feasible=True", "converged=True", "objective=2.346 (fro)",
                              "W=float64[3, 3]", "support=3 tokens", "max_violation=1.234e-09",
                              "solver='jax-dual-qp'", "status='optimal'"]),
    "DualQPResult": (lambda: A.DualQPResult(_f([0.0, 1.5, 0.0, 3.25]), jnp.int32(77), _f(2e-12),
                                            jnp.asarray(True), jnp.asarray(False)),
                     ["converged=True", "kkt_residual=2e-12", "num_iterations=77",
                      "polished=False", "support=2/4", "max_lam=3.25"]),
    "AttentionTrajectory": (lambda: A.AttentionTrajectory(
        jnp.arange(0, 100, 10), _f(jnp.ones((10, 3, 4)) / 2), _f(jnp.linspace(0.69, 0.01, 10)),
        {"W": jnp.ones((3, 4))}),
        ["num_records=10", "steps=0 -> 90", "loss=0.69 -> 0.01", f"W={FLOAT}[10, 3, 4]",
         "final_norm=1.732"]),
    "SVMTracking": (lambda: A.SVMTracking(*(_f(jnp.linspace(0.1, v, 12)) for v in (0.99, 0.9,
                                                                                   0.95, 12.5))),
                    ["num_records=12", "corr=0.1 -> 0.99", "mass=0.1 -> 0.9",
                     "norm=0.1 -> 12.5"]),
    "LSAvsGD": (lambda: A.LSAvsGD(_f(0.5), _f(0.5), _f(1e-6), _f(1.0), _f(0.99999)),
                ["LSAvsGD(loss_lsa=0.5, loss_gd=0.5, pred_diff=1e-06, sensitivity_cos=1, "
                 "weight_cos=1)"]),
    "LocalOptimality": (lambda: A.LocalOptimality(True, False, True, "local",
                                                  np.zeros((2, 4), bool), _svm()),
                        ["kind='local'", "locally_optimal=True", "globally_optimal=False",
                         "offending=0 tokens", "objective=2.346 (fro)"]),
    "DetectedSelection": (lambda: A.DetectedSelection(
        np.array([0, 2, 1]), 0.98765, True, "global",
        A.LocalOptimality(True, True, True, "global", np.zeros((3, 4), bool), _svm())),
        ["DetectedSelection(kind='global', converged=True, mass=0.9877, selection=[0, 2, 1])"]),
    "GeneralSVMComparison": (lambda: A.GeneralSVMComparison(
        np.ones((2, 4), bool), _svm(), *(np.linspace(0.2, v, 9) for v in (0.9, 0.8, 1, 2, 3, 0,
                                                                            0.5)), 1, 0),
        ["feasible=True", "objective=2.346", "num_records=9", "corr_perp=0.2 -> 0.9",
         "mass_out=0.2 -> 0", "multi=1", "excluded=0"]),
    "AsymptoticPrediction": (lambda: A.AsymptoticPrediction(
        np.array([0.5, -1.25]), np.array([True, True, False]), 0.3, 2.0, 0.5, 0.75, np.inf,
        True),
        ["support=2/3", "exponent=0.5", "gap_limit=0.3", "theta=inf", "spans=True",
         "w_tilde=[0.5, -1.25]"]),
    "ImplicitBiasMetrics": (lambda: A.ImplicitBiasMetrics(
        np.arange(1.0, 101.0), *(np.linspace(1.0, 0.01, 100) for _ in range(8))),
        ["num_records=100", "steps=1 -> 100", "direction_gap=1 -> 0.01", "loss=1 -> 0.01"]),
    "RateFit": (lambda: A.RateFit(1.23456, -0.5, 0.999), ["RateFit(a=1.235, c=-0.5, r2=0.999)"]),
}

MODULES = ["landscape.spectral.trace", "landscape.spectral.density", "landscape.spectral.power",
           "landscape.spectral.kpm", "landscape.connectivity.paths",
           "landscape.connectivity.weight_matching", "landscape.connectivity.bezier",
           "landscape.connectivity.ste", "landscape.connectivity.slices",
           "landscape.connectivity.diagnostics", "landscape.connectivity.layerwise",
           "landscape.connectivity.activation_matching", "landscape.connectivity.spec",
           "landscape.connectivity.instability", "landscape.curvature.probes",
           "landscape.attention.svm", "landscape.attention.qp", "landscape.attention.training",
           "landscape.attention.icl", "landscape.attention.locality",
           "landscape.attention.nonlinear", "landscape.attention.implicit_bias"]


def _public_results():
    found = {}
    for name in MODULES:
        mod = importlib.import_module(name)
        for attr, obj in vars(mod).items():
            if (inspect.isclass(obj) and obj.__module__ == name and not attr.startswith("_")
                    and issubclass(obj, tuple) and hasattr(obj, "_fields")):
                found[attr] = obj
    return found


def test_every_public_result_type_has_a_readable_repr_and_a_case_here():
    found = _public_results()
    assert set(found) == set(CASES)
    for cls in found.values():
        assert hasattr(cls.__repr__, "__wrapped__"), cls  # built with reprs.repr_method


@pytest.mark.parametrize("name", sorted(CASES))
def test_repr_shows_the_key_numbers_and_stays_short(name):
    make, expected = CASES[name]
    obj = make()
    text = repr(obj)
    assert text.startswith(f"{name}("), text
    for piece in expected:
        assert piece in text, (piece, text)
    _check_short(text)
    assert str(obj) == text


def _under_tracing(obj, run):
    """``repr(obj)`` computed while ``run(f, arrays)`` traces ``f``: every array leaf of
    ``obj`` is then a tracer."""
    leaves, treedef = jax.tree_util.tree_flatten(obj)
    where = [i for i, x in enumerate(leaves) if isinstance(x, (np.ndarray, jax.Array))]
    out = []

    def f(arrays):
        new = list(leaves)
        for i, a in zip(where, arrays):
            new[i] = a
        out.append(repr(jax.tree_util.tree_unflatten(treedef, new)))
        return jnp.zeros(())

    run(f, [leaves[i] for i in where])
    return out[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_repr_under_tracing_falls_back_to_shapes(name):
    obj = CASES[name][0]()
    text = _under_tracing(obj, jax.eval_shape)  # traces without compiling
    assert text.startswith(f"{name}("), text
    _check_short(text, max_lines=8)
    if name not in ("UnitStats", "SpecCheck", "RateFit"):  # no array fields
        assert "[" in text and text != repr(obj)


def test_repr_inside_jit_and_vmap_shows_shapes_only():
    printed = []
    make = lambda x: S.TraceEstimate(x, x / 10, 30)
    out = jax.jit(lambda x: printed.append(repr(make(x))) or x)(_f(12.3145))
    assert float(out) == pytest.approx(12.3145)
    assert printed == [f"TraceEstimate(estimate={FLOAT}[], stderr={FLOAT}[], num_matvecs=30)"]
    jax.vmap(lambda x: printed.append(repr(C.Barrier(x, x, "max_minus_mean", "loss"))) or x)(
        _f(jnp.ones(3)))
    assert printed[-1] == (f"Barrier(value={FLOAT}[], alpha={FLOAT}[], kind='max_minus_mean', "
                           "metric='loss')")
    text = _one_line(_under_tracing(CASES["Path"][0](), lambda f, x: jax.jit(f)(x)))
    assert text.startswith(f"Path(alphas={FLOAT}[5], losses={FLOAT}[5], errors={FLOAT}[5]")


def test_repr_never_raises_on_a_deleted_buffer():
    x = _f(jnp.ones(3))
    x.delete()
    text = repr(S.TraceEstimate(x, _f(0.5), 3))
    assert text == f"TraceEstimate(estimate={FLOAT}[3], stderr={FLOAT}[], num_matvecs=3)"


@pytest.mark.parametrize("name", ["TraceEstimate", "Path", "MatchResult", "AttSVMSolution"])
def test_namedtuple_behaviour_is_unchanged(name):
    obj = CASES[name][0]()
    cls = type(obj)
    assert len(tuple(obj)) == len(cls._fields) and cls._fields[0] == list(obj._asdict())[0]
    first, *rest = obj
    assert first is obj[0] and len(rest) == len(cls._fields) - 1
    other = obj._replace(**{cls._fields[0]: None})
    assert type(other) is cls and other[0] is None and other[1:] == obj[1:]
    leaves, treedef = jax.tree_util.tree_flatten(obj)
    back = jax.tree_util.tree_unflatten(treedef, leaves)
    assert type(back) is cls and repr(back) == repr(obj)


# --- real results from small problems -----------------------------------------------------------

def _operator(n=20):
    Q, _ = jnp.linalg.qr(jax.random.normal(KEY, (n, n)))
    return CU.MatrixOperator((Q * _f(jnp.arange(1.0, n + 1))) @ Q.T)


def test_real_trace_estimate_prints_estimate_and_stderr():
    t = S.trace(_operator(), key=KEY, num_matvecs=30)
    expected = (f"TraceEstimate(estimate={float(t.estimate):.4g} ± {float(t.stderr):.4g}, "
                f"num_matvecs={int(t.num_matvecs)})")
    assert repr(t) == expected
    assert abs(float(t.estimate) - 210) < 5 * float(t.stderr)  # tr = 1 + ... + 20


def _mlp(key):
    k1, k2 = jax.random.split(key)
    return {"hidden": {0: {"kernel": jax.random.normal(k1, (4, 8)), "bias": jnp.zeros(8)}},
            "head": {"kernel": jax.random.normal(k2, (8, 3)), "bias": jnp.zeros(3)}}


def _loss(p, batch):
    h = jax.nn.relu(batch["x"] @ p["hidden"][0]["kernel"] + p["hidden"][0]["bias"])
    logits = h @ p["head"]["kernel"] + p["head"]["bias"]
    picked = jnp.take_along_axis(logits, batch["y"][:, None], 1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, -1) - picked)


def test_real_matching_path_and_barrier():
    pa, pb = _mlp(jax.random.key(1)), _mlp(jax.random.key(2))
    dataset = {"x": jax.random.normal(KEY, (32, 4)), "y": jax.random.randint(KEY, (32,), 0, 3)}
    spec = C.mlp_spec(pa)
    wm = C.weight_matching(spec, pa, pb, key=KEY)
    moved = int(np.sum(np.asarray(wm.perm["P_0"]) != np.arange(8)))
    assert f"objective={wm.objective:.4g}" in repr(wm)
    assert f"perm={moved}/8 units moved (1 group)" in repr(wm)
    path = C.interpolate(_loss, pa, C.apply_permutation(spec, wm.perm, pb), dataset, 5)
    losses = np.asarray(path.losses)
    i = int(np.argmax(losses))
    assert (f"losses={losses[0]:.4g} -> {losses[-1]:.4g} (max {losses[i]:.4g} at "
            f"alpha={float(path.alphas[i]):.4g})") in repr(path)
    b = C.barrier(path)
    assert repr(b) == (f"Barrier(value={float(b.value):.4g} at alpha={float(b.alpha):.4g}, "
                       "kind='max_minus_mean', metric='loss')")
    for r in (wm, path, b):
        _check_short(repr(r))


def test_real_att_svm_solution():
    tok = data.token_selection_data(jax.random.key(3), 3, 4, 4, dtype=jnp.float32)
    X, Z = np.asarray(tok.X, np.float64), np.asarray(tok.Z, np.float64)
    sol = A.att_svm(X, Z, tok.opt_index)
    text = repr(sol)
    assert f"objective={sol.objective:.4g} (fro)" in text and "W=float64[4, 4]" in text
    assert f"feasible={sol.feasible}, converged={sol.converged}" in text
    assert f"support={int(sol.support.sum())} tokens" in text
    _check_short(text)


# --- the two reprs attached by the lead ---------------------------------------------------------

def _eigsh_result(k, status=None):
    lam = np.linspace(20.0, 1.0, k)
    values = dict(eigenvalues=_f(lam), eigenvectors=_f(jnp.zeros((272, k))),
                  residuals=_f(np.full(k, 1.5e-5)), converged=jnp.asarray(np.arange(k) != 1),
                  residual_estimates=_f(np.full(k, 1e-6)), num_matvecs=jnp.int32(62),
                  num_steps=jnp.int32(57), tol=1e-5, norm_estimate=_f(20.0),
                  rounding_floor=_f(1.066e-5), status=status)
    fields = S.EigshResult._fields  # fields added later default to a zero scalar
    base = S.EigshResult(**{f: values.get(f, _f(0.0)) for f in fields})
    if status is None or "status" in fields:
        return base
    # a result type with the planned ``status`` field, so that its formatting is tested now
    with_status = typing.NamedTuple("EigshResult", [(f, object) for f in (*fields, "status")])
    return with_status(*base, status)


def test_eigsh_repr_is_a_table_of_eigenpairs():
    text = reprs.eigsh_repr(_eigsh_result(3))
    lines = text.splitlines()
    assert lines[0].startswith("EigshResult(k=3, dim=272, converged=2/3, num_matvecs=62")
    assert "tol=1e-05" in text and "rounding_floor=1.066e-05" in text and "status" not in text
    header = next(i for i, x in enumerate(lines) if "eigenvalue" in x)
    assert lines[header].split() == ["i", "eigenvalue", "residual", "converged"]
    assert [x.split() for x in lines[header + 1:]] == [["0", "20", "1.5e-05", "True"],
                                                       ["1", "10.5", "1.5e-05", "False"],
                                                       ["2", "1", "1.5e-05", "True"]]
    _check_short(text)


def test_eigsh_repr_truncates_long_tables_and_names_the_status():
    text = reprs.eigsh_repr(_eigsh_result(25, status=jnp.int32(2)))
    assert "status='rounding floor reached'" in text
    assert text.splitlines()[-1].strip() == "... (15 more)"
    assert len(text.splitlines()) <= 2 + 1 + reprs.MAX_ROWS + 1
    assert "status='step budget spent'" in reprs.eigsh_repr(_eigsh_result(2, jnp.int32(1)))


def test_eigsh_repr_of_a_real_result_and_under_jit():
    r = S.eigsh(_operator(), 3, key=KEY)
    rows = reprs.eigsh_repr(r).splitlines()[-3:]
    for i, row in enumerate(rows):
        assert row.split()[:3] == [str(i), f"{float(r.eigenvalues[i]):.4g}",
                                   f"{float(r.residuals[i]):.4g}"]
    printed = []
    jax.jit(lambda ev: printed.append(reprs.eigsh_repr(r._replace(eigenvalues=ev))) or ev)(
        r.eigenvalues)
    assert printed[0].startswith(f"EigshResult(eigenvalues={FLOAT}[3], eigenvectors=")


def _train_result():
    values = dict(params={"w": jnp.ones((10, 5)), "b": jnp.zeros(5)}, model_state={},
                  opt_state=(), history={"step": np.array([0, 50, 100]),
                                         "loss": np.array([2.3026, 0.5, 0.0123456])},
                  resumed_from=50,
                  trace={"sharpness": {"eigenvalues": np.ones((11, 1))}, "loss": np.ones(11)},
                  trace_steps={"sharpness": np.arange(0, 110, 10), "loss": np.arange(11)},
                  probe_states={})
    return TR.TrainResult(**{f: values[f] for f in TR.TrainResult._fields})


def test_train_result_repr_shows_size_final_loss_and_probes():
    text = reprs.train_result_repr(_train_result())
    assert _one_line(text) == (
        "TrainResult(params=pytree[2 leaves, 55 values], final_step=100, final_loss=0.01235, "
        "resumed_from=50, probes={sharpness: 11 records, loss: 11 records})")
    empty = _train_result()._replace(history={"step": np.array([]), "loss": np.array([])},
                                     trace={}, trace_steps={})
    assert reprs.train_result_repr(empty) == (
        "TrainResult(params=pytree[2 leaves, 55 values], resumed_from=50)")
    printed = []
    jax.jit(lambda w: printed.append(reprs.train_result_repr(
        _train_result()._replace(params={"w": w}))) or w)(jnp.ones((10, 5)))
    assert f"params={{w: {FLOAT}[10, 5]}}" in printed[0] and "resumed_from=50" in printed[0]
    assert "final_step" not in printed[0]

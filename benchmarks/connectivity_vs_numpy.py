"""Connectivity benchmark: weight matching and path evaluation, landscape vs straightforward code.

Usage::

    python benchmarks/connectivity_vs_numpy.py [--quick] [--out PATH] [--threads N]

1. **Weight matching.** ``landscape.connectivity.weight_matching`` (jit-compiled cost matrices,
   SciPy LAPs) against a direct NumPy transcription of Git Re-Basin's Algorithm 1 (Ainsworth
   et al. 2023; ``_wm_reference.py``, the reference the tests use too) with the same sweep
   order (from the same key), the same start (identity) and the same stopping rule, on two
   independently initialised MLPs (LeCun-normal, as ``landscape.models.MLP``). The
   permutations must come out identical (asserted).
2. **Path evaluation.** ``interpolate`` on 25 alphas as ONE compiled call (the default, one
   alpha at a time in a compiled loop, and alphas vmapped in chunks of 8), against a Python
   loop that calls a jitted full-dataset loss once per alpha (the usual hand-written loop);
   same model, same data (MNIST-1D sized inputs, 4,000 examples), same batch size.

Every ratio comes from ``_report.compare``: one warm-up round (compilation), then 5 rounds
(``--quick``: 3) in which the contenders run alternately; the ratio is the median of the
per-round ratios ``reference time / our time`` with its min-max range, and a range that
includes 1 is a tie. JAX compilations during the timed rounds are counted (a nonzero count
would mean a contender recompiles per call). ``--threads N`` (default 1) is applied before
NumPy and JAX are imported, so NumPy's OpenBLAS, SciPy's and XLA use the same N threads. The
header gives the thread counts and the load before and after; everything is written to
``bench_results/connectivity_vs_numpy.json``.
"""

from __future__ import annotations

import argparse
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)

import _report as rep  # noqa: E402  (imports nothing heavy: threads are pinned first)

SETTINGS = {"full": dict(repeats=5, wm_widths=(128, 256, 512), path_widths=(32, 512)),
            "quick": dict(repeats=3, wm_widths=(64, 128), path_widths=(32, 128))}


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small widths, 3 timed rounds")
    p.add_argument("--out", default=os.path.join(_HERE, "..", "bench_results",
                                                 "connectivity_vs_numpy.json"))
    p.add_argument("--threads", type=int, default=1,
                   help="threads for NumPy/SciPy's BLAS and XLA alike (default 1)")
    return p.parse_args(argv)


def _mlp(key, widths):
    import jax

    keys = jax.random.split(key, len(widths))
    layer = lambda k, i, o: {"kernel": jax.random.normal(k, (i, o)) / i**0.5,
                             "bias": 0.1 * jax.random.normal(jax.random.fold_in(k, 1), (o,))}
    hidden = {l: layer(keys[l], widths[l], widths[l + 1]) for l in range(len(widths) - 2)}
    return {"hidden": hidden, "head": layer(keys[-1], widths[-2], widths[-1])}


WM_OURS, WM_REF = "landscape weight_matching", "NumPy reference"


def bench_weight_matching(width, repeats):
    """Ours vs the NumPy transcription, alternating; the permutations must be identical."""
    import jax
    import numpy as np
    from _wm_reference import numpy_weight_matching  # shared with the tests

    from landscape import connectivity as C
    from landscape.connectivity.weight_matching import sweep_order

    widths = (40, width, width, width, 10)
    pa, pb = _mlp(jax.random.key(0), widths), _mlp(jax.random.key(1), widths)
    spec, key = C.mlp_spec(pa), jax.random.key(2)
    order = lambda s: sweep_order(key, 0, s, len(spec.names))
    ours = C.weight_matching(spec, pa, pb, key=key)
    ref, ref_sweeps = numpy_weight_matching(spec, pa, pb, order)
    identical = all(np.array_equal(np.asarray(ours.perm[n]), ref[n]) for n in ref)
    assert identical, "weight matching permutations differ from the NumPy reference"
    c = rep.compare(lambda: C.weight_matching(spec, pa, pb, key=key).perm,
                    {WM_REF: lambda: numpy_weight_matching(spec, pa, pb, order)},
                    ours_name=WM_OURS, repeats=repeats)
    return {"width": width, "num_sweeps": ours.num_sweeps, "ref_sweeps": ref_sweeps,
            "identical_permutations": identical, "comparison": c,
            "speedup": c.ratio(WM_REF)}


PATH_OURS = "one call, one alpha at a time (default)"
PATH_CHUNKED = "one call, alphas vmapped in chunks of 8"
PATH_LOOP = "Python loop over a jitted loss"


def bench_path(width, repeats, num_points=25, batch_size=1000):
    """One compiled ``interpolate`` call (sequential and chunked) vs a Python loop, alternating."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from landscape import connectivity as C
    from landscape import losses
    from landscape.batching import dataset_mean

    widths = (40, width, width, width, 10)
    pa, pb = _mlp(jax.random.key(0), widths), _mlp(jax.random.key(1), widths)
    kx, ky = jax.random.split(jax.random.key(3))
    data = {"x": jax.random.normal(kx, (4000, 40)), "y": jax.random.randint(ky, (4000,), 0, 10)}

    def loss_fn(p, b):
        h = b["x"]
        for l in sorted(p["hidden"]):
            h = jax.nn.relu(h @ p["hidden"][l]["kernel"] + p["hidden"][l]["bias"])
        return losses.softmax_cross_entropy(h @ p["head"]["kernel"] + p["head"]["bias"], b["y"])

    alphas = jnp.linspace(0, 1, num_points)
    one_call = lambda chunk: C.interpolate(loss_fn, pa, pb, data, num_points,
                                           batch_size=batch_size, chunk_size=chunk).losses
    full_loss = jax.jit(lambda p, d: dataset_mean(lambda b: loss_fn(p, b), d, batch_size))

    def loop():
        out = [full_loss(jax.tree.map(lambda a, b, t=t: (1 - t) * a + t * b, pa, pb), data)
               for t in alphas]
        return jnp.stack(out)

    np.testing.assert_allclose(one_call(None), loop(), rtol=1e-4)
    np.testing.assert_allclose(one_call(8), loop(), rtol=1e-4)
    c = rep.compare(lambda: one_call(None), {PATH_CHUNKED: lambda: one_call(8), PATH_LOOP: loop},
                    ours_name=PATH_OURS, repeats=repeats)
    return {"width": width, "num_points": num_points, "num_examples": 4000,
            "batch_size": batch_size, "comparison": c,
            "loop_over_sequential": c.ratio(PATH_LOOP, PATH_OURS),
            "loop_over_chunked": c.ratio(PATH_LOOP, PATH_CHUNKED),
            "chunked_over_sequential": c.ratio(PATH_CHUNKED, PATH_OURS)}


def _notes(c):
    return [f"note: {n} compiled {k} time(s) during the timed rounds"
            for n, k in c.compiles.items() if k]


def markdown(res) -> str:
    """The header (threads, load before/after) and one table of ratios."""
    lines = [rep.header(res["machine"], f"connectivity_vs_numpy ({res['mode']} mode)"), "",
             f"{res['repeats']} alternating rounds after a warm-up; ratio = reference time / "
             "our time per round: median (min-max) and verdict for ours (a range including 1 "
             "is a tie).", ""]
    rows, notes = [], []
    for r in res["weight_matching"]:
        m = r["comparison"].medians
        rows.append(["weight matching vs NumPy", r["width"], m[WM_OURS], m[WM_REF], r["speedup"]])
        notes += _notes(r["comparison"])
    for r in res["path_evaluation"]:
        m = r["comparison"].medians
        rows.append([f"{r['num_points']}-point path, {PATH_OURS} vs loop", r["width"],
                     m[PATH_OURS], m[PATH_LOOP], r["loop_over_sequential"]])
        rows.append([f"{r['num_points']}-point path, {PATH_CHUNKED} vs loop", r["width"],
                     m[PATH_CHUNKED], m[PATH_LOOP], r["loop_over_chunked"]])
        rows.append([f"{r['num_points']}-point path, one at a time (default) vs chunks of 8",
                     r["width"], m[PATH_OURS], m[PATH_CHUNKED], r["chunked_over_sequential"]])
        notes += _notes(r["comparison"])
    lines.append(rep.table(["benchmark", "width", "ours (s, median)", "reference (s, median)",
                            "reference / ours"], rows))
    return "\n".join(lines + notes)


def main(argv=None):
    args = _parse(argv)
    if not rep.pinned():
        rep.pin_threads(args.threads)  # before NumPy and JAX are imported (when run as a script)
    sys.path.insert(0, os.path.join(_HERE, ".."))
    import jax  # noqa: F401  (started under the pinned threads)
    import numpy  # noqa: F401
    import scipy.optimize  # noqa: F401  (loads SciPy's OpenBLAS before the limits are checked)

    machine = rep.start_run(args.threads)
    cfg = SETTINGS["quick" if args.quick else "full"]
    res = {"mode": "quick" if args.quick else "full", "repeats": cfg["repeats"],
           "machine": machine,
           "weight_matching": [bench_weight_matching(w, cfg["repeats"])
                               for w in cfg["wm_widths"]],
           "path_evaluation": [bench_path(w, cfg["repeats"]) for w in cfg["path_widths"]]}
    rep.finish_machine_info(machine)
    rep.write_json(res, args.out)
    print(markdown(res))
    print("wrote", os.path.abspath(args.out))
    return res


if __name__ == "__main__":
    main()

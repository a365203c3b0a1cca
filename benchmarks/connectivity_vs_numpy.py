"""Connectivity benchmark: weight matching and path evaluation, landscape vs straightforward code.

Usage::

    python benchmarks/connectivity_vs_numpy.py [--quick] [--out PATH] [--threads N]

1. **Weight matching.** ``landscape.connectivity.weight_matching`` (jit-compiled cost matrices,
   SciPy LAPs) against a direct NumPy transcription of Git Re-Basin's Algorithm 1 (Ainsworth
   et al. 2023; ``_wm_reference.py``, the reference the tests use too) with the same sweep
   order (from the same key), the same start (identity) and the same stopping rule, on two
   independently initialised MLPs (LeCun-normal, as ``landscape.models.MLP``). The
   permutations must come out identical (asserted).
2. **Path evaluation.** ``interpolate`` on 25 alphas as ONE compiled call (alphas vmapped in
   chunks of 8, the default, and one at a time, ``chunk_size=None``), against a Python loop
   that calls a jitted full-dataset loss once per alpha (the usual hand-written loop); same
   model, same data (MNIST-1D sized inputs, 4,000 examples), same batch size.

Times are medians after a warm-up call (compilation excluded for both sides). Ratios are
printed and written to ``bench_results/connectivity_vs_numpy.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from _report import median_time

_HERE = os.path.dirname(os.path.abspath(__file__))


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small widths, few repeats")
    p.add_argument("--out", default=os.path.join(_HERE, "..", "bench_results",
                                                 "connectivity_vs_numpy.json"))
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def _median_time(fn, repeats):
    return median_time(fn, repeats)[0]  # one warm-up call, then the median of `repeats`


def _mlp(key, widths):
    import jax

    keys = jax.random.split(key, len(widths))
    layer = lambda k, i, o: {"kernel": jax.random.normal(k, (i, o)) / i**0.5,
                             "bias": 0.1 * jax.random.normal(jax.random.fold_in(k, 1), (o,))}
    hidden = {l: layer(keys[l], widths[l], widths[l + 1]) for l in range(len(widths) - 2)}
    return {"hidden": hidden, "head": layer(keys[-1], widths[-2], widths[-1])}


def bench_weight_matching(width, repeats):
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
    t_ours = _median_time(lambda: C.weight_matching(spec, pa, pb, key=key), repeats)
    t_ref = _median_time(lambda: numpy_weight_matching(spec, pa, pb, order), repeats)
    return {"width": width, "num_sweeps": ours.num_sweeps, "ref_sweeps": ref_sweeps,
            "identical_permutations": identical, "landscape_s": t_ours, "numpy_s": t_ref,
            "speedup": t_ref / t_ours}


def bench_path(width, repeats, num_points=25, batch_size=1000):
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
    one_call = lambda chunk=8: jax.block_until_ready(C.interpolate(
        loss_fn, pa, pb, data, num_points, batch_size=batch_size, chunk_size=chunk).losses)
    full_loss = jax.jit(lambda p, d: dataset_mean(lambda b: loss_fn(p, b), d, batch_size))

    def loop():
        out = [full_loss(jax.tree.map(lambda a, b, t=t: (1 - t) * a + t * b, pa, pb), data)
               for t in alphas]
        return jax.block_until_ready(jnp.stack(out))

    np.testing.assert_allclose(one_call(), loop(), rtol=1e-4)
    t_one, t_loop = _median_time(one_call, repeats), _median_time(loop, repeats)
    t_seq = _median_time(lambda: one_call(None), repeats)
    return {"width": width, "num_points": num_points, "num_examples": 4000,
            "batch_size": batch_size, "one_call_s": t_one, "one_call_sequential_s": t_seq,
            "python_loop_s": t_loop, "speedup": t_loop / t_one,
            "speedup_sequential": t_loop / t_seq}


def main(argv=None):
    args = _parse(argv)
    cores = sorted(os.sched_getaffinity(0))
    if args.threads < len(cores):
        os.sched_setaffinity(0, cores[: args.threads])
    sys.path.insert(0, os.path.join(_HERE, ".."))
    import jax

    widths = (64, 128) if args.quick else (128, 256, 512)
    repeats = 2 if args.quick else 3
    res = {"weight_matching": [bench_weight_matching(w, repeats) for w in widths],
           "path_evaluation": [bench_path(w, repeats) for w in (32, widths[-1])],
           "machine": {"cpu_count": os.cpu_count(), "threads": args.threads,
                       "load_average": list(os.getloadavg()), "jax": jax.__version__,
                       "backend": jax.default_backend()}}
    print("| benchmark | width | landscape (s) | reference (s) | speedup |")
    print("|---|---|---|---|---|")
    for r in res["weight_matching"]:
        print(f"| weight matching vs NumPy | {r['width']} | {r['landscape_s']:.3f} | "
              f"{r['numpy_s']:.3f} | {r['speedup']:.2f}x |")
    for r in res["path_evaluation"]:
        print(f"| 25-point path, one call (chunks of 8) vs loop | {r['width']} | "
              f"{r['one_call_s']:.3f} | {r['python_loop_s']:.3f} | {r['speedup']:.2f}x |")
        print(f"| 25-point path, one call (sequential) vs loop | {r['width']} | "
              f"{r['one_call_sequential_s']:.3f} | {r['python_loop_s']:.3f} | "
              f"{r['speedup_sequential']:.2f}x |")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    print("wrote", os.path.abspath(args.out))


if __name__ == "__main__":
    main()

"""Curvature at scale on CPU: memory and time against dataset and batch size, mixed precision,
and 4 simulated devices against one.

Usage::

    python benchmarks/curvature_scale.py [--small] [--threads N] [--out PATH]

Two workloads (``benchmarks/gpu.py`` builds both), cross-entropy, float32, untrained networks
in eval mode:

* ``resnet20``: ``models.ResNet20(10, in_channels=1)`` (BatchNorm with its statistics cast
  with the parameters, projection shortcuts, ShiftConv on CPU; 272,186 parameters) on the
  scikit-learn digits at their native 8x8 (ResNet-20 runs on any image size: 8 -> 4 -> 2
  spatially). The issue allows padding or upsampling to 32x32; we keep 8x8 because 32x32
  costs 16x the FLOPs per example and would not fit the 10-minute budget on 2 cores.
  Datasets are the first ``n`` of the 1,438 training digits.
* ``transformer``: ``models.Transformer`` (d_model 128, 5 layers, 4 heads, context 64,
  vocabulary 97; 1,022,080 parameters) on windows of 65 characters of the standard-library
  docstring corpus (``landscape.data.text.stdlib_text``, offline), next-character loss.

Measurements (each configuration runs in its own subprocess, so its peak memory is its own:
``ru_maxrss`` of the child, which includes the ~0.5 GB of the JAX runtime and compiled code;
for products also XLA's temp-buffer size of the compiled program, ``memory_analysis()``):

(a) peak memory of one full-dataset Hessian product against the dataset size ``n`` at a fixed
    batch size (must stay flat) and against the batch size at fixed ``n`` (grows), and of
    ``spectral.eigsh(k=5)`` and ``spectral.density`` (fixed step counts, so the runs differ
    only in ``n``) at the smallest and largest ``n``;
(b) seconds of one full-dataset product (median of 3 after a warm-up call) against ``n``: the
    least-squares line ``t = t0 + c n``, its R^2, and the per-example cost ``c``;
(c) mixed precision: top-5 eigenvalues (``eigsh`` default tolerance) and SLQ density moments
    ``tr(H^p)/dim``, p = 1..4 (2 probes x 20 steps, same key), with
    ``curvature.hessian(..., compute_dtype=jnp.bfloat16)`` against float32; relative errors,
    and the time ratio bf16 / f32 of one product and of the eigsh call;
(d) the float32 top-5 run of (c) on a ``parallel.shard_dataset`` over 4 simulated CPU devices
    (``XLA_FLAGS=--xla_force_host_platform_device_count=4`` in the child), against the
    one-device run: the largest relative eigenvalue difference (both are converged to eigsh's
    tolerance, so they agree to about that, not to the last bit).

Writes ``bench_results/curvature_scale.json`` and ``bench_results/curvature_scale.png`` (memory
against n and batch size, time against n) and prints a table. The machine record (threads,
load average before and after) follows ``_report``; times taken on a loaded machine are fit
qualities, not speed claims; memory does not depend on the load. ``--small`` shrinks every
size (a check of the code paths in a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)

import _report as rep  # noqa: E402  (imports nothing heavy)

RESNET = dict(side=8, channels=1, width=16)
TRANSFORMER = dict(seq_len=64, d_model=128, layers=5, heads=4)
SETTINGS = {
    "full": {
        "resnet20": dict(model=RESNET, sizes=(256, 512, 1024, 1408), batch=128,
                         batches=(32, 128, 512), batch_n=1024, spectral_n=(256, 1024),
                         mixed_n=256),
        "transformer": dict(model=TRANSFORMER, sizes=(32, 64, 128, 256), batch=16,
                            batches=(8, 16, 64), batch_n=128, spectral_n=(32, 128),
                            mixed_n=32),
        "memory_steps": 8, "density": (2, 20), "k": 5,
    },
    "small": {
        "resnet20": dict(model=dict(side=8, channels=1, width=2, conv_impl="lax"),
                         sizes=(16, 32, 64), batch=8, batches=(4, 16), batch_n=32,
                         spectral_n=(16, 64), mixed_n=32),
        "transformer": dict(model=dict(seq_len=8, d_model=8, layers=1, heads=2),
                            sizes=(8, 16, 32), batch=4, batches=(2, 8), batch_n=16,
                            spectral_n=(8, 32), mixed_n=16),
        "memory_steps": 6, "density": (2, 6), "k": 5,
    },
}


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="tiny sizes: checks the code paths")
    p.add_argument("--threads", type=int, default=2, help="threads per child (default 2)")
    p.add_argument("--out", default=os.path.join(_HERE, "..", "bench_results",
                                                 "curvature_scale.json"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: child task
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------ child


def _problem(task):
    import gpu
    import jax

    key = jax.random.key(0)
    n = task["n"]
    if task["model"] == "resnet20":
        from landscape.data import digits

        train, _ = digits(jax.random.key(0))
        if n > train["y"].shape[0]:
            raise ValueError(f"n={n} exceeds the 1,438 training digits")
        return gpu.resnet_problem(key, n=n, images=train["x"][:n], labels=train["y"][:n],
                                  **task["spec"])
    from landscape.data import text

    spec = task["spec"]
    tokens = text.stdlib_text(jax.random.key(0), seq_len=spec["seq_len"], num_train=n,
                              num_valid=1).train["tokens"]
    return gpu.transformer_problem(key, n=n, tokens=tokens, **spec)


def _rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _moments(d, p_max=4):
    return [float(d.moment(p)[0]) for p in range(1, p_max + 1)]


def run_task(task) -> dict:
    """One configuration, in this (child) process; returns JSON-able numbers."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from landscape import curvature, spectral

    lf, params, data = _problem(task)
    key = jax.random.key(7)
    out = {"rss_mb_after_setup": _rss_mb(), "devices": jax.device_count()}
    if task["kind"] == "sharded":
        from landscape import parallel

        data = parallel.shard_dataset(data, parallel.data_mesh())
    compute = None if task.get("compute_dtype") is None else jnp.dtype(task["compute_dtype"])
    op = curvature.hessian(lf, params, data, batch_size=task["batch"], check=False,
                           compute_dtype=compute)
    out["params"] = int(op.dim)
    kind = task["kind"]
    if kind == "product":
        v = jax.random.normal(key, (op.dim,), op.dtype)
        compiled = jax.jit(lambda o, x: o.matvec(x)).lower(op, v).compile()
        mem = compiled.memory_analysis()
        out["xla_temp_mb"] = None if mem is None else mem.temp_size_in_bytes / 2**20
        out["seconds"], _ = rep.median_seconds(lambda: compiled(op, v))
    elif kind == "eigsh":
        t0 = time.perf_counter()
        r = spectral.eigsh(op, k=task["k"], num_steps=task["steps"], key=key)
        jax.block_until_ready(r.eigenvalues)
        out["seconds_with_compile"] = time.perf_counter() - t0
    elif kind == "density":
        probes, steps = task["density"]
        t0 = time.perf_counter()
        jax.block_until_ready(spectral.density(op, key=key, num_probes=1, num_steps=steps).nodes)
        out["seconds_with_compile"] = time.perf_counter() - t0
    elif kind in ("mixed", "sharded"):
        v = jax.random.normal(key, (op.dim,), op.dtype)
        out["product_seconds"], _ = rep.median_seconds(lambda: op.matvec(v), repeats=2)
        t0 = time.perf_counter()
        r = spectral.eigsh(op, k=task["k"], key=key)
        jax.block_until_ready(r.eigenvalues)
        out["eigsh_seconds_with_compile"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = jax.block_until_ready(spectral.eigsh(op, k=task["k"], key=key))
        out["eigsh_seconds"] = time.perf_counter() - t0
        out.update(eigenvalues=np.asarray(r.eigenvalues, np.float64).tolist(),
                   residuals=np.asarray(r.residuals, np.float64).tolist(),
                   eigsh_matvecs=int(r.num_matvecs), converged=int(np.sum(r.converged)))
        if kind == "mixed":
            probes, steps = task["density"]
            d = spectral.density(op, key=key, num_probes=probes, num_steps=steps)
            out["moments"] = _moments(d)
    out["rss_mb"] = _rss_mb()
    return out


# ----------------------------------------------------------------------------------- parent


def _child(task, threads, devices=1):
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    if devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(_HERE, ".."), _HERE,
                                         env.get("PYTHONPATH", "")])
    cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(threads),
           "--worker", json.dumps(task)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {task} failed:\n{proc.stderr[-3000:]}")
    line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT")][-1]
    res = json.loads(line[len("RESULT"):])
    res["child_wall_seconds"] = time.perf_counter() - t0
    print(f"  {task['model']} {task['kind']} n={task['n']} b={task['batch']}"
          f"{' ' + task['compute_dtype'] if task.get('compute_dtype') else ''}: "
          f"rss {res['rss_mb']:.0f} MB, {res['child_wall_seconds']:.0f} s",
          file=sys.stderr, flush=True)
    return res


def _fit(ns, ts):
    import numpy as np

    A = np.stack([np.ones(len(ns)), np.asarray(ns, float)], axis=1)
    coef, *_ = np.linalg.lstsq(A, np.asarray(ts, float), rcond=None)
    pred = A @ coef
    ss = float(np.sum((np.asarray(ts) - pred) ** 2))
    tot = float(np.sum((np.asarray(ts) - np.mean(ts)) ** 2))
    return {"t0_seconds": float(coef[0]), "seconds_per_example": float(coef[1]),
            "r2": 1.0 - ss / tot if tot > 0 else float("nan"),
            "max_relative_residual": float(np.max(np.abs(np.asarray(ts) - pred) / np.asarray(ts)))}


def run_model(name, cfg, common, threads):
    base = dict(model=name, spec=cfg["model"], k=common["k"], density=common["density"],
                steps=common["memory_steps"])
    res = {"products_vs_n": [], "products_vs_batch": [], "spectral_vs_n": []}
    for n in cfg["sizes"]:
        r = _child(dict(base, kind="product", n=n, batch=cfg["batch"]), threads)
        res["products_vs_n"].append(dict(n=n, batch=cfg["batch"], **r))
    for b in cfg["batches"]:
        r = _child(dict(base, kind="product", n=cfg["batch_n"], batch=b), threads)
        res["products_vs_batch"].append(dict(n=cfg["batch_n"], batch=b, **r))
    for kind in ("eigsh", "density"):
        for n in cfg["spectral_n"]:
            r = _child(dict(base, kind=kind, n=n, batch=cfg["batch"]), threads)
            res["spectral_vs_n"].append(dict(kind=kind, n=n, batch=cfg["batch"], **r))
    res["params"] = res["products_vs_n"][0]["params"]
    pv = res["products_vs_n"]
    res["time_fit"] = _fit([r["n"] for r in pv], [r["seconds"] for r in pv])
    # (c) mixed precision and (d) sharding, on one size
    m = dict(base, n=cfg["mixed_n"], batch=cfg["batch"])
    f32 = _child(dict(m, kind="mixed"), threads)
    bf16 = _child(dict(m, kind="mixed", compute_dtype="bfloat16"), threads)
    sharded = _child(dict(m, kind="sharded"), threads, devices=4)
    import numpy as np

    rel = lambda a, b: (np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))).tolist()
    res["mixed"] = {
        "n": cfg["mixed_n"], "float32": f32, "bfloat16": bf16,
        "eigenvalue_relative_error": rel(bf16["eigenvalues"], f32["eigenvalues"]),
        "moment_relative_error": rel(bf16["moments"], f32["moments"]),
        "product_time_ratio_bf16_over_f32": bf16["product_seconds"] / f32["product_seconds"],
        "eigsh_time_ratio_bf16_over_f32": bf16["eigsh_seconds"] / f32["eigsh_seconds"],
    }
    res["sharded"] = {
        "n": cfg["mixed_n"], "devices": sharded["devices"], "four_devices": sharded,
        "max_relative_eigenvalue_difference": float(np.max(rel(sharded["eigenvalues"],
                                                               f32["eigenvalues"]))),
        "max_relative_residual_one_device": float(np.max(np.asarray(f32["residuals"])
                                                         / np.abs(f32["eigenvalues"]))),
    }
    return res


def markdown(res) -> str:
    lines = [rep.header(res["machine"], "Curvature at scale (CPU)"), ""]
    for name, r in res["models"].items():
        fit = r["time_fit"]
        lines += [f"### {name} ({r['params']:,} parameters)", "",
                  "| what | n | batch | peak RSS (MB) | XLA temp (MB) | seconds |",
                  "|---|---|---|---|---|---|"]
        for row in r["products_vs_n"] + r["products_vs_batch"]:
            lines.append(f"| product | {row['n']} | {row['batch']} | {row['rss_mb']:.0f} | "
                         f"{row['xla_temp_mb']:.1f} | {row['seconds']:.3g} |")
        for row in r["spectral_vs_n"]:
            lines.append(f"| {row['kind']} | {row['n']} | {row['batch']} | {row['rss_mb']:.0f}"
                         f" | - | {row['seconds_with_compile']:.3g} (with compile) |")
        mx, sh = r["mixed"], r["sharded"]
        lines += ["", f"Time of one product = {fit['t0_seconds']:.3g} s + "
                  f"{fit['seconds_per_example'] * 1e3:.3g} ms x n (R^2 {fit['r2']:.4f}, largest "
                  f"relative residual {fit['max_relative_residual']:.2g}).",
                  f"bf16 vs f32 (n={mx['n']}): top-5 eigenvalue relative errors "
                  + ", ".join(f"{e:.2g}" for e in mx["eigenvalue_relative_error"])
                  + "; moments p=1..4: "
                  + ", ".join(f"{e:.2g}" for e in mx["moment_relative_error"])
                  + f"; time ratio bf16/f32: product {mx['product_time_ratio_bf16_over_f32']:.2f},"
                  f" eigsh {mx['eigsh_time_ratio_bf16_over_f32']:.2f}.",
                  f"4 devices vs 1 (n={sh['n']}): largest relative eigenvalue difference "
                  f"{sh['max_relative_eigenvalue_difference']:.2g} (one-device certificates up "
                  f"to {sh['max_relative_residual_one_device']:.2g} relative).", ""]
    return "\n".join(lines)


def figure(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, r in res["models"].items():
        pv = r["products_vs_n"]
        # the batch series, with the fixed-batch run at the same n where there is one
        pb = sorted(r["products_vs_batch"] + [x for x in pv if x["n"] == r[
            "products_vs_batch"][0]["n"]], key=lambda x: x["batch"])
        axes[0].plot([x["n"] for x in pv], [x["rss_mb"] for x in pv], "o-",
                     label=f"{name}, product (b={pv[0]['batch']})")
        for kind, marker in (("eigsh", "s--"), ("density", "^:")):
            rows = [x for x in r["spectral_vs_n"] if x["kind"] == kind]
            axes[0].plot([x["n"] for x in rows], [x["rss_mb"] for x in rows], marker,
                         label=f"{name}, {kind}")
        axes[1].plot([x["batch"] for x in pb], [x["rss_mb"] for x in pb], "o-",
                     label=f"{name} (n={pb[0]['n']})")
        fit = r["time_fit"]
        ns = [x["n"] for x in pv]
        line = axes[2].plot(ns, [x["seconds"] for x in pv], "o", label=f"{name}")[0]
        axes[2].plot(ns, [fit["t0_seconds"] + fit["seconds_per_example"] * n for n in ns], "-",
                     color=line.get_color(), alpha=0.6,
                     label=f"fit: {fit['seconds_per_example'] * 1e3:.2g} ms/example, "
                           f"R²={fit['r2']:.3f}")
    axes[0].set(xlabel="dataset size n (examples)", ylabel="peak RSS of the process (MB)",
                title="memory vs dataset size (fixed batch)")
    axes[1].set(xlabel="batch size", ylabel="peak RSS of the process (MB)", xscale="log",
                title="memory vs batch size (fixed n)")
    axes[1].xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[1].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[2].set(xlabel="dataset size n (examples)", ylabel="seconds per Hessian product",
                title="time vs dataset size")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = _parse(argv)
    rep.pin_threads(args.threads)
    if args.worker is not None:
        res = run_task(json.loads(args.worker))
        print("RESULT" + json.dumps(res), flush=True)
        return res
    import jax  # noqa: F401  (for the machine record: backend, x64)

    machine = rep.start_run(args.threads)
    mode = "small" if args.small else "full"
    cfg = SETTINGS[mode]
    common = {k: cfg[k] for k in ("memory_steps", "density", "k")}
    t0 = time.perf_counter()
    res = {"mode": mode, "machine": machine, "settings": cfg, "models": {}}
    for name in ("resnet20", "transformer"):
        print(f"{name}", file=sys.stderr, flush=True)
        res["models"][name] = run_model(name, cfg[name], common, args.threads)
    res["total_seconds"] = time.perf_counter() - t0
    rep.finish_machine_info(machine)
    rep.write_json(res, args.out)
    figure(res, os.path.splitext(args.out)[0] + ".png")
    print(markdown(res))
    print("wrote", os.path.abspath(args.out))
    return res


if __name__ == "__main__":
    main()

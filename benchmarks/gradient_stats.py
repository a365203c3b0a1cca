"""Per-example gradient statistics: landscape against BackPACK, probe overhead, memory vs chunk.

Usage::

    python benchmarks/gradient_stats.py [--quick] [--out PATH] [--threads N] [--models mlp,cnn]

The models and data of ``curvature_vs_peers.py`` (``_digits_models.py``, ported exactly to
PyTorch by ``_torch_models.py``): an MLP 64-32-32-10 (tanh, 3,466 parameters) and a CNN (two 3x3
convolutions, average pool, two dense layers, ReLU; 21,546 parameters), briefly trained with Adam
on scikit-learn digits, mean softmax cross-entropy, float32. Ours runs the CNN with its
convolutions as shifted matmuls (``apply_cnn_shifted``, the same function of the same weights;
``lax.conv`` under ``vmap`` inside the chunk loop would hit the XLA:CPU convolution problem that
``curvature_vs_peers.py`` documents).

1. **Per-example gradients and their variance against BackPACK 1.7** (``BatchGrad``,
   ``BatchL2Grad``, ``Variance``, ``SumGradSquared``) on the same weights and the same batch of
   ``n`` examples. Ours: ``per_example_grads``, ``per_example_norms``, for the MLP also
   ``mlp_per_example_norms`` (no per-example gradients), the per-parameter variance and sum of
   squares from ``per_example_grads``, and ``gradient_statistics`` (everything: mean, norms,
   variances, coherence, noise scale, SNR and the three batch-size tests, two passes), each
   jitted. Every contender runs in one alternating comparison with each framework's plain
   gradient of the mean loss; reported: each time over the same framework's plain gradient and
   BackPACK's time over ours for the matching quantity. Agreement: the largest relative
   difference of the per-example gradients, norms, variances and sums of squares, and each
   library's variance against a float64 two-pass reference (BackPACK ``BatchGrad`` on a float64
   twin). Conventions: with a mean loss BackPACK's per-example quantities are those of
   ``g_i / n`` (its docs), so its ``grad_batch`` is multiplied by ``n``, ``batch_l2`` and
   ``sum_grad_squared`` by ``n^2``; its ``variance`` is ``(1/n) sum (g_i/n)^2 - ((1/n) sum
   g_i/n)^2`` (normalised by ``n``, computed as ``E x^2 - (E x)^2``), so it is compared, times
   ``n^2``, with ours normalised by ``n`` too (ours, ``gradient_statistics``, uses ``n - 1``).
2. **Overhead of ``gradient_probe``** over a plain jitted training loop (``train.train``, SGD,
   minibatches of ``batch_size`` from the MLP's data, no probe), with the probe on each step's
   batch: ``kind="cheap"`` (per-example gradients, chunked), ``kind="cheap"`` with
   ``norms_fn=mlp_per_example_norms`` (the per-example norms plus one ordinary gradient, no
   per-example gradient), and ``kind="full"``, each every step and every 16 steps, all in one
   alternating comparison with the same chunk lengths (``chunk_seconds`` huge). Goal from the
   issue: the cheap set at most 1.2x a plain step.
3. **Memory against the chunk size**: the temporary buffer size XLA reports for the compiled
   ``gradient_statistics`` and ``per_example_norms`` (``jax.jit(...).lower(...).compile()
   .memory_analysis()``) for each ``chunk_size``, next to the bytes of one chunk of
   per-example gradients (``chunk * dim * 4``), and the largest relative difference of the
   statistics across chunk sizes.

Every time comes from ``_report.compare`` (warm-up round, then alternating rounds; ratios per
round, median (min-max); a range including 1 is a tie). ``--threads N`` (default 1) is applied
before NumPy, JAX and PyTorch are imported. Written to ``bench_results/gradient_stats.json``
with the machine record. The script asserts only the preconditions (the port agrees), never a
time. ``--quick`` (a check that the script runs, not a measurement): 64 examples, 2 rounds,
32 and 16 training steps with the probes every 16 steps only, two chunk sizes, memory of the
MLP only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(_HERE, ".."))

import _report as rep  # noqa: E402  (imports nothing heavy: threads are pinned first)

SETTINGS = {
    "full": dict(repeats=5, n=512, overhead_steps=400, short_steps=16, batch_size=128, lr=0.1,
                 every=(1, 16), chunks=(8, 32, 128, 512), memory_models=("mlp", "cnn")),
    "quick": dict(repeats=2, n=64, overhead_steps=32, short_steps=16, batch_size=32, lr=0.1,
                  every=(16,), chunks=(16, 64), memory_models=("mlp",)),
}

GRAD = "grad (plain)"
PEG, PEN, MLPN, VAR, SGS, STATS = ("per-example grads", "per-example norms",
                                   "norms without per-example grads (MLP)",
                                   "variance per parameter", "sum of squared grads",
                                   "gradient_statistics (all)")
BP = {PEG: "BatchGrad", PEN: "BatchL2Grad", VAR: "Variance", SGS: "SumGradSquared"}


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 rounds")
    p.add_argument("--out", default=os.path.join(_HERE, "..", "bench_results",
                                                 "gradient_stats.json"))
    p.add_argument("--threads", type=int, default=1,
                   help="threads for NumPy's BLAS, XLA and PyTorch alike (default 1)")
    p.add_argument("--models", default="mlp,cnn")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------
# Part 1: per-example statistics, ours vs BackPACK
# --------------------------------------------------------------------------------------------


_TRAINED: dict = {}


def setup(name: str, n: int):
    """``(params, train_loss, data_np)``: the model briefly trained on the 512 digits (as in
    ``curvature_vs_peers.py``; cached per model) and the first ``n`` of those examples."""
    import _digits_models as dm
    import jax

    if name not in _TRAINED:
        data = dm.digits(dm.NUM_EXAMPLES)
        _TRAINED[name] = (data, *dm.trained_params(name, data))
    data, params, loss = _TRAINED[name]
    return params, loss, jax.tree.map(lambda a: a[:n], data)


def to_landscape_mlp(params) -> dict:
    """The benchmark MLP's params in ``landscape.models.MLP`` layout (for
    ``mlp_per_example_norms``): ``{"hidden": {i: {kernel, bias}}, "head": {kernel, bias}}``."""
    import _digits_models as dm

    k = len(dm.MLP_WIDTHS) - 1
    layer = lambda d: {"kernel": d["w"], "bias": d["b"]}  # noqa: E731
    return {"hidden": {i: layer(params[f"dense{i}"]) for i in range(k - 1)},
            "head": layer(params[f"dense{k - 1}"])}


def mlp_norms_fn():
    """``(params, batch) -> (n,)`` per-example norms of the benchmark MLP (Goodfellow's trick)."""
    import jax.numpy as jnp

    from landscape.dynamics import mlp_per_example_norms

    return lambda p, b: mlp_per_example_norms(to_landscape_mlp(p), b, activation=jnp.tanh,
                                              output_loss="cross_entropy")


def port_per_example(name: str, tree) -> list:
    """Per-example JAX trees (leading axis ``n``) -> arrays in torch parameter order/layout."""
    import _torch_models as tm
    import numpy as np

    out = []
    for layer in tm._layer_order(name):
        w = np.asarray(tree[layer]["w"])
        w = w.transpose(0, 4, 3, 1, 2) if w.ndim == 5 else w.transpose(0, 2, 1)
        out += [w, np.asarray(tree[layer]["b"])]
    return out


def _rel(a, b) -> float:
    """``max |a - b| / max |b|`` over all entries of two lists of arrays (float64)."""
    import numpy as np

    num = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
              for x, y in zip(a, b, strict=True))
    den = max(float(np.max(np.abs(np.asarray(y, np.float64)))) for y in b)
    return num / den


def bench_backpack(name: str, cfg, log) -> dict:
    import _digits_models as dm
    import _torch_models as tm
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from backpack import backpack, extend
    from backpack import extensions as ext

    from landscape import dynamics

    n = cfg["n"]
    params, train_loss, data_np = setup(name, n)
    apply = dm.apply_mlp if name == "mlp" else dm.apply_cnn_shifted
    loss_fn = dm.make_loss(apply)
    batch = jax.tree.map(jnp.asarray, data_np)
    dim = int(sum(np.size(a) for a in jax.tree.leaves(params)))
    log(f"{name}: {dim} parameters, {n} examples, train loss {train_loss:.3f}")

    # ---- ours, jitted
    grad = jax.jit(jax.grad(loss_fn))
    peg = jax.jit(lambda p, b: dynamics.per_example_grads(loss_fn, p, b))
    pen = jax.jit(lambda p, b: dynamics.per_example_norms(loss_fn, p, b))
    var = jax.jit(lambda p, b: jax.tree.map(lambda g: jnp.var(g, axis=0),
                                            dynamics.per_example_grads(loss_fn, p, b)))
    sgs = jax.jit(lambda p, b: jax.tree.map(lambda g: jnp.sum(g * g, axis=0),
                                            dynamics.per_example_grads(loss_fn, p, b)))
    stats = jax.jit(lambda p, b: dynamics.gradient_statistics(loss_fn, p, b))
    ours = {GRAD: grad, PEG: peg, PEN: pen, VAR: var, SGS: sgs, STATS: stats}
    if name == "mlp":
        ours[MLPN] = jax.jit(mlp_norms_fn())

    # ---- torch, float32 (plain) and extended copies
    x, y = tm.torch_data(data_np)
    plain = tm.torch_model(name, params)
    ext_model = extend(tm.torch_model(name, params))
    lossf = torch.nn.CrossEntropyLoss()
    ext_loss = extend(torch.nn.CrossEntropyLoss())

    def torch_grad():
        plain.zero_grad(set_to_none=True)
        lossf(plain(x), y).backward()
        return [p.grad for p in plain.parameters()]

    def bp(extension, attr):
        def run():
            ext_model.zero_grad(set_to_none=True)
            loss = ext_loss(ext_model(x), y)
            with backpack(extension()):
                loss.backward()
            return [getattr(p, attr) for p in ext_model.parameters()]
        return run

    peers = {PEG: bp(ext.BatchGrad, "grad_batch"), PEN: bp(ext.BatchL2Grad, "batch_l2"),
             VAR: bp(ext.Variance, "variance"), SGS: bp(ext.SumGradSquared, "sum_grad_squared")}

    # ---- agreement (and the port check) before timing
    g_j = tm.port_tree(name, grad(params, batch))
    g_t = [t.numpy() for t in torch_grad()]
    port = _rel(g_t, g_j)
    if port > 1e-4:
        raise AssertionError(f"{name}: torch and JAX gradients differ by {port:.2e} (port)")
    pe = port_per_example(name, peg(params, batch))
    bp_pe = [t.numpy() * n for t in peers[PEG]()]
    norms_j = np.asarray(pen(params, batch), np.float64)
    bp_norms = np.sqrt(np.sum([t.numpy().astype(np.float64) for t in peers[PEN]()], axis=0)) * n
    var_j = tm.port_tree(name, var(params, batch))
    bp_var = [t.numpy() * n**2 for t in peers[VAR]()]
    sgs_j = tm.port_tree(name, sgs(params, batch))
    bp_sgs = [t.numpy() * n**2 for t in peers[SGS]()]
    # float64 reference: BatchGrad on a float64 twin, two-pass variance in NumPy
    ext64 = extend(tm.torch_model(name, params, dtype=torch.float64))
    ext64.zero_grad(set_to_none=True)
    loss64 = ext_loss(ext64(x.double()), y)
    with backpack(ext.BatchGrad()):
        loss64.backward()
    pe64 = [p.grad_batch.numpy() * n for p in ext64.parameters()]
    var64 = [np.var(g, axis=0) for g in pe64]
    norms64 = np.sqrt(sum(np.sum(g.reshape(n, -1) ** 2, axis=1) for g in pe64))
    st = stats(params, batch)
    tv64 = sum(float(np.sum(v)) for v in var64) * n / (n - 1)
    agree = {
        "port_grad_rel_diff": port,
        "per_example_grads_rel_diff": _rel(pe, bp_pe),
        "per_example_grads_ours_vs_float64": _rel(pe, pe64),
        "per_example_grads_backpack_vs_float64": _rel(bp_pe, pe64),
        "norms_max_rel_diff": float(np.max(np.abs(norms_j - bp_norms) / bp_norms)),
        # entrywise against float64: a well-fitted example's tiny gradient carries the float32
        # rounding of the whole network, so its norm is accurate only relative to the largest
        "norms_ours_vs_float64_entrywise_max": float(np.max(np.abs(norms_j - norms64) / norms64)),
        "norms_backpack_vs_float64_entrywise_max": float(
            np.max(np.abs(bp_norms - norms64) / norms64)),
        "norms_ours_vs_float64": float(np.max(np.abs(norms_j - norms64)) / np.max(norms64)),
        "norms_backpack_vs_float64": float(np.max(np.abs(bp_norms - norms64)) / np.max(norms64)),
        "norms_float64_smallest_over_largest": float(np.min(norms64) / np.max(norms64)),
        "variance_rel_diff": _rel(var_j, bp_var),
        "variance_ours_vs_float64": _rel(var_j, var64),
        "variance_backpack_vs_float64": _rel(bp_var, var64),
        "variance_ours_vs_float64_entrywise_max": max(
            float(np.max(np.abs(a - b) / np.maximum(b, 1e-30))) for a, b in zip(var_j, var64)),
        "variance_backpack_vs_float64_entrywise_max": max(
            float(np.max(np.abs(a - b) / np.maximum(b, 1e-30))) for a, b in zip(bp_var, var64)),
        "sum_grad_squared_rel_diff": _rel(sgs_j, bp_sgs),
        "total_variance_stats_vs_float64": abs(float(st.total_variance) - tv64) / tv64,
    }
    if name == "mlp":
        mn = np.asarray(ours[MLPN](params, batch), np.float64)
        agree["mlp_norms_vs_per_example_norms"] = float(np.max(np.abs(mn - norms_j) / norms_j))
    log(f"{name}: agreement " + ", ".join(f"{k} {v:.1e}" for k, v in agree.items()))

    # ---- one alternating comparison of everything
    contenders = {f"ours {k}": (lambda f=f: f(params, batch)) for k, f in ours.items()}
    contenders["torch " + GRAD] = torch_grad
    contenders |= {f"BackPACK {BP[k]}": f for k, f in peers.items()}
    first = f"ours {GRAD}"
    c = rep.compare(contenders[first], {k: v for k, v in contenders.items() if k != first},
                    ours_name=first, repeats=cfg["repeats"])
    over_own = {k: c.ratio(k, first if k.startswith("ours") else "torch " + GRAD)
                for k in contenders if k not in (first, "torch " + GRAD)}
    bp_over_ours = {k: c.ratio(f"BackPACK {BP[k]}", f"ours {k}") for k in BP}
    if name == "mlp":
        bp_over_ours["norms: BatchL2Grad / ours without per-example grads"] = c.ratio(
            f"BackPACK {BP[PEN]}", f"ours {MLPN}")
    return {"num_params": dim, "n": n, "train_loss": train_loss, "agreement": agree,
            "comparison": c, "time_over_own_grad": over_own,
            "backpack_over_ours": bp_over_ours,
            "torch_grad_over_jax_grad": c.ratio("torch " + GRAD, first)}


# --------------------------------------------------------------------------------------------
# Part 2: overhead of gradient_probe over plain training
# --------------------------------------------------------------------------------------------

PLAIN = "train, no probe"


def bench_overhead(cfg, log) -> dict:
    import _digits_models as dm
    import jax
    import jax.numpy as jnp
    import optax

    from landscape import dynamics, train

    params, _, data_np = setup("mlp", cfg["n"])
    loss_fn = dm.make_loss(dm.apply_mlp)
    data = jax.tree.map(jnp.asarray, data_np)
    norms = mlp_norms_fn()
    variants = {}
    for every in cfg["every"]:
        variants[f"cheap, every {every}"] = dynamics.gradient_probe(loss_fn, every=every)
        variants[f"cheap from norms (norms_fn), every {every}"] = dynamics.gradient_probe(
            loss_fn, every=every, norms_fn=norms)
        variants[f"full, every {every}"] = dynamics.gradient_probe(loss_fn, every=every,
                                                                   kind="full")
    N, B, S = cfg["overhead_steps"], cfg["batch_size"], cfg["short_steps"]
    opt, key = optax.sgd(cfg["lr"]), jax.random.key(1)

    def runner(pr, steps):
        def run():
            r = train.train(loss_fn, params, opt, data, key=key, num_steps=steps, batch_size=B,
                            probes=None if pr is None else {"g": pr}, progress=False,
                            chunk_seconds=1e9)
            return r.params
        return run

    peers = {f"{PLAIN}, {S} steps": runner(None, S)}
    for k, v in variants.items():
        peers |= {k: runner(v, N), f"{k}, {S} steps": runner(v, S)}
    c = rep.compare(runner(None, N), peers, ours_name=PLAIN, repeats=cfg["repeats"])
    out = {"num_steps": N, "short_steps": S, "batch_size": B, "comparison": c, "variants": {}}
    tp, tps = c.times[PLAIN], c.times[f"{PLAIN}, {S} steps"]
    for name, pr in variants.items():
        records = -(-N // pr.every) - -(-S // pr.every)
        t, ts = c.times[name], c.times[f"{name}, {S} steps"]
        per_step = rep.Ratio(f"{name}, per step", f"{PLAIN}, per step", tuple(
            (a - b) / (p - q) for a, b, p, q in zip(t, ts, tp, tps, strict=True)))
        per_record = rep.Ratio(f"one record ({name})", "one plain step", tuple(
            ((a - b) - (p - q)) / records / ((p - q) / (N - S)) if records else float("nan")
            for a, b, p, q in zip(t, ts, tp, tps, strict=True)))
        out["variants"][name] = {"every": pr.every, "records_in_difference": records,
                                 "time_over_plain": c.ratio(name, PLAIN),
                                 "per_step_over_plain": per_step,
                                 "goal_at_most_1.2x": per_step.against(1.2),
                                 "record_in_plain_steps": per_record}
    log("overhead per step: " + "; ".join(f"{k} {v['per_step_over_plain'].text(False)}"
                                          for k, v in out["variants"].items()))
    return out


# --------------------------------------------------------------------------------------------
# Part 3: memory against the chunk size
# --------------------------------------------------------------------------------------------


def bench_memory(name: str, cfg, log) -> dict:
    import _digits_models as dm
    import jax
    import jax.numpy as jnp
    import numpy as np

    from landscape import dynamics

    params, _, data_np = setup(name, cfg["n"])
    data = jax.tree.map(jnp.asarray, data_np)
    apply = dm.apply_mlp if name == "mlp" else dm.apply_cnn_shifted
    loss_fn = dm.make_loss(apply)
    dim = int(sum(np.size(a) for a in jax.tree.leaves(params)))
    rows, ref = [], None
    for c in cfg["chunks"]:
        fns = {"gradient_statistics": lambda p, b, c=c: dynamics.gradient_statistics(
                   loss_fn, p, b, chunk_size=c),
               "per_example_norms": lambda p, b, c=c: dynamics.per_example_norms(
                   loss_fn, p, b, chunk_size=c)}
        row = {"chunk_size": c, "chunk_grads_bytes": c * dim * 4}
        for k, f in fns.items():
            compiled = jax.jit(f).lower(params, data).compile()
            mem = compiled.memory_analysis()
            row[f"{k}_temp_bytes"] = None if mem is None else int(mem.temp_size_in_bytes)
        st = jax.jit(fns["gradient_statistics"])(params, data)
        vals = np.array([float(st.total_variance), float(st.noise_scale), float(st.coherence),
                         float(st.inner_product_test.statistic),
                         float(st.orthogonality_test.statistic)])
        ref = vals if ref is None else ref
        row["stats_rel_diff_to_first_chunk"] = float(np.max(np.abs(vals - ref) / np.abs(ref)))
        rows.append(row)
    log(f"{name} memory: " + "; ".join(
        f"chunk {r['chunk_size']}: {r['gradient_statistics_temp_bytes'] / 2**20:.1f} MiB"
        for r in rows if r["gradient_statistics_temp_bytes"] is not None))
    return {"num_params": dim, "n": cfg["n"], "rows": rows}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def markdown(res) -> str:
    lines = [rep.header(res["machine"], f"gradient_stats ({res['mode']} mode)"), "",
             f"{res['repeats']} alternating rounds after a warm-up; ratios are per round, "
             "median (min-max); a range including 1 is a tie.", ""]
    for name, m in res["backpack"].items():
        med = m["comparison"].medians
        lines += [f"### {name}: {m['num_params']} parameters, {m['n']} examples", ""]
        rows = []
        for q in (PEG, PEN, MLPN, VAR, SGS, STATS):
            key = f"ours {q}"
            if key not in med:
                continue
            bpk = f"BackPACK {BP[q]}" if q in BP else None
            rows.append([q, med[key], m["time_over_own_grad"][key].text(False),
                         med[bpk] if bpk else "-",
                         m["time_over_own_grad"][bpk].text(False) if bpk else "-",
                         m["backpack_over_ours"][q] if q in BP else "-"])
        rows.insert(0, ["gradient of the mean loss", med[f"ours {GRAD}"], "1",
                        med[f"torch {GRAD}"], "1", m["torch_grad_over_jax_grad"]])
        lines.append(rep.table(["quantity", "ours (s)", "ours / own grad", "BackPACK (s)",
                                "BackPACK / own grad", "BackPACK / ours"], rows))
        lines += ["", "Agreement: " + ", ".join(f"{k} {v:.1e}"
                                                for k, v in m["agreement"].items()), ""]
    o = res["overhead"]
    rows = [[PLAIN, o["comparison"].medians[PLAIN], "1", "1", "-", "-"]]
    for name, v in o["variants"].items():
        rows.append([name, o["comparison"].medians[name], v["time_over_plain"].text(False),
                     v["per_step_over_plain"].text(False), v["goal_at_most_1.2x"],
                     v["record_in_plain_steps"].text(False)])
    lines += [f"### Probe overhead: {o['num_steps']} SGD steps, batch {o['batch_size']} (MLP)",
              "", f"Per step: the time of {o['num_steps']} steps minus that of "
              f"{o['short_steps']} steps, per round, over the same difference without a probe.",
              "", rep.table(["run", f"seconds ({o['num_steps']} steps)", "call time / plain",
                             "per-step time / plain", "vs 1.2x goal",
                             "one record, in plain steps"], rows), ""]
    for name, m in res["memory"].items():
        rows = [[r["chunk_size"], r["chunk_grads_bytes"] / 2**20,
                 (r["gradient_statistics_temp_bytes"] or float("nan")) / 2**20,
                 (r["per_example_norms_temp_bytes"] or float("nan")) / 2**20,
                 f"{r['stats_rel_diff_to_first_chunk']:.1e}"] for r in m["rows"]]
        lines += [f"### Memory vs chunk size: {name}, {m['num_params']} parameters, {m['n']} "
                  "examples", "",
                  rep.table(["chunk", "one chunk of grads (MiB)",
                             "gradient_statistics temp (MiB)", "per_example_norms temp (MiB)",
                             "stats rel. diff vs first chunk"], rows), ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = _parse(sys.argv[1:] if argv is None else argv)
    os.environ["JAX_ENABLE_X64"] = "0"  # the timed work is float32 by definition
    if not rep.pinned():
        rep.pin_threads(args.threads)  # before NumPy, JAX and torch are imported
    import jax
    import numpy  # noqa: F401
    import torch  # noqa: F401

    if jax.config.jax_enable_x64:
        raise RuntimeError("run this benchmark with JAX_ENABLE_X64 unset or 0 (float32)")
    machine = rep.start_run(args.threads)
    # BackPACK warns that the container module (TorchMLP/TorchCNN) has no extension of its own;
    # its children (Linear, Conv2d) do, and they hold every parameter.
    warnings.filterwarnings("ignore", message="Extension saving to")
    # BackPACK's hooks fire on module outputs (the inputs need no gradient): expected.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    cfg = SETTINGS["quick" if args.quick else "full"]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    res = {"mode": "quick" if args.quick else "full", "repeats": cfg["repeats"], "settings": cfg,
           "machine": machine,
           "peer_versions": {d: rep._version(d) for d in ("backpack-for-pytorch", "optax")},
           "notes": ["All timed computations run in float32; references are float64.",
                     "BackPACK's quantities under a mean loss are those of g_i / n: grad_batch "
                     "is scaled by n, batch_l2, sum_grad_squared and variance by n^2 here.",
                     "BackPACK's Variance is normalised by n (ours from per_example_grads is "
                     "compared normalised by n; gradient_statistics uses n - 1)."],
           "backpack": {}, "memory": {}}
    models = args.models.split(",")
    for name in models:
        res["backpack"][name] = bench_backpack(name, cfg, log)
        log(f"part 1 ({name}) done at {time.perf_counter() - t0:.0f} s")
    res["overhead"] = bench_overhead(cfg, log)
    log(f"part 2 done at {time.perf_counter() - t0:.0f} s")
    for name in (m for m in models if m in cfg["memory_models"]):
        res["memory"][name] = bench_memory(name, cfg, log)
    log(f"part 3 done at {time.perf_counter() - t0:.0f} s")
    rep.finish_machine_info(machine)
    res["total_seconds"] = time.perf_counter() - t0
    rep.write_json(res, args.out)
    print(markdown(res))
    print(f"\nwrote {os.path.abspath(args.out)} in {res['total_seconds']:.0f} s")
    return res


if __name__ == "__main__":
    main()

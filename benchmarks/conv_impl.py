"""ShiftConv against the library convolution (lax.conv) for the CNN1D on MNIST-1D, on CPU.

Usage::

    python benchmarks/conv_impl.py [--quick] [--out PATH] [--threads N]

Both implementations compute the same function of the same parameters (``landscape.models.conv``);
this measures what the choice costs in the loops the library runs:

* one product of the dataset Hessian (4000 examples) in batches of 500, i.e. a ``lax.scan`` body;
* the top-5 Hessian eigenpairs by ``spectral.eigsh`` (one full batch, Lanczos ``while_loop``):
  the compilation and the compiled run are timed apart, and their per-round sum gives the
  time a user waits for a first call;
* 100 Adam steps of batch 128 inside one hand-written ``fori_loop`` (the convolutions as the user
  wrote them);
* the same 100 steps through ``train.run_steps``, which rewrites a ``lax.conv`` step's
  convolutions into XLA:CPU's fast form (``rewrite_convs=None``, ``landscape.conv_rewrite``);
* one gradient at the top level of a program (no loop), the case where lax.conv is faster.

Each row is one ``_report.compare``: a warm-up round, then 5 rounds (``--quick``: 3) in which
the two models run alternately; the ratio is the median of the per-round ratios ``lax.conv time
/ ShiftConv time`` with its min-max range, and a range that includes 1 is a tie.
``--threads N`` (default 1) is applied before JAX is imported. The eigenvalues of the two models
must agree (asserted). Writes ``bench_results/conv_impl.json`` and prints a markdown table headed
by the thread counts and the load before and after. ``--quick``: 3 rounds and no eigsh.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)

import _report as rep  # noqa: E402  (imports nothing heavy: threads are pinned first)

SETTINGS = {"full": dict(repeats=5, eigsh=True), "quick": dict(repeats=3, eigsh=False)}
OURS, PEER = "ShiftConv", "lax.conv"
ROWS = (("hvp_batched", "dataset HVP, batches of 500 (scan)"),
        ("eigsh_top5_first_call", "top-5 Hessian eigenpairs (eigsh), compile + run"),
        ("eigsh_top5_compile", "top-5 eigsh: compilation only"),
        ("eigsh_top5_run", "top-5 eigsh: compiled run only"),
        ("train_100_steps", "100 Adam steps in one fori_loop"),
        ("train_run_steps", "100 Adam steps by train.run_steps (lax.conv rewritten)"),
        ("grad_top_level", "one gradient, top level (no loop)"))


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3 timed rounds, no eigsh")
    p.add_argument("--out", default=os.path.join(_HERE, "..", "bench_results", "conv_impl.json"))
    p.add_argument("--threads", type=int, default=1, help="threads for XLA (default 1)")
    return p.parse_args(argv)


def build(impl: str, train) -> dict:
    """The CNN1D with ``conv_impl=impl`` and the functions each measurement calls."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from landscape import curvature, losses, models, spectral
    from landscape import nnx as lnnx
    from landscape import train as training

    model = models.CNN1D(10, conv_impl=impl, rngs=nnx.Rngs(0))
    loss_fn, params, _ = lnnx.loss_fn(model, losses.softmax_cross_entropy, mode="eval")
    flat = jax.flatten_util.ravel_pytree(params)[0]
    v = jax.random.normal(jax.random.key(1), flat.shape, flat.dtype)
    op = curvature.hessian(loss_fn, params, train, batch_size=500)
    mv = jax.jit(lambda op, v: op.matvec(v))
    grad = jax.jit(jax.grad(loss_fn))
    opt = optax.adam(1e-3)
    n = train["y"].shape[0]

    @jax.jit
    def chunk(p):
        def body(i, carry):
            p, s = carry
            idx = (jnp.arange(128) + i * 128) % n
            g = jax.grad(loss_fn)(p, jax.tree.map(lambda a: a[idx], train))
            upd, s = opt.update(g, s, p)
            return optax.apply_updates(p, upd), s
        return jax.lax.fori_loop(0, 100, body, (p, opt.init(p)))[0]

    @jax.jit
    def run_steps(p):
        state = training.init_state(p, opt)
        return training.run_steps(loss_fn, opt, state, train, key=jax.random.key(3),
                                  num_steps=100, batch_size=128)[0].params

    full = curvature.hessian(loss_fn, params, train, batch_size=n)
    key = jax.random.key(2)

    def compile_eigsh():
        """A fresh jit wrapper each call, so every call compiles (as a user's first call)."""
        fn = jax.jit(lambda op, key: spectral.eigsh(op, k=5, key=key))
        return fn.lower(full, key).compile()

    out = {"hvp_batched": lambda: mv(op, v), "grad_top_level": lambda: grad(params, train),
           "train_100_steps": lambda: chunk(params), "train_run_steps": lambda: run_steps(params)}
    compiled = []

    def eigsh_run():
        if not compiled:
            compiled.append(compile_eigsh())
        return compiled[0](full, key)

    def eigsh_compile():
        compile_eigsh()  # returns an executable: nothing to block on

    out["eigsh_top5_run"], out["eigsh_top5_compile"] = eigsh_run, eigsh_compile
    return out


def main(argv=None):
    args = _parse(argv)
    if not rep.pinned():
        rep.pin_threads(args.threads)  # before JAX is imported (when run as a script)
    sys.path.insert(0, os.path.join(_HERE, ".."))
    import jax
    import jax.numpy as jnp
    import numpy as np

    from landscape import data

    machine = rep.start_run(args.threads)
    cfg = SETTINGS["quick" if args.quick else "full"]
    train, _ = data.mnist1d(jax.random.key(0))
    train = jax.tree.map(jnp.asarray, train)
    fns = {OURS: build("shift", train), PEER: build("lax", train)}
    measured = ["hvp_batched", "train_100_steps", "train_run_steps", "grad_top_level"]
    if cfg["eigsh"]:
        measured[1:1] = ["eigsh_top5_compile", "eigsh_top5_run"]
    res = {"mode": "quick" if args.quick else "full", "repeats": cfg["repeats"],
           "machine": machine, "comparisons": {}, "ratios_lax_over_shift": {}}
    for key in measured:
        print(f"timing {key}", file=sys.stderr, flush=True)
        c = rep.compare(fns[OURS][key], {PEER: fns[PEER][key]}, ours_name=OURS,
                        repeats=cfg["repeats"])
        res["comparisons"][key] = c
        res["ratios_lax_over_shift"][key] = c.ratio(PEER)
    if cfg["eigsh"]:
        comp, run = res["comparisons"]["eigsh_top5_compile"], res["comparisons"]["eigsh_top5_run"]
        total = {n: [a + b for a, b in zip(comp.times[n], run.times[n], strict=True)]
                 for n in (OURS, PEER)}
        res["eigsh_top5_first_call_seconds"] = total
        res["ratios_lax_over_shift"]["eigsh_top5_first_call"] = rep.Ratio(
            f"{PEER} compile + run", f"{OURS} compile + run",
            tuple(a / b for a, b in zip(total[PEER], total[OURS], strict=True)))
        vals = {n: np.asarray(fns[n]["eigsh_top5_run"]().eigenvalues, np.float64)
                for n in (OURS, PEER)}
        res["eigenvalues"] = {n: v.tolist() for n, v in vals.items()}
        tol = 1e-9 if jax.config.jax_enable_x64 else 1e-4
        np.testing.assert_allclose(vals[OURS], vals[PEER], rtol=tol)  # the same function
    rep.finish_machine_info(machine)
    rep.write_json(res, args.out)
    print(markdown(res))
    print("wrote", os.path.abspath(args.out))
    return res


def markdown(res) -> str:
    """Header (threads, load before/after) and the table of median times and ratios."""
    rows = []
    for key, label in ROWS:
        if key not in res["ratios_lax_over_shift"]:
            continue
        if key in res["comparisons"]:
            med = res["comparisons"][key].medians
            lax_t, shift_t = med[PEER], med[OURS]
        else:  # the per-round sums of compilation and run
            tot = res["eigsh_top5_first_call_seconds"]
            lax_t, shift_t = statistics.median(tot[PEER]), statistics.median(tot[OURS])
        rows.append([label, lax_t, shift_t, res["ratios_lax_over_shift"][key]])
    notes = [f"note: {n} compiled {k} time(s) during the timed rounds of {key}"
             for key, c in res["comparisons"].items() if key != "eigsh_top5_compile"
             for n, k in c.compiles.items() if k]
    return "\n".join([
        rep.header(res["machine"], f"conv_impl ({res['mode']} mode)"), "",
        f"CNN1D on MNIST-1D (4000 examples). {res['repeats']} alternating rounds after a "
        "warm-up; ratio = lax.conv time / ShiftConv time per round: median (min-max) and "
        "verdict for ShiftConv (a range including 1 is a tie).", "",
        rep.table(["measurement", "lax.conv (s, median)", "ShiftConv (s, median)",
                   "lax.conv / ShiftConv"], rows), *notes])


if __name__ == "__main__":
    main()

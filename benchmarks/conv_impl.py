"""ShiftConv against the library convolution (lax.conv) for the CNN1D on MNIST-1D, on CPU.

Both implementations compute the same function of the same parameters (``landscape.models.conv``);
this measures what the choice costs in the loops the library runs:

* one product of the dataset Hessian (4000 examples) in batches of 500, i.e. a ``lax.scan`` body;
* the top-5 Hessian eigenpairs by ``spectral.eigsh`` (one full batch, Lanczos ``while_loop``);
* 100 Adam steps of batch 128 inside one ``fori_loop``;
* one gradient at the top level of a program (no loop), the case where lax.conv is faster.

The eigenvalues of the two models must agree (asserted). Writes ``bench_results/conv_impl.json``
and prints a markdown table. ``--quick``: fewer repeats and no eigsh.
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
    p.add_argument("--quick", action="store_true", help="fewer repeats, no eigsh")
    p.add_argument("--out", default=os.path.join(_HERE, "..", "bench_results", "conv_impl.json"))
    return p.parse_args(argv)


def bench(impl: str, train, quick: bool) -> dict:
    """Timings (seconds) for one ``conv_impl``, and the top-5 eigenvalues unless ``quick``."""
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from landscape import curvature, losses, models, spectral
    from landscape import nnx as lnnx

    repeats = 2 if quick else 5
    model = models.CNN1D(10, conv_impl=impl, rngs=nnx.Rngs(0))
    loss_fn, params, _ = lnnx.loss_fn(model, losses.softmax_cross_entropy, mode="eval")
    flat = jax.flatten_util.ravel_pytree(params)[0]
    v = jax.random.normal(jax.random.key(1), flat.shape, flat.dtype)
    op = curvature.hessian(loss_fn, params, train, batch_size=500)
    mv = jax.jit(lambda op, v: op.matvec(v))
    out = {"hvp_batched_s": median_time(lambda: jax.block_until_ready(mv(op, v)), repeats)[0]}
    grad = jax.jit(jax.grad(loss_fn))
    out["grad_top_level_s"] = median_time(
        lambda: jax.block_until_ready(grad(params, train)), repeats)[0]
    opt = optax.adam(1e-3)
    n = train["y"].shape[0]

    def chunk(p):
        def body(i, carry):
            p, s = carry
            idx = (jnp.arange(128) + i * 128) % n
            g = jax.grad(loss_fn)(p, jax.tree.map(lambda a: a[idx], train))
            upd, s = opt.update(g, s, p)
            return optax.apply_updates(p, upd), s
        return jax.lax.fori_loop(0, 100, body, (p, opt.init(p)))[0]

    chunk = jax.jit(chunk)
    out["train_100_steps_s"] = median_time(
        lambda: jax.block_until_ready(chunk(params)), max(repeats - 2, 1))[0]
    if not quick:
        full = curvature.hessian(loss_fn, params, train, batch_size=n)
        t0 = time.perf_counter()
        r = spectral.eigsh(full, k=5, key=jax.random.key(2))
        jax.block_until_ready(r.eigenvalues)
        out["eigsh_top5_s"] = time.perf_counter() - t0  # includes compilation, as a user sees it
        out["eigenvalues"] = np.asarray(r.eigenvalues, np.float64).tolist()
    return out


def main(argv=None):
    args = _parse(argv)
    sys.path.insert(0, os.path.join(_HERE, ".."))
    import jax
    import jax.numpy as jnp
    import numpy as np

    from landscape import data

    train, _ = data.mnist1d(jax.random.key(0))
    train = jax.tree.map(jnp.asarray, train)
    res = {impl: bench(impl, train, args.quick) for impl in ("lax", "shift")}
    if not args.quick:
        a, b = (np.asarray(res[i]["eigenvalues"]) for i in ("lax", "shift"))
        tol = 1e-9 if jax.config.jax_enable_x64 else 1e-4
        np.testing.assert_allclose(b, a, rtol=tol)  # the same function: the same spectrum
    res["machine"] = {"cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
                      "jax": jax.__version__, "backend": jax.default_backend(),
                      "x64": bool(jax.config.jax_enable_x64)}
    print("| CNN1D on MNIST-1D (4000 examples) | lax.conv (s) | ShiftConv (s) | lax / shift |")
    print("|---|---|---|---|")
    for key, label in (("hvp_batched_s", "dataset HVP, batches of 500 (scan)"),
                       ("eigsh_top5_s", "top-5 Hessian eigenpairs (eigsh, with compile)"),
                       ("train_100_steps_s", "100 Adam steps in one fori_loop"),
                       ("grad_top_level_s", "one gradient, top level (no loop)")):
        if key in res["lax"]:
            lax_t, shift_t = res["lax"][key], res["shift"][key]
            print(f"| {label} | {lax_t:.3f} | {shift_t:.3f} | {lax_t / shift_t:.2f}x |")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    print("wrote", os.path.abspath(args.out))


if __name__ == "__main__":
    main()

"""Time landscape's curvature routines on whatever accelerator JAX sees; one JSON line out.

Usage (a machine with a CUDA build of jax: ``pip install -e . "jax[cuda12]"``)::

    python benchmarks/gpu.py                          # ResNet-20 and the transformer, float32
    python benchmarks/gpu.py --compute-dtype bfloat16 # the same with bf16 forward/backward passes
    python benchmarks/gpu.py --small                  # seconds on a CPU (what the tests run)

Two workloads, both with the mean softmax cross-entropy of an untrained network in eval mode:

* ``resnet20``: ``landscape.models.ResNet20`` (BatchNorm, projection shortcuts; 272,474
  parameters for 3 input channels) on CIFAR-sized random inputs ``(1024, 32, 32, 3)`` with
  random labels, one Hessian batch of 1024 (PyHessian's setting is 200), ``batch_size=1024``.
* ``transformer``: ``landscape.models.Transformer`` (d_model 128, 5 layers, 4 heads, context
  64, vocabulary 97 as the character corpus ``landscape.data.text``; 1,022,080 parameters) on
  256 random token windows (uniform ids: timing needs no text, and building the corpus takes
  seconds), next-token loss, ``batch_size=256``.

For each: one Hessian-vector product over the dataset (``curvature.hessian(...).matvec``),
the top-5 eigenpairs (``spectral.eigsh(k=5)``, default tolerance), the trace by Hutch++ with
30 products, and an SLQ density (4 probes x 40 Lanczos steps). Every routine is called once to
compile (not timed), then ``--repeats`` times (default 3) with the same inputs; the median
seconds are reported. ``--small`` shrinks everything (ResNet-20 of base width 4 on 8x8 inputs,
a one-layer transformer, fewer products) so that a CPU runs it in seconds.

Output: exactly one line on stdout, a JSON object with ``device_kind``, ``platform``,
``device_count``, ``jax_version``, ``x64``, ``compute_dtype``, ``small`` and, per workload,
``params``, ``examples``, ``batch_size``, ``seconds`` (``hvp``, ``eigsh_top5``, ``trace_hutchpp``,
``density_slq``: medians), ``matvecs`` per routine and the values found (top-5 eigenvalues,
trace estimate with its standard error), so runs on different machines can be compared.
Progress goes to stderr. The BatchNorm statistics are cast with the parameters, so with
``--compute-dtype bfloat16`` the whole pass is in bfloat16.
"""

from __future__ import annotations

import argparse
import json
import sys

import _report as rep  # the benchmarks folder is on sys.path when this script runs

#: Sizes of the full run and of ``--small``. ``resnet``: examples, batch_size, image side,
#: channels, base width; ``transformer``: windows, batch_size, context, d_model, layers, heads.
SIZES = {
    "full": {"resnet": dict(n=1024, batch=1024, side=32, channels=3, width=16),
             "transformer": dict(n=256, batch=256, seq_len=64, d_model=128, layers=5, heads=4),
             "trace_matvecs": 30, "density": (4, 40), "k": 5},
    "small": {"resnet": dict(n=8, batch=4, side=8, channels=3, width=2, conv_impl="lax"),
              "transformer": dict(n=8, batch=4, seq_len=8, d_model=8, layers=1, heads=2),
              "trace_matvecs": 6, "density": (1, 6), "k": 5},
}


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="tiny sizes: seconds on a CPU")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed calls per routine (median reported; default 3, 1 with --small)")
    p.add_argument("--compute-dtype", default=None, choices=("bfloat16", "float16", "float32"),
                   help="mixed precision: dtype of each batch's forward/backward pass")
    p.add_argument("--models", default="resnet20,transformer",
                   help="comma-separated subset of resnet20,transformer")
    return p.parse_args(argv)


def _cast_like(tree, params):
    """``tree``'s floating leaves in the dtype of ``params`` (BatchNorm statistics follow the
    parameters into a mixed-precision pass)."""
    import jax
    import jax.numpy as jnp

    dt = jnp.result_type(*jax.tree.leaves(params))
    return jax.tree.map(lambda s: s.astype(dt) if jnp.issubdtype(s.dtype, jnp.floating) else s,
                        tree)


def resnet_problem(key, *, n, side, channels, width, conv_impl="auto", images=None,
                   labels=None, **_):
    """``(loss_fn, params, dataset)`` for ResNet-20 (eval-mode BatchNorm) with cross-entropy.

    ``images``/``labels`` default to random ``(n, side, side, channels)`` normal inputs and
    uniform labels in 0..9. ``conv_impl``: as in ``models.ResNet20`` ("auto": ShiftConv on a
    CPU, ``lax.conv`` elsewhere); ``--small`` uses "lax", which compiles faster."""
    import jax

    from landscape import losses, models
    from landscape.nnx import functional

    k_model, k_x, k_y = jax.random.split(key, 3)
    fm = functional(models.ResNet20(10, in_channels=channels, base_width=width, key=k_model,
                                    conv_impl=conv_impl))
    if images is None:
        images = jax.random.normal(k_x, (n, side, side, channels))
        labels = jax.random.randint(k_y, (n,), 0, 10)
    ce = losses.get("cross_entropy")

    def loss_fn(params, batch):
        return ce(fm.apply(params, batch["x"], state=_cast_like(fm.state, params)), batch["y"])

    return loss_fn, fm.params, {"x": images, "y": labels}


def transformer_problem(key, *, n, seq_len, d_model, layers, heads, tokens=None, **_):
    """``(loss_fn, params, dataset)`` for the decoder-only transformer, next-token loss on
    ``{"tokens": (n, seq_len + 1)}``: ``tokens`` if given (e.g. windows of
    ``landscape.data.text.stdlib_text``), else uniform random ids in ``0..VOCAB_SIZE-1``."""
    import jax

    from landscape import losses, models
    from landscape.data import text
    from landscape.nnx import functional

    k_model, k_data = jax.random.split(key)
    fm = functional(models.Transformer(text.VOCAB_SIZE, d_model, layers, heads, seq_len,
                                       key=k_model))
    if tokens is None:
        tokens = jax.random.randint(k_data, (n, seq_len + 1), 0, text.VOCAB_SIZE, "int32")
    ce = losses.get("cross_entropy")

    def loss_fn(params, batch):
        t = batch["tokens"]
        return ce(fm.apply(params, t[:, :-1]), t[:, 1:])

    return loss_fn, fm.params, {"tokens": tokens}


def _first_call(seconds: float) -> None:
    print(f"    first call (compile + run) {seconds:.2f} s", file=sys.stderr, flush=True)


def time_workload(loss_fn, params, dataset, *, batch_size, k, trace_matvecs, density,
                  repeats, compute_dtype=None):
    """Median seconds of HVP, top-k eigsh, Hutch++ trace and SLQ density on one Hessian."""
    import jax
    import numpy as np

    from landscape import curvature, spectral

    op = curvature.hessian(loss_fn, params, dataset, batch_size=batch_size,
                           compute_dtype=compute_dtype)
    key = jax.random.key(7)
    v = jax.random.normal(key, (op.dim,), op.dtype)
    probes, steps = density
    routines = {
        "hvp": lambda: op.matvec(v),
        "eigsh_top5": lambda: spectral.eigsh(op, k=k, key=key),
        "trace_hutchpp": lambda: spectral.trace(op, key=key, num_matvecs=trace_matvecs,
                                                method="hutch++"),
        "density_slq": lambda: spectral.density(op, key=key, num_probes=probes,
                                                num_steps=steps),
    }
    seconds, outs = {}, {}
    for name, fn in routines.items():
        print(f"  {name}", file=sys.stderr, flush=True)
        seconds[name], outs[name] = rep.median_seconds(fn, repeats, log=_first_call)
    eig, tr = outs["eigsh_top5"], outs["trace_hutchpp"]
    return {
        "params": int(op.dim), "examples": int(op.num_examples), "batch_size": int(batch_size),
        "seconds": seconds,
        "matvecs": {"hvp": 1, "eigsh_top5": int(eig.num_matvecs),
                    "trace_hutchpp": int(tr.num_matvecs), "density_slq": probes * steps},
        "top_eigenvalues": np.asarray(eig.eigenvalues, np.float64).tolist(),
        "eigsh_converged": int(np.sum(np.asarray(eig.converged))),
        "trace": float(tr.estimate), "trace_stderr": float(tr.stderr),
    }


def main(argv=None):
    args = _parse(argv)
    import jax
    import jax.numpy as jnp

    size = SIZES["small" if args.small else "full"]
    repeats = args.repeats if args.repeats is not None else (1 if args.small else 3)
    if repeats < 1:
        raise SystemExit(f"--repeats must be >= 1; got {repeats}")
    compute = None if args.compute_dtype is None else jnp.dtype(args.compute_dtype)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(names) - {"resnet20", "transformer"}
    if unknown or not names:
        raise SystemExit(f"--models must list resnet20 and/or transformer; got {args.models!r}")
    dev = jax.devices()[0]
    out = {"device_kind": dev.device_kind, "platform": dev.platform,
           "device_count": jax.device_count(), "jax_version": jax.__version__,
           "x64": bool(jax.config.jax_enable_x64), "compute_dtype": args.compute_dtype,
           "small": bool(args.small), "repeats": repeats, "workloads": {}}
    common = dict(k=size["k"], trace_matvecs=size["trace_matvecs"], density=size["density"],
                  repeats=repeats, compute_dtype=compute)
    for name in names:
        print(f"{name} on {dev.device_kind}", file=sys.stderr, flush=True)
        cfg = size["resnet" if name == "resnet20" else "transformer"]
        build = resnet_problem if name == "resnet20" else transformer_problem
        lf, params, data = build(jax.random.key(0), **cfg)
        out["workloads"][name] = time_workload(lf, params, data, batch_size=cfg["batch"],
                                               **common)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()

"""Optimizer state memory and step time: landscape.optim against optax.adam and the references.

Usage::

    python benchmarks/optimizers.py [--quick] [--out PATH] [--threads N]

Models: the project's decoder-only ``models.Transformer(64, 64, 2, 4, 32)`` (109,824 parameters;
every matrix is 2-D, as the low-rank methods need) and the CNN of ``curvature_vs_peers.py``
(21,546 parameters, ``_digits_models.py``), float32.

1. **Optimizer-state memory**: the bytes of every array of ``tx.init(params)`` (from
   ``jax.eval_shape``, so nothing is allocated), against ``optax.adam``'s. Low-rank and
   subspace methods at rank 8 / density 0.25, M-FAC with a window of 32 gradients.
2. **Step time against optax.adam**: one jitted ``update`` + ``apply_updates`` on the
   transformer's params with a fixed gradient (the optimizer's own cost, not the model's),
   timed alternately with ``optax.adam``'s step; reported as time / adam's time per round.
3. **Step time against the reference PyTorch step** on the same shapes and float32 values:
   ``optimizer.step()`` with the same fixed gradients, for the references that run on a CPU
   without stubs beyond what the tests use (Adam, diffGrad, SPAM, SGD-SaI, Fira); reported as
   reference time / ours per round (above 1: ours faster).

Every time comes from ``_report.compare`` (a warm-up round, then alternating rounds; median
(min-max); a range including 1 is a tie). ``--threads N`` (default 1) is applied before NumPy,
JAX and PyTorch are imported. Written to ``bench_results/optimizers.json`` with the machine
record. ``--quick``: 2 rounds, only checks that the script runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)

import _report as rep  # noqa: E402

RANK, DENSITY, WINDOW = 8, 0.25, 32


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 rounds; a check that it runs")
    p.add_argument("--out", default=os.path.join(_HERE, "..", "bench_results", "optimizers.json"))
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def optimizers() -> dict:
    """``name -> GradientTransformation`` at lr 1e-3 (shape-fixing sizes as in the docstring)."""
    import jax
    import optax

    from landscape import optim

    return {
        "optax.adam": optax.adam(1e-3),
        "optax.sgd (momentum 0.9)": optax.sgd(1e-3, momentum=0.9),
        "adabelief (optax)": optim.adabelief(1e-3),
        "noisy_sgd (optax)": optim.noisy_sgd(1e-3),
        "diffgrad": optim.diffgrad(1e-3),
        "spam": optim.spam(1e-3),
        "sgd_sai": optim.sgd_sai(1e-3),
        "adagrad_norm": optim.adagrad_norm(1e-3),
        f"fira (rank {RANK})": optim.fira(1e-3, rank=RANK),
        f"frugal (svd, density {DENSITY})": optim.frugal(1e-3, density=DENSITY,
                                                         key=jax.random.key(0)),
        f"dct_adamw (rank {RANK})": optim.dct_adamw(1e-3, rank=RANK),
        f"optax.contrib.galore (rank {RANK})": _galore(),
        f"mfac (window {WINDOW})": optim.mfac(1e-3, num_grads=WINDOW),
    }


def _galore():
    import optax

    galore = getattr(getattr(optax, "contrib", None), "galore", None)
    return None if galore is None else galore(1e-3, rank=RANK)


def models() -> dict:
    """``name -> float32 params`` of the two models."""
    import _digits_models as dm
    import jax

    from landscape import models
    from landscape.nnx import loss_fn

    net = models.Transformer(64, 64, 2, 4, 32, key=jax.random.key(0))
    _, tparams, _ = loss_fn(net, "cross_entropy", mode="eval")
    cparams = dm.MODELS["cnn"][0](jax.random.key(0))
    return {"transformer": tparams, "cnn": cparams}


def nbytes(tree) -> int:
    import jax
    import numpy as np

    def size(x):  # a typed PRNG key (noisy_sgd, frugal) holds two uint32 words per key
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return int(np.prod(x.shape, dtype=np.int64)) * 8
        return int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize

    return int(sum(size(x) for x in jax.tree.leaves(tree) if hasattr(x, "shape")))


def bench_memory(log) -> dict:
    import jax

    out = {}
    for mname, params in models().items():
        rows = {}
        for name, tx in optimizers().items():
            if tx is None:
                continue
            try:
                rows[name] = nbytes(jax.eval_shape(tx.init, params))
            except Exception as exc:  # a method that does not apply to this model
                rows[name] = f"n/a ({type(exc).__name__}: {str(exc)[:80]})"
        adam = rows["optax.adam"]
        out[mname] = {"params_bytes": nbytes(params), "state_bytes": rows,
                      "over_adam": {k: v / adam for k, v in rows.items() if isinstance(v, int)}}
        log(f"{mname}: " + "; ".join(f"{k} {v}" for k, v in rows.items()))
    return out


def _jax_step(tx, params):
    import jax
    import optax

    grads = jax.tree.map(lambda p: 0.01 * jax.random.normal(jax.random.key(1), p.shape,
                                                             p.dtype), params)

    @jax.jit
    def step(p, s):
        u, s = tx.update(grads, s, p)
        return optax.apply_updates(p, u), s

    state = {"p": params, "s": tx.init(params)}

    def run():
        state["p"], state["s"] = step(state["p"], state["s"])
        return state["p"]

    return run


def bench_step_vs_adam(cfg, log) -> dict:
    params = models()["transformer"]
    txs = {k: v for k, v in optimizers().items() if v is not None}
    adam = _jax_step(txs.pop("optax.adam"), params)
    peers = {name: _jax_step(tx, params) for name, tx in txs.items()}
    c = rep.compare(adam, peers, ours_name="optax.adam", repeats=cfg["repeats"],
                    number=cfg["number"])
    out = {"comparison": c, "time_over_adam": {}}
    for name in peers:
        out["time_over_adam"][name] = rep.Ratio(name, "optax.adam", tuple(
            a / b for a, b in zip(c.times[name], c.times["optax.adam"], strict=True)))
    log("step time / adam: " + "; ".join(f"{k} {v.text(False)}"
                                          for k, v in out["time_over_adam"].items()))
    return out


def _fira_module():
    """``fira.fira_adamw`` behind the tests' stub of ``transformers.utils.versions``."""
    import importlib

    try:
        import transformers.utils.versions  # noqa: F401
    except ImportError:
        stub = types.ModuleType("transformers.utils.versions")
        stub.require_version = lambda *a, **k: None
        for name in ("transformers", "transformers.utils"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["transformers.utils.versions"] = stub
    return importlib.import_module("fira.fira_adamw")


def references() -> dict:
    """``name -> (ours, make_torch_optimizer(list_of_params))`` at the same hyperparameters."""
    import optax
    import sgd_sai
    import torch
    import torch_optimizer
    from pytorch_optimizer.optimizer.spam import SPAM

    from landscape import optim

    lr = 1e-3

    def fira_groups(ps):
        return [{"params": [p for p in ps if p.dim() != 2]},
                {"params": [p for p in ps if p.dim() == 2], "rank": RANK,
                 "update_proj_gap": 200, "alpha": 1.0, "proj_type": "std"}]

    return {
        "adam": (optax.adam(lr), lambda ps: torch.optim.Adam(ps, lr=lr)),
        "diffgrad": (optim.diffgrad(lr), lambda ps: torch_optimizer.DiffGrad(ps, lr=lr)),
        "spam": (optim.spam(lr), lambda ps: SPAM(ps, lr=lr)),
        "sgd_sai": (optim.sgd_sai(lr), lambda ps: sgd_sai.SGD_sai(ps, lr=lr, momentum=0.9)),
        f"fira (rank {RANK})": (optim.fira(lr, rank=RANK), lambda ps: _fira_module().AdamW(
            fira_groups(ps), lr=lr, no_deprecation_warning=True)),
    }


def _torch_step(make, params):
    import jax
    import numpy as np
    import torch

    leaves = jax.tree.leaves(params)
    ps = [torch.nn.Parameter(torch.tensor(np.asarray(x))) for x in leaves]
    rng = np.random.default_rng(1)
    for p in ps:
        p.grad = torch.tensor(0.01 * rng.normal(size=tuple(p.shape)), dtype=p.dtype)
    opt = make(ps)

    def run():
        opt.step()
        return None

    return run


def bench_step_vs_reference(cfg, log) -> dict:
    params = models()["transformer"]
    out = {}
    for name, (tx, make) in references().items():
        c = rep.compare(_jax_step(tx, params), {"reference": _torch_step(make, params)},
                        ours_name="landscape", repeats=cfg["repeats"], number=cfg["number"])
        out[name] = {"comparison": c, "reference_over_ours": c.ratio("reference", "landscape")}
        log(f"{name}: reference / ours {out[name]['reference_over_ours'].text(False)}")
    return out


def markdown(res) -> str:
    lines = [rep.header(res["machine"], f"optimizers ({res['mode']} mode)"), ""]
    names = list(next(iter(res["memory"].values()))["state_bytes"])
    rows = []
    for name in names:
        row = [name]
        for m in res["memory"].values():
            v = m["state_bytes"][name]
            row += [v / 2**20 if isinstance(v, int) else "n/a",
                    m["over_adam"].get(name, "n/a")]
        rows.append(row)
    head = ["optimizer"]
    for mname, m in res["memory"].items():
        head += [f"{mname} state (MiB; params {m['params_bytes'] / 2**20:.2f})", "/ adam"]
    lines += ["### Optimizer-state memory", "", rep.table(head, rows), ""]
    rows = [[k, v.text(False)] for k, v in res["step_vs_adam"]["time_over_adam"].items()]
    t_adam = sorted(res["step_vs_adam"]["comparison"].times["optax.adam"])
    lines += ["### Step time on the transformer's params / optax.adam's "
              f"({t_adam[len(t_adam) // 2] * 1e3:.3f} ms; above 1: slower than adam)", "",
              rep.table(["optimizer", "time / adam"], rows), ""]
    rows = [[k, v["reference_over_ours"]] for k, v in res["step_vs_reference"].items()]
    lines += ["### Step time: reference PyTorch step / ours (above 1: ours faster)", "",
              rep.table(["optimizer", "reference / ours"], rows), ""]
    return "\n".join(lines)


SETTINGS = {"quick": {"repeats": 2, "number": 2}, "full": {"repeats": 7, "number": 20}}


def main(argv=None) -> dict:
    args = _parse(sys.argv[1:] if argv is None else argv)
    os.environ["JAX_ENABLE_X64"] = "0"
    if not rep.pinned():
        rep.pin_threads(args.threads)
    import jax
    import numpy  # noqa: F401
    import torch  # noqa: F401

    if jax.config.jax_enable_x64:
        raise RuntimeError("run this benchmark with JAX_ENABLE_X64 unset or 0 (float32)")
    machine = rep.start_run(args.threads)
    cfg = SETTINGS["quick" if args.quick else "full"]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    res = {"mode": "quick" if args.quick else "full", "settings": cfg, "machine": machine,
           "rank": RANK, "density": DENSITY, "mfac_window": WINDOW}
    res["memory"] = bench_memory(log)
    res["step_vs_adam"] = bench_step_vs_adam(cfg, log)
    res["step_vs_reference"] = bench_step_vs_reference(cfg, log)
    rep.finish_machine_info(machine)
    rep.write_json(res, args.out)
    print(markdown(res))
    log(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    return res


if __name__ == "__main__":
    main()

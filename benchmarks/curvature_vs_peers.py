"""Curvature benchmark: landscape (JAX) against PyHessian 0.1 and curvlinops 3.x (PyTorch).

Usage::

    python benchmarks/curvature_vs_peers.py [--quick] [--out PATH] [--threads N]

Same machine, one process, the same two models with the same weights in both frameworks
(an MLP and a CNN on 512 scikit-learn digits, mean cross-entropy; see ``_digits_models.py``
and ``_torch_models.py``). Before anything is timed the port is checked: losses, gradients and
Hessian-vector products agree across frameworks. Measured:

1. time per Hessian-vector product as a multiple of the same framework's gradient time;
2. top-5 eigenvalues: products, wall time, max relative error against a float64 reference
   (SciPy ``eigsh`` at tol 1e-12 on our float64 operator; for the MLP also dense ``eigh``);
3. trace: relative error against the dense trace at equal product budgets, over many seeds,
   and PyHessian's ``trace()`` with its own stopping rule;
4. spectral density: Wasserstein-1 distance of the SLQ measure to the dense spectrum.

Peers run in float32, as do we; the references are float64. PyHessian's ``density()`` needs
``torch.eig`` (removed in PyTorch 2); the harness supplies it from ``torch.linalg.eigh`` (see
``_peers.py``). Results go to ``bench_results/curvature_vs_peers.json`` and a markdown table
is printed. Threads: the process is pinned to ``--threads`` cores (``os.sched_setaffinity``,
which bounds XLA's CPU thread pool) and ``torch.set_num_threads`` is set to the same number.
"""

from __future__ import annotations

import argparse
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few seeds and repeats (about 2 min)")
    p.add_argument("--out", default=os.path.join(_HERE, "..", "bench_results",
                                                 "curvature_vs_peers.json"))
    p.add_argument("--threads", type=int, default=2, help="cores for both frameworks")
    p.add_argument("--models", default="mlp,cnn", help="comma-separated subset of mlp,cnn")
    return p.parse_args(argv)


def _pin_threads(n: int) -> None:
    """Restrict this process to ``n`` cores *before* jax and torch start their thread pools."""
    cores = sorted(os.sched_getaffinity(0))
    if n < len(cores):
        os.sched_setaffinity(0, cores[:n])


if __name__ == "__main__":
    _pin_threads(_parse(sys.argv[1:]).threads)
    sys.path.insert(0, _HERE)

import time  # noqa: E402
import warnings  # noqa: E402

import _digits_models as dm  # noqa: E402
import _peers as peers  # noqa: E402
import _report as rep  # noqa: E402
import _torch_models as tm  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse.linalg as sla  # noqa: E402
import scipy.stats  # noqa: E402
import torch  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from landscape import curvature, spectral  # noqa: E402

SETTINGS = {
    "full": dict(repeats=20, eig_seeds=3, trace_seeds=30, budgets=(30, 99, 300),
                 density_seeds=5, density_configs=((1, 100), (10, 80))),
    "quick": dict(repeats=5, eig_seeds=1, trace_seeds=5, budgets=(30, 99),
                  density_seeds=2, density_configs=((1, 100),)),
}


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


class Problem:
    """One model: data, float32 params, our operators (float32 and float64), torch twins."""

    def __init__(self, name: str):
        self.name = name
        self.data = dm.digits()
        self.params, self.train_loss = dm.trained_params(name, self.data)
        self.loss_fn = dm.make_loss(dm.MODELS[name][1])
        self.jdata = jax.tree.map(jnp.asarray, self.data)
        n = self.data["y"].shape[0]
        self.op = curvature.hessian(self.loss_fn, self.params, self.jdata, batch_size=n)
        self.op_shifted = None
        if name == "cnn":
            loss = dm.make_loss(dm.apply_cnn_shifted)
            self.op_shifted = curvature.hessian(loss, self.params, self.jdata, batch_size=n)
        self.flat, self.unravel = ravel_pytree(self.params)
        self.dim = int(self.flat.size)
        self.x, self.y = tm.torch_data(self.data)

    def torch_model(self):
        return tm.torch_model(self.name, self.params)

    def to_torch(self, v):
        return tm.jax_flat_to_torch_flat(self.name, self.params, v)

    def to_jax(self, v):
        return tm.torch_flat_to_jax_flat(self.name, self.params, v)

    def hvp64(self, vs: np.ndarray) -> np.ndarray:
        """Float64 Hessian products (columns of ``vs``), for references."""
        with jax.enable_x64(True):
            p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), self.params)
            d64 = {"x": jnp.asarray(self.data["x"], jnp.float64), "y": jnp.asarray(self.data["y"])}
            op = curvature.hessian(self.loss_fn, p64, d64, batch_size=self.data["y"].shape[0])
            return np.asarray(op.matmat(jnp.asarray(vs, jnp.float64)))


def check_port(pb: Problem) -> dict:
    """Loss, gradient and HVP agreement between the JAX model and its torch twin (float32)."""
    loss, g = jax.value_and_grad(pb.loss_fn)(pb.params, pb.jdata)
    model = pb.torch_model()
    tloss = torch.nn.functional.cross_entropy(model(pb.x), pb.y)
    tgrad = peers.torch_flat(torch.autograd.grad(tloss, list(model.parameters())))
    v = np.random.default_rng(0).standard_normal(pb.dim).astype(np.float32)
    ref = pb.hvp64(v[:, None])[:, 0]
    ours = np.asarray(pb.op.matvec(jnp.asarray(v)))
    H = peers.pyhessian_hessian(pb.torch_model(), pb.x, pb.y)
    ph = peers.torch_flat(peers.pyhessian_hvp(H, pb.to_torch(v)))
    cl = peers.curvlinops_hessian(pb.torch_model(), pb.x, pb.y)
    cv = (cl @ torch.as_tensor(pb.to_torch(v))).numpy()
    return {
        "loss_jax": float(loss), "loss_torch": tloss.item(),
        "loss_abs_diff": abs(float(loss) - tloss.item()),
        "grad_rel_diff": _rel(pb.to_torch(ravel_pytree(g)[0]), tgrad),
        "hvp_rel_err_vs_float64": {"ours": _rel(ours, ref), "pyhessian": _rel(pb.to_jax(ph), ref),
                                   "curvlinops": _rel(pb.to_jax(cv), ref)},
    }


def bench_hvp(pb: Problem, repeats: int) -> dict:
    """Median seconds per gradient and per HVP, in each framework, and their ratios."""
    v = jnp.asarray(np.random.default_rng(1).standard_normal(pb.dim), jnp.float32)
    grad = jax.jit(jax.grad(pb.loss_fn))
    t_jgrad, _ = rep.median_time(lambda: jax.block_until_ready(grad(pb.params, pb.jdata)), repeats)
    t_ours, _ = rep.median_time(lambda: jax.block_until_ready(pb.op.matvec(v)), repeats)
    model = pb.torch_model()
    tgrad = peers.torch_grad_fn(model, pb.x, pb.y)
    t_tgrad, _ = rep.median_time(tgrad, repeats)
    H = peers.pyhessian_hessian(pb.torch_model(), pb.x, pb.y)
    tv = peers.torch_split(model, pb.to_torch(np.asarray(v)))
    t_ph, _ = rep.median_time(lambda: peers.pyhessian_hvp(H, tv), repeats)
    Hd = peers.pyhessian_dataloader(pb.torch_model(), pb.x, pb.y)
    t_phd, _ = rep.median_time(lambda: Hd.dataloader_hv_product(tv), repeats)
    cl = peers.curvlinops_hessian(pb.torch_model(), pb.x, pb.y)
    tvec = torch.as_tensor(pb.to_torch(np.asarray(v)))
    t_cl, _ = rep.median_time(lambda: cl @ tvec, repeats)
    rows = {
        "ours (landscape.curvature.hessian matvec)": (t_ours, t_jgrad),
        "PyHessian (double backward, cached gradient graph)": (t_ph, t_tgrad),
        "PyHessian (dataloader mode: forward + 2 backwards)": (t_phd, t_tgrad),
        "curvlinops HessianLinearOperator @ v": (t_cl, t_tgrad),
    }
    return {"grad_seconds": {"jax": t_jgrad, "torch": t_tgrad},
            "hvp": {k: {"seconds": t, "ratio_to_own_grad": t / g} for k, (t, g) in rows.items()}}


def reference_top(pb: Problem, k: int = 5) -> dict:
    """Top-k eigenvalues in float64: SciPy eigsh (tol 1e-12) on our float64 operator."""
    A = sla.LinearOperator((pb.dim, pb.dim), matvec=lambda v: pb.hvp64(v.reshape(-1, 1))[:, 0],
                           matmat=pb.hvp64, dtype=np.float64)
    v0 = np.random.default_rng(123).standard_normal(pb.dim)
    vals = sla.eigsh(A, k=k, which="LA", tol=1e-12, ncv=40, v0=v0, return_eigenvectors=False)
    return {"eigsh_float64": np.sort(vals)[::-1]}


def dense_spectrum(pb: Problem) -> np.ndarray:
    """All eigenvalues of the float64 Hessian (dense; the MLP only)."""
    eye = np.eye(pb.dim)
    H = np.concatenate([pb.hvp64(eye[:, i : i + 256]) for i in range(0, pb.dim, 256)], axis=1)
    return np.linalg.eigvalsh(0.5 * (H + H.T))


def _top_err(vals, ref) -> float:
    vals = np.sort(np.asarray(vals, np.float64))[::-1][: len(ref)]
    return float(np.max(np.abs(vals - ref) / np.abs(ref)))


def _summarise(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {k: float(np.median([r[k] for r in runs])) for k in keys} | {
        "max_rel_err_worst": float(max(r["max_rel_err"] for r in runs)), "runs": runs}


def _ours_eigs(op, ref: np.ndarray, seeds: int) -> dict:
    """``spectral.eigsh(op, k=5)``, compiled ahead of time (compile time reported apart)."""
    fn = jax.jit(lambda op, key: spectral.eigsh(op, k=5, key=key))
    t0 = time.perf_counter()
    compiled = fn.lower(op, jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t0
    runs = []
    for s in range(seeds):
        t0 = time.perf_counter()
        r = jax.block_until_ready(compiled(op, jax.random.key(s)))
        runs.append({"matvecs": int(r.num_matvecs), "seconds": time.perf_counter() - t0,
                     "max_rel_err": _top_err(r.eigenvalues, ref),
                     "all_converged": float(np.all(r.converged))})
    return _summarise(runs) | {"compile_seconds": compile_s}


def bench_eigs(pb: Problem, ref: np.ndarray, seeds: int) -> dict:
    """Top-5 eigenvalues by each method: products, seconds, max relative error (median runs)."""
    # With lax.conv the CNN's products inside eigsh's while_loop are very slow on XLA:CPU
    # (see _digits_models._conv_shifted), so that row gets a single seed.
    conv_seeds = 1 if pb.op_shifted is not None else seeds
    out = {"ours spectral.eigsh (Lanczos, tol 1e-5)": _ours_eigs(pb.op, ref, conv_seeds)}
    if pb.op_shifted is not None:  # XLA:CPU convolutions-in-loops workaround, same function
        out["ours spectral.eigsh, convs as shifted matmuls (same CNN)"] = _ours_eigs(
            pb.op_shifted, ref, seeds)
    for tol in (1e-3, 1e-6):
        runs = []
        H = peers.pyhessian_hessian(pb.torch_model(), pb.x, pb.y)
        for s in range(seeds):
            torch.manual_seed(s)
            with peers.PyHessianCounter() as c:
                t0 = time.perf_counter()
                vals, _ = H.eigenvalues(top_n=5, tol=tol)
                dt = time.perf_counter() - t0
            runs.append({"matvecs": c.count, "seconds": dt, "max_rel_err": _top_err(vals, ref)})
        out[f"PyHessian eigenvalues(top_n=5, tol={tol:g})"] = _summarise(runs)
    S = peers.counting_scipy(peers.curvlinops_hessian(pb.torch_model(), pb.x, pb.y))
    runs = []
    for s in range(seeds):
        S.count = 0
        v0 = np.random.default_rng(s).standard_normal(pb.dim).astype(np.float32)
        t0 = time.perf_counter()
        vals = sla.eigsh(S, k=5, which="LA", v0=v0, return_eigenvectors=False)
        runs.append({"matvecs": S.count, "seconds": time.perf_counter() - t0,
                     "max_rel_err": _top_err(vals, ref)})
    out["curvlinops + scipy eigsh (ARPACK, float32)"] = _summarise(runs)
    return out


def _err_stats(errs) -> dict:
    e = np.asarray(errs)
    return {"median": float(np.median(e)), "p90": float(np.quantile(e, 0.9)),
            "max": float(e.max()), "n": int(e.size)}


def bench_trace(pb: Problem, exact: float, seeds: int, budgets) -> dict:
    """Relative trace error over seeds: ours at fixed budgets, PyHessian with its stop rule."""
    out = {}
    for method in ("hutchinson", "hutch++", "xtrace"):
        for m in budgets:
            errs, secs = [], []
            for s in range(seeds + 1):  # seed 0 is a warm-up (compilation), not scored
                t0 = time.perf_counter()
                t = jax.block_until_ready(
                    spectral.trace(pb.op, key=jax.random.key(1000 + s), num_matvecs=m,
                                   method=method))
                if s:
                    secs.append(time.perf_counter() - t0)
                    errs.append(abs(float(t.estimate) - exact) / abs(exact))
            out[f"ours {method}, {m} matvecs"] = _err_stats(errs) | {
                "matvecs": int(t.num_matvecs), "seconds_median": float(np.median(secs))}
    H = peers.pyhessian_hessian(pb.torch_model(), pb.x, pb.y)
    errs, counts, secs = [], [], []
    for s in range(seeds):
        torch.manual_seed(s)
        t0 = time.perf_counter()
        samples = H.trace()
        secs.append(time.perf_counter() - t0)
        counts.append(len(samples))
        errs.append(abs(float(np.mean(samples)) - exact) / abs(exact))
    out["PyHessian trace() (default stop rule)"] = _err_stats(errs) | {
        "matvecs": float(np.median(counts)), "matvecs_min": int(min(counts)),
        "matvecs_max": int(max(counts)), "seconds_median": float(np.median(secs))}
    return out


def _w1(nodes, weights, eigs) -> float:
    w = np.clip(np.asarray(weights, np.float64).ravel(), 0, None)
    return float(scipy.stats.wasserstein_distance(np.asarray(nodes, np.float64).ravel(), eigs,
                                                  u_weights=w))


def bench_density(pb: Problem, eigs: np.ndarray, seeds: int, configs) -> dict:
    """Wasserstein-1 distance of SLQ to the dense spectrum, ours vs PyHessian, equal budgets."""
    out = {}
    for probes, steps in configs:
        dists, secs = [], []
        for s in range(seeds + 1):  # seed 0 is a warm-up (compilation), not scored
            t0 = time.perf_counter()
            d = jax.block_until_ready(spectral.density(pb.op, key=jax.random.key(2000 + s),
                                                       num_probes=probes, num_steps=steps))
            if s:
                secs.append(time.perf_counter() - t0)
                dists.append(_w1(d.nodes, d.weights, eigs))
        out[f"ours SLQ, {probes} probe(s) x {steps} steps"] = _err_stats(dists) | {
            "matvecs": probes * steps, "seconds_median": float(np.median(secs))}
        H = peers.pyhessian_hessian(pb.torch_model(), pb.x, pb.y)
        dists, secs = [], []
        for s in range(seeds):
            torch.manual_seed(s)
            t0 = time.perf_counter()
            with peers.pyhessian_eig_patch():
                nodes, weights = H.density(iter=steps, n_v=probes)
            secs.append(time.perf_counter() - t0)
            dists.append(_w1(np.asarray(nodes), np.asarray(weights), eigs))
        out[f"PyHessian density, {probes} probe(s) x {steps} steps (torch.eig patched)"] = (
            _err_stats(dists) | {"matvecs": probes * steps,
                                 "seconds_median": float(np.median(secs))})
    return out


def bench_model(name: str, cfg: dict, log) -> dict:
    pb = Problem(name)
    r = {"num_params": pb.dim, "num_examples": int(pb.data["y"].shape[0]),
         "train_loss": pb.train_loss}
    log(f"[{name}] {pb.dim} parameters, train loss {pb.train_loss:.4f}; checking the port")
    r["port"] = check_port(pb)
    log(f"[{name}] timing gradients and HVPs")
    r["hvp"] = bench_hvp(pb, cfg["repeats"])
    log(f"[{name}] float64 reference eigenvalues")
    ref = reference_top(pb)
    if name == "mlp":
        eigs = dense_spectrum(pb)
        ref["dense_eigh_float64"] = eigs[::-1][:5]
        ref["eigsh_vs_dense_max_rel"] = _top_err(ref["eigsh_float64"], ref["dense_eigh_float64"])
        ref["dense_trace"] = float(eigs.sum())
        ref["dense_num_negative"] = int((eigs < 0).sum())
    r["reference"] = ref
    log(f"[{name}] top-5 eigenvalues")
    r["top5"] = bench_eigs(pb, ref["eigsh_float64"], cfg["eig_seeds"])
    if name == "mlp":
        log(f"[{name}] trace")
        r["trace"] = bench_trace(pb, ref["dense_trace"], cfg["trace_seeds"], cfg["budgets"])
        log(f"[{name}] density")
        r["density"] = bench_density(pb, eigs, cfg["density_seeds"], cfg["density_configs"])
    return r


def targets(models: dict) -> dict:
    """The benchmark's goals, evaluated on the measured numbers."""
    out = {}
    for name, r in models.items():
        hv = r["hvp"]["hvp"]["ours (landscape.curvature.hessian matvec)"]["ratio_to_own_grad"]
        t = {"hvp_over_grad": hv, "hvp_at_most_2x_grad": hv <= 2.0}
        for ours_name in [k for k in r["top5"] if k.startswith("ours")]:
            ours = r["top5"][ours_name]
            for key, peer in r["top5"].items():
                if key.startswith("ours"):
                    continue
                t[f"{ours_name} vs {key}"] = {
                    "matvec_ratio_peer_over_ours": peer["matvecs"] / ours["matvecs"],
                    "time_ratio_peer_over_ours": peer["seconds"] / ours["seconds"],
                    "ours_at_least_as_accurate": ours["max_rel_err"] <= peer["max_rel_err"]}
        out[name] = t
    return out


def markdown(res: dict) -> str:
    m = res["machine"]
    parts = [f"Machine: {m['cpu_model']}, {m['cores_available_to_process']} cores used of "
             f"{m['cpu_count']}, load average at start {m['load_average_at_start'][0]:.1f}. "
             f"jax {m['versions']['jax']}, torch {m['versions']['torch']}, PyHessian "
             f"{m['versions']['pyhessian']}, curvlinops {m['versions']['curvlinops-for-pytorch']}."]
    for name, r in res["models"].items():
        p = r["port"]
        parts.append(f"\n### {name} ({r['num_params']} parameters, {r['num_examples']} digits)\n"
                     f"Port check: |loss diff| {p['loss_abs_diff']:.1e}, gradient rel diff "
                     f"{p['grad_rel_diff']:.1e}; HVP rel error vs float64: " + ", ".join(
                         f"{k} {v:.1e}" for k, v in p["hvp_rel_err_vs_float64"].items()))
        g = r["hvp"]["grad_seconds"]
        rows = [[k, v["seconds"] * 1e3, v["ratio_to_own_grad"]] for k, v in r["hvp"]["hvp"].items()]
        parts.append(f"\nGradient: JAX {g['jax'] * 1e3:.3g} ms, torch {g['torch'] * 1e3:.3g} ms\n\n"
                     + rep.table(["HVP", "ms", "x own gradient"], rows))
        rows = [[k, v["matvecs"], v["seconds"], v["max_rel_err"], v["max_rel_err_worst"],
                 len(v["runs"])] for k, v in r["top5"].items()]
        parts.append("\nTop-5 eigenvalues (medians over seeds)\n\n" + rep.table(
            ["method", "matvecs", "seconds", "max rel err", "worst seed", "seeds"], rows))
        for sec, col in (("trace", "rel err"), ("density", "W1 to dense spectrum")):
            if sec in r:
                rows = [[k, v["matvecs"], v["median"], v["p90"], v["max"], v["seconds_median"]]
                        for k, v in r[sec].items()]
                parts.append(f"\n{sec.capitalize()} ({col}; over {next(iter(r[sec].values()))['n']}"
                             " seeds)\n\n" + rep.table(
                                 ["method", "matvecs", "median", "p90", "max", "seconds"], rows))
    return "\n".join(parts)


def main(argv=None) -> dict:
    args = _parse(sys.argv[1:] if argv is None else argv)
    # PyHessian builds its gradient graph with backward(create_graph=True); torch warns about
    # the resulting reference cycle on every construction. Expected here, so silenced.
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
    torch.set_num_threads(args.threads)
    cfg = SETTINGS["quick" if args.quick else "full"]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    res = {"machine": rep.machine_info(args.threads), "mode": "quick" if args.quick else "full",
           "settings": cfg, "models": {},
           "notes": ["PyHessian 0.1 density() calls torch.eig (removed in torch 2); the harness "
                     "provides torch.eig from torch.linalg.eigh during that call only.",
                     "All timed computations run in float32; references are float64."]}
    for name in args.models.split(","):
        res["models"][name] = bench_model(name, cfg, log)
    res["targets"] = targets(res["models"])
    res["machine"]["load_average_at_end"] = list(os.getloadavg())
    res["total_seconds"] = time.perf_counter() - t0
    rep.write_json(res, args.out)
    print(markdown(res))
    print(f"\nwrote {args.out} in {res['total_seconds']:.0f} s")
    return res


if __name__ == "__main__":
    main()

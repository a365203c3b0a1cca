"""Sharpness during training and the central flow, on the edge-of-stability model.

Usage::

    python benchmarks/sharpness_tracking.py [--quick] [--out PATH] [--threads N]

The model and data are those of the edge-of-stability experiments (``experiments._eos.setting``
with ``seed=0, num_examples=1000, width=32, depth=2, loss="mse", dataset="mnist1d"``: a tanh MLP
40-32-32-10, 2,698 parameters, square loss on 1,000 MNIST-1D examples), in float32, and the
trajectory is full-batch GD with ``optax.sgd(0.2)`` (threshold ``2 / eta = 10``; Cohen et al.
2021). Every contender sees the same weights.

1. **One sharpness estimate per step at the edge of stability.** GD runs ``train_steps`` steps
   (the sharpness is tracked every 10 steps to locate the crossing of ``2 / eta``), then
   ``params_probe`` records the parameters of ``stretch + 2`` consecutive steps. On the Hessians
   of the last ``stretch`` of them (full 1,000-example Hessian, ``curvature.hessian``):

   * ours, warm-started exactly as ``sharpness_probe(every=1)`` does it (its own probe function,
     called step after step: start from the eigenvectors of two steps back, floor measurement
     reused and re-measured every 16 calls, ``chunk=1``, ``tol=1e-4``), its state warmed on the
     two preceding steps;
   * ours cold: ``spectral.eigsh(k=1, which="LA")`` from a random start with default settings,
     and the same with ``tol=1e-4``;
   * SciPy ``eigsh`` (ARPACK, float32) on a ``LinearOperator`` whose ``matvec`` is our jitted
     Hessian-vector product, ``k=1, which="LA", tol=1e-4``, seeded random start;
   * power iteration in PyTorch as training-debugging tools run it (PyHessian's rule): a torch
     twin of the MLP (weights ported exactly; loss and HVP agreement with JAX is asserted
     first), HVP by double backward through one gradient graph per estimate, at most 100
     iterations, stop when the Rayleigh quotient changes by less than 1e-3 relative; on the
     full 1,000 examples and on a random minibatch of 128 per estimate.

   Products per estimate, and the relative error of each estimate against the top eigenvalue of
   the dense float64 Hessian at the same weights (forward-over-reverse ``jax.jvp`` of
   ``jax.grad`` on every basis vector, ``numpy.linalg.eigvalsh``; computed in a subprocess with
   ``JAX_ENABLE_X64=1`` from the same float32 weights and data). Seconds per estimate from one
   ``_report.compare`` of all contenders (each processes the whole stretch per call; call ``i``
   uses seed ``i`` for every contender).
2. **Overhead of tracking.** ``train.train`` of ``overhead_steps`` GD steps from the weights at
   the end of the stretch, without probes, with ``sharpness_probe(every=16)`` and with
   ``every=1``, alternating; the same chunk lengths in every run (``chunk_seconds`` so large
   that the chunk sizer only grows: 8, 32, 128, ...). Goal: at most 2x at every 16 steps.
3. **Central flow.** An untimed ``dynamics.central_flow(dt=0.5, k=2)`` from the weights after
   the stretch runs ``cf_settle`` units of time, until its top eigenvalue reaches ``2 / eta``
   (there the constraint binds and the complementarity problem has a nonzero solution). From
   its first point at the threshold, the same flow runs for ``cf_units`` (short, long) units
   (one unit = one optimizer step = two Euler steps); the time per unit is the per-round
   difference of the two over the difference of their lengths (it removes the fixed cost of a
   call: input checks, the cold first eigensolve), against the time per step of ``gd_steps``
   jitted GD steps (``train.run_steps``) from the same point. Then the semidefinite
   complementarity solve (``solve_psd_complementarity``, jitted, float32) against cvxpy +
   Clarabel (float64, on the host; the problem is built once per ``k`` with cvxpy parameters
   and re-solved, its fastest use) for ``k = 1, 2, 4``, on two sets of ``sdcp_instances``
   problems: ``alpha`` and ``B`` exactly as one Euler step of the GD central flow builds them
   at points of the settled flow at the threshold, and random ones (``alpha`` symmetric
   normal, ``B`` the Gram operator of ``k^2 + 2`` random symmetric matrices). Accuracy: the
   relative difference of the two solutions and each one's KKT violation in float64.

Every time comes from ``_report.compare`` (warm-up round, then alternating rounds; ratios are
per-round, median (min-max), a range including 1 is a tie). ``--threads N`` (default 1) is
applied before NumPy, SciPy, JAX and PyTorch are imported. Everything is written to
``bench_results/sharpness_tracking.json`` with the machine record. The script asserts only the
preconditions (port agreement), never a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)

import _report as rep  # noqa: E402  (imports nothing heavy: threads are pinned first)

SETTINGS = {
    "full": dict(repeats=5, train_steps=1000, stretch=20, overhead_steps=400,
                 cf_settle=80, cf_units=(8, 40), gd_steps=400, sdcp_instances=5, ks=(1, 2, 4)),
    "quick": dict(repeats=3, train_steps=1000, stretch=4, overhead_steps=64,
                  cf_settle=40, cf_units=(2, 6), gd_steps=64, sdcp_instances=2, ks=(1, 2, 4)),
}
SETTING = dict(seed=0, num_examples=1000, width=32, depth=2, loss="mse", dataset="mnist1d")
ETA = 0.2
TRACK_TOL = 1e-4            # sharpness_probe's default, and the tol given to ARPACK
POWER_ITERS, POWER_TOL, MINIBATCH = 100, 1e-3, 128
AT_THRESHOLD = 0.01         # a central-flow point with lambda_1 >= 2/eta - this is "at" it

OURS = "ours, warm (sharpness_probe)"
COLD = "ours, cold, eigsh defaults"
COLD4 = "ours, cold, eigsh tol=1e-4"
ARPACK = "SciPy eigsh (ARPACK), tol=1e-4"
POWER = "torch power iteration, full batch"
POWER_MB = f"torch power iteration, minibatch {MINIBATCH}"


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short stretch and runs, 3 rounds")
    p.add_argument("--out", default=os.path.join(_HERE, "..", "bench_results",
                                                 "sharpness_tracking.json"))
    p.add_argument("--threads", type=int, default=1,
                   help="threads for NumPy/SciPy's BLAS, XLA and PyTorch alike (default 1)")
    # internal: the float64 reference, run in a subprocess with JAX_ENABLE_X64=1
    p.add_argument("--reference", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------
# The float64 reference (subprocess)
# --------------------------------------------------------------------------------------------


def reference_main(path_in: str, path_out: str) -> None:
    """Top two eigenvalues of the dense float64 Hessian at each row of ``params`` (``(S, dim)``,
    float32 weights upcast exactly), on the float32 dataset upcast exactly. Needs x64."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from experiments import _eos
    from landscape.tree import ravel

    if not jax.config.jax_enable_x64:
        raise RuntimeError("the reference needs JAX_ENABLE_X64=1")
    inp = np.load(path_in)
    s = _eos.setting(**SETTING)
    _, unravel = ravel(s.params)
    data = {"x": jnp.asarray(inp["x"], jnp.float64), "y": jnp.asarray(inp["y"], jnp.float64)}
    grad = jax.grad(lambda w: s.loss_fn(unravel(w), data))

    @jax.jit
    def dense_hessian(w):  # column j = H e_j, forward-over-reverse, 128 columns at a time
        col = lambda e: jax.jvp(grad, (w,), (e,))[1]
        return jax.lax.map(col, jnp.eye(w.shape[0], dtype=w.dtype), batch_size=128)

    top, asym = [], []
    for w in inp["params"]:
        H = np.asarray(dense_hessian(jnp.asarray(w, jnp.float64)))
        asym.append(float(np.abs(H - H.T).max() / np.abs(H).max()))
        ev = np.linalg.eigvalsh(0.5 * (H + H.T))
        top.append(ev[[-1, -2, 0]])  # lambda_1, lambda_2, lambda_min
    np.savez(path_out, top=np.asarray(top), asymmetry=np.asarray(asym))


def float64_reference(params, data, threads: int) -> dict:
    """Run ``reference_main`` in a fresh process with x64 on; returns its arrays."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        fin, fout = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(fin, params=np.asarray(params, np.float32), x=np.asarray(data["x"]),
                 y=np.asarray(data["y"]))
        env = dict(os.environ, JAX_ENABLE_X64="1")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--threads", str(threads),
                        "--reference", fin, fout], check=True, env=env)
        out = np.load(fout)
        return {"top": out["top"], "asymmetry": out["asymmetry"]}


# --------------------------------------------------------------------------------------------
# The setting and the trajectory
# --------------------------------------------------------------------------------------------


class Setup:
    """The model, the data, the GD trajectory and the float32 operators every part shares."""

    def __init__(self, cfg, log):
        import jax
        import optax

        from experiments import _eos
        from landscape import curvature, dynamics, train
        from landscape.tree import ravel

        s = _eos.setting(**SETTING)
        self.loss_fn, self.params0, self.data = s.loss_fn, s.params, s.dataset
        self.n = int(self.data["x"].shape[0])
        self.flat0, self.unravel = ravel(s.params)
        self.ravel = lambda tree: ravel(tree)[0]
        self.dim = int(self.flat0.size)
        self.opt = optax.sgd(ETA)
        key = jax.random.key(0)
        t0 = time.perf_counter()
        pre = cfg["train_steps"] - 2
        run = train.train(self.loss_fn, s.params, self.opt, self.data, key=key, num_steps=pre,
                          probes={"S": dynamics.sharpness_probe(self.loss_fn, self.data,
                                                                every=10)}, progress=False)
        lam = run.trace["S"]["eigenvalues"][:, 0]
        steps = run.trace_steps["S"]
        above = steps[lam >= 2 / ETA]
        self.crossing = int(above[0]) if above.size else None
        self.sharpness_every_10 = {"steps": steps, "eigenvalues": lam}
        rec = train.train(self.loss_fn, run.params, self.opt, self.data, key=key,
                          num_steps=cfg["stretch"] + 2, probes={"w": dynamics.params_probe()},
                          progress=False)
        self.stretch_params = rec.trace["w"]          # (stretch + 2, dim) float32
        self.stretch_steps = pre + rec.trace_steps["w"]
        self.end_params = rec.params                  # after the stretch
        log(f"trajectory: {cfg['train_steps']} GD steps in {time.perf_counter() - t0:.1f} s, "
            f"first tracked sharpness >= 2/eta at step {self.crossing}")

        unravel, data, n, loss_fn = self.unravel, self.data, self.n, self.loss_fn
        self.hvp = jax.jit(lambda w, v: curvature.hessian(loss_fn, unravel(w), data, n,
                                                          check=False).matvec(v))
        self.loss = jax.jit(lambda w: loss_fn(unravel(w), data))


# --------------------------------------------------------------------------------------------
# Part 1: sharpness estimates along the stretch
# --------------------------------------------------------------------------------------------


class _Seeded:
    """A contender calling ``fn(seed)`` with seeds 0, 1, 2, ... (one per call; the warm-up takes
    seed 0) and keeping what each call returns. ``fn`` blocks until its work is done."""

    def __init__(self, fn):
        self.fn, self.records = fn, []

    def __call__(self) -> None:
        self.records.append(self.fn(len(self.records)))

    def scored(self, warmup: int = 1) -> list:
        return self.records[warmup:]


def ours_warm(st: Setup):
    """``sharpness_probe(every=1)``'s own function, called step after step along the stretch
    (state warmed on the two steps before it). Returns ``fn(seed) -> [(lambda, products,
    residual, status)]``."""
    import jax
    import jax.numpy as jnp

    from landscape import dynamics
    from landscape.train import ProbeContext

    pr = dynamics.sharpness_probe(st.loss_fn, st.data, every=1)

    @jax.jit
    def call(w, state, key, data):
        ctx = ProbeContext(step=jnp.zeros((), jnp.int32), params=st.unravel(w), opt_state=None,
                           model_state=None, batch=None, key=key, data=data, hyperparams={},
                           loss=None)
        return pr.fn(ctx, state)

    P = [jnp.asarray(w) for w in st.stretch_params]
    state = pr.init(st.unravel(P[0]), st.data)
    for j in (0, 1):
        _, state = call(P[j], state, jax.random.fold_in(jax.random.key(10**6), j), st.data)
    warm_state = jax.block_until_ready(state)

    def run(seed):
        base, s, out = jax.random.key(seed), warm_state, []
        for j, w in enumerate(P[2:]):
            rec, s = call(w, s, jax.random.fold_in(base, j), st.data)
            out.append((float(rec["eigenvalues"][0]), int(rec["num_matvecs"]),
                        float(rec["residuals"][0]), int(rec["status"])))
        return out

    return run


def ours_cold(st: Setup, tol):
    """``spectral.eigsh(hessian, k=1, which="LA")`` from a random start at each step."""
    import jax
    import jax.numpy as jnp

    from landscape import curvature, spectral

    @jax.jit
    def call(w, key, data):
        op = curvature.hessian(st.loss_fn, st.unravel(w), data, st.n, check=False)
        return spectral.eigsh(op, k=1, which="LA", key=key, tol=tol)

    P = [jnp.asarray(w) for w in st.stretch_params[2:]]

    def run(seed):
        out = []
        for j, w in enumerate(P):
            r = call(w, jax.random.fold_in(jax.random.key(seed), j), st.data)
            out.append((float(r.eigenvalues[0]), int(r.num_matvecs), float(r.residuals[0]),
                        int(r.status)))
        return out

    return run


def scipy_arpack(st: Setup):
    """SciPy ``eigsh`` (ARPACK, float32) on a ``LinearOperator`` over our jitted HVP."""
    import jax.numpy as jnp
    import numpy as np
    import scipy.sparse.linalg as sla

    P = [jnp.asarray(w) for w in st.stretch_params[2:]]

    def run(seed):
        out = []
        for j, w in enumerate(P):
            count = [0]

            def matvec(v, w=w, count=count):
                count[0] += 1
                return np.asarray(st.hvp(w, jnp.asarray(v.reshape(-1), jnp.float32)))

            op = sla.LinearOperator((st.dim, st.dim), matvec=matvec, dtype=np.float32)
            v0 = np.random.default_rng([seed, j]).standard_normal(st.dim).astype(np.float32)
            vals = sla.eigsh(op, k=1, which="LA", tol=TRACK_TOL, v0=v0,
                             return_eigenvectors=False)
            out.append((float(vals[-1]), count[0], float("nan"), 0))
        return out

    return run


# ---- the PyTorch twin --------------------------------------------------------------------


def torch_layers(unravel, flat):
    """JAX flat weights -> ``[W0, b0, W1, b1, W2, b2]`` in ``nn.Linear`` layout (W: out x in).

    The port is exact: a transpose per kernel, no arithmetic."""
    import numpy as np

    p = unravel(flat)
    out = []
    for layer in (p["hidden"][0], p["hidden"][1], p["head"]):
        out += [np.ascontiguousarray(np.asarray(layer["kernel"]).T), np.asarray(layer["bias"])]
    return out


def torch_permutation(unravel, dim):
    """``perm`` with ``torch_flat = jax_flat[perm]`` (torch order: W0, b0, W1, b1, W2, b2)."""
    import jax.numpy as jnp
    import numpy as np

    idx = torch_layers(unravel, jnp.arange(dim, dtype=jnp.float32))  # exact below 2^24
    return np.concatenate([a.ravel() for a in idx]).astype(np.int64)


def torch_mlp(layers, x):
    """The twin of ``models.MLP(40, 32, 2, 10, activation="tanh")``: two tanh layers, a head."""
    import torch.nn.functional as F

    W0, b0, W1, b1, W2, b2 = layers
    h = F.linear(x, W0, b0).tanh()
    h = F.linear(h, W1, b1).tanh()
    return F.linear(h, W2, b2)


def torch_loss(layers, x, y):
    """``losses.mse``: the mean over examples of ``0.5 ||f(x) - y||^2``."""
    d = torch_mlp(layers, x) - y
    return 0.5 * (d * d).sum(dim=1).mean()


def torch_tensors(arrays, dtype):
    import numpy as np
    import torch

    return [torch.tensor(np.array(a), dtype=dtype, requires_grad=True) for a in arrays]


def torch_hvp_fn(layers, x, y):
    """One gradient graph (``create_graph=True``); each product is a second backward pass."""
    import torch

    grads = torch.autograd.grad(torch_loss(layers, x, y), layers, create_graph=True)

    def hvp(vs):
        return torch.autograd.grad(grads, layers, grad_outputs=vs, retain_graph=True)

    return hvp


def power_iteration(layers, x, y, seed):
    """PyHessian's eigenvalue loop for the top eigenvalue: random normal start,
    ``v <- Hv / |Hv|``, Rayleigh quotient ``<Hv, v>``; stop after ``POWER_ITERS`` products or
    when it changes by less than ``POWER_TOL`` relative (``|new - old| / (|old| + 1e-6)``).
    Returns ``(value, products)``."""
    import torch

    hvp = torch_hvp_fn(layers, x, y)
    g = torch.Generator().manual_seed(int(seed))
    v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in layers]
    norm = torch.sqrt(sum((a * a).sum() for a in v))
    v = [a / norm for a in v]
    value, products = None, 0
    for _ in range(POWER_ITERS):
        Hv = hvp(v)
        products += 1
        new = float(sum((h * a).sum() for h, a in zip(Hv, v, strict=True)))
        norm = torch.sqrt(sum((h * h).sum() for h in Hv))
        v = [h.detach() / norm for h in Hv]
        done = value is not None and abs(new - value) / (abs(value) + 1e-6) < POWER_TOL
        value = new
        if done:
            break
    return value, products


def torch_power(st: Setup, minibatch: int | None):
    """Power iteration on the torch twin at each step, full batch or a random minibatch."""
    import numpy as np
    import torch

    layers = [torch_tensors(torch_layers(st.unravel, w), torch.float32)
              for w in st.stretch_params[2:]]
    x = torch.tensor(np.asarray(st.data["x"]), dtype=torch.float32)
    y = torch.tensor(np.asarray(st.data["y"]), dtype=torch.float32)

    def run(seed):
        out = []
        for j, ls in enumerate(layers):
            if minibatch is None:
                xb, yb = x, y
            else:
                idx = torch.as_tensor(np.random.default_rng([seed, j]).choice(
                    st.n, minibatch, replace=False))
                xb, yb = x[idx], y[idx]
            value, products = power_iteration(ls, xb, yb, seed * 1000 + j)
            out.append((value, products, float("nan"), 0))
        return out

    return run


def check_port(st: Setup) -> dict:
    """Loss and HVP of the torch twin (float32 and float64) against JAX float32, at the first
    step of the stretch; asserts agreement to float32 precision (the only assertion here)."""
    import jax.numpy as jnp
    import numpy as np
    import torch

    w = jnp.asarray(st.stretch_params[2])
    perm = torch_permutation(st.unravel, st.dim)
    v = np.random.default_rng(0).standard_normal(st.dim).astype(np.float32)
    hv_jax = np.asarray(st.hvp(w, jnp.asarray(v)), np.float64)[perm]
    loss_jax = float(st.loss(w))
    out = {}
    for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        ls = torch_tensors(torch_layers(st.unravel, w), dtype)
        x = torch.tensor(np.asarray(st.data["x"]), dtype=dtype)
        y = torch.tensor(np.asarray(st.data["y"]), dtype=dtype)
        vt = [torch.tensor(a, dtype=dtype) for a in np.split(v[perm], np.cumsum(
            [p.numel() for p in ls])[:-1])]
        vt = [a.reshape(p.shape) for a, p in zip(vt, ls, strict=True)]
        hv = np.concatenate([h.detach().numpy().ravel() for h in torch_hvp_fn(ls, x, y)(vt)])
        out[name] = {"loss": torch_loss(ls, x, y).detach().item(), "hvp": hv.astype(np.float64)}
    ref = out["float64"]
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
    res = {"loss_jax_float32": loss_jax, "loss_torch_float32": out["float32"]["loss"],
           "loss_torch_float64": ref["loss"],
           "loss_rel_diff_jax32_torch32": abs(loss_jax - out["float32"]["loss"]) / ref["loss"],
           "hvp_rel_diff_jax32_torch32": rel(hv_jax, out["float32"]["hvp"]),
           "hvp_rel_err_jax32_vs_torch64": rel(hv_jax, ref["hvp"]),
           "hvp_rel_err_torch32_vs_torch64": rel(out["float32"]["hvp"], ref["hvp"])}
    # float32 precision: ~1e-7 per operation, a few 1e-6 after sums over 1,000 examples
    assert res["loss_rel_diff_jax32_torch32"] < 1e-5, res
    for k in ("hvp_rel_diff_jax32_torch32", "hvp_rel_err_jax32_vs_torch64",
              "hvp_rel_err_torch32_vs_torch64"):
        assert res[k] < 1e-4, (k, res)
    return res


def _stats(values) -> dict:
    import numpy as np

    a = np.asarray(values, np.float64)
    return {"median": float(np.median(a)), "max": float(np.max(a)), "min": float(np.min(a))}


def bench_estimates(st: Setup, cfg, threads, log) -> dict:
    """Part 1: products, seconds and accuracy per sharpness estimate along the stretch."""
    import numpy as np

    port = check_port(st)
    log(f"port check: loss rel. diff {port['loss_rel_diff_jax32_torch32']:.1e}, HVP rel. diff "
        f"{port['hvp_rel_diff_jax32_torch32']:.1e}")
    t0 = time.perf_counter()
    ref = float64_reference(st.stretch_params[2:], st.data, threads)
    ref_seconds = time.perf_counter() - t0
    lam_ref = ref["top"][:, 0]
    log(f"float64 reference: {len(lam_ref)} dense Hessians in {ref_seconds:.0f} s; lambda_1 "
        f"{lam_ref.min():.4f}..{lam_ref.max():.4f}")
    contenders = {OURS: _Seeded(ours_warm(st)), COLD: _Seeded(ours_cold(st, None)),
                  COLD4: _Seeded(ours_cold(st, TRACK_TOL)), ARPACK: _Seeded(scipy_arpack(st)),
                  POWER: _Seeded(torch_power(st, None)), POWER_MB: _Seeded(torch_power(st,
                                                                                     MINIBATCH))}
    c = rep.compare(contenders[OURS], {k: v for k, v in contenders.items() if k != OURS},
                    ours_name=OURS, repeats=cfg["repeats"])
    S = len(lam_ref)
    methods = {}
    for name, con in contenders.items():
        recs = con.scored()
        vals = np.array([[r[0] for r in rnd] for rnd in recs])          # (rounds, S)
        prods = np.array([[r[1] for r in rnd] for rnd in recs])
        err = np.abs(vals - lam_ref[None]) / np.abs(lam_ref[None])
        m = {"products_per_estimate": _stats(prods), "rel_error": _stats(err),
             "seconds_per_estimate": c.medians[name] / S,
             "estimates": vals, "products": prods}
        resid = np.array([[r[2] for r in rnd] for rnd in recs])
        if np.all(np.isfinite(resid)):
            status = np.array([[r[3] for r in rnd] for rnd in recs])
            m["certificate_holds"] = bool(np.all(np.abs(vals - lam_ref[None]) <= resid))
            m["all_converged"] = bool(np.all(status == 0))
            m["residual_over_lambda"] = _stats(resid / np.abs(lam_ref[None]))
        if name != OURS:
            m["time_over_ours"] = c.ratio(name)
        methods[name] = m
    mb = np.asarray(methods[POWER_MB]["estimates"])
    full = np.asarray(methods[POWER]["estimates"])
    return {"port_check": port, "stretch_steps": st.stretch_steps[2:],
            "reference": {"lambda_1": lam_ref, "lambda_2": ref["top"][:, 1],
                          "lambda_min": ref["top"][:, 2],
                          "max_relative_asymmetry": float(ref["asymmetry"].max()),
                          "seconds": ref_seconds,
                          "method": "dense float64 Hessian (jax.jvp of jax.grad on every basis "
                                    "vector, JAX_ENABLE_X64=1, same float32 weights and data), "
                                    "numpy.linalg.eigvalsh"},
            "comparison": c, "methods": methods,
            "minibatch_vs_full_batch": {
                "rel_diff_to_torch_full_batch_estimate": _stats(np.abs(mb - full) / np.abs(full)),
                "rel_error_to_full_batch_lambda_1": methods[POWER_MB]["rel_error"]}}


# --------------------------------------------------------------------------------------------
# Part 2: overhead of tracking inside train.train
# --------------------------------------------------------------------------------------------


PLAIN, EVERY16, EVERY1 = "train, no probe", "train + sharpness_probe(every=16)", \
    "train + sharpness_probe(every=1)"


def bench_overhead(st: Setup, cfg) -> dict:
    import jax
    import numpy as np

    from landscape import dynamics, train

    probes = {PLAIN: None,
              EVERY16: {"S": dynamics.sharpness_probe(st.loss_fn, st.data, every=16)},
              EVERY1: {"S": dynamics.sharpness_probe(st.loss_fn, st.data, every=1)}}
    key, N = jax.random.key(1), cfg["overhead_steps"]
    last = {}

    def runner(name):
        def run():
            # chunk_seconds huge: chunks 8, 32, 128, ... in every run (the sizer only grows)
            r = train.train(st.loss_fn, st.end_params, st.opt, st.data, key=key, num_steps=N,
                            probes=probes[name], progress=False, chunk_seconds=1e9)
            last[name] = r
            return r.params
        return run

    c = rep.compare(runner(PLAIN), {EVERY16: runner(EVERY16), EVERY1: runner(EVERY1)},
                    ours_name=PLAIN, repeats=cfg["repeats"])
    out = {"num_steps": N, "comparison": c}
    for name, every in ((EVERY16, 16), (EVERY1, 1)):
        tr = last[name].trace["S"]
        ratio = c.ratio(name, PLAIN)
        m = len(tr["num_matvecs"])
        # the time of one estimate in plain GD steps, per round: (t_probe - t_plain) / m over
        # t_plain / N
        steps_per_estimate = rep.Ratio(f"one estimate ({name})", "one plain GD step", tuple(
            (a - b) / m / (b / N) for a, b in zip(c.times[name], c.times[PLAIN], strict=True)))
        out[name] = {"every": every, "time_over_plain": ratio,
                     "goal_at_most_2x": ratio.against(2.0) if every == 16 else None,
                     "estimate_in_plain_steps": steps_per_estimate,
                     "estimates": int(len(tr["num_matvecs"])),
                     "products_per_estimate": _stats(tr["num_matvecs"]),
                     "products_per_estimate_after_first": _stats(tr["num_matvecs"][1:])
                     if len(tr["num_matvecs"]) > 1 else None,
                     "sharpness": _stats(tr["eigenvalues"][:, 0]),
                     "all_converged": bool(np.all(tr["status"] == 0))}
    return out


# --------------------------------------------------------------------------------------------
# Part 3: central flow and its complementarity problem
# --------------------------------------------------------------------------------------------


def settle_on_flow(st: Setup, cfg, log) -> dict:
    """An untimed central flow (dt = 0.5, k = 2) from the weights after the stretch, long enough
    for the top eigenvalue to reach ``2 / eta``: its first point at the threshold starts the timed
    flows, and its points at the threshold give the complementarity instances."""
    import jax
    import numpy as np

    from landscape import dynamics

    t0 = time.perf_counter()
    r = dynamics.central_flow(st.loss_fn, st.end_params, st.data, learning_rate=ETA,
                              num_steps=cfg["cf_settle"], key=jax.random.key(3), dt=0.5, k=2)
    lam = np.asarray(r.eigenvalues[:, 0])
    at = np.flatnonzero(lam >= 2 / ETA - AT_THRESHOLD)
    first = int(at[0]) if at.size else len(lam) - 1
    reached = first if at.size else None
    flat = np.stack([np.asarray(st.ravel(jax.tree.map(lambda a, i=i: a[i], r.params)))
                     for i in range(len(lam))])
    log(f"central flow: lambda_1 {lam[0]:.3f} -> {lam[-1]:.3f} in {cfg['cf_settle']} units "
        f"({time.perf_counter() - t0:.0f} s), threshold reached at t = {reached}")
    return {"lambda_1": lam, "trace_X": np.asarray(r.trace_X), "reached_at": reached,
            "start": st.unravel(flat[first]),
            "threshold_points": flat[at] if at.size else flat[-1:]}


def bench_central_flow(st: Setup, cfg, start) -> dict:
    import jax

    from landscape import dynamics, train

    short, long = cfg["cf_units"]
    key = jax.random.key(2)
    results = {}

    def flow(units):
        def run():
            r = dynamics.central_flow(st.loss_fn, start, st.data, learning_rate=ETA,
                                      num_steps=units, key=key, dt=0.5, k=2,
                                      record_params=False)
            results[units] = r
            return r.loss
        return run

    N = cfg["gd_steps"]
    gd = jax.jit(lambda s, d: train.run_steps(st.loss_fn, st.opt, s, d, key=key,
                                              num_steps=N)[0].params)
    state = train.init_state(start, st.opt)
    names = {long: f"central flow, {long} units", short: f"central flow, {short} units",
             "gd": f"GD, {N} steps (run_steps)"}
    c = rep.compare(flow(long), {names[short]: flow(short),
                                 names["gd"]: lambda: gd(state, st.data)},
                    ours_name=names[long], repeats=cfg["repeats"])
    t_long, t_short, t_gd = (c.times[names[k]] for k in (long, short, "gd"))
    per_unit = [(a - b) / (long - short) for a, b in zip(t_long, t_short, strict=True)]
    per_step = [t / N for t in t_gd]
    ratio = rep.Ratio("central flow, per unit of time", "GD step",
                      tuple(a / b for a, b in zip(per_unit, per_step, strict=True)))
    r = results[long]
    euler = 2 * long
    # num_hvps[j] counts the products before record j; the first record holds the cold start
    hv = float(r.num_hvps[-1] - r.num_hvps[0])
    return {"units": (short, long), "gd_steps": N, "comparison": c,
            "seconds_per_unit": per_unit, "seconds_per_gd_step": per_step,
            "unit_over_gd_step": ratio,
            "products_per_euler_step": {"hvps": hv / euler,
                                        "third_order": float(r.num_third_order[-1]) / euler,
                                        "gradients": float(r.num_grads[-1]) / euler},
            "sharpness": _stats(r.eigenvalues[:, 0]), "lambda_2": _stats(r.eigenvalues[:, 1]),
            "trace_X": _stats(r.trace_X), "sdcp_iterations_note":
                "trace_X > 0 means the constraint binds (the SDCP is solved by iteration)",
            "sdcp_status_max": int(r.sdcp_status.max()),
            "eigsh_status_max": int(r.eigsh_status.max())}


def flow_instances(st: Setup, points, k: int, count: int):
    """``(alpha, gram)`` of one GD central-flow Euler step (dt = 0.5) at ``count`` of the flow's
    points at the threshold: ``beta_ij = grad (u_i^T H u_j)``, ``gram = <beta_ij, beta_kl>``,
    ``alpha = <beta_ij, grad L> + (2/eta I - diag(lambda)) / (eta dt)``, as
    ``central_flow._evaluate`` builds them."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from landscape import dynamics

    hi = jax.lax.Precision.HIGHEST
    out = []
    for j in np.unique(np.linspace(0, len(points) - 1, count).astype(int)):
        params = st.unravel(jnp.asarray(points[j]))
        e = dynamics.sharpness(st.loss_fn, params, st.data, key=jax.random.key(int(j)), k=k)
        _, g = dynamics.full_loss_and_grad(st.loss_fn, params, st.data)
        beta = dynamics.hessian_form_gradients(st.loss_fn, params, st.data, e.eigenvectors)
        gram = jnp.einsum("ijp,klp->ijkl", beta, beta, precision=hi)
        alpha = jnp.einsum("ijp,p->ij", beta, st.ravel(g), precision=hi)
        alpha = alpha + (2 / ETA * jnp.eye(k) - jnp.diag(e.eigenvalues)) / (ETA * 0.5)
        out.append((np.asarray(alpha, np.float64), np.asarray(gram, np.float64)))
    return out


def random_instances(k: int, count: int, seed: int = 0):
    """Random SDCPs of size ``k``: ``alpha`` symmetric normal, ``gram`` the Gram tensor of
    ``k^2 + 2`` random symmetric ``beta_ij`` vectors (positive definite on symmetric X)."""
    import numpy as np

    rng = np.random.default_rng([seed, k])
    out = []
    for _ in range(count):
        b = rng.normal(size=(k, k, k * k + 2))
        b = b + b.transpose(1, 0, 2)
        a = rng.normal(size=(k, k))
        out.append((a + a.T, np.einsum("ijp,klp->ijkl", b, b)))
    return out


def _kkt(a, G, X):
    """Relative KKT violation of ``X`` in float64: ``max(-min eig X, -min eig M, |<X, M>|)``
    over ``||alpha|| + ||G|| ||X||``, with ``M = alpha + 1/2 B(X)``."""
    import numpy as np

    k = a.shape[0]
    a = 0.5 * (a + a.T)
    M = a + 0.5 * (G.reshape(k * k, k * k) @ X.reshape(-1)).reshape(k, k)
    M = 0.5 * (M + M.T)
    scale = np.linalg.norm(a) + np.linalg.norm(G) * np.linalg.norm(X) + 1e-300
    viol = max(0.0, -np.linalg.eigvalsh(X)[0], -np.linalg.eigvalsh(M)[0], abs(np.vdot(X, M)))
    return float(viol / scale)


def _x_scale(a, G):
    """The natural size of a solution, ``||alpha|| / Lip`` with ``Lip = lambda_max(B) / 2``."""
    import numpy as np

    k = a.shape[0]
    lip = 0.5 * np.linalg.eigvalsh(G.reshape(k * k, k * k))[-1]
    return float(np.linalg.norm(a) / max(lip, 1e-300))


def sdcp_compare(k: int, inst, label: str, repeats: int) -> dict:
    """``solve_psd_complementarity`` (jit, float32) vs cvxpy + Clarabel (float64) on ``inst``,
    alternating; each call solves every instance. cvxpy's problem is built once with parameters
    (``alpha`` and a square root ``F`` of the Gram matrix, ``1/4 ||F^T vec X||^2 = 1/4 <X, B X>``)
    and re-solved with new values, its fastest use."""
    import cvxpy as cp
    import jax
    import jax.numpy as jnp
    import numpy as np

    from landscape import dynamics

    solve = jax.jit(dynamics.solve_psd_complementarity)
    inst32 = [(jnp.asarray(a, jnp.float32), jnp.asarray(G, jnp.float32)) for a, G in inst]
    X = cp.Variable((k, k), PSD=True)
    A, F = cp.Parameter((k, k)), cp.Parameter((k * k, k * k))
    prob = cp.Problem(cp.Minimize(cp.trace(A @ X)
                                  + 0.25 * cp.sum_squares(F.T @ cp.vec(X, order="C"))))
    factors = []
    for a, G in inst:
        Gm = G.reshape(k * k, k * k)
        w, Q = np.linalg.eigh(0.5 * (Gm + Gm.T))
        factors.append((0.5 * (a + a.T), Q * np.sqrt(np.maximum(w, 0))))
    ours_out, cvx_out = {}, {}

    def ours():
        res = [solve(a, G) for a, G in inst32]
        ours_out["X"] = [np.asarray(r.X, np.float64) for r in res]
        ours_out["status"] = [int(r.status) for r in res]
        ours_out["iters"] = [int(r.num_iters) for r in res]

    def cvx():
        xs = []
        for a, f in factors:
            A.value, F.value = a, f
            prob.solve(solver=cp.CLARABEL)
            xs.append(np.array(X.value, np.float64))
        cvx_out["X"] = xs

    name = f"cvxpy + Clarabel, k={k}, {label}"
    c = rep.compare(ours, {name: cvx}, ours_name=f"solve_psd_complementarity, k={k}, {label}",
                    repeats=repeats)
    diffs = [np.linalg.norm(x - y) / max(np.linalg.norm(y), _x_scale(a, G))
             for (a, G), x, y in zip(inst, ours_out["X"], cvx_out["X"], strict=True)]
    return {"k": k, "instances": label, "count": len(inst), "comparison": c,
            "speedup": c.ratio(name),
            "seconds_per_solve_ours": c.medians[c.ours] / len(inst),
            "seconds_per_solve_cvxpy": c.medians[name] / len(inst),
            "rel_diff_X": _stats(diffs),
            "kkt_ours": _stats([_kkt(a, G, x) for (a, G), x in zip(inst, ours_out["X"])]),
            "kkt_cvxpy": _stats([_kkt(a, G, x) for (a, G), x in zip(inst, cvx_out["X"])]),
            "rank_X_cvxpy": [int(np.sum(np.linalg.eigvalsh(x) > 1e-6 * max(np.abs(x).max(),
                                                                            1e-300)))
                             for x in cvx_out["X"]],
            "trace_X": _stats([np.trace(x) for x in cvx_out["X"]]),
            "status_ours": ours_out["status"], "fista_iters_ours": ours_out["iters"]}


def bench_sdcp(st: Setup, cfg, points) -> list:
    rows = []
    for k in cfg["ks"]:
        rows.append(sdcp_compare(k, flow_instances(st, points, k, cfg["sdcp_instances"]),
                                 "flow", cfg["repeats"]))
        rows.append(sdcp_compare(k, random_instances(k, cfg["sdcp_instances"]), "random",
                                 cfg["repeats"]))
    return rows


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _notes(c):
    return [f"note: {n} compiled {k} time(s) during the timed rounds"
            for n, k in c.compiles.items() if k]


def markdown(res) -> str:
    e, o, cf = res["estimates"], res["overhead"], res["central_flow"]
    lam = e["reference"]["lambda_1"]
    lines = [rep.header(res["machine"], f"sharpness_tracking ({res['mode']} mode)"), "",
             f"{res['repeats']} alternating rounds after a warm-up; ratios are per round, "
             "median (min-max); a range including 1 is a tie.", "",
             f"GD (eta = {ETA}) crosses 2/eta = {2 / ETA:g} at step {res['crossing']} (tracked "
             f"every 10 steps). Stretch: steps {int(e['stretch_steps'][0])}-"
             f"{int(e['stretch_steps'][-1])}; float64 lambda_1 {min(lam):.4f}-{max(lam):.4f}, "
             f"lambda_2 {min(e['reference']['lambda_2']):.4f}-"
             f"{max(e['reference']['lambda_2']):.4f}.", "",
             f"Port check (torch twin vs JAX, float32): loss "
             f"{e['port_check']['loss_rel_diff_jax32_torch32']:.1e}, HVP "
             f"{e['port_check']['hvp_rel_diff_jax32_torch32']:.1e} relative.", ""]
    rows = []
    for name, m in e["methods"].items():
        p, er = m["products_per_estimate"], m["rel_error"]
        rows.append([name, f"{p['median']:g} ({p['max']:g})", m["seconds_per_estimate"],
                     m.get("time_over_ours", "-"), f"{er['median']:.1e} ({er['max']:.1e})"])
    lines.append(rep.table(["sharpness estimate", "products, median (max)", "s / estimate",
                            "time / ours warm", "rel. error, median (max)"], rows))
    mb = e["minibatch_vs_full_batch"]["rel_diff_to_torch_full_batch_estimate"]
    lines += ["", f"Minibatch ({MINIBATCH}) power-iteration estimate vs the full-batch one: "
              f"{mb['median']:.1%} median, {mb['max']:.1%} max relative difference.", ""]
    rows = [[PLAIN, o["comparison"].medians[PLAIN], "1", "-", "-"]]
    for name in (EVERY16, EVERY1):
        p = o[name]["products_per_estimate_after_first"] or o[name]["products_per_estimate"]
        rows.append([name, o["comparison"].medians[name],
                     o[name]["time_over_plain"].text(False),
                     o[name]["estimate_in_plain_steps"].text(False), f"{p['median']:g}"])
    lines.append(rep.table([f"{o['num_steps']} GD steps at the EoS", "seconds",
                            "time / plain", "one estimate, in plain steps",
                            "products / estimate (median, after the first)"], rows))
    g16 = o[EVERY16]["goal_at_most_2x"]
    lines += ["", "Goal at every 16 steps, at most 2x: "
              + {"below": "met", "above": "missed", "tie": "range straddles 2x"}[g16] + ".", ""]
    cs, pe = res["central_flow_settle"], cf["products_per_euler_step"]
    lines += [f"Central flow from the weights after the stretch: lambda_1 "
              f"{cs['lambda_1'][0]:.3f} -> 2/eta at t = {cs['reached_at']} (untimed); the timed "
              f"flows start there (lambda_1 median {cf['sharpness']['median']:.4f}, trace X "
              f"median {cf['trace_X']['median']:.3g}).", ""]
    lines.append(rep.table(
        ["central flow (dt=0.5, k=2)", "s / unit", "s / GD step", "unit / GD step",
         "HVPs / Euler step", "3rd-order / Euler step"],
        [["per unit of time (2 Euler steps)", statistics.median(cf["seconds_per_unit"]),
          statistics.median(cf["seconds_per_gd_step"]), cf["unit_over_gd_step"].text(False),
          pe["hvps"], pe["third_order"]]]))
    rows = []
    for r in res["sdcp"]:
        rows.append([r["k"], r["instances"], r["seconds_per_solve_ours"],
                     r["seconds_per_solve_cvxpy"], r["speedup"],
                     f"{r['rel_diff_X']['max']:.1e}",
                     f"{r['kkt_ours']['max']:.1e} / {r['kkt_cvxpy']['max']:.1e}",
                     max(r["status_ours"])])
    lines += ["", rep.table(["SDCP k", "instances", "ours s / solve", "cvxpy s / solve",
                             "cvxpy / ours", "max rel. diff X", "max KKT ours / cvxpy",
                             "max status ours"], rows)]
    notes = _notes(e["comparison"]) + _notes(o["comparison"]) + _notes(cf["comparison"])
    for r in res["sdcp"]:
        notes += _notes(r["comparison"])
    return "\n".join(lines + notes)


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.reference:
        if not rep.pinned():
            rep.pin_threads(args.threads)
        sys.path.insert(0, os.path.join(_HERE, ".."))
        reference_main(*args.reference)
        return None
    os.environ["JAX_ENABLE_X64"] = "0"   # the timed work is float32 by definition
    if not rep.pinned():
        rep.pin_threads(args.threads)  # before NumPy, SciPy, JAX and torch are imported
    sys.path.insert(0, os.path.join(_HERE, ".."))
    import jax
    import numpy  # noqa: F401
    import scipy.sparse.linalg  # noqa: F401  (loads SciPy's OpenBLAS before the limits)
    import torch  # noqa: F401

    if jax.config.jax_enable_x64:
        raise RuntimeError("run this benchmark with JAX_ENABLE_X64 unset or 0 (float32)")
    machine = rep.start_run(args.threads)
    cfg = SETTINGS["quick" if args.quick else "full"]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    st = Setup(cfg, log)
    res = {"mode": "quick" if args.quick else "full", "repeats": cfg["repeats"],
           "settings": cfg, "setting": dict(SETTING, learning_rate=ETA, num_params=st.dim),
           "machine": machine, "crossing": st.crossing,
           "peer_versions": {d: metadata.version(d) for d in ("cvxpy", "clarabel", "optax")},
           "sharpness_every_10": st.sharpness_every_10}
    res["estimates"] = bench_estimates(st, cfg, args.threads, log)
    log("part 1 done")
    res["overhead"] = bench_overhead(st, cfg)
    log("part 2 done")
    settle = settle_on_flow(st, cfg, log)
    res["central_flow_settle"] = {k: v for k, v in settle.items()
                                  if k not in ("start", "threshold_points")}
    res["central_flow"] = bench_central_flow(st, cfg, settle["start"])
    res["sdcp"] = bench_sdcp(st, cfg, settle["threshold_points"])
    log("part 3 done")
    rep.finish_machine_info(machine)
    res["total_seconds"] = time.perf_counter() - t0
    rep.write_json(res, args.out)
    print(markdown(res))
    print(f"\nwrote {os.path.abspath(args.out)} in {res['total_seconds']:.0f} s")
    return res


if __name__ == "__main__":
    main()

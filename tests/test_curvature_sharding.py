"""Sharded datasets give the same results as one device (4 simulated CPU devices).

The device count is fixed when JAX starts, so the check runs in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``. Two layouts: 24 examples placed with
``NamedSharding(mesh, P("data"))`` (no padding), and 23 examples through
``parallel.shard_dataset``, which pads to 24 with a zero-weight copy of the last example. Every
dataset consumer (curvature products, the dataset mean, an interpolation path, the sharpness,
the SLQ spectral density, the per-example gradient statistics, compared element by element)
must give the exact mean over the real examples: the one-device reference is computed on the
unpadded data, and results must match to ``1e-12`` relative in float64, since only the
summation order differs. Including
the padding row would be off by far more (the padded row carries 1/24 of the weight). It runs
in the float64 pass only (``float64_only``): float32 would run the same code at a tolerance of
``1e-5``, and the subprocess compiles every consumer twice (50 s).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

HERE = pathlib.Path(__file__).resolve().parent

SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from test_curvature_oracles import apply_fn, loss_fn_for, make_data, make_params
from landscape import batching, connectivity, curvature, dynamics, parallel, spectral

assert jax.device_count() == 4, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("data",))
params = make_params(jax.random.key(0))
other = jax.tree.map(lambda x: 1.1 * x + 0.05, params)
out = {}


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(a).max())


for n, layout in ((24, "device_put"), (23, "shard_dataset")):
    for kind in ("cross_entropy", "mse"):
        data = make_data(jax.random.key(1), kind, n=n)
        if layout == "device_put":
            sharded = jax.device_put(data, NamedSharding(mesh, P("data")))
            assert len(sharded["x"].sharding.device_set) == 4
        else:
            sharded = parallel.shard_dataset(data, mesh)
            assert sharded.num_padded == 24 and sharded.num_examples == 23
        builders = {
            "hessian": lambda d: curvature.hessian(loss_fn_for(kind), params, d, batch_size=5),
            "ggn": lambda d: curvature.ggn(apply_fn, kind, params, d, batch_size=8),
            "fisher": lambda d: curvature.fisher(apply_fn, kind, params, d, batch_size=5,
                                                 key=jax.random.key(3), num_samples=2),
            "empirical_fisher": lambda d: curvature.empirical_fisher(apply_fn, kind, params, d,
                                                                     24),
        }
        v = jnp.cos(jnp.arange(31.0)).astype(jax.tree.leaves(params)[0].dtype)
        tag = f"n={n}/{kind}"
        for name, build in builders.items():
            a = build(data).matvec(v)
            b = jax.jit(lambda op, x: op.matvec(x))(build(sharded), v)
            out[f"{tag}/{name}"] = rel(a, b)
        lf = loss_fn_for(kind)
        mean = lambda d: batching.dataset_mean(lambda b: lf(params, b), d, 5)
        out[f"{tag}/dataset_mean"] = rel(mean(data), jax.jit(mean)(sharded))
        path = lambda d: connectivity.interpolate(lf, params, other, d, num_points=3,
                                                  batch_size=7).losses
        out[f"{tag}/interpolate"] = rel(path(data), path(sharded))
        if layout == "shard_dataset" and kind == "mse":  # one case: each compiles a Lanczos
            top = lambda d: dynamics.sharpness(lf, params, d, key=jax.random.key(5), k=2,
                                               batch_size=5).eigenvalues
            out[f"{tag}/sharpness"] = rel(top(data), top(sharded))
            # the SLQ density (nodes and weights of 2 probes x 8 Lanczos steps)
            slq = lambda d: spectral.density(curvature.hessian(lf, params, d, batch_size=5),
                                             key=jax.random.key(4), num_probes=2, num_steps=8)
            a, b = slq(data), slq(sharded)
            out[f"{tag}/density_nodes"] = rel(a.nodes, b.nodes)
            out[f"{tag}/density_weights"] = rel(a.weights, b.weights)
        if kind == "mse":  # per-example statistics: the same on 1 and 4 devices
            def stats(d):
                st = dynamics.gradient_statistics(lf, params, d, chunk_size=5)
                return jnp.concatenate([st.norms, jnp.stack([
                    st.total_variance, st.coherence, st.noise_scale,
                    st.inner_product_test.statistic, st.orthogonality_test.statistic])])
            a, b = np.asarray(stats(data)), np.asarray(stats(sharded))
            out[f"{tag}/gradient_statistics"] = float(np.max(np.abs(a - b) / np.abs(a)))
print("RESULT" + json.dumps(out))
"""


@pytest.mark.float64_only
def test_sharded_dataset_matches_single_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT")][-1]
    diffs = json.loads(line[len("RESULT") :])
    assert len(diffs) == 2 * 2 * 6 + 1 + 2 + 2
    tol = 1e-12 if jax.config.jax_enable_x64 else 1e-5
    # eigenvalues converge to eigsh's tolerance (1e-9 / 1e-5 relative) from either operator
    tol_eig = 1e-9 if jax.config.jax_enable_x64 else 1e-4
    bad = {k: d for k, d in diffs.items()
           if not d <= (tol_eig if k.endswith("/sharpness") else tol)}
    assert not bad, bad

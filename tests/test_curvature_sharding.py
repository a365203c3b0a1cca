"""Sharded datasets give the same curvature products as one device (4 simulated CPU devices).

The device count is fixed when JAX starts, so the check runs in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``. The dataset is placed with
``NamedSharding(mesh, P("data"))`` along the example axis; products must match the unsharded ones
to ``1e-5`` (float32) / ``1e-12`` (float64) relative, since only the summation order differs.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax

HERE = pathlib.Path(__file__).resolve().parent

SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from test_curvature_oracles import apply_fn, loss_fn_for, make_data, make_params
from landscape import curvature

assert jax.device_count() == 4, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("data",))
params = make_params(jax.random.key(0))
out = {}
for kind in ("cross_entropy", "mse"):
    data = make_data(jax.random.key(1), kind, n=24)
    sharded = jax.device_put(data, NamedSharding(mesh, P("data")))
    assert len(sharded["x"].sharding.device_set) == 4
    builders = {
        "hessian": lambda d: curvature.hessian(loss_fn_for(kind), params, d, batch_size=5),
        "ggn": lambda d: curvature.ggn(apply_fn, kind, params, d, batch_size=8),
        "fisher": lambda d: curvature.fisher(apply_fn, kind, params, d, batch_size=5,
                                             key=jax.random.key(3), num_samples=2),
        "empirical_fisher": lambda d: curvature.empirical_fisher(apply_fn, kind, params, d, 24),
    }
    v = jnp.cos(jnp.arange(31.0)).astype(jax.tree.leaves(params)[0].dtype)
    for name, build in builders.items():
        a = np.asarray(build(data).matvec(v))
        b = np.asarray(jax.jit(lambda op, x: op.matvec(x))(build(sharded), v))
        out[f"{kind}/{name}"] = float(np.abs(a - b).max() / np.abs(a).max())
print("RESULT" + json.dumps(out))
"""


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
    assert len(diffs) == 8
    tol = 1e-12 if jax.config.jax_enable_x64 else 1e-5
    bad = {k: d for k, d in diffs.items() if not d <= tol}
    assert not bad, bad

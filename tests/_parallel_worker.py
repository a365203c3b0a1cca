"""Subprocess side of tests/test_parallel.py (not a test module itself).

The device count is fixed when JAX starts, so the checks with several (simulated) devices or
several processes run here, in fresh interpreters, and write their numbers as JSON for the
parent test to compare with a plain one-device reference (``reference`` below, which does not use
``landscape.parallel``).

    python _parallel_worker.py devices OUT.json          # under XLA_FLAGS=...device_count=4
    python _parallel_worker.py process OUT.json PORT PID NPROC
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from landscape.losses import softmax_cross_entropy

NUM_STEPS = 3
TRAIN_STEPS, TRAIN_BATCH = 4, 8  # landscape.train.train: minibatches of 8 out of 12 examples
SIZES = (10, 12, 11)  # 10 and 11 need padding on 4 devices, 12 does not
OPTIMIZERS = {"sgd": lambda: optax.sgd(0.3, momentum=0.9), "adam": lambda: optax.adam(0.05)}


def float_dtype():
    return jax.dtypes.canonicalize_dtype(np.float64)


def make_problem(n: int):
    """Two-layer tanh MLP over a nested param dict, and ``n`` labelled examples (3 classes)."""
    rng = np.random.default_rng(n)
    dt = float_dtype()
    params = {
        "hidden": {"w": rng.normal(size=(5, 8)) / 2, "b": rng.normal(size=8) / 4},
        "out": {"w": rng.normal(size=(8, 3)) / 2, "b": np.zeros(3)},
    }
    params = jax.tree.map(lambda a: jnp.asarray(a, dt), params)
    data = {"x": rng.normal(size=(n, 5)).astype(dt), "y": rng.integers(0, 3, size=n)}
    return params, data


def loss_fn(params, batch):
    h = jnp.tanh(batch["x"] @ params["hidden"]["w"] + params["hidden"]["b"])
    return softmax_cross_entropy(h @ params["out"]["w"] + params["out"]["b"], batch["y"])


def flat(tree) -> list[float]:
    return np.asarray(ravel_pytree(jax.tree.map(np.asarray, tree))[0]).tolist()


def reference(n: int) -> dict:
    """Plain one-device JAX: full-batch loss, gradient and optax steps, no sharding at all."""
    params, data = make_problem(n)
    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    loss, grad = value_and_grad(params, data)
    out = {"loss": float(loss), "grad": flat(grad)}
    for name, make in OPTIMIZERS.items():
        opt = make()
        p, state, losses = params, opt.init(params), []
        for _ in range(NUM_STEPS):
            value, g = value_and_grad(p, data)
            updates, state = jax.jit(opt.update)(g, state, p)
            p, losses = optax.apply_updates(p, updates), losses + [float(value)]
        out[name], out[name + "_losses"] = flat(p), losses
    return out


def run_parallel(params, dataset, mesh, steps: bool = True) -> dict:
    """Loss, gradient and optax steps through landscape.parallel on ``mesh``."""
    from landscape import parallel

    loss, grad = parallel.sharded_value_and_grad(loss_fn, params, dataset, mesh)
    out = {"loss": float(loss), "grad": flat(grad)}
    out["loss_only"] = float(parallel.sharded_mean_loss(loss_fn, params, dataset, mesh))
    for name, make in OPTIMIZERS.items() if steps else ():
        opt = make()
        step = parallel.sharded_train_step(loss_fn, opt, mesh)
        p, state, losses = params, opt.init(params), []
        for _ in range(NUM_STEPS):
            p, state, value = step(p, state, dataset)
            losses.append(float(value))
        out[name], out[name + "_losses"] = flat(p), losses
    return out


def layout(sharded) -> dict:
    """How the dataset actually sits on the devices (guards against a silent one-device run)."""
    x = sharded.data["x"]
    return {
        "num_devices": len(x.sharding.device_set),
        "local_rows": sorted(int(s.data.shape[0]) for s in x.addressable_shards),
        "num_padded": sharded.num_padded,
        "num_examples": sharded.num_examples,
        "padded": sharded.weights is not None,
    }


def data_parallel_check(mesh) -> dict:
    """A user-written optax step made data-parallel by ``parallel.data_parallel``."""
    from landscape import parallel

    opt = OPTIMIZERS["sgd"]()

    def step(params, state, batch):
        value, g = jax.value_and_grad(loss_fn)(params, batch)
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state, value

    fast = parallel.data_parallel(step, mesh)
    params, data = make_problem(12)
    p, state, losses = params, opt.init(params), []
    for _ in range(NUM_STEPS):
        p, state, value = fast(p, state, data)
        losses.append(float(value))
    out = {"sgd": flat(p), "sgd_losses": losses, "out_devices": len(value.sharding.device_set)}
    try:
        fast(params, opt.init(params), make_problem(10)[1])
        out["uneven_error"] = None
    except ValueError as err:
        out["uneven_error"] = str(err)
    try:
        parallel.data_parallel_loss(loss_fn, mesh)(params, make_problem(10)[1])
        out["uneven_loss_error"] = None
    except ValueError as err:
        out["uneven_loss_error"] = str(err)

    @jax.jit
    def gathered(x, idx):  # a batch gathered inside jit, kept split over the devices
        return parallel.constrain_batch(x[idx], mesh)

    # the per-example work is split: the compiled gradient sums partial gradients across devices
    grad_fn = jax.jit(jax.grad(parallel.data_parallel_loss(loss_fn, mesh)))
    hlo = grad_fn.lower(parallel.replicate(params, mesh), data).compile().as_text()
    out["grad_all_reduce"] = "all-reduce" in hlo
    sharded_x = parallel.shard_dataset(data, mesh).data["x"]
    out["constrained_devices"] = len(gathered(sharded_x, jnp.arange(8)).sharding.device_set)
    return out


def nnx_mlp():
    """``landscape.models.MLP`` through the NNX adapter: ``(loss_fn, params)``, eval mode."""
    from flax import nnx

    import landscape.nnx
    from landscape.models import MLP

    model = MLP(5, 8, 2, 3, activation="tanh", rngs=nnx.Rngs(0))
    loss, params, _ = landscape.nnx.loss_fn(model, "cross_entropy", mode="eval")
    return loss, params


def batchnorm_train_step(mesh=None) -> dict:
    """Train-mode BatchNorm MLP: loss, gradient and new running stats on a batch of 12."""
    from flax import nnx

    import landscape.nnx
    from landscape import parallel
    from landscape.models import MLP

    model = MLP(5, 8, 1, 3, norm="batch", rngs=nnx.Rngs(1))
    loss, params, state = landscape.nnx.loss_fn(model, "cross_entropy", mode="train")
    data = make_problem(12)[1]
    if mesh is not None:
        loss = parallel.data_parallel_loss(loss, mesh)
        params, state, data = parallel.replicate((params, state, data), mesh)
    fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (value, new_state), grad = fn(params, data, state)
    return {"loss": float(value), "grad": flat(grad), "state": flat(new_state)}


def train_loop(loss, params, data, mesh=None) -> list[float]:
    """``landscape.train.train`` minibatch SGD, made data-parallel when ``mesh`` is given."""
    from landscape import parallel
    from landscape.train import train

    if mesh is not None:
        loss = parallel.data_parallel_loss(loss, mesh)
        params, data = parallel.replicate((params, data), mesh)
    result = train(loss, params, OPTIMIZERS["sgd"](), data, key=jax.random.key(0),
                   num_steps=TRAIN_STEPS, batch_size=TRAIN_BATCH)
    return flat(result.params)


def devices_main(out_path: str) -> None:
    from landscape import parallel

    results = {"device_count": jax.device_count()}
    for n in SIZES:
        params, data = make_problem(n)
        mesh = parallel.data_mesh()
        sharded = parallel.shard_dataset(data, mesh)
        res = run_parallel(params, sharded, mesh)
        res["raw_loss"] = float(parallel.sharded_mean_loss(loss_fn, params, data, mesh))
        res["layout"] = layout(sharded)
        results[f"n{n}"] = res
    results["data_parallel"] = data_parallel_check(parallel.data_mesh())
    mlp_loss, mlp_params = nnx_mlp()
    mesh = parallel.data_mesh()
    value, grad = parallel.sharded_value_and_grad(mlp_loss, mlp_params, make_problem(10)[1], mesh)
    results["nnx_mlp"] = {"loss": float(value), "grad": flat(grad)}
    results["train"] = train_loop(loss_fn, *make_problem(12), mesh)
    results["batchnorm"] = batchnorm_train_step(mesh)
    with open(out_path, "w") as f:
        json.dump(results, f)


def process_main(out_path: str, port: int, pid: int, nproc: int) -> None:
    from landscape import parallel

    parallel.initialize(f"127.0.0.1:{port}", nproc, pid, initialization_timeout=60)
    n = SIZES[-1]
    params, data = make_problem(n)
    mesh = parallel.data_mesh()
    local = jax.tree.map(lambda a: a[parallel.process_slice(n)], data)
    sharded = parallel.shard_process_local(local, mesh)
    results = {
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_examples": int(local["x"].shape[0]),
        "layout": layout(sharded),
        "local": run_parallel(params, sharded, mesh),
        # the whole dataset on every process, split by shard_dataset: same numbers expected
        "full": run_parallel(params, parallel.shard_dataset(data, mesh), mesh, steps=False),
    }
    with open(f"{out_path}.{pid}", "w") as f:
        json.dump(results, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "devices":
        devices_main(sys.argv[2])
    elif sys.argv[1] == "process":
        process_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")

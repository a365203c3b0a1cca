"""Tests of landscape.parallel: padding semantics, errors, and sharded == one-device numbers.

The multi-device checks run ``tests/_parallel_worker.py`` in subprocesses (the device count is
fixed when JAX starts): once with 4 simulated CPU devices, and once as two processes joined over
loopback with gloo collectives (2 simulated devices each). Their numbers are compared here with a
plain one-device JAX reference that does not use landscape.parallel.

Tolerance: sharded and one-device runs compute the same sums in a different order, so they agree
to the last bits only. We require ``max|a - b| <= tol * max|b|`` per quantity, with ``tol = 1e-6``
in float32 and ``1e-12`` in float64.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import Mesh

from landscape import parallel, train

HERE = pathlib.Path(__file__).resolve().parent
WORKER_PATH = HERE / "_parallel_worker.py"
_spec = importlib.util.spec_from_file_location("_parallel_worker", WORKER_PATH)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

X64 = jax.config.jax_enable_x64
TOL = 1e-12 if X64 else 1e-6
TIMEOUT_S = 120


def assert_close(actual, expected, what: str, tol: float = TOL) -> None:
    a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs {b.shape}"
    err, scale = np.max(np.abs(a - b)), np.max(np.abs(b))
    assert err <= tol * scale, f"{what}: max abs diff {err:.3g} > {tol:g} * {scale:.3g}"


# ----------------------------------------------------------------------------- padding, one device


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 23), multiple=st.integers(1, 6))
def test_pad_dataset_keeps_examples_and_marks_padding(n, multiple):
    data = {"x": np.arange(2 * n, dtype=np.float32).reshape(n, 2), "y": np.arange(n)}
    padded, weights = parallel.pad_dataset(data, multiple)
    rows = padded["x"].shape[0]
    assert rows % multiple == 0 and rows - n < multiple
    np.testing.assert_array_equal(padded["x"][:n], data["x"])
    np.testing.assert_array_equal(padded["y"][:n], data["y"])
    if n % multiple == 0:
        assert weights is None and padded is data
    else:
        np.testing.assert_array_equal(weights, np.r_[np.ones(n), np.zeros(rows - n)])
        np.testing.assert_array_equal(padded["y"][n:], data["y"][-1])  # valid labels in padding
        assert weights.dtype == np.float32


@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 13), multiple=st.integers(2, 5))
def test_weighted_mean_loss_equals_unpadded_loss(n, multiple):
    params, data = worker.make_problem(n)
    padded, weights = parallel.pad_dataset(data, multiple)
    got = jax.jit(parallel.mean_loss, static_argnums=0)(worker.loss_fn, params, padded, weights)
    assert_close(got, worker.loss_fn(params, data), "padded weighted mean")


def test_mean_loss_padding_is_exact_in_float64():
    with jax.enable_x64(True):
        params, data = worker.make_problem(7)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        data = {"x": np.asarray(data["x"], np.float64), "y": data["y"]}
        padded, weights = parallel.pad_dataset(data, 4)
        got = parallel.mean_loss(worker.loss_fn, params, padded, jnp.asarray(weights))
        rows = [{"x": data["x"][i : i + 1], "y": data["y"][i : i + 1]} for i in range(7)]
        per_example = [worker.loss_fn(params, row) for row in rows]
        np.testing.assert_allclose(got, np.mean(per_example), rtol=1e-14)


def test_one_device_mesh_matches_plain_jax():
    params, data = worker.make_problem(9)
    mesh = parallel.data_mesh(jax.devices()[:1])
    assert mesh.axis_names == ("data",) and mesh.size == 1
    sharded = parallel.shard_dataset(data, mesh)
    assert sharded.num_examples == 9 and sharded.weights is None
    loss, grad = parallel.sharded_value_and_grad(worker.loss_fn, params, sharded, mesh)
    ref_loss, ref_grad = jax.value_and_grad(worker.loss_fn)(params, data)
    assert_close(loss, ref_loss, "loss")
    assert_close(worker.flat(grad), worker.flat(ref_grad), "grad")
    chex.assert_trees_all_equal_shapes_and_dtypes(grad, params)
    assert_close(parallel.sharded_mean_loss(worker.loss_fn, params, data), ref_loss, "raw data")


def test_sharded_dataset_is_a_pytree_with_static_size():
    _, data = worker.make_problem(5)
    sharded = parallel.shard_dataset(data, parallel.data_mesh())
    leaves, treedef = jax.tree.flatten(sharded)
    assert len(leaves) == 2  # x and y; weights is None and num_examples is metadata
    same = jax.jit(lambda s: s)(sharded)
    assert isinstance(same, parallel.ShardedDataset) and same.num_examples == 5


def test_train_step_on_one_device_matches_plain_optax():
    params, data = worker.make_problem(8)
    opt = optax.adam(0.05)
    step = parallel.sharded_train_step(worker.loss_fn, opt, parallel.data_mesh())
    new, _, loss = step(params, opt.init(params), data)
    g = jax.grad(worker.loss_fn)(params, data)
    updates, _ = opt.update(g, opt.init(params), params)
    assert_close(loss, worker.loss_fn(params, data), "loss")
    assert_close(worker.flat(new), worker.flat(optax.apply_updates(params, updates)), "params")


def test_train_step_is_a_step_of_the_training_loop_and_keeps_the_loss_dtype():
    """Three calls equal three full-batch steps of ``landscape.train.train``; the loss keeps the
    dtype of ``loss_fn`` (float32 stays float32 with x64 on); any ``init``/``update`` pair is
    accepted as the optimizer."""
    params, data = worker.make_problem(10)
    opt, mesh = optax.adam(0.05), parallel.data_mesh()
    step = parallel.sharded_train_step(worker.loss_fn, opt, mesh)
    p, state, losses = params, opt.init(params), []
    for _ in range(3):
        p, state, loss = step(p, state, data)
        losses.append(float(loss))
    ref = train.train(worker.loss_fn, params, opt, data, key=jax.random.key(0), num_steps=3,
                      callback=lambda *_: {}, callback_every=1, progress=False)
    assert_close(worker.flat(p), worker.flat(ref.params), "params")
    assert_close(losses, ref.history["loss"][1:], "losses")  # loss of step t, before its update
    p32 = jax.tree.map(lambda x: x.astype(jnp.float32), params)
    d32 = {"x": data["x"].astype(np.float32), "y": data["y"]}
    pair = collections.namedtuple("InitUpdate", "init update")(opt.init, opt.update)
    _, _, loss32 = parallel.sharded_train_step(worker.loss_fn, pair, mesh)(p32, opt.init(p32), d32)
    assert loss32.dtype == jnp.float32
    assert_close(loss32, worker.loss_fn(p32, d32), "float32 loss", tol=1e-6)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 50), k=st.integers(1, 6))
def test_process_slices_partition_the_dataset(n, k):
    if n < k:
        with pytest.raises(ValueError, match="num_examples"):
            parallel.process_slice(n, 0, k)
        return
    parts = [range(n)[parallel.process_slice(n, p, k)] for p in range(k)]
    assert [i for part in parts for i in part] == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


# ----------------------------------------------------------------------------- bad input


def _square(params, batch):
    return jnp.mean((batch["x"] @ params) ** 2)


def test_bad_inputs_fail_fast():
    mesh = parallel.data_mesh()
    data = {"x": np.ones((4, 2), np.float32)}
    w = jnp.ones(2)
    with pytest.raises(ValueError, match="devices"):
        parallel.data_mesh([])
    with pytest.raises(TypeError, match="devices"):
        parallel.data_mesh(["cpu:0"])
    with pytest.raises(TypeError, match="mesh"):
        parallel.shard_dataset(data, mesh="data")
    two_axes = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    with pytest.raises(ValueError, match="one-dimensional"):
        parallel.shard_dataset(data, two_axes)
    with pytest.raises(ValueError, match="leading"):
        parallel.shard_dataset({"x": np.ones((4, 2)), "y": np.ones(3)}, mesh)
    with pytest.raises(ValueError, match="empty"):
        parallel.shard_dataset({"x": np.ones((0, 2))}, mesh)
    with pytest.raises(ValueError, match="multiple"):
        parallel.pad_dataset(data, 0)
    with pytest.raises(TypeError, match="loss_fn"):
        parallel.sharded_mean_loss("mse", w, data, mesh)
    with pytest.raises(TypeError, match="scalar"):
        parallel.sharded_mean_loss(lambda p, b: b["x"] @ p, w, data, mesh)
    with pytest.raises(ValueError, match="non-finite"):
        parallel.sharded_mean_loss(_square, jnp.array([jnp.nan, 1.0]), data, mesh)
    with pytest.raises(TypeError, match="optimizer"):
        parallel.sharded_train_step(_square, lambda g: g, mesh)


@pytest.mark.parametrize(
    "address, nproc, pid, match",
    [
        ("127.0.0.1", 2, 0, "HOST:PORT"),
        ("127.0.0.1:0", 2, 0, "port"),
        ("127.0.0.1:1234", 0, 0, "num_processes"),
        ("127.0.0.1:1234", 2, 2, "process_id"),
        ("127.0.0.1:1234", 2, -1, "process_id"),
    ],
)
def test_initialize_rejects_bad_arguments(address, nproc, pid, match):
    with pytest.raises(ValueError, match=match):  # checked before jax.distributed is touched
        parallel.initialize(address, nproc, pid)


# ----------------------------------------------------------------------------- subprocesses


def _env(device_count: int) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={device_count}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    env["JAX_ENABLE_X64"] = "1" if X64 else "0"
    return env


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("devices") / "out.json"
    cmd = [sys.executable, str(WORKER_PATH), "devices", str(out)]
    proc = subprocess.run(cmd, env=_env(4), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"worker failed:\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text())


def _compare(got: dict, ref: dict, label: str, steps: bool = True) -> None:
    keys = ("loss", "grad") + (("sgd", "sgd_losses", "adam", "adam_losses") if steps else ())
    for key in keys:
        assert_close(got[key], ref[key], f"{label} {key}")
    if "loss_only" in got:
        assert_close(got["loss_only"], ref["loss"], f"{label} sharded_mean_loss")


@pytest.mark.parametrize("n", worker.SIZES)
def test_four_devices_match_one_device(four_devices, n):
    assert four_devices["device_count"] == 4
    got, ref = four_devices[f"n{n}"], worker.reference(n)
    lay = got["layout"]
    assert lay["num_devices"] == 4 and lay["num_examples"] == n
    assert lay["local_rows"] == [-(-n // 4)] * 4  # really split: ceil(n/4) rows per device
    assert lay["padded"] == (n % 4 != 0)
    _compare(got, ref, f"n={n} on 4 devices")
    assert_close(got["raw_loss"], ref["loss"], f"n={n} on 4 devices, raw dataset")


def test_data_parallel_wraps_a_user_step(four_devices):
    got, ref = four_devices["data_parallel"], worker.reference(12)
    assert_close(got["sgd"], ref["sgd"], "data_parallel sgd params")
    assert_close(got["sgd_losses"], ref["sgd_losses"], "data_parallel sgd losses")
    assert got["out_devices"] == 4  # outputs replicated over the mesh
    assert got["uneven_error"] is not None and "multiple" in got["uneven_error"]
    assert got["uneven_loss_error"] is not None and "multiple" in got["uneven_loss_error"]
    assert got["constrained_devices"] == 4
    assert got["grad_all_reduce"]  # data_parallel_loss really splits the batch over devices


def test_nnx_model_on_four_devices(four_devices):
    loss, params = worker.nnx_mlp()
    data = worker.make_problem(10)[1]
    value, grad = jax.value_and_grad(loss)(params, data)
    assert_close(four_devices["nnx_mlp"]["loss"], value, "NNX MLP loss")
    assert_close(four_devices["nnx_mlp"]["grad"], worker.flat(grad), "NNX MLP grad")


def test_train_loop_made_data_parallel(four_devices):
    """landscape.train.train with data_parallel_loss + replicated inputs == plain train()."""
    ref = worker.train_loop(worker.loss_fn, *worker.make_problem(12))
    assert_close(four_devices["train"], ref, "train()")


def test_batchnorm_statistics_span_the_whole_sharded_batch(four_devices):
    """Train-mode BatchNorm on a batch split over 4 devices == on one device (GSPMD)."""
    got, ref = four_devices["batchnorm"], worker.batchnorm_train_step()
    for key in ("loss", "grad", "state"):
        assert_close(got[key], ref[key], f"BatchNorm {key}")


def test_data_parallel_loss_keeps_the_value():  # the uneven-batch error: 4-device test
    mesh = parallel.data_mesh()
    wrapped = parallel.data_parallel_loss(_square, mesh)
    batch = {"x": np.ones((3, 2), np.float32)}
    assert_close(wrapped(jnp.ones(2), batch), _square(jnp.ones(2), batch), "wrapped loss")
    with pytest.raises(TypeError, match="loss_fn"):
        parallel.data_parallel_loss(None, mesh)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_PORT_TAKEN = ("Failed to add port", "Failed to start RPC server", "already in use")


def _run_two_processes(out: pathlib.Path):
    """Start both processes; wait until both end, one fails, or TIMEOUT_S; kill the rest.

    Returns the exit codes and the logs (stdout + stderr) of both processes.
    """
    port, logs, procs = _free_port(), [out.with_suffix(f".err{pid}") for pid in range(2)], []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for pid in range(2):
            cmd = [sys.executable, str(WORKER_PATH), "process", str(out), str(port), str(pid), "2"]
            with open(logs[pid], "w") as err:  # files, not pipes: a chatty child never blocks
                procs.append(subprocess.Popen(cmd, env=_env(2), stdout=err, stderr=err))
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                break  # one failed: its peer would only wait for it until a timeout
            time.sleep(0.2)
    finally:
        for p in procs:  # never leave a process waiting on a dead or hung peer
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    return codes, [f"(exit code {c}) " + log.read_text() for c, log in zip(codes, logs)]


def test_two_processes_match_one_process(tmp_path):
    out = tmp_path / "out.json"
    codes, logs = _run_two_processes(out)
    if codes != [0, 0] and any(m in e for m in _PORT_TAKEN for e in logs):
        codes, logs = _run_two_processes(out)  # the free port was taken in between: retry once
    assert codes == [0, 0], "\n\n".join(f"process {i} stderr:\n{e[-3000:]}" for i, e in
                                         enumerate(logs))
    results = [json.loads(pathlib.Path(f"{out}.{pid}").read_text()) for pid in range(2)]
    n = worker.SIZES[-1]
    ref = worker.reference(n)
    assert [r["local_examples"] for r in results] == [n // 2, n - n // 2]
    for pid, r in enumerate(results):
        assert r["process_count"] == 2 and r["device_count"] == 4
        assert r["layout"]["num_devices"] == 4 and r["layout"]["num_examples"] == n
        assert r["layout"]["local_rows"] == [3, 3]  # 5 and 6 examples padded to 6 per process
        _compare(r["local"], ref, f"process {pid}, local parts")
        _compare(r["full"], ref, f"process {pid}, full dataset", steps=False)
    assert results[0]["local"] == results[1]["local"]  # replicated results agree bit for bit

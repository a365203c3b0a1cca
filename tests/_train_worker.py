"""Subprocess for the kill-and-resume test: trains a small MLP on digits with checkpoints.

usage: python _train_worker.py CHECKPOINT_OR_- OUT.npz SLEEP_SECONDS
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from landscape import data, train


def main(ckpt, out, sleep):
    tr, _ = data.digits(jax.random.key(0), flatten=True)
    k1, k2 = jax.random.split(jax.random.key(1))
    params = {"l1": {"w": jax.random.normal(k1, (64, 32)) / 8, "b": jnp.zeros(32)},
              "l2": {"w": jax.random.normal(k2, (32, 10)) / 6, "b": jnp.zeros(10)}}

    def loss_fn(p, b):
        h = jnp.tanh(b["x"] @ p["l1"]["w"] + p["l1"]["b"])
        logits = h @ p["l2"]["w"] + p["l2"]["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, b["y"]).mean()

    def slow_callback(step, p, s):
        time.sleep(sleep)
        return {}

    res = train.train(loss_fn, params, optax.adam(1e-2), tr, key=jax.random.key(2),
                      num_steps=120, batch_size=32, callback=slow_callback, callback_every=5,
                      checkpoint=None if ckpt == "-" else ckpt, checkpoint_every=5)
    leaves = {f"leaf{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(res.params))}
    np.savez(out, resumed_from=res.resumed_from, **leaves)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))

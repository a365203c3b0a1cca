"""Shared pieces of the mode-connectivity experiments: data, MLPs as pure functions, and a
vmapped trainer that trains several independent models in one compiled call.

The MLP is ``landscape.models.MLP`` (``norm=None``) written as a pure function of its param
tree (``hidden/<l>/{kernel,bias}``, ``head/{kernel,bias}``; LeCun-normal kernels, zero
biases), so that many seeds can be initialised and trained under ``vmap``; its forward pass is
``connectivity.mlp_features`` plus the head, checked against the flax model in
``tests/test_connectivity_analysis.py``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from landscape import connectivity as C
from landscape import data as D
from landscape import losses
from landscape import train as T


def load(name: str, key, num_train: int | None = None):
    """``(train, test)`` of ``"mnist1d"`` or ``"digits"`` with flat float inputs."""
    if name == "mnist1d":
        train, test = D.mnist1d(key, **({} if num_train is None else {"num_train": num_train}))
    elif name == "digits":
        train, test = D.digits(key, flatten=True)
        if num_train is not None:
            train = jax.tree.map(lambda v: v[:num_train], train)
    else:
        raise ValueError(f"unknown dataset {name!r}; expected 'mnist1d' or 'digits'")
    return train, test


def init_mlp(key, in_dim: int, width: int, depth: int, num_classes: int):
    """LeCun-normal MLP params in the layout of ``landscape.models.MLP``."""
    dims = [in_dim] + [width] * depth + [num_classes]
    keys = jax.random.split(key, len(dims) - 1)
    layer = lambda k, i, o: {"kernel": jax.random.normal(k, (i, o)) / np.sqrt(i),
                             "bias": jnp.zeros((o,))}
    hidden = {l: layer(keys[l], dims[l], dims[l + 1]) for l in range(depth)}
    return {"hidden": hidden, "head": layer(keys[-1], dims[-2], dims[-1])}


def logits(params, x):
    h = C.mlp_features(params, x)[f"P_{len(params['hidden']) - 1}"]
    return h @ params["head"]["kernel"] + params["head"]["bias"]


def pre_features(params, batch):
    """Pre-activations per hidden layer (REPAIR's statistics); module-level so jit caches."""
    return C.mlp_features(params, batch, pre_activation=True)


def loss_fn(params, batch):
    return losses.softmax_cross_entropy(logits(params, batch["x"]), batch["y"])


def error_fn(params, batch):
    return losses.error(logits(params, batch["x"]), batch["y"]).astype(jnp.result_type(float))


def train_many(keys, init_params, train, *, num_steps: int, batch_size: int, lr: float,
               start_step: int = 0, opt_state=None, return_state: bool = False):
    """Train one model per key (stacked ``init_params``) with Adam, in one compiled call.

    Model ``i`` draws the minibatch of step ``t`` from ``fold_in(keys[i], t)`` (uniform without
    replacement within a batch), so training in segments (``start_step``, ``opt_state``) gives
    the same result as one run. The steps run in ``landscape.train.run_steps`` with that data
    order (``batch_fn``), vmapped over models; the step count is traced, so one compilation
    serves every segment length.
    """
    opt = optax.adam(lr)
    if opt_state is None:
        opt_state = jax.vmap(opt.init)(init_params)
    params, opt_state = _train_segment(keys, init_params, opt_state, train,
                                       jnp.asarray(start_step), jnp.asarray(start_step + num_steps),
                                       batch_size, lr)
    return (params, opt_state) if return_state else params


@functools.partial(jax.jit, static_argnums=(6, 7))
def _train_segment(keys, params, opt_state, train, start, stop, batch_size, lr):
    opt = optax.adam(lr)
    n = train["y"].shape[0]

    def sample(data_and_key, t, _):
        data, key = data_and_key
        idx = jax.random.choice(jax.random.fold_in(key, t), n, (batch_size,), replace=False)
        return jax.tree.map(lambda v: v[idx], data)

    def one(key, p, s):
        state = T.TrainState(p, s, None, start)
        state = T.run_steps(loss_fn, opt, state, (train, key), key=key, num_steps=stop - start,
                            batch_fn=sample)[0]
        return state.params, state.opt_state

    return jax.vmap(one)(keys, params, opt_state)


def stacked_init(keys, in_dim, width, depth, num_classes):
    return jax.vmap(lambda k: init_mlp(k, in_dim, width, depth, num_classes))(keys)


def unstack(tree, i):
    return jax.tree.map(lambda v: v[i], tree)


def evaluate(params, data):
    """``(loss, error)`` over a whole dataset."""
    return float(loss_fn(params, data)), float(error_fn(params, data))


def to_numpy(tree):
    return jax.tree.map(np.asarray, tree)

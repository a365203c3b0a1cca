"""Exact dataset means of per-batch metrics and checks shared by the connectivity modules."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from landscape import tree as T


def dataset_mean(fn: Callable, dataset, batch_size: int | None):
    """Mean over ``dataset`` of ``fn(batch)`` (a pytree of per-batch *means*), exactly weighted.

    Full batches of ``batch_size`` run under ``lax.scan``; a remainder batch is one more call
    with its own static shape. Each batch mean is weighted by its number of examples. Traceable.
    """
    n = T.num_examples(dataset, "dataset")
    b = n if batch_size is None else min(int(batch_size), n)
    nb, rem = divmod(n, b)
    if nb == 1:
        total = jax.tree.map(lambda v: v * b, fn(T.take(dataset, slice(0, b))))
    else:
        main = jax.tree.map(lambda x: x[: nb * b].reshape((nb, b) + x.shape[1:]), dataset)

        def body(acc, batch):
            out = fn(batch)
            return jax.tree.map(lambda a, v: a + v * b, acc, out), None

        init = jax.tree.map(jnp.zeros_like, jax.eval_shape(fn, T.take(dataset, slice(0, b))))
        total, _ = jax.lax.scan(body, init, main)
    if rem:
        tail = fn(T.take(dataset, slice(nb * b, n)))
        total = jax.tree.map(lambda a, v: a + v * rem, total, tail)
    return jax.tree.map(lambda a: a / n, total)


def check_batch_size(batch_size, name: str = "batch_size") -> None:
    if batch_size is None:
        return
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"{name} must be a positive int or None; got {batch_size!r}")


def check_models(params_a, params_b, name_a: str = "params_a", name_b: str = "params_b"):
    """Same structure, shapes and floating dtypes; finite values when concrete."""
    T.check_same_structure(params_a, params_b, name_a, name_b)
    for nm, p in ((name_a, params_a), (name_b, params_b)):
        for leaf in jax.tree.leaves(p):
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise TypeError(f"{nm} leaves must be floating arrays; got {jnp.result_type(leaf)}")
        if not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(p)):
            T.check_finite(p, nm)


def float_dtype(tree):
    leaves = jax.tree.leaves(tree)
    return jnp.result_type(*leaves) if leaves else jnp.float32

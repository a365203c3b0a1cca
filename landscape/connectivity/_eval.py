"""Checks shared by the connectivity modules (dataset means live in ``landscape.batching``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from landscape import tree as T


def check_models(params_a, params_b, name_a: str = "params_a", name_b: str = "params_b"):
    """Same structure, shapes and floating dtypes; finite values when concrete."""
    T.check_same_structure(params_a, params_b, name_a, name_b)
    for nm, p in ((name_a, params_a), (name_b, params_b)):
        for leaf in jax.tree.leaves(p):
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise TypeError(f"{nm} leaves must be floating arrays; got {jnp.result_type(leaf)}")
        if not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(p)):
            T.check_finite(p, nm)

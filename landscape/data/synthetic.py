"""Synthetic classification data: Gaussian mixtures with C classes.

Used for the Hessian-outlier experiments (Sagun et al. 2017; Papyan 2019, 2020), where the
number of outliers of the Hessian spectrum tracks the number of classes C.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["gaussian_mixture"]


def gaussian_mixture(
    key: jax.Array,
    *,
    num_classes: int = 10,
    num_per_class: int = 100,
    dim: int = 20,
    separation: float = 3.0,
    noise: float = 1.0,
    num_test_per_class: int = 0,
):
    """Balanced C-class mixture of isotropic Gaussians.

    Class means are ``mu_c = separation * g_c`` with ``g_c ~ N(0, I_dim)``, so two means are
    about ``separation * sqrt(2 dim)`` apart; examples are ``x = mu_y + noise * N(0, I_dim)``.
    The defaults (``separation=3, noise=1``) give easily separable classes.

    Returns:
      ``train`` (and ``test`` when ``num_test_per_class > 0``, as a tuple ``(train, test)``):
      dicts with ``x (C * n, dim)`` and int32 labels ``y (C * n,)`` in shuffled order. The
      class means are shared between train and test.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2; got {num_classes}")
    if num_per_class < 1 or dim < 1:
        raise ValueError(f"num_per_class and dim must be >= 1; got {num_per_class}, {dim}")
    k_mu, k_train, k_test = jax.random.split(key, 3)
    means = separation * jax.random.normal(k_mu, (num_classes, dim))

    def draw(k, n):
        k_x, k_perm = jax.random.split(k)
        y = jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), n)
        x = means[y] + noise * jax.random.normal(k_x, (num_classes * n, dim))
        perm = jax.random.permutation(k_perm, num_classes * n)
        return {"x": x[perm], "y": y[perm]}

    train = draw(k_train, num_per_class)
    if num_test_per_class > 0:
        return train, draw(k_test, num_test_per_class)
    return train

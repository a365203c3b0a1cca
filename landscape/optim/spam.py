"""SPAM: spike-aware Adam with momentum reset (Huang et al., ICLR 2025).

Huang, Zhu, Jin, Liu, Wang, Liu, "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM
Training", ICLR 2025 (arXiv:2501.06842). Reference code: ``pytorch_optimizer.SPAM`` (4.1.0),
a cleaned port of the authors' ``SPAM-Optimizer`` repository.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from landscape.optim.base import chain_with_decay_and_lr

__all__ = ["SpamState", "scale_by_spam", "spam", "spam_masks", "spam_warmup_factor"]


class SpamState(NamedTuple):
    """State of :func:`scale_by_spam`.

    Attributes:
      count: int32 number of updates taken.
      mu: first moment, a pytree like the params (zero outside the sparse-momentum mask).
      nu: second moment, likewise.
    """

    count: jax.Array
    mu: Any
    nu: Any


def spam_warmup_factor(step, reset_interval, warmup_steps, death_rate: float = 0.99):
    """The step multiplier ``w_t`` of the (1-based) ``step``: 1 before the first momentum reset;
    after a reset at step ``t0`` (a multiple of ``reset_interval``, ``t0 >= 2``) and with
    ``j = step - t0 < warmup_steps``,
    ``w = 1 - death_rate (1 + cos(pi (j + 1) / (warmup_steps + 1))) / 2``, else 1.
    This is the reference's ``1 - CosineDecay(0.99, N)``: it starts at about ``0.01`` on the
    reset step and rises to 1 over ``warmup_steps`` steps."""
    step = jnp.asarray(step)
    j = step % reset_interval
    restarted = (step >= reset_interval) & (step >= 2)
    cos = jnp.cos(jnp.pi * (j + 1) / (warmup_steps + 1))
    death = jnp.where(restarted & (j < warmup_steps), death_rate * (1 + cos) / 2, 0.0)
    return 1.0 - death


def spam_masks(key, tree, density, phase):
    """Sparse-momentum masks: for every 2-D leaf of ``tree`` a bool array of its shape with
    i.i.d. ``Bernoulli(density)`` entries (float32 uniforms ``< density``, the same with and
    without x64), drawn from ``fold_in(fold_in(key, leaf_index),
    phase)``; other leaves get an all-True mask. ``phase`` counts the momentum resets so far
    (a new mask is drawn at each reset)."""
    leaves, treedef = jax.tree.flatten(tree)
    out = []
    for i, x in enumerate(leaves):
        if jnp.ndim(x) == 2:
            k = jax.random.fold_in(jax.random.fold_in(key, i), phase)
            out.append(jax.random.uniform(k, jnp.shape(x), jnp.float32) < density)
        else:
            out.append(jnp.ones(jnp.shape(x), bool))
    return jax.tree.unflatten(treedef, out)


def scale_by_spam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    threshold: float = 5000.0,
    reset_interval: int = 500,
    warmup_steps: int = 50,
    clip_delay: int = 20,
    density: float = 1.0,
    key: jax.Array | None = None,
) -> optax.GradientTransformation:
    r"""Rescale updates by SPAM (Adam with spike clipping, momentum reset and warm-up).

    At the 1-based step ``t`` with gradient ``g``, with ``Delta T = reset_interval``,
    ``theta = threshold`` and ``N = warmup_steps``:

    1. momentum reset: if ``t mod Delta T == 0``, ``m <- 0`` and ``v <- 0``;
    2. spike clipping, once ``t >= clip_delay`` and ``t mod Delta T >= clip_delay`` (and
       ``theta != 0``): entries with ``g_i^2 > theta v_i`` (``v`` the second moment before this
       step) become ``sign(g_i) sqrt(theta v_i)``;
    3. sparse momentum (only with a ``key``): ``g <- g * M`` on every 2-D leaf, with ``M`` a
       random mask of density ``density`` redrawn at every reset (:func:`spam_masks`);
    4. Adam moments ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``;
    5. output ``w_t sqrt(1 - b2^t) / (1 - b1^t) * M * m / (sqrt(v) + eps)``, with ``w_t``
       the cosine warm-up of :func:`spam_warmup_factor` (about 0.01 at a reset, 1 after
       ``N`` steps).

    The bias corrections use the global step ``t`` (they are not restarted at a reset: the
    warm-up ``w_t`` damps the first steps after it instead), and ``eps`` is added to
    ``sqrt(v)`` before the bias correction, as in the reference code.

    Deviations of the reference from the paper and of this code from the reference:
    the reference's first sparse mask has exactly ``floor(density * size)`` entries (later
    masks are Bernoulli); here every mask is Bernoulli and comes from the explicit ``key``.
    The masks only exist where ``key`` is given; ``density`` is then a traceable
    hyperparameter. Moments are stored densely (zero outside the mask), so sparse momentum
    changes the update, not the memory. The reference's weight decay touches only the
    masked entries and multiplies the params after the step (the authors' code writes that
    masked decay into a copy, so it has no effect); the alias :func:`spam` decays every entry
    of the leaves its ``mask`` selects, as ``u = -lr (d + wd w)``. The paper adds ``eps`` to
    the bias-corrected ``sqrt(v_hat)``; the reference (and this code) to ``sqrt(v)``.

    All numeric arguments may be traced (``optax.inject_hyperparams``); ``reset_interval``,
    ``warmup_steps`` and ``clip_delay`` are step counts. Defaults are those of the reference.
    """
    if key is None and isinstance(density, int | float) and density != 1.0:
        raise ValueError(f"density={density} < 1 (sparse momentum) needs an explicit `key`")

    def init_fn(params):
        return SpamState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params),
                         jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        t = optax.safe_increment(state.count)
        reset = t % reset_interval == 0
        clip = (threshold != 0) & (t >= clip_delay) & (t % reset_interval >= clip_delay)
        g_leaves, treedef = jax.tree.flatten(updates)
        if key is not None:
            phase = jnp.where(t >= 2, t // reset_interval, 0)
            masks = jax.tree.leaves(spam_masks(key, updates, density, phase))
        else:
            masks = [None] * len(g_leaves)
        scale = (jnp.sqrt(1 - b2**t) / (1 - b1**t)
                 * spam_warmup_factor(t, reset_interval, warmup_steps))

        def leaf(g, m, v, mask):
            m = jnp.where(reset, jnp.zeros_like(m), m)
            v = jnp.where(reset, jnp.zeros_like(v), v)
            limit = threshold * v
            g = jnp.where(clip & (g * g > limit), jnp.sign(g) * jnp.sqrt(limit), g)
            if mask is not None:
                g = jnp.where(mask, g, 0)
            m = (b1 * m + (1 - b1) * g).astype(m.dtype)
            v = (b2 * v + (1 - b2) * g * g).astype(v.dtype)
            d = m / (jnp.sqrt(v) + eps)
            if mask is not None:
                d = jnp.where(mask, d, 0)
            return (scale * d).astype(g.dtype), m, v

        out = [leaf(*args) for args in zip(g_leaves, jax.tree.leaves(state.mu),
                                           jax.tree.leaves(state.nu), masks, strict=True)]
        d, mu, nu = (jax.tree.unflatten(treedef, [o[i] for o in out]) for i in range(3))
        return d, SpamState(t, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def spam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    threshold: float = 5000.0,
    reset_interval: int = 500,
    warmup_steps: int = 50,
    clip_delay: int = 20,
    density: float = 1.0,
    key: jax.Array | None = None,
    weight_decay: float = 0.0,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """SPAM (:func:`scale_by_spam`), then decoupled weight decay and ``-learning_rate``."""
    return chain_with_decay_and_lr(
        scale_by_spam(b1, b2, eps, threshold, reset_interval, warmup_steps, clip_delay,
                      density, key),
        learning_rate, weight_decay, mask)

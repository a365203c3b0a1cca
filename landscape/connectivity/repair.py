"""REPAIR and the BatchNorm-statistics reset (Jordan et al. 2023, "REPAIR: REnormalizing
Permuted Activations for Interpolation Repair").

Interpolating two aligned networks shrinks the variance of hidden units ("variance collapse").
REPAIR rescales every unit of the interpolated network ``theta(alpha)`` so that its
pre-activation mean and standard deviation equal the interpolated endpoint statistics,

    mu* = (1 - alpha) mu_A + alpha mu_B,        sigma* = (1 - alpha) sigma_A + alpha sigma_B,

and fuses the affine correction ``z -> (z - mu) sigma*/sigma + mu*`` into the producing layer:
kernel columns times ``sigma*/sigma``, bias ``(b - mu) sigma*/sigma + mu*``. Layers are corrected
in order, each with statistics measured after the earlier corrections (exact dataset means,
streamed over batches; the variance in a second pass about the mean). The correction is exact:
no ``eps`` enters ``sigma*/sigma``; a unit that is constant on the data (std at most ``eps``)
cannot be rescaled and is only shifted to ``mu*``. Scope: chain networks whose hidden units are
produced by one ``(kernel, bias)`` pair (MLPs, plain CNNs without normalisation).

For networks with BatchNorm the equivalent is a *reset*: recompute the running statistics of the
interpolated network on data (:func:`batchnorm_reset`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from landscape import tree as T
from landscape import validate
from landscape.batching import check_batch_size, dataset_mean
from landscape.connectivity.spec import leaf_keys
from landscape.validate import check_models

__all__ = ["repair", "mlp_producers", "batchnorm_reset"]


def mlp_producers(params: Mapping) -> dict[str, tuple[str, str]]:
    """``{P_<l>: (kernel key, bias key)}`` for the hidden layers of an MLP/CNN param tree
    (``hidden/<l>`` or ``convs/<l>``), keyed like :func:`mlp_spec`."""
    out = {}
    for group in ("hidden", "convs"):
        for l in sorted(params.get(group, {})):
            out[f"P_{l}"] = (f"[{group!r}][{l!r}]['kernel']", f"[{group!r}][{l!r}]['bias']")
    if not out:
        raise ValueError("params have no 'hidden' or 'convs' layers")
    return out


def _stats(features_fn, params, data, batch_size, name):
    """Per-unit mean and (population) std of ``features_fn(params, batch)[name]`` over ``data``.

    Two passes, the second over ``(z - mean)^2``, so a unit whose mean is large next to its
    spread keeps its variance (``E[z^2] - mean^2`` would cancel in float32).
    """
    def units(batch):
        z = features_fn(params, batch)[name]
        return z.reshape(-1, z.shape[-1])

    mean = dataset_mean(lambda b: jnp.mean(units(b), 0), data, batch_size)
    var = dataset_mean(lambda b: jnp.mean(jnp.square(units(b) - mean), 0), data, batch_size)
    return mean, jnp.sqrt(var)


def _rescale(params, kernel_key, bias_key, scale, shift):
    def fix(path, x):
        key = jax.tree_util.keystr(path)
        if key == kernel_key:
            return x * scale.astype(x.dtype)
        if key == bias_key:
            return x * scale.astype(x.dtype) + shift.astype(x.dtype)
        return x

    return jax.tree_util.tree_map_with_path(fix, params)


def repair(features_fn: Callable, producers: Mapping[str, tuple[str, str]], params_a, params_b,
           dataset, *, alpha: float = 0.5, batch_size: int | None = None, eps: float = 1e-6):
    """REPAIR the interpolation ``(1 - alpha) params_a + alpha params_b`` (B already aligned).

    Args:
      features_fn: ``features_fn(params, batch) -> {name: pre-activations (..., n)}``, e.g.
        ``partial(mlp_features, pre_activation=True)``.
      producers: ``{name: (kernel key, bias key)}`` in network order (:func:`mlp_producers`);
        kernels have units on their last axis.
      alpha: interpolation coefficient.
      batch_size: examples per batch for the statistics (default: the whole dataset at once).
      eps: a unit whose pre-activation std on ``dataset`` is at most ``eps`` is constant there
        (a dead unit): no affine map can give it ``sigma*``, so it keeps scale 1 and is only
        shifted to ``mu*``. Every other unit gets scale ``sigma* / sigma`` (no ``eps`` in it).

    Returns the repaired interpolated params. After the call, each unit's pre-activation mean
    on ``dataset`` equals ``mu*``, and its std equals ``sigma*`` unless it was constant (std at
    most ``eps``), exactly up to float rounding: layer ``l`` is corrected with statistics
    measured after layers ``< l`` were, and correcting it leaves those untouched. The tests
    check this against a float64 forward pass.
    """
    check_models(params_a, params_b)
    check_batch_size(batch_size)
    validate.check_batch(dataset, "dataset")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0; got {eps!r}")
    keys = leaf_keys(params_a)
    for name, (kk, bk) in producers.items():
        if kk not in keys or bk not in keys:
            raise ValueError(f"producers[{name!r}] = {(kk, bk)} not found in params")
    stats = jax.jit(_stats, static_argnums=(0, 3, 4))
    mid = T.tree_lerp(params_a, params_b, alpha)
    for name, (kk, bk) in producers.items():
        mu_a, sd_a = stats(features_fn, params_a, dataset, batch_size, name)
        mu_b, sd_b = stats(features_fn, params_b, dataset, batch_size, name)
        mu, sd = stats(features_fn, mid, dataset, batch_size, name)
        target_mu, target_sd = (1 - alpha) * mu_a + alpha * mu_b, (1 - alpha) * sd_a + alpha * sd_b
        live = sd > eps
        scale = jnp.where(live, target_sd / jnp.where(live, sd, 1.0), 1.0)
        mid = _rescale(mid, kk, bk, scale, target_mu - mu * scale)
    return mid


def batchnorm_reset(apply_train_with_state: Callable, momentum: float, *,
                    batch_size: int | None = None) -> Callable:
    """A ``recompute_state(params, state, dataset) -> state`` for :func:`interpolate`.

    ``apply_train_with_state(params, state, x) -> (outputs, new_state)`` is a train-mode forward
    pass whose BatchNorm layers update running statistics as ``new = momentum * old +
    (1 - momentum) * batch`` (flax convention; ``landscape.nnx.functional(model, mode="train")
    .apply_with_state``). Starting from zero statistics, ``new / (1 - momentum)`` is the batch
    statistic itself; averaged exactly over batches of ``batch_size`` (the whole dataset by
    default) it is the reset population statistic, with earlier layers normalised by their own
    batch statistics, as in a PyTorch ``momentum=None`` reset pass.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1); got {momentum}")

    def recompute(params, state, data):
        zero = T.tree_zeros_like(state)

        def per_batch(batch):
            _, new = apply_train_with_state(params, zero, batch["x"])
            return T.tree_scale(new, 1.0 / (1.0 - momentum))

        return dataset_mean(per_batch, data, batch_size)

    return recompute

"""Per-example gradients and the statistics of gradient noise, with memory bounded by a chunk.

For a mean loss ``L(w) = (1/n) sum_i l_i(w)`` over a batch of ``n`` examples, let
``g_i = grad l_i(w)`` (the gradient of ``loss_fn(params, example_i)`` with the example passed as a
batch of one), ``G = (1/n) sum_i g_i`` and the per-example covariance

    Sigma = (1/(n-1)) sum_i (g_i - G)(g_i - G)^T        (unbiased, normalised by n - 1).

:func:`gradient_statistics` reports, from running sums over chunks of ``chunk_size`` examples
(per-example gradients of one chunk at a time are materialised, never all ``n``):

* ``norms`` ``||g_i||``, ``total_variance`` ``tr(Sigma)``, ``leaf_variance`` (the same per leaf)
  and the per-parameter signal-to-noise ratio ``snr_j = |G_j| / sqrt(Sigma_jj)``;
* ``coherence``: the m-coherence of Chatterjee & Zielinski (2022, "On the generalization
  mystery in deep learning") with ``m = n``: ``||sum_i g_i||^2 / sum_i ||g_i||^2``, 1 for
  mutually orthogonal and ``n`` for identical gradients;
* ``noise_scale``: the simple noise scale ``B_simple = tr(Sigma) / ||G||^2`` of McCandlish,
  Kaplan, Amodei et al. (2018, "An empirical model of large-batch training");
* the adaptive-batch-size tests, each as the batch-size-free ``statistic``, the smallest
  ``batch_size`` that passes at its tolerance, and whether ``n`` passes: the norm test of Byrd,
  Chin, Nocedal, Wu (2012, "Sample size selection in optimization methods for machine
  learning"), and the inner-product and orthogonality tests of Bollapragada, Byrd, Nocedal (2018,
  "Adaptive sampling strategies for stochastic optimization"), as used by AdAdaGrad (Lau, Liu,
  Kolar 2024):

      norm:          b >= (1/(n-1)) sum_i ||g_i - G||^2 / (eta^2 ||G||^2)
      inner product: b >= (1/(n-1)) sum_i (<g_i, G> - ||G||^2)^2 / (theta^2 ||G||^4)
      orthogonality: b >= (1/(n-1)) sum_i ||g_i - (<g_i, G> / ||G||^2) G||^2 / (nu^2 ||G||^2)

  (the norm test's statistic is ``B_simple``). Bollapragada et al. run the inner-product test
  together with the orthogonality test (the "augmented" test): it asks for the larger batch.

The first pass merges per-chunk means and centred sums of squares (Chan, Golub, LeVeque 1979),
so ``Sigma_jj`` is accumulated without the cancellation of ``E g^2 - G^2``; the second pass
(only the tests and ``minibatch_cosine`` need it) revisits the chunks with ``G`` known. Results
agree for every ``chunk_size`` up to summation order. A ratio ``x / 0`` is reported as ``inf``
for ``x > 0`` and as 0 for ``x = 0``.

:func:`mlp_per_example_norms` gets ``||g_i||`` of a ``landscape.models.MLP`` without any
per-example gradient, by the trick of Goodfellow (2015, "Efficient per-example gradient
computations"): for a dense layer ``y = h W + b``, ``||dl_i/dW||^2 = ||h_i||^2 ||dl_i/dy_i||^2``
and ``||dl_i/db||^2 = ||dl_i/dy_i||^2``, with every ``dl_i/dy_i`` from one backward pass.
:func:`gradient_probe` records these statistics inside :func:`landscape.train.train`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from landscape import batching, losses, validate
from landscape import tree as T
from landscape.train import Probe, ProbeContext, probe

__all__ = [
    "per_example_grads",
    "per_example_norms",
    "mlp_per_example_norms",
    "gradient_statistics",
    "gradient_probe",
    "GradientStatistics",
    "BatchSizeTest",
    "NORM_TEST_ETA",
    "INNER_PRODUCT_THETA",
    "ORTHOGONALITY_NU",
]

HIGHEST = jax.lax.Precision.HIGHEST

#: Default tolerances of the three tests, the values of the papers' experiments: ``eta = 0.5`` for
#: the norm test (Byrd et al. 2012), ``theta = 0.9`` and ``nu = 5.84`` for the inner-product and
#: orthogonality tests (Bollapragada et al. 2018; Bollapragada et al. also ran the norm test
#: with 0.9).
NORM_TEST_ETA = 0.5
INNER_PRODUCT_THETA = 0.9
ORTHOGONALITY_NU = 5.84


class BatchSizeTest(NamedTuple):
    """One adaptive-batch-size test at the current batch of ``n`` examples.

    Attributes:
      statistic: the batch-size-free ratio (the bound's numerator over its denominator without
        the tolerance), a scalar.
      batch_size: ``statistic / tol^2``, the smallest (real) batch size that passes; use its
        ceiling as the next batch size.
      passed: ``n >= batch_size`` (bool scalar).
    """

    statistic: jax.Array
    batch_size: jax.Array
    passed: jax.Array


class GradientStatistics(NamedTuple):
    """Result of :func:`gradient_statistics` (``n`` examples, ``g_i`` per-example gradients).

    Attributes:
      mean: ``G = (1/n) sum_i g_i``, a pytree like params (the batch gradient of a mean loss).
      norms: ``(n,)`` ``||g_i||``.
      total_variance: ``tr(Sigma) = (1/(n-1)) sum_i ||g_i - G||^2``.
      leaf_variance: pytree like params with scalar leaves: the same sum over each leaf.
      coherence: ``||sum_i g_i||^2 / sum_i ||g_i||^2`` in ``[0, n]``.
      noise_scale: ``B_simple = tr(Sigma) / ||G||^2``.
      snr: pytree like params, ``|G_j| / sqrt(Sigma_jj)`` per parameter.
      norm_test, inner_product_test, orthogonality_test: :class:`BatchSizeTest`.
      minibatch_cosine: cosine between ``G`` and the mean gradient of ``minibatch_size``
        examples drawn without replacement (``None`` unless ``minibatch_size`` is given).
      minibatch_indices: ``(minibatch_size,)`` the examples drawn,
        ``jax.random.choice(key, n, (minibatch_size,), replace=False)`` (or ``None``).
      num_examples: ``n``.
      num_nonfinite: examples whose loss or gradient is not finite (0 when the call returned
        concretely; under ``jit`` the statistics are then NaN).
    """

    mean: Any
    norms: jax.Array
    total_variance: jax.Array
    leaf_variance: Any
    coherence: jax.Array
    noise_scale: jax.Array
    snr: Any
    norm_test: BatchSizeTest
    inner_product_test: BatchSizeTest
    orthogonality_test: BatchSizeTest
    minibatch_cosine: jax.Array | None
    minibatch_indices: jax.Array | None
    num_examples: int
    num_nonfinite: jax.Array


# ----------------------------------------------------------------------------- chunked passes


def _chunks(fn: Callable, data, n: int, c: int, carry):
    """``fn(chunk, idx, carry) -> (carry, rows)`` over consecutive chunks of ``c`` examples.

    One ``lax.scan`` over the ``n // c`` full chunks, then the remainder with its own static
    shape (nothing padded). ``rows`` (per-example outputs, or None) are concatenated to ``n``.
    """
    nb, rem = divmod(n, c)
    outs = []
    if nb:
        main = jax.tree.map(lambda x: x[: nb * c].reshape((nb, c) + x.shape[1:]), data)
        idx = jnp.arange(nb * c, dtype=jnp.int32).reshape(nb, c)
        carry, ys = jax.lax.scan(lambda cr, xs: fn(xs[0], xs[1], cr), carry, (main, idx))
        outs.append(jax.tree.map(lambda y: y.reshape((nb * c,) + y.shape[2:]), ys))
    if rem:
        tail = jax.tree.map(lambda x: x[nb * c:], data)
        carry, ys = fn(tail, jnp.arange(nb * c, n, dtype=jnp.int32), carry)
        outs.append(ys)
    rows = outs[0] if len(outs) == 1 else jax.tree.map(lambda *y: jnp.concatenate(y), *outs)
    return carry, rows


def _value_and_grads(loss_fn, params, chunk):
    """Per-example ``(losses (b,), grads)``: each example is passed as a batch of one."""
    one = lambda ex: jax.value_and_grad(loss_fn)(params, jax.tree.map(lambda x: x[None], ex))
    return jax.vmap(one)(chunk)


def _rows(x):
    return x.reshape(x.shape[0], -1)


def _row_dots(a, b):
    """``(b,)`` per-example ``<a_i, b_i>`` of two pytrees with a leading example axis (``b``
    without that axis is broadcast)."""
    parts = [jnp.sum(_rows(x) * (_rows(y) if y.ndim == x.ndim else y.reshape(1, -1)), axis=1)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return sum(parts[1:], parts[0])


def _plain(batch, n):
    return batching.examples(batch, 0, n) if isinstance(batch, batching.ShardedDataset) else batch


def _first_pass(loss_fn, params, data, n, c):
    """``(mean, m2, sq_norms (n,), nonfinite)``: the mean gradient and the elementwise centred
    sum of squares ``sum_i (g_i - G)^2``, merged chunk by chunk (Chan et al. 1979)."""
    dtype = jnp.result_type(*jax.tree.leaves(params))
    zeros = T.tree_zeros_like(params)

    def fn(chunk, idx, carry):
        count, mean, m2, bad = carry
        loss, g = _value_and_grads(loss_fn, params, chunk)
        b = jnp.asarray(idx.shape[0], dtype)
        cmean = jax.tree.map(lambda x: jnp.mean(x, axis=0), g)
        cm2 = jax.tree.map(lambda x, m: jnp.sum((x - m) ** 2, axis=0), g, cmean)
        total = count + b
        delta = T.tree_sub(cmean, mean)
        mean = jax.tree.map(lambda m, d: m + d * (b / total), mean, delta)
        m2 = jax.tree.map(lambda a, s, d: a + s + d * d * (count * b / total), m2, cm2, delta)
        sq = _row_dots(g, g)
        bad = bad + jnp.sum(~(jnp.isfinite(loss) & jnp.isfinite(sq)), dtype=jnp.int32)
        return (total, mean, m2, bad), sq

    init = (jnp.zeros((), dtype), zeros, zeros, jnp.zeros((), jnp.int32))
    (_, mean, m2, bad), sq = _chunks(fn, data, n, c, init)
    return mean, m2, sq, bad


def _second_pass(loss_fn, params, data, n, c, mean, weights):
    """``(inner products <g_i, G> (n,), sum_i ||g_i - (<g_i,G>/||G||^2) G||^2, sum_i w_i g_i)``."""
    G2 = T.tree_vdot(mean, mean)

    def fn(chunk, idx, carry):
        orth, wsum = carry
        _, g = _value_and_grads(loss_fn, params, chunk)
        a = _row_dots(g, mean)
        coef = _ratio(a, G2)
        resid = jax.tree.map(lambda x, m: x - coef.reshape((-1,) + (1,) * m.ndim) * m, g, mean)
        orth = orth + jnp.sum(_row_dots(resid, resid))
        if weights is not None:
            w = weights[idx]
            wsum = jax.tree.map(lambda s, x: s + jnp.tensordot(w, x, axes=1, precision=HIGHEST),
                                wsum, g)
        return (orth, wsum), a

    init = (jnp.zeros((), G2.dtype), None if weights is None else T.tree_zeros_like(params))
    (orth, wsum), a = _chunks(fn, data, n, c, init)
    return a, orth, wsum


def _ratio(num, den):
    """``num / den`` with ``x / 0 = inf`` for ``x > 0`` and ``0 / 0 = 0``."""
    pos = den > 0
    return jnp.where(pos, num / jnp.where(pos, den, 1), jnp.where(num > 0, jnp.inf, 0.0))


def _test(statistic, tol, n):
    bs = statistic / tol**2
    return BatchSizeTest(statistic, bs, n >= bs)


# ----------------------------------------------------------------------------- public functions


def _check(loss_fn, params, batch, chunk_size, name="batch"):
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable loss_fn(params, batch); got {type(loss_fn)}")
    validate.check_params(params)
    n = batching.num_examples(batch, name)
    c = batching.check_batch_size(chunk_size, "chunk_size")
    validate.check_scalar_loss(loss_fn, params, batching.examples(batch, 0, 1))
    return n, n if c is None else min(c, n)


def _raise_nonfinite(bad, n, name="batch"):
    if validate.is_concrete(bad) and int(bad) > 0:
        raise ValueError(f"loss_fn(params, example) or its gradient is not finite for {int(bad)} "
                         f"of the {n} examples of {name} at the given params")


@functools.partial(jax.jit, static_argnames=("loss_fn", "n", "c"))
def _grads_impl(loss_fn, params, batch, n, c):
    def fn(chunk, idx, bad):
        loss, g = _value_and_grads(loss_fn, params, chunk)
        return bad + jnp.sum(~jnp.isfinite(loss), dtype=jnp.int32), g

    return _chunks(fn, _plain(batch, n), n, c, jnp.zeros((), jnp.int32))


def per_example_grads(loss_fn: Callable, params, batch, *, chunk_size: int | None = None):
    """Per-example gradients ``g_i = grad_w loss_fn(params, example_i)``, stacked.

    Each example is passed to ``loss_fn`` as a batch of one, so for a mean loss ``g_i`` is the
    gradient of the ``i``-th example's loss. The examples are visited in chunks of
    ``chunk_size`` (``vmap`` within a chunk, ``lax.scan`` over chunks, then the remainder), so
    the working memory beyond the result is one chunk's gradients. Traceable.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: pytree of floating arrays.
      batch: pytree with a leading example axis of ``n >= 1`` examples (or a
        ``batching.ShardedDataset``).
      chunk_size: examples per ``vmap`` (``None``: all ``n`` at once).

    Returns:
      A pytree like ``params`` whose leaves have a leading axis of ``n``: leaf shape ``(n, *s)``.

    Raises:
      ValueError/TypeError naming ``batch`` (empty or mismatched leading axes), ``chunk_size``
      (not a positive int), ``loss_fn`` (not a scalar, or not finite on some example).
    """
    n, c = _check(loss_fn, params, batch, chunk_size)
    bad, grads = _grads_impl(loss_fn, params, batch, n, c)
    _raise_nonfinite(bad, n)
    return grads


@functools.partial(jax.jit, static_argnames=("loss_fn", "n", "c"))
def _norms_impl(loss_fn, params, batch, n, c):
    def fn(chunk, idx, bad):
        loss, g = _value_and_grads(loss_fn, params, chunk)
        sq = _row_dots(g, g)
        return bad + jnp.sum(~(jnp.isfinite(loss) & jnp.isfinite(sq)), dtype=jnp.int32), sq

    bad, sq = _chunks(fn, _plain(batch, n), n, c, jnp.zeros((), jnp.int32))
    return bad, jnp.sqrt(sq)


def per_example_norms(loss_fn: Callable, params, batch, *, chunk_size: int | None = None):
    """``(n,)`` per-example gradient norms ``||g_i||`` (see :func:`per_example_grads`), with
    memory bounded by one chunk of per-example gradients (they are reduced, not stored)."""
    n, c = _check(loss_fn, params, batch, chunk_size)
    bad, norms = _norms_impl(loss_fn, params, batch, n, c)
    _raise_nonfinite(bad, n)
    return norms


@functools.partial(jax.jit, static_argnames=("loss_fn", "n", "c", "m"))
def _stats_impl(loss_fn, params, batch, key, tols, n, c, m):
    data = _plain(batch, n)
    mean, m2, sq, bad = _first_pass(loss_fn, params, data, n, c)
    diag = jax.tree.map(lambda s: s / (n - 1), m2)
    leaf_var = jax.tree.map(jnp.sum, diag)
    tr = sum(jax.tree.leaves(leaf_var))
    G2 = T.tree_vdot(mean, mean)
    weights = picks = None
    if m is not None:
        picks = jax.random.choice(key, n, (m,), replace=False)
        weights = jnp.zeros((n,), G2.dtype).at[picks].set(1.0 / m)
    a, orth, wsum = _second_pass(loss_fn, params, data, n, c, mean, weights)
    cosine = None
    if m is not None:
        cosine = _ratio(T.tree_vdot(wsum, mean), T.tree_norm(wsum) * jnp.sqrt(G2))
    eta, theta, nu = tols
    ip = jnp.sum((a - G2) ** 2) / (n - 1)
    return GradientStatistics(
        mean=mean, norms=jnp.sqrt(sq), total_variance=tr, leaf_variance=leaf_var,
        coherence=_ratio(n * G2, jnp.mean(sq)), noise_scale=_ratio(tr, G2),
        snr=jax.tree.map(lambda g, v: _ratio(jnp.abs(g), jnp.sqrt(v)), mean, diag),
        norm_test=_test(_ratio(tr, G2), eta, n),
        inner_product_test=_test(_ratio(ip, G2 * G2), theta, n),
        orthogonality_test=_test(_ratio(orth / (n - 1), G2), nu, n),
        minibatch_cosine=cosine, minibatch_indices=picks, num_examples=n, num_nonfinite=bad)


def gradient_statistics(loss_fn: Callable, params, batch, *, chunk_size: int | None = None,
                        minibatch_size: int | None = None, key=None,
                        eta: float = NORM_TEST_ETA, theta: float = INNER_PRODUCT_THETA,
                        nu: float = ORTHOGONALITY_NU) -> GradientStatistics:
    """Statistics of the per-example gradients of ``loss_fn`` over ``batch`` (module docstring).

    Two passes over ``batch`` in chunks of ``chunk_size`` examples (two gradient evaluations
    per example; working memory: one chunk of per-example gradients plus three params-sized
    accumulators). Traceable. Accuracy: the sums are exact up to rounding in the params dtype,
    and every centred quantity (``Sigma``, the test numerators) is accumulated centred, so the
    relative error is a small multiple of the dtype's epsilon even when the noise is small
    compared with ``G``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss (an example is passed as a batch
        of one).
      params: pytree of floating arrays.
      batch: pytree with a leading axis of ``n >= 2`` examples (or a ``ShardedDataset``).
      chunk_size: examples per ``vmap`` (``None``: all at once).
      minibatch_size: if given, also report ``minibatch_cosine`` for a minibatch of this many
        examples (``1 <= minibatch_size <= n``) drawn without replacement with ``key``.
      key: PRNG key, required with ``minibatch_size``.
      eta, theta, nu: tolerances of the norm, inner-product and orthogonality tests.

    Returns:
      :class:`GradientStatistics`.

    Raises:
      ValueError/TypeError naming ``batch`` (empty, fewer than 2 examples), ``chunk_size``,
      ``minibatch_size``, ``key``, ``eta``/``theta``/``nu``, or ``loss_fn`` (not scalar, or
      not finite on some example when the values are concrete).
    """
    n, c = _check(loss_fn, params, batch, chunk_size)
    if n < 2:
        raise ValueError(f"batch must hold at least 2 examples (the variance is normalised by "
                         f"n - 1); got {n}")
    m = None
    if minibatch_size is not None:
        m = validate.check_int(minibatch_size, "minibatch_size", low=1, high=n)
        validate.check_key(key, "key (required with minibatch_size)")
    tols = tuple(validate.check_positive(v, name) for v, name in
                 ((eta, "eta"), (theta, "theta"), (nu, "nu")))
    out = _stats_impl(loss_fn, params, batch, key if m is not None else None, tols, n, c, m)
    _raise_nonfinite(out.num_nonfinite, n)
    return out._replace(num_examples=n)


def _mlp_layers(params):
    if not isinstance(params, dict) or "head" not in params:
        raise ValueError("params must be a landscape.models.MLP param dict with 'hidden' and "
                         "'head' entries of {'kernel', 'bias'}")
    if params.get("norms"):
        raise ValueError("mlp_per_example_norms supports MLPs without norm layers; params has "
                         "'norms' (use per_example_norms)")
    hidden = params.get("hidden", {})
    return [hidden[k] for k in sorted(hidden)] + [params["head"]]


def mlp_per_example_norms(params, batch, *, activation: Callable = jax.nn.relu,
                          output_loss="cross_entropy",
                          residual: bool = False, chunk_size: int | None = None) -> jax.Array:
    """``(n,)`` per-example gradient norms of an MLP without per-example gradients (Goodfellow).

    The network is ``landscape.models.MLP`` without norm layers: params
    ``{"hidden": {l: {"kernel", "bias"}}, "head": {"kernel", "bias"}}``, hidden layers
    ``z_l = activation(h_{l-1} W_l + b_l)`` (``h_l = h_{l-1} + z_l`` for ``l > 0`` with
    ``residual=True``), logits ``h W + b``, and the loss ``output_loss`` (a name from
    ``landscape.losses`` or a callable mean loss) over ``batch = {"x", "y"}``. One backward pass
    per chunk gives every ``delta_{l,i} = dl_i/dy_{l,i}`` at the pre-activations ``y_l``, and
    ``||g_i||^2 = sum_l (||h_{l-1,i}||^2 + 1) ||delta_{l,i}||^2``: memory is ``O(b * width)``
    per chunk of ``b`` examples instead of ``O(b * dim)``. Equal to
    :func:`per_example_norms` of the same loss up to rounding.
    """
    layers = _mlp_layers(params)
    validate.check_params(params)
    n = batching.check_supervised(batch, "batch")
    c = batching.check_batch_size(chunk_size, "chunk_size")
    if not callable(activation):
        raise TypeError(f"activation must be a callable such as jax.nn.relu; got {activation!r}")
    act = activation
    out_loss = losses.resolve(output_loss, "output_loss")
    fan_in = layers[0]["kernel"].shape[0]
    x_size = math.prod(jnp.shape(batching.examples(batch, 0, 1)["x"])[1:])
    if x_size != fan_in:
        raise ValueError(f"batch['x'] must have {fan_in} features per example (the first "
                         f"kernel's fan-in); got {x_size}")
    return _mlp_norms_impl(layers, _plain(batch, n), n, n if c is None else min(c, n), act,
                           out_loss, bool(residual))


@functools.partial(jax.jit, static_argnames=("n", "c", "act", "out_loss", "residual"))
def _mlp_norms_impl(layers, data, n, c, act, out_loss, residual):
    def summed_loss(deltas, x, y):
        h, inputs = x, []
        for l, (layer, d) in enumerate(zip(layers, deltas)):
            inputs.append(h)
            pre = jnp.matmul(h, layer["kernel"], precision=HIGHEST) + layer["bias"] + d
            if l == len(layers) - 1:
                out = pre
            else:
                z = act(pre)
                h = h + z if (residual and l > 0) else z
        per = out_loss.per_example
        total = jnp.sum(per(out, y)) if per is not None else out.shape[0] * out_loss.mean(out, y)
        return total, inputs

    def fn(chunk, idx, carry):
        x = chunk["x"].reshape(chunk["x"].shape[0], -1).astype(layers[0]["kernel"].dtype)
        zeros = [jnp.zeros((x.shape[0], layer["bias"].shape[-1]), x.dtype) for layer in layers]
        deltas, inputs = jax.grad(summed_loss, has_aux=True)(zeros, x, chunk["y"])
        sq = sum(jnp.sum(d * d, axis=1) * (jnp.sum(h * h, axis=1) + 1)
                 for d, h in zip(deltas, inputs))
        return carry, sq

    _, sq = _chunks(fn, data, n, c, None)
    return jnp.sqrt(sq)


# ----------------------------------------------------------------------------- training probe

_KINDS = ("cheap", "full")


def gradient_probe(loss_fn: Callable, dataset=None, *, every: int = 1, kind: str = "cheap",
                   chunk_size: int | None = None, eta: float = NORM_TEST_ETA,
                   theta: float = INNER_PRODUCT_THETA, nu: float = ORTHOGONALITY_NU,
                   norms_fn: Callable | None = None) -> Probe:
    """A training probe recording gradient-noise statistics every ``every`` steps.

    On the step's batch (``ctx.batch``; the whole dataset for full-batch training) or on
    ``dataset`` if given (a fixed set, entering the compiled loop as the probe's data), at the
    parameters ``w_t`` before the update of step ``t``. ``loss_fn`` is the stateless
    ``loss_fn(params, batch)`` (for a stateful training loss pass its eval form).

    Records (``result.trace[name]``):

    * ``kind="cheap"`` (one gradient pass): ``norm_mean``, ``norm_max`` (of ``||g_i||``),
      ``grad_norm`` ``||G||``, ``coherence``, ``noise_scale``, ``distance_from_init``
      ``||w_t - w_0||`` and ``update_size`` ``||w_t - w_{t-every}||`` (the distance since the
      previous record: the one-step update size for ``every=1``; 0 at the first record);
    * ``kind="full"`` (two passes): the above and ``total_variance``, ``leaf_variance`` (a pytree
      like params of scalars), ``norm_test_batch_size``, ``inner_product_batch_size`` and
      ``orthogonality_batch_size`` at tolerances ``eta``, ``theta``, ``nu``.

    The state carries ``w_0`` and the previous record's params (two params-sized copies).

    **Fast cheap path** (``norms_fn``, ``kind="cheap"`` only): ``norms_fn(params, batch) -> (n,)``
    per-example gradient norms ``||g_i||`` computed without per-example gradients, e.g.
    ``functools.partial(mlp_per_example_norms, activation=jax.nn.relu)`` for an MLP. The
    cheap set then needs only those norms and the mean gradient ``G`` (one ordinary
    ``jax.grad`` of ``loss_fn`` over the batch, which must be the mean of the per-example
    losses; on the step's batch of a stateless loss the probe takes the step's own gradient
    ``ctx.grads`` instead, so the probe adds only the cost of ``norms_fn``): with
    ``S = sum_i ||g_i||^2``,

        sum_i ||g_i - G||^2 = S - n ||G||^2,   tr(Sigma) = max(S - n ||G||^2, 0) / (n - 1).

    The subtraction cancels: with ``S`` and ``||G||^2`` each accurate to a few ``eps`` (the
    dtype's epsilon), the relative error of ``tr(Sigma)`` (and of ``noise_scale``) is about
    ``eps (1 + 1 / B_simple)``; it matters only when the examples' gradients nearly agree
    (``B_simple`` far below 1, coherence near ``n``), where the default path, which
    accumulates centred sums, stays accurate. ``norm_mean``, ``norm_max``, ``grad_norm`` and
    ``coherence`` involve no cancellation. Memory is then whatever ``norms_fn`` needs (for
    ``mlp_per_example_norms``, ``O(chunk * width)``), never ``n`` per-example gradients.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable loss_fn(params, batch); got {type(loss_fn)}")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}; got {kind!r}")
    c = batching.check_batch_size(chunk_size, "chunk_size")
    if dataset is not None:
        batching.num_examples(dataset, "dataset")
    tols = tuple(validate.check_positive(v, name) for v, name in
                 ((eta, "eta"), (theta, "theta"), (nu, "nu")))
    if norms_fn is not None:
        if not callable(norms_fn):
            raise TypeError(f"norms_fn must be callable norms_fn(params, batch) -> (n,) norms; "
                            f"got {type(norms_fn).__name__}")
        if kind != "cheap":
            raise ValueError(f"norms_fn serves only kind='cheap' (the full set needs per-example "
                             f"gradients); got kind={kind!r}")

    def init(params, data):
        return {"init": params, "prev": params}

    def fn(ctx: ProbeContext, state):
        batch = ctx.batch if dataset is None else ctx.data
        n = batching.num_examples(batch, "the probe's batch")
        cc = n if c is None else min(c, n)
        if kind == "full":
            rec = _full_record(loss_fn, ctx.params, batch, n, cc, tols)
        elif norms_fn is not None:
            # the step's own gradient is G when the probe reads the step's batch of a stateless
            # loss whose gradient the step computed (train's value_and_grad unset)
            reuse = dataset is None and ctx.grads is not None and ctx.model_state is None
            rec = _norms_record(loss_fn, norms_fn, ctx.params, _plain(batch, n), n,
                                ctx.grads if reuse else None)
        else:
            mean, m2, sq, _ = _first_pass(loss_fn, ctx.params, _plain(batch, n), n, cc)
            rec = _cheap_record(mean, m2, sq, n)
        rec["distance_from_init"] = T.tree_norm(T.tree_sub(ctx.params, state["init"]))
        rec["update_size"] = T.tree_norm(T.tree_sub(ctx.params, state["prev"]))
        return rec, {"init": state["init"], "prev": ctx.params}

    return probe(fn, every=every, init=init, data=dataset)


def _cheap_record(mean, m2, sq, n):
    G2 = T.tree_vdot(mean, mean)
    tr = sum(jnp.sum(s) for s in jax.tree.leaves(m2)) / max(n - 1, 1)
    norms = jnp.sqrt(sq)
    return {"norm_mean": jnp.mean(norms), "norm_max": jnp.max(norms), "grad_norm": jnp.sqrt(G2),
            "coherence": _ratio(n * G2, jnp.mean(sq)), "noise_scale": _ratio(tr, G2)}


def _norms_record(loss_fn, norms_fn, params, batch, n, mean=None):
    """The cheap set from per-example norms and the mean gradient (``gradient_probe``'s
    docstring: ``tr(Sigma) = (S - n ||G||^2) / (n - 1)``, clamped at 0)."""
    norms = norms_fn(params, batch)
    if jnp.shape(norms) != (n,):
        raise ValueError(f"norms_fn(params, batch) must return the ({n},) per-example gradient "
                         f"norms of the batch; got shape {jnp.shape(norms)}")
    if mean is None:
        mean = jax.grad(loss_fn)(params, batch)
    G2 = T.tree_vdot(mean, mean)
    norms = norms.astype(G2.dtype)
    S = jnp.sum(jnp.square(norms))
    tr = jnp.maximum(S - n * G2, 0) / max(n - 1, 1)
    return {"norm_mean": jnp.mean(norms), "norm_max": jnp.max(norms), "grad_norm": jnp.sqrt(G2),
            "coherence": _ratio(n * G2, S / n), "noise_scale": _ratio(tr, G2)}


def _full_record(loss_fn, params, batch, n, c, tols):
    if n < 2:
        raise ValueError(f"gradient_probe(kind='full') needs batches of at least 2 examples; "
                         f"got {n}")
    st = _stats_impl(loss_fn, params, batch, None, tols, n, c, None)
    return {"norm_mean": jnp.mean(st.norms), "norm_max": jnp.max(st.norms),
            "grad_norm": T.tree_norm(st.mean), "coherence": st.coherence,
            "noise_scale": st.noise_scale, "total_variance": st.total_variance,
            "leaf_variance": st.leaf_variance,
            "norm_test_batch_size": st.norm_test.batch_size,
            "inner_product_batch_size": st.inner_product_test.batch_size,
            "orthogonality_batch_size": st.orthogonality_test.batch_size}

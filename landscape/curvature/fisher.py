"""The Fisher information matrix (Monte Carlo and exact) and the empirical Fisher.

Three different matrices, easily confused (Martens 2020, "New insights and perspectives on the
natural gradient method", sections 9-11; Kunstner, Balles, Hennig 2019, "Limitations of the
empirical Fisher approximation for natural gradient descent"):

* **Fisher** ``F = (1/n) sum_i E_{y ~ p(y | x_i, theta)} g_i(y) g_i(y)^T`` with labels drawn from
  the MODEL's predictive distribution, ``g_i(y) = grad_theta l(f(x_i), y)``. For softmax
  cross-entropy and for MSE (a Gaussian likelihood with unit variance) the expectation equals
  the GGN exactly: ``F = G``. :func:`fisher` estimates it by Monte Carlo (``num_samples`` labels
  per example; unbiased, error ~ 1/sqrt(n * num_samples)) or computes the expectation exactly
  (``exact=True``).
* **Empirical Fisher** ``F_emp = (1/n) sum_i g_i g_i^T`` with the TRUE labels ``y_i``. It is
  not the Fisher, is not a curvature estimate in general, and can point in poor directions for
  preconditioning (Kunstner et al. 2019). :func:`empirical_fisher` computes it.

Both are computed as ``(1/n) sum_i J_i^T (r_i r_i^T) J_i v`` with the output gradients
``r_i = dl/df_i``, which equals the mean of ``g_i (g_i . v)`` since ``g_i = J_i^T r_i``, at the
cost of two gradient passes per product and without materialising per-example gradients.
"""

from __future__ import annotations

import jax

from landscape.curvature import output_losses as O
from landscape.curvature.gauss_newton import build
from landscape.validate import check_key

__all__ = ["fisher", "empirical_fisher"]


def fisher(
    apply_fn,
    output_loss,
    params,
    dataset,
    batch_size: int = 256,
    *,
    key: jax.Array | None = None,
    num_samples: int = 1,
    exact: bool = False,
    check: bool = True,
    compute_dtype=None,
):
    """Fisher information with labels drawn from the model, as a ``LinearOperator``.

    Args:
      apply_fn: ``apply_fn(params, x) -> outputs``.
      output_loss: ``"cross_entropy"`` (labels ~ Categorical(softmax(f))) or ``"mse"``
        (targets ~ N(f, I)). Callables are not supported: the predictive distribution of an
        arbitrary loss is not known.
      params, dataset, batch_size, check: as in :func:`landscape.curvature.ggn`. For
        cross-entropy, concrete integer labels ``dataset["y"]`` must lie in ``[0, C)`` with ``C``
        the last axis of the model output (``ValueError`` naming ``dataset['y']`` otherwise),
        although the Monte Carlo Fisher itself does not use them.
      key: PRNG key of the Monte Carlo labels (required unless ``exact=True``; a
        ``jax.random.key`` or a legacy ``PRNGKey``, else ``TypeError``). Labels are drawn
        once per example with ``fold_in(key, example_index)``, so every product of one operator
        uses the SAME labels (a fixed symmetric PSD matrix, as Lanczos needs) and the matrix does
        not depend on ``batch_size`` or on sharding.
      num_samples: labels per example (positive int).
      exact: compute the expectation over labels in closed form (sum over all C classes for
        cross-entropy, the identity for MSE) instead of sampling; equals the GGN.
      compute_dtype: mixed precision, as in :func:`landscape.curvature.ggn`: the network's
        linearisation and its transpose run in ``compute_dtype`` (e.g. ``jnp.bfloat16``), the
        output-space curvature and the sum over batches in the params dtype.

    Returns:
      An operator over ravelled params (``dim``, ``dtype``, ``matvec``, ``matmat``). The Monte
      Carlo estimate is unbiased for the Fisher; its error relative to ``exact=True`` shrinks like
      ``1 / sqrt(n * num_samples)``.

    References: Martens (2020); Kunstner et al. (2019).
    """
    kind = O.canonical(output_loss)
    if callable(kind):
        raise ValueError(
            "fisher needs output_loss 'cross_entropy' or 'mse' (a callable loss has no known "
            "predictive distribution to sample labels from); use ggn for a callable loss"
        )
    if exact:
        return build(apply_fn, kind, params, dataset, batch_size, "fisher_exact", check=check,
                     compute_dtype=compute_dtype)
    if key is None:
        raise ValueError("fisher needs key=jax.random.key(...) to sample labels (or exact=True)")
    check_key(key, "key")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int; got {num_samples!r}")
    return build(
        apply_fn,
        kind,
        params,
        dataset,
        batch_size,
        "fisher",
        key=key,
        num_samples=num_samples,
        check=check,
        compute_dtype=compute_dtype,
    )


def empirical_fisher(
    apply_fn, output_loss, params, dataset, batch_size: int = 256, *, check: bool = True,
    compute_dtype=None,
):
    """Empirical Fisher ``(1/n) sum_i g_i g_i^T`` with the TRUE labels, as a ``LinearOperator``.

    ``g_i = grad_theta l(f(x_i; theta), y_i)`` is the per-example gradient. This is NOT the Fisher
    (labels from the data, not from the model); see the module docstring and Kunstner et al.
    (2019). It is PSD with rank at most ``n``.

    Args:
      apply_fn, params, dataset, batch_size, check: as in :func:`landscape.curvature.ggn`.
      output_loss: ``"cross_entropy"``, ``"mse"``, or a callable ``(outputs, targets) ->`` MEAN
        over the batch of per-example losses (its per-example output gradients are recovered as
        ``b * d loss / d outputs``).
      compute_dtype: mixed precision, as in :func:`landscape.curvature.ggn`.

    Accuracy against explicit per-example gradients (``vmap(grad)``): ~1e-6 relative in float32,
    ~1e-14 in float64.
    """
    return build(
        apply_fn, output_loss, params, dataset, batch_size, "empirical_fisher", check=check,
        compute_dtype=compute_dtype,
    )

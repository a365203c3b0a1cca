"""Sharpness along a trajectory: certified top eigenvalues of the full-dataset curvature.

The *sharpness* ``S(w) = lambda_max(H(w))`` of the full-batch training loss is the quantity of
the edge-of-stability literature (Cohen, Kaur, Li, Kolter, Talwalkar 2021, "Gradient descent on
neural networks typically occurs at the edge of stability"): under full-batch GD with step
``eta`` it rises (progressive sharpening) until it reaches ``2 / eta`` and then hovers there.

:func:`sharpness` computes the top-``k`` eigenpairs of ``H(w)`` (or of any curvature operator
built from ``w``, e.g. the GGN) over a whole dataset or a fixed subset by Lanczos
(:func:`landscape.spectral.eigsh`), with its residual certificates. Along a trajectory the
operator changes little from one step to the next, so the previous eigenvectors are an
excellent start: ``v0=previous.eigenvectors`` recovers the pairs in a few products.
:func:`sharpness_probe` does exactly that inside the compiled training loop of
:mod:`landscape.train`: it carries the eigenvectors and the measured rounding floor from one
call to the next, checks convergence after every Lanczos step (``chunk=1``), and re-measures
the floor (three products) every ``refloor_every`` calls. The cost per estimate is the Lanczos
steps plus ``k`` certificate products.

The same probe tracks the *preconditioned* sharpness ``lambda_max(P^-1 H)`` of an adaptive
optimizer when given a ``preconditioner`` (see :mod:`landscape.dynamics.preconditioned`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from landscape import batching, curvature, spectral, validate
from landscape.linop import LinearOperator
from landscape.train import Probe, ProbeContext, probe

__all__ = ["sharpness", "sharpness_probe", "curvature_operator", "full_loss_and_grad",
           "SharpnessState"]


def _batch(dataset, batch_size):
    n = batching.num_examples(dataset)
    return n if batch_size is None else min(batching.check_batch_size(batch_size), n)


def curvature_operator(loss_fn: Callable, params, dataset, *, batch_size: int | None = None,
                       operator: Callable | None = None) -> LinearOperator:
    """The curvature operator at ``params``: the full-dataset Hessian of ``loss_fn`` or
    ``operator(params)``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over a batch.
      params: the point.
      dataset: pytree with a leading example axis (or a ``ShardedDataset``).
      batch_size: examples per batch of each product (``None``: the whole dataset at once).
      operator: optional ``operator(params) -> LinearOperator`` replacing the Hessian, e.g.
        ``lambda p: curvature.ggn(apply_fn, "mse", p, dataset, check=False)``.
    """
    if operator is not None:
        op = operator(params)
        if not isinstance(op, LinearOperator):
            raise TypeError("operator(params) must return a landscape LinearOperator (e.g. "
                            f"curvature.ggn(...)); got {type(op).__name__}")
        return op
    return curvature.hessian(loss_fn, params, dataset, _batch(dataset, batch_size), check=False)


def full_loss_and_grad(loss_fn: Callable, params, dataset, batch_size: int | None = None):
    """``(L(w), grad L(w))`` of the mean loss over the whole dataset, in batches (exact mean).

    Traceable; memory bounded by one batch. ``grad`` is a pytree like ``params``.
    """
    dtype = jnp.result_type(*jax.tree.leaves(params))
    vg = lambda b: jax.value_and_grad(loss_fn)(params, b)
    return batching.dataset_mean(vg, dataset, _batch(dataset, batch_size), dtype=dtype)


def sharpness(loss_fn: Callable, params, dataset, *, key, k: int = 1,
              batch_size: int | None = None, v0=None, tol: float | None = None,
              max_steps: int | None = None, chunk: int = 1, measured_floor=None,
              operator: Callable | None = None, check: bool = True) -> spectral.EigshResult:
    """Top-``k`` eigenpairs of the full-dataset curvature at ``params``, with certificates.

    ``S(w) = lambda_1(H(w))`` with ``H = (1/n) sum_i d^2 l_i / dw^2`` over ``dataset`` (a whole
    training set, or the fixed subset Cohen et al. 2021 use), computed by Lanczos with full
    reorthogonalisation (:func:`landscape.spectral.eigsh`): ``result.eigenvalues[0]`` is the
    sharpness and ``result.residuals[i]`` a bound on the distance from ``eigenvalues[i]`` to an
    eigenvalue of ``H``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, the mean loss over a batch.
      params: pytree of floating arrays.
      dataset: pytree with a leading example axis, or a ``batching.ShardedDataset`` (products
        then run on every device).
      key: PRNG key (start vector, breakdown restarts, floor measurement).
      k: number of eigenpairs, ``1 <= k <= dim``.
      batch_size: examples per batch of each product (``None``: the whole dataset at once).
      v0: warm start: the previous ``eigenvectors`` ``(dim, b)`` (or one ``(dim,)`` vector).
      tol: relative certificate tolerance (default: ``spectral.default_tol``).
      max_steps: Lanczos step cap (default as in ``eigsh``).
      chunk: Lanczos steps between convergence checks (1: stop at the first step that
        converges, the fewest products; the check costs a ``k x steps`` tridiagonal solve).
      measured_floor: reuse a previously measured linearity defect (saves three products).
      operator: ``operator(params) -> LinearOperator`` replacing the Hessian (e.g. the GGN).
      check: evaluate the dataset loss once (when concrete) and raise if it is not finite.

    Returns:
      ``spectral.EigshResult`` ("LA" order: ``eigenvalues[0]`` is the sharpness).

    Raises:
      ValueError: ``k`` out of ``[1, dim]``, a non-finite dataset loss, bad ``v0``/``tol``.
    """
    validate.check_params(params)
    validate.check_key(key)
    if check and operator is None and validate.is_concrete((params, dataset)):
        loss, _ = full_loss_and_grad(loss_fn, params, dataset, batch_size)
        validate.check_finite_value(loss, "the dataset loss")
    op = curvature_operator(loss_fn, params, dataset, batch_size=batch_size, operator=operator)
    return spectral.eigsh(op, k=k, which="LA", key=key, v0=v0, tol=tol, max_steps=max_steps,
                          chunk=chunk, measured_floor=measured_floor)


#: Default relative tolerance of :func:`sharpness_probe` (never below ``eigsh``'s own default).
TRACKING_TOL = 1e-4


def _tracking_tol(tol, op):
    if tol is not None:
        return tol
    return max(TRACKING_TOL, spectral.default_tol(op.dtype, op.dim))


class SharpnessState(NamedTuple):
    """Carried state of :func:`sharpness_probe`: the eigenvectors ``(dim, k)`` of the last and of
    the second-to-last estimate, the last measured floor, and the number of estimates taken."""

    eigenvectors: jax.Array
    older: jax.Array
    measured_floor: jax.Array
    count: jax.Array


def sharpness_probe(loss_fn: Callable, dataset, *, k: int = 1, every: int = 1,
                    batch_size: int | None = None, tol: float | None = None,
                    max_steps: int | None = None, refloor_every: int = 16,
                    operator: Callable | None = None, preconditioner=None,
                    preconditioner_args: dict | None = None) -> Probe:
    """A training probe recording the certified top-``k`` curvature every ``every`` steps.

    Each call warm-starts Lanczos from the eigenvectors of an earlier call (the first call
    starts from a random vector drawn from the probe key): from the previous call when ``every``
    is even, else from the call before it, so that the start is always an even number of steps
    old (at the edge of stability GD and its top eigenvectors oscillate with period two; on the
    ``edge_of_stability`` setting this halves the products per estimate). It stops at the first
    Lanczos step whose
    estimates pass ``tol`` (``chunk=1``), and reuses the previous linearity-defect measurement
    of the floor, re-measured every ``refloor_every`` calls (three products). The probe runs on
    the parameters before the update of its step (``landscape.train.ProbeContext``), on
    ``dataset`` (the full training set or a fixed subset; it enters the compiled loop as an
    argument).

    With ``preconditioner`` set (``"adam"``, ``"rmsprop"``, ``"adagrad"``, ``"sgd"``, or a
    function ``(opt_state, params, hyperparams) -> diagonal pytree``), it records the
    preconditioned sharpness ``lambda(P^-1/2 H P^-1/2)`` with ``P`` read from the optimizer
    state of the step (see :func:`landscape.dynamics.preconditioned_sharpness`), and also the
    raw sharpness.

    ``tol`` defaults to ``TRACKING_TOL = 1e-4`` relative (or ``eigsh``'s default where that is
    larger): each recorded eigenvalue is certified to within ``1e-4 ||H||``, far finer than any
    edge-of-stability ratio needs, and the actual error is usually much smaller
    (``residual^2 / gap``). On the ``edge_of_stability`` setting it takes 8 products per
    estimate (median) where the float32 default ``1e-5`` takes 10.

    Records (``result.trace[name]``): ``eigenvalues (k,)``, ``residuals (k,)``, ``num_matvecs``,
    ``status`` (0 converged, see ``EigshResult.reason``); with a preconditioner also
    ``raw_eigenvalues (k,)`` and ``raw_num_matvecs`` of the raw Hessian (tracked the same way).
    """
    from landscape.dynamics import preconditioned as pc

    k = validate.check_int(k, "k", low=1)
    refloor_every = validate.check_int(refloor_every, "refloor_every", low=1)
    batching.num_examples(dataset)
    batch_size = _batch(dataset, batch_size)
    pre = None if preconditioner is None else pc.resolve(preconditioner, preconditioner_args)

    def init(params, data):
        dim, dtype = validate.flat_dim_dtype(params)
        if k > dim:
            raise ValueError(f"k must be <= the number of parameters ({dim}); got {k}")
        zero = jnp.zeros((), jnp.result_type(dtype, jnp.float32))
        vecs = jnp.zeros((dim, k), dtype)
        one = SharpnessState(vecs, vecs, zero, jnp.zeros((), jnp.int32))
        return {"raw": one, "pre": one} if pre is not None else {"raw": one}

    def track(op, st: SharpnessState, key):
        kv, kf, ke = jax.random.split(key, 3)
        fresh = jax.random.normal(kv, st.eigenvectors.shape, st.eigenvectors.dtype)
        # at the edge of stability GD oscillates with period two, and so do the top
        # eigenvectors: start from the last estimate taken an even number of steps ago
        prev = st.eigenvectors if every % 2 == 0 else jnp.where(st.count >= 2, st.older,
                                                                 st.eigenvectors)
        v0 = jnp.where(st.count == 0, fresh, prev)
        floor = jax.lax.cond(st.count % refloor_every == 0,
                             lambda: spectral.linearity_defect(op, kf).astype(
                                 st.measured_floor.dtype),
                             lambda: st.measured_floor)
        r = spectral.eigsh(op, k=k, which="LA", key=ke, v0=v0, tol=_tracking_tol(tol, op),
                           max_steps=max_steps, chunk=1, measured_floor=floor)
        extra = jnp.where(st.count % refloor_every == 0, 3, 0)
        # a non-finite estimate (Adam's preconditioner before its first update) is recorded as
        # it is, but not carried: the next call starts afresh
        ok = jnp.all(jnp.isfinite(r.eigenvectors)) & jnp.isfinite(floor)
        new = SharpnessState(jnp.where(ok, r.eigenvectors, st.eigenvectors),
                             jnp.where(ok, st.eigenvectors, st.older),
                             jnp.where(ok, floor, st.measured_floor),
                             jnp.where(ok, st.count + 1, 0))
        return r, r.num_matvecs + extra, new

    def fn(ctx: ProbeContext, state):
        op = curvature_operator(loss_fn, ctx.params, ctx.data, batch_size=batch_size,
                                operator=operator)
        kr, kp = jax.random.split(ctx.key)
        raw, raw_n, raw_state = track(op, state["raw"], kr)
        if pre is None:
            rec = {"eigenvalues": raw.eigenvalues, "residuals": raw.residuals,
                   "num_matvecs": raw_n, "status": raw.status}
            return rec, {"raw": raw_state}
        scale = pre(ctx.opt_state, ctx.params, ctx.hyperparams)
        pop = pc.preconditioned_operator(op, scale)
        r, n, pre_state = track(pop, state["pre"], kp)
        rec = {"eigenvalues": r.eigenvalues, "residuals": r.residuals, "num_matvecs": n,
               "status": r.status, "raw_eigenvalues": raw.eigenvalues,
               "raw_residuals": raw.residuals, "raw_num_matvecs": raw_n}
        return rec, {"raw": raw_state, "pre": pre_state}

    return probe(fn, every=every, init=init, data=dataset)

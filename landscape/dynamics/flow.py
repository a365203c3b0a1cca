"""Gradient flow by classical Runge-Kutta with a sharpness-set step, and its distance to GD.

Gradient flow ``dw/dtau = -grad L(w)`` on the full-dataset loss ``L`` is the ``eta -> 0`` limit of
full-batch gradient descent: GD with step ``eta`` after ``t`` steps is compared with the flow at
time ``tau = t eta``. Cohen, Kaur, Li, Kolter, Talwalkar 2021 ("Gradient descent on neural
networks typically occurs at the edge of stability", section 3 and the appendix on gradient
flow) integrate the flow with classical fourth-order Runge-Kutta (RK4) and a step
``h = c / S(w)`` set from the current sharpness ``S = lambda_max(H(w))``: the flow's stiffest
direction decays like ``exp(-S tau)``, so ``S h`` bounded keeps RK4 stable (its stability interval
on the negative real axis is ``S h < 2.78``) and accurate. They find GD tracks the flow while
``S < 2 / eta`` and leaves it once ``S`` reaches ``2 / eta`` (the edge of stability).

:func:`gradient_flow` does this inside one ``jax.jit``: one ``lax.while_loop`` whose iterations
either record the state at the next requested time or take one RK4 step

    k1 = f(w), k2 = f(w + h/2 k1), k3 = f(w + h/2 k2), k4 = f(w + h k3),   f = -grad L
    w+ = w + h/6 (k1 + 2 k2 + 2 k3 + k4),

with ``h = min(step_scale / S, max_step, h_err, time left to the next requested time)``; ``S``
is re-estimated by warm-started Lanczos (:func:`landscape.dynamics.sharpness`) every
``sharpness_every`` steps and at every requested time. The gradient at ``w+`` (``k5 = f(w+)``) is
the next step's ``k1`` (first same as last), so a step costs four full-dataset gradients, and
``(h/6) (k5 - k4)`` is the difference from the third-order solution with weights
``(1/6, 1/3, 1/3, 0, 1/6)`` on ``(k1, ..., k5)``: an embedded error estimate, free. With ``rtol``
set, steps whose estimate exceeds ``rtol * ||w||`` are rejected and ``h_err`` follows the usual
controller ``h (rtol ||w|| / err)^(1/4)``; without it (the default, as in the paper) every step is
accepted and the estimate is only reported.

:func:`gd_flow_distance` and :func:`compare_gd_flow` measure ``||w_GD(t) - w_flow(t eta)||`` with
GD run by :func:`landscape.train.train` (its parameters recorded by :func:`params_probe`).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from landscape import batching, spectral, validate
from landscape.dynamics.sharpness import (
    curvature_operator,
    full_loss_and_grad,
    sharpness,
    sharpness_probe,
)
from landscape.train import Probe, probe, train

__all__ = ["gradient_flow", "GradientFlowResult", "FlowNotFinished", "params_probe",
           "gd_flow_distance", "gd_trajectory", "GDTrajectory", "compare_gd_flow",
           "GDFlowComparison", "first_crossing"]


class GradientFlowResult(NamedTuple):
    """Gradient flow sampled at the requested times (``T`` of them).

    Attributes:
      times: ``(T,)`` the requested flow times ``tau``.
      params: pytree like ``params`` whose leaves have a leading ``(T,)`` axis: ``w(tau_i)``.
      losses: ``(T,)`` full-dataset loss ``L(w(tau_i))``.
      sharpness: ``(T,)`` ``lambda_max(H(w(tau_i)))`` (Lanczos, warm-started).
      sharpness_residuals: ``(T,)`` its certificate (``spectral.EigshResult.residuals``).
      error_estimates: ``(T,)`` the largest embedded local error estimate ``(h/6)||k5 - k4||``
        of the steps in the segment ending at ``tau_i`` (0 for a segment without steps).
      num_steps: ``()`` accepted RK4 steps.
      num_rejected: ``()`` rejected steps (0 unless ``rtol`` is set).
      num_grads: ``()`` full-dataset gradient evaluations (4 per attempted step, plus 1).
      num_hvps: ``()`` Hessian-vector products spent on the sharpness (whole dataset each).
      status: ``()`` int32: ``0`` every requested time reached, ``1`` stopped at
        ``max_steps``, ``2`` stopped at a non-finite loss (the unreached records are NaN).
    """

    times: jax.Array
    params: Any
    losses: jax.Array
    sharpness: jax.Array
    sharpness_residuals: jax.Array
    error_estimates: jax.Array
    num_steps: jax.Array
    num_rejected: jax.Array
    num_grads: jax.Array
    num_hvps: jax.Array
    status: jax.Array

    @property
    def reached(self) -> jax.Array:
        """Every requested time was reached (``status == 0``)."""
        return self.status == 0


class FlowNotFinished(UserWarning):
    """Warned by :func:`gradient_flow` (outside ``jit``) when it stopped before the last time."""


class _State(NamedTuple):
    w: jax.Array  # (dim,) current point
    loss: jax.Array  # L(w)
    k1: jax.Array  # (dim,) -grad L(w)
    elapsed: jax.Array  # flow time since the previous requested time
    i: jax.Array  # index of the next requested time
    s: jax.Array  # current sharpness estimate
    v: jax.Array  # (dim, 1) its eigenvector (warm start)
    floor: jax.Array  # Lanczos measured floor, reused between records
    since: jax.Array  # steps since the last sharpness estimate
    h_err: jax.Array  # error-controlled step bound (inf without rtol)
    seg_err: jax.Array  # largest error estimate in the current segment
    counts: jax.Array  # (4,) int32: accepted, rejected, gradients, hvps
    failed: jax.Array  # bool: non-finite loss


def _check_times(times, dtype) -> jax.Array:
    if np.ndim(times) != 1 or np.shape(times)[0] < 1:
        raise ValueError(f"times must be a non-empty 1-D array of flow times; got shape "
                         f"{np.shape(times)}")
    if validate.is_concrete(times):
        t = np.asarray(times, np.float64)
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            raise ValueError(f"times must be finite and nonnegative; got min {t.min()!r}")
        if np.any(np.diff(t) <= 0):
            j = int(np.flatnonzero(np.diff(t) <= 0)[0])
            raise ValueError(f"times must be strictly increasing; got times[{j}]={t[j]!r} >= "
                             f"times[{j + 1}]={t[j + 1]!r}")
    return jnp.asarray(times, dtype)


def gradient_flow(loss_fn: Callable, params, dataset, times, *, key,
                  batch_size: int | None = None, step_scale: float = 1.0,
                  sharpness_every: int = 5, rtol: float | None = None,
                  max_step: float | None = None, max_steps: int = 100_000,
                  sharpness_tol: float | None = None,
                  sharpness_max_steps: int = 40) -> GradientFlowResult:
    """Integrate gradient flow ``dw/dtau = -grad L(w)`` and sample it at ``times``.

    ``L(w) = (1/n) sum_i l(w; z_i)`` over ``dataset`` (in batches: exact mean, memory of one
    batch). RK4 with the sharpness-set step of Cohen et al. 2021 (module docstring): ``h =
    min(step_scale / S(w), max_step, h_err, time to the next requested time)``; each requested
    time is hit exactly (the step before it is shortened). The global error is ``O(h^4)``:
    halving ``step_scale`` divides it by about 16 (about 20 at ``h S = 0.5``) until rounding
    dominates: relative to ``||w||``, ``~1e-7`` per step in float32, growing with the number
    of steps (``2e-5`` after 4000 steps of a stiff quadratic in the tests), ``~1e-13`` in
    float64. At ``step_scale = 1`` (the paper's choice) the stiffest mode's one-step factor is
    2% off ``e^-1``, in a mode that decays by ``e^-1`` per step anyway. Jit-able as a whole
    (the work runs in one compiled ``while_loop``); outside ``jit`` the inputs are checked.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over a batch (deterministic).
      params: initial point ``w(0)``, any pytree of floating arrays.
      dataset: pytree with a leading example axis (or a ``batching.ShardedDataset``).
      times: ``(T,)`` strictly increasing nonnegative flow times (``0`` records ``w(0)``).
      key: PRNG key (Lanczos start vectors).
      batch_size: examples per batch of every gradient and product (``None``: all at once).
      step_scale: ``c > 0`` in ``h = c / S``; Cohen et al. use ``c = 1``. ``S <= 0`` (no
        positive curvature) sets no bound, so pass ``max_step`` for such landscapes.
      sharpness_every: RK4 steps between sharpness estimates (also one at every requested
        time). Between estimates ``S h`` may grow; ``c <= 1`` leaves room below 2.78.
      rtol: optional relative local-error tolerance (embedded estimate, module docstring);
        ``None``: accept every step.
      max_step: optional cap on ``h`` (flow-time units).
      max_steps: cap on attempted steps; beyond it the run stops (``reached`` False, a
        ``FlowNotFinished`` warning outside ``jit``).
      sharpness_tol: relative Lanczos tolerance (default ``spectral.default_tol``).
      sharpness_max_steps: Lanczos step cap per estimate (warm starts need ~3-10; a small
        cap keeps the Lanczos basis, and the cost of each step, small).

    Returns:
      :class:`GradientFlowResult`.

    Raises:
      ValueError: ``times`` not a non-empty 1-D strictly increasing nonnegative array;
        ``step_scale``/``rtol``/``max_step`` not positive; ``sharpness_every``/``max_steps``
        not positive ints; a non-finite loss at ``params``.
      FloatingPointError: the loss became non-finite during the integration (outside ``jit``).
    """
    validate.check_params(params)
    validate.check_key(key)
    batching.num_examples(dataset)
    validate.check_scalar_loss(loss_fn, params, batching.first_batch(
        dataset, batching.num_examples(dataset) if batch_size is None else batch_size))
    step_scale = _positive_or_traced(step_scale, "step_scale")
    rtol = None if rtol is None else _positive_or_traced(rtol, "rtol")
    max_step = None if max_step is None else _positive_or_traced(max_step, "max_step")
    sharpness_every = validate.check_int(sharpness_every, "sharpness_every")
    max_steps = validate.check_int(max_steps, "max_steps")
    sharpness_max_steps = validate.check_int(sharpness_max_steps, "sharpness_max_steps")
    _, dtype = validate.flat_dim_dtype(params)
    times = _check_times(times, dtype)
    if validate.is_concrete((params, dataset)):
        loss0, _ = full_loss_and_grad(loss_fn, params, dataset, batch_size)
        validate.check_finite_value(loss0, "the dataset loss")
    inf = jnp.asarray(jnp.inf, dtype)
    res = _integrate_jit(loss_fn, params, dataset, times, key, jnp.asarray(step_scale, dtype),
                         inf if rtol is None else jnp.asarray(rtol, dtype),
                         inf if max_step is None else jnp.asarray(max_step, dtype),
                         jnp.asarray(max_steps, jnp.int32), batch_size=batch_size,
                         sharpness_every=sharpness_every, adaptive=rtol is not None,
                         sharpness_tol=sharpness_tol, sharpness_max_steps=sharpness_max_steps)
    if validate.is_concrete(res.losses):
        _report(res)
    return res


def _positive_or_traced(value, name):
    if isinstance(value, jax.core.Tracer):
        return value
    return validate.check_positive(value, name)


def _report(res: GradientFlowResult) -> None:
    status = int(res.status)
    if status == 0:
        return
    last = int(np.argmax(~np.isfinite(np.asarray(res.losses))))
    when = f"before flow time {float(res.times[last]):g} (record {last})"
    if status == 2:
        raise FloatingPointError(f"the loss became non-finite {when}; lower step_scale (or "
                                 "set max_step or rtol)")
    warnings.warn(FlowNotFinished(
        f"gradient_flow stopped after {int(res.num_steps)} steps (max_steps) {when}; the "
        "records from there on are NaN: raise max_steps"), stacklevel=3)


@functools.partial(jax.jit, static_argnames=("loss_fn", "batch_size", "sharpness_every",
                                             "adaptive", "sharpness_tol",
                                             "sharpness_max_steps"))
def _integrate_jit(loss_fn, params, dataset, times, key, step_scale, rtol, max_step, max_steps,
                   *, batch_size, sharpness_every, adaptive, sharpness_tol,
                   sharpness_max_steps):
    w0, unravel = ravel_pytree(params)
    dtype = w0.dtype
    k_start, key = jax.random.split(key)
    T = times.shape[0]

    def f(w):
        loss, g = full_loss_and_grad(loss_fn, unravel(w), dataset, batch_size)
        return loss.astype(dtype), -ravel_pytree(g)[0].astype(dtype)

    def estimate(st: _State, at_record):
        kk = jax.random.fold_in(jax.random.fold_in(key, st.i), st.counts[0] + st.counts[1])
        refloor = (st.counts[3] == 0) | at_record  # re-measured at every requested time
        op = curvature_operator(loss_fn, unravel(st.w), dataset, batch_size=batch_size)
        floor = jax.lax.cond(refloor, lambda: spectral.linearity_defect(op, kk).astype(dtype),
                             lambda: st.floor)
        extra = jnp.where(refloor, 3, 0)
        r = sharpness(loss_fn, unravel(st.w), dataset, key=jax.random.fold_in(kk, 1), k=1,
                      batch_size=batch_size, v0=st.v, measured_floor=floor, check=False,
                      tol=sharpness_tol, max_steps=min(sharpness_max_steps, w0.shape[0]))
        counts = st.counts.at[3].add(r.num_matvecs.astype(jnp.int32) + extra)
        rec = (r.eigenvalues[0].astype(dtype), r.residuals[0].astype(dtype))
        return st._replace(s=rec[0], v=r.eigenvectors.astype(dtype), floor=floor,
                           since=jnp.zeros((), jnp.int32), counts=counts), rec[1]

    def segment(st: _State):  # length of the segment ending at the next requested time
        return times[st.i] - jnp.where(st.i > 0, times[jnp.maximum(st.i - 1, 0)], 0)

    def step(st: _State):
        seg = segment(st)
        left = seg - st.elapsed
        h_sharp = step_scale / jnp.maximum(st.s, 0)
        h = jnp.minimum(jnp.minimum(h_sharp, max_step), jnp.minimum(st.h_err, left))
        last = h >= left
        h = jnp.where(last, left, h)
        _, k2 = f(st.w + (h / 2) * st.k1)
        _, k3 = f(st.w + (h / 2) * k2)
        _, k4 = f(st.w + h * k3)
        w_new = st.w + (h / 6) * (st.k1 + 2 * k2 + 2 * k3 + k4)
        loss_new, k5 = f(w_new)
        err = (h / 6) * jnp.linalg.norm(k5 - k4)
        if adaptive:
            scale = rtol * jnp.maximum(jnp.maximum(jnp.linalg.norm(st.w),
                                                   jnp.linalg.norm(w_new)),
                                       jnp.finfo(dtype).tiny)
            ratio = err / scale
            accept = ratio <= 1
            factor = 0.9 * jnp.where(ratio > 0, ratio, jnp.finfo(dtype).tiny) ** -0.25
            h_err = h * jnp.clip(factor, 0.2, 5.0)
        else:
            accept, h_err = jnp.asarray(True), st.h_err
        finite = jnp.isfinite(loss_new) & jnp.all(jnp.isfinite(w_new))
        accept = accept & finite
        sel = lambda a, b: jnp.where(accept, a, b)  # noqa: E731
        counts = st.counts + jnp.array([accept, ~accept & finite, 4, 0], jnp.int32)
        return st._replace(
            w=sel(w_new, st.w), loss=sel(loss_new, st.loss), k1=sel(k5, st.k1),
            elapsed=jnp.where(accept, jnp.where(last, seg, st.elapsed + h), st.elapsed),
            since=st.since + accept.astype(jnp.int32), h_err=h_err.astype(dtype),
            seg_err=jnp.maximum(st.seg_err, jnp.where(accept, err, 0)), counts=counts,
            failed=~finite)

    def at_record(st):
        return st.elapsed >= segment(st)

    def record(s: _State):
        return s._replace(i=s.i + 1, elapsed=jnp.zeros((), dtype), seg_err=jnp.zeros((), dtype))

    def body(carry):
        # the output buffers stay out of the conds, so that they are updated in place
        st, out_w, out_rec = carry
        rec = at_record(st)
        need = rec | (st.since >= sharpness_every)
        st, resid = jax.lax.cond(need, lambda s: estimate(s, rec),
                                 lambda s: (s, jnp.zeros((), dtype)), st)
        row = jnp.stack([st.loss, st.s, resid, st.seg_err])
        out_w = out_w.at[st.i].set(jnp.where(rec, st.w, out_w[st.i]))
        out_rec = out_rec.at[st.i].set(jnp.where(rec, row, out_rec[st.i]))
        return jax.lax.cond(rec, record, step, st), out_w, out_rec

    def cond(carry):
        st = carry[0]
        return (st.i < T) & ~st.failed & (st.counts[0] + st.counts[1] < max_steps)

    loss0, k10 = f(w0)
    v0 = jax.random.normal(k_start, (w0.shape[0], 1), dtype)
    zero = jnp.zeros((), dtype)
    st = _State(w=w0, loss=loss0, k1=k10, elapsed=zero, i=jnp.zeros((), jnp.int32), s=zero,
                v=v0, floor=zero, since=jnp.asarray(sharpness_every, jnp.int32),
                h_err=jnp.asarray(jnp.inf, dtype), seg_err=zero,
                counts=jnp.array([0, 0, 1, 0], jnp.int32), failed=~jnp.isfinite(loss0))
    st, out_w, out_rec = jax.lax.while_loop(
        cond, body, (st, jnp.full((T, w0.shape[0]), jnp.nan, dtype),
                     jnp.full((T, 4), jnp.nan, dtype)))
    return GradientFlowResult(
        times=times, params=jax.vmap(unravel)(out_w), losses=out_rec[:, 0],
        sharpness=out_rec[:, 1], sharpness_residuals=out_rec[:, 2],
        error_estimates=out_rec[:, 3], num_steps=st.counts[0], num_rejected=st.counts[1],
        num_grads=st.counts[2], num_hvps=st.counts[3],
        status=jnp.where(st.i == T, 0, jnp.where(st.failed, 2, 1)).astype(jnp.int32))


# ----------------------------------------------------------------------------- GD vs the flow


def params_probe(*, every: int = 1) -> Probe:
    """A training probe recording the ravelled parameters ``(dim,)`` every ``every`` steps.

    The record of step ``t`` is ``w_t``, the parameters after ``t`` updates (before the update
    of step ``t``), in ``jax.flatten_util.ravel_pytree`` order; ``result.trace[name]`` is
    ``(R, dim)``. Memory: ``R * dim`` numbers.
    """
    return probe(lambda ctx, state: (ravel_pytree(ctx.params)[0], state), every=every)


def gd_flow_distance(gd_params, flow_params) -> jax.Array:
    """``||w_GD(t_j) - w_flow(t_j eta)||_2`` for each record ``j``.

    Args:
      gd_params, flow_params: the two trajectories at matching records: pytrees of the same
        structure whose leaves have a leading record axis ``(R, ...)`` (e.g.
        ``GradientFlowResult.params``), or ``(R, dim)`` ravelled arrays (``params_probe``).
        A ravelled array and a pytree may be mixed (the pytree is ravelled per record).

    Returns:
      ``(R,)`` Euclidean distances over all parameters.
    """
    a, b = _rows(gd_params, "gd_params"), _rows(flow_params, "flow_params")
    if a.shape != b.shape:
        raise ValueError(f"gd_params and flow_params must have the same records and size; got "
                         f"{a.shape} and {b.shape}")
    d = (a - b).astype(jnp.result_type(a, b))
    return jnp.sqrt(jnp.sum(d * d, axis=1))


def _rows(tree, name):
    leaves = jax.tree.leaves(tree)
    if not leaves or any(np.ndim(x) < 1 for x in leaves):
        raise ValueError(f"{name} must be a pytree of arrays with a leading record axis")
    return jax.vmap(lambda t: ravel_pytree(t)[0])(tree)


class GDTrajectory(NamedTuple):
    """Full-batch GD with step ``eta`` recorded every ``every`` steps (``R`` records).

    Attributes:
      steps: ``(R,)`` steps ``t = 0, every, 2 every, ... < num_steps``.
      params: ``(R, dim)`` ravelled ``w_t`` (after ``t`` updates).
      losses: ``(R,)`` full-dataset loss at ``w_t``.
      sharpness: ``(R,)`` ``lambda_max(H(w_t))`` (warm-started Lanczos).
      sharpness_residuals: ``(R,)`` its certificates.
    """

    steps: np.ndarray
    params: np.ndarray
    losses: np.ndarray
    sharpness: np.ndarray
    sharpness_residuals: np.ndarray


def gd_trajectory(loss_fn: Callable, params, dataset, *, learning_rate: float, num_steps: int,
                  every: int, key, batch_size: int | None = None,
                  sharpness_max_steps: int = 40) -> GDTrajectory:
    """Run full-batch GD (``optax.sgd`` in ``landscape.train.train``) and record ``w_t``
    (:func:`params_probe`), the loss and the sharpness (:func:`sharpness_probe`) every
    ``every`` steps. ``batch_size`` only splits the sharpness products (GD is full-batch).
    The step size is a traced hyperparameter, so runs at several step sizes with the same
    ``loss_fn`` share one compilation."""
    eta = validate.check_positive(learning_rate, "learning_rate")
    num_steps = validate.check_int(num_steps, "num_steps")
    every = validate.check_int(every, "every")
    dim, _ = validate.flat_dim_dtype(params)
    probes = _gd_probes(loss_fn, every, batch_size, min(sharpness_max_steps, dim), dataset)
    res = train(loss_fn, params, optax.sgd, dataset, key=key, num_steps=num_steps,
                hyperparams={"learning_rate": eta}, batch_size=None, progress=False,
                probes=probes)
    s = res.trace["sharpness"]
    return GDTrajectory(steps=np.asarray(res.trace_steps["w"]), params=np.asarray(res.trace["w"]),
                        losses=np.asarray(res.trace["loss"]),
                        sharpness=np.asarray(s["eigenvalues"])[:, 0],
                        sharpness_residuals=np.asarray(s["residuals"])[:, 0])


def _gd_probes(loss_fn, every, batch_size, max_steps, dataset) -> dict[str, Probe]:
    # The probes' functions are part of the compiled loop's cache key: build them once per
    # (loss_fn, sizes) so that runs at other step sizes reuse the compilation.
    made = _probe_fns(loss_fn, every, batch_size, max_steps, batching.num_examples(dataset))
    return {name: dataclasses.replace(pr, data=dataset if pr.data is not None else None)
            for name, pr in made.items()}


@functools.lru_cache(maxsize=16)
def _probe_fns(loss_fn, every, batch_size, max_steps, n) -> dict[str, Probe]:
    stand_in = {"n": jax.ShapeDtypeStruct((n,), jnp.float32)}
    return {"w": params_probe(every=every),
            "loss": probe(lambda ctx, state: (ctx.loss, state), every=every),
            "sharpness": sharpness_probe(loss_fn, stand_in, every=every,
                                         batch_size=batch_size, max_steps=max_steps)}


class GDFlowComparison(NamedTuple):
    """GD with step ``eta`` against gradient flow at ``tau = t eta``, at ``R`` recorded steps.

    Attributes:
      gd: the :class:`GDTrajectory`.
      flow: the :class:`GradientFlowResult` at ``times = gd.steps * eta``.
      distance: ``(R,)`` ``||w_GD(t) - w_flow(t eta)||``.
      crossing_step: first recorded step with ``gd.sharpness >= 2 / eta`` (-1 if none).
    """

    gd: GDTrajectory
    flow: GradientFlowResult
    distance: np.ndarray
    crossing_step: int


def compare_gd_flow(loss_fn: Callable, params, dataset, *, learning_rate: float,
                    num_steps: int, every: int, key, batch_size: int | None = None,
                    sharpness_max_steps: int = 40,
                    flow_kwargs: dict | None = None) -> GDFlowComparison:
    """Run full-batch GD and gradient flow from ``params`` and compare them step by step.

    GD by :func:`gd_trajectory`; the flow by :func:`gradient_flow` at ``tau = t *
    learning_rate`` for the recorded steps (``flow_kwargs`` are passed on, e.g.
    ``step_scale``). Cohen et al. 2021 (section 3): the distance stays near zero while
    ``S < 2 / eta`` and grows once GD reaches the edge of stability. To compare several step
    sizes with one flow, call :func:`gradient_flow` once on the union of their times and
    :func:`gd_flow_distance` per step size (as ``experiments/gd_vs_flow.py`` does).
    """
    k_gd, k_flow = jax.random.split(key)
    gd = gd_trajectory(loss_fn, params, dataset, learning_rate=learning_rate,
                       num_steps=num_steps, every=every, key=k_gd, batch_size=batch_size,
                       sharpness_max_steps=sharpness_max_steps)
    _, dtype = validate.flat_dim_dtype(params)
    flow = gradient_flow(loss_fn, params, dataset, np.asarray(gd.steps * learning_rate, dtype),
                         key=k_flow, batch_size=batch_size,
                         sharpness_max_steps=sharpness_max_steps, **(flow_kwargs or {}))
    return GDFlowComparison(gd=gd, flow=flow,
                            distance=np.asarray(gd_flow_distance(gd.params, flow.params)),
                            crossing_step=first_crossing(gd.steps, gd.sharpness,
                                                         2.0 / learning_rate))


def first_crossing(steps, values, threshold: float) -> int:
    """The first ``steps[j]`` with ``values[j] >= threshold``, or -1 if there is none."""
    hit = np.flatnonzero(np.asarray(values) >= threshold)
    return int(np.asarray(steps)[hit[0]]) if hit.size else -1

"""Central flows of gradient descent, RMSProp and scalar RMSProp (Cohen, Damian, Talwalkar,
Kolter, Lee, ICLR 2025, "Understanding optimization in deep learning with central flows").

At the edge of stability the iterates of an optimizer oscillate along the top eigenvectors of the
(preconditioned) Hessian; the *central flow* is an ODE for their time average. Time ``t`` is
measured in optimizer steps. For **gradient descent** with step ``eta``:

    dw/dt = -eta [ grad L(w) + 1/2 grad_w <H(w), Sigma(t)> ],     Sigma = U X U^T,

``U`` ``(dim, k)`` the top-``k`` eigenvectors of ``H(w)``, ``X`` ``(k, k)`` PSD, chosen so that
``U^T H U`` never exceeds ``2 / eta``. With ``beta_ij = grad_w (u_i^T H(w) u_j)`` (a third
derivative, eigenvectors held fixed), ``alpha_ij = <beta_ij, grad L>`` and
``B(X)_ij = sum_kl <beta_ij, beta_kl> X_kl``, ``d/dt (U^T H U) = -eta (alpha + 1/2 B(X))`` and
``X`` solves the semidefinite complementarity problem
``X >= 0, alpha' + 1/2 B(X) >= 0, <X, alpha' + 1/2 B(X)> = 0``
(:func:`landscape.dynamics.complementarity.solve_psd_complementarity`).

**Discretisation (ours).** Explicit Euler with step ``dt`` (in optimizer steps). The constraint
is imposed on the Euler prediction, ``U^T H U + dt d/dt(U^T H U) <= 2/eta``, i.e.
``alpha' = alpha + (2/eta I - U^T H U) / (eta dt)``: eigenvalues below the threshold may rise
freely, and an overshoot (from the curvature of the path and the motion of ``U``) is pushed back
within one step. With one eigenvalue at the threshold this is the paper's
``sigma^2 = 2 <-grad L, grad S> / ||grad S||^2``. Euler is stable for ``dt < 2 / (eta lambda)``,
i.e. ``dt < 1`` at the threshold; ``dt = 1`` would be GD itself. The default ``dt = 0.5``.

**Predictions.** Time-averaged loss ``L(w) + 1/2 <H, Sigma> = L(w) + 1/2 sum_i lambda_i X_ii``
(``~ L + tr(X) / eta``); sharpness ``lambda_1(H(w))``, held at ``2 / eta``.

**RMSProp** (``nu_t = b2 nu_{t-1} + (1 - b2) g_t^2``, ``w_{t+1} = w_t - eta g_t / sqrt(nu_t)``):
with ``D = (nu + eps)^-1/2`` (``P = D^-1``), the paper's flow is

    dw/dt  = -eta D [ grad L + 1/2 grad_w <H, Sigma> ],
    dnu/dt = (1 - b2) / b2 [ grad L^2 + diag(H Sigma H) - nu ],

with ``Sigma = D^1/2 U X U^T D^1/2``, ``U`` the top eigenvectors of ``D^1/2 H D^1/2`` (the
preconditioned Hessian, same eigenvalues as ``P^-1 H``), held at ``2 / eta``. (``(1-b2)/b2``
and ``g^2 - nu`` come from ``nu_t - nu_{t-1} = (1-b2)/b2 (g_t^2 - nu_t)``, the EMA written with
the ``nu`` the step uses.) The constraint now moves through ``w`` and through ``nu``:
``alpha`` gains ``(lambda_i + lambda_j)/(4 eta) sum_p u_ip u_jp c (g_p^2 - nu_p)/(nu_p + eps)``
and ``B`` gains ``(c tau^3 / eta) W``, ``W_ij,kl = sum_p (u_i u_j u_k u_l)_p / sqrt(nu_p + eps)``
with ``c = (1-b2)/b2``, ``tau = 2/eta``; that Gram term is written with the
eigenvalues at the threshold, where the constraint binds (it keeps ``B`` symmetric PSD).
**Scalar RMSProp** is the same with one scalar ``nu`` and ``||grad L||^2 + tr(H Sigma H)``; for
``k = 1`` it reduces to the paper's closed form
``sigma^2 = [2 <-grad L, grad S> + 2c/eta^2 (nu - ||grad L||^2)] / [||grad S||^2 + 2c S^2/eta^2]``.
The paper derives all three flows informally (time-averaging a Taylor expansion) and validates
them numerically; nothing here is a theorem. The GD flow with several unstable directions (the
SDCP) is as stated for GD; for the RMSProp flows the ``nu`` coupling of the SDCP (the extra
``alpha`` and ``W`` terms above, any ``k``) and the Euler slack are our derivation from the same
definitions, checked against discrete RMSProp on a two-parameter model (tests), not taken from
the paper's code.

Cost per Euler step: one full-batch gradient, a warm-started Lanczos run (``num_hvps``), and
``k (k + 1) / 2`` gradients of Hessian quadratic forms (third-order products,
``num_third_order``; each ~2-4 gradients).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from landscape import batching, curvature, spectral, validate
from landscape import tree as T
from landscape.dynamics.complementarity import _operator, _solve
from landscape.dynamics.preconditioned import preconditioned_operator
from landscape.dynamics.sharpness import curvature_operator, full_loss_and_grad, sharpness

__all__ = ["CentralFlowResult", "central_flow", "rmsprop_central_flow",
           "scalar_rmsprop_central_flow", "hessian_form_gradients"]

HIGHEST = jax.lax.Precision.HIGHEST


class CentralFlowResult(NamedTuple):
    """Central-flow trajectory, recorded at ``R + 1`` times (``R = num_steps // record_every``).

    Attributes:
      times: ``(R+1,)`` times in optimizer steps (``0, record_every, ..., num_steps``).
      params: the parameters at those times (each leaf with a leading ``R+1`` axis), or None.
      nu: RMSProp's ``nu`` at those times (leaves ``(R+1, ...)``; ``(R+1,)`` for scalar
        RMSProp), None for GD.
      loss: ``(R+1,)`` ``L(w(t))``.
      predicted_loss: ``(R+1,)`` the predicted time-averaged loss ``L + 1/2 <H, Sigma>``.
      eigenvalues: ``(R+1, k)`` top eigenvalues of ``H`` (GD) or of ``D^1/2 H D^1/2``.
      eigenvalue_residuals: ``(R+1, k)`` their Lanczos certificates.
      X: ``(R+1, k, k)`` the SDCP solution (``Sigma = D^1/2 U X U^T D^1/2``).
      trace_X: ``(R+1,)``.
      sdcp_residual, sdcp_status: ``(R+1,)`` of the SDCP solve (status 0: solved).
      eigsh_status: ``(R+1,)`` Lanczos status (0: converged).
      num_hvps, num_third_order, num_grads: ``(R+1,)`` products spent so far.
      threshold: ``2 / eta``; learning_rate, dt: as given.
    """

    times: jax.Array
    params: Any
    nu: Any
    loss: jax.Array
    predicted_loss: jax.Array
    eigenvalues: jax.Array
    eigenvalue_residuals: jax.Array
    X: jax.Array
    trace_X: jax.Array
    sdcp_residual: jax.Array
    sdcp_status: jax.Array
    eigsh_status: jax.Array
    num_hvps: jax.Array
    num_third_order: jax.Array
    num_grads: jax.Array
    threshold: float
    learning_rate: float
    dt: float


class _Config(NamedTuple):
    rule: str            # "gd" | "rmsprop" | "scalar_rmsprop"
    eta: float
    dt: float
    k: int
    batch_size: int | None
    num_records: int
    substeps: int
    b2: float
    eps: float
    tol: float | None
    max_steps: int | None
    refloor_every: int
    record_params: bool
    sdcp_iters: int


def hessian_form_gradients(loss_fn: Callable, params, dataset, vectors, *,
                           batch_size: int | None = None) -> jax.Array:
    """``beta[i, j] = grad_w (v_i^T H(w) v_j)`` ``(k, k, dim)``, the vectors held fixed.

    ``H`` is the full-dataset Hessian of ``loss_fn``; ``vectors`` is ``(dim, k)`` (ravelled like
    ``params``). Each of the ``k (k + 1) / 2`` pairs ``i <= j`` is one reverse pass through a
    forward-over-reverse Hessian-vector product (``curvature.hvp``), averaged exactly over the
    dataset in batches; ``beta`` is symmetric in ``(i, j)``. This is the third derivative
    ``D^3 L[v_i, v_j, .]``; for an eigenvector ``u`` of ``H`` with a simple eigenvalue
    ``lambda``, ``beta[i, i] = grad lambda``.
    """
    flat, unravel = T.ravel(params)
    vectors = jnp.asarray(vectors, flat.dtype)
    if vectors.ndim != 2 or vectors.shape[0] != flat.shape[0]:
        raise ValueError(f"vectors must have shape ({flat.shape[0]}, k); got {vectors.shape}")
    k = vectors.shape[1]
    I, J = np.triu_indices(k)
    Vi = jax.vmap(unravel)(vectors.T[I])
    Vj = jax.vmap(unravel)(vectors.T[J])

    def per_batch(batch):
        def one(a, b):
            form = lambda w: T.tree_vdot(a, curvature.hvp(loss_fn, w, batch, b))
            return T.ravel(jax.grad(form)(params))[0]
        return jax.vmap(one)(Vi, Vj)

    n = batching.num_examples(dataset)
    bs = n if batch_size is None else min(batching.check_batch_size(batch_size), n)
    pairs = batching.dataset_mean(per_batch, dataset, bs, dtype=flat.dtype)
    idx = np.zeros((k, k), np.int32)
    idx[I, J] = np.arange(len(I))
    idx[J, I] = np.arange(len(I))
    return pairs[idx]


def _scaling(cfg, nu, flat):
    """``D`` as a flat ``(dim,)`` vector and ``1 / (nu + eps)`` (flat, or a scalar)."""
    if cfg.rule == "gd":
        return jnp.ones_like(flat), None
    if cfg.rule == "scalar_rmsprop":
        inv = 1 / (nu + cfg.eps)
        return jnp.full_like(flat, jnp.sqrt(inv)), inv
    inv = 1 / (T.ravel(nu)[0] + cfg.eps)
    return jnp.sqrt(inv), inv


def _make_op(cfg, loss_fn, dataset, D):
    """``params -> D^1/2 H(params) D^1/2`` (``D`` held fixed)."""
    return lambda p: preconditioned_operator(
        curvature_operator(loss_fn, p, dataset, batch_size=cfg.batch_size), D)


def _evaluate(cfg, loss_fn, dataset, w, nu, vecs, floor, count, key):
    """Everything of one Euler step at ``(w, nu)``: returns ``(info, dw, dnu, new eig state)``."""
    eta, tau, k = cfg.eta, 2.0 / cfg.eta, cfg.k
    loss, g = full_loss_and_grad(loss_fn, w, dataset, cfg.batch_size)
    flat_g, unravel = T.ravel(g)
    D, inv = _scaling(cfg, nu, flat_g)
    make_op = _make_op(cfg, loss_fn, dataset, D)
    kf, ke = jax.random.split(key)
    refloor = count % cfg.refloor_every == 0
    floor = jax.lax.cond(refloor, lambda: spectral.linearity_defect(make_op(w), kf).astype(
        floor.dtype), lambda: floor)
    eig = sharpness(loss_fn, w, dataset, key=ke, k=k, batch_size=cfg.batch_size, v0=vecs,
                    tol=cfg.tol, max_steps=cfg.max_steps, measured_floor=floor,
                    operator=make_op, check=False)
    lam, U = eig.eigenvalues, eig.eigenvectors
    V = jnp.sqrt(D)[:, None] * U
    beta = hessian_form_gradients(loss_fn, w, dataset, V, batch_size=cfg.batch_size)
    Db = beta * D
    gram = jnp.einsum("ijp,klp->ijkl", beta, Db, precision=HIGHEST)
    alpha = jnp.einsum("ijp,p->ij", Db, flat_g, precision=HIGHEST)
    c = (1 - cfg.b2) / cfg.b2
    if cfg.rule == "rmsprop":
        nu_f = T.ravel(nu)[0]
        UU = U[:, :, None] * U[:, None, :]                        # (dim, k, k)
        drive = c * (flat_g ** 2 - nu_f) * inv
        lam_sum = lam[:, None] + lam[None, :]
        alpha = alpha + lam_sum / (4 * eta) * jnp.einsum("pij,p->ij", UU, drive,
                                                         precision=HIGHEST)
        W = jnp.einsum("pij,pkl,p->ijkl", UU, UU, inv / D, precision=HIGHEST)
        gram = gram + (c * tau ** 3 / eta) * W
    elif cfg.rule == "scalar_rmsprop":
        drive = c * (jnp.vdot(flat_g, flat_g, precision=HIGHEST) - nu) * inv
        alpha = alpha + jnp.diag(lam) * drive / (2 * eta)
        eye = jnp.eye(k, dtype=lam.dtype)
        W = jnp.einsum("ij,kl->ijkl", eye, eye) * (inv / D[0])
        gram = gram + (c * tau ** 3 / eta) * W
    slack = (tau * jnp.eye(k, dtype=lam.dtype) - jnp.diag(lam)) / (eta * cfg.dt)
    sol = _solve(alpha + slack, _operator(gram, k, lam.dtype), num_iters=cfg.sdcp_iters,
                 tol=1e-12 if jnp.finfo(lam.dtype).bits >= 64 else 1e-6, polish=True)
    X = sol.X
    push = jnp.einsum("klp,kl->p", beta, X, precision=HIGHEST)
    dw = unravel(-eta * D * (flat_g + 0.5 * push))
    LXL = lam[:, None] * X * lam[None, :]
    if cfg.rule == "rmsprop":
        hsh = jnp.einsum("pk,kl,pl->p", U, LXL, U, precision=HIGHEST) / D
        dnu = jax.tree.map(lambda a: c * a, T.tree_sub(
            unravel(flat_g ** 2 + hsh), nu))
    elif cfg.rule == "scalar_rmsprop":
        dnu = c * (jnp.vdot(flat_g, flat_g, precision=HIGHEST) + jnp.trace(LXL) / D[0] - nu)
    else:
        dnu = None
    info = {"loss": loss, "predicted_loss": loss + 0.5 * jnp.sum(lam * jnp.diag(X)),
            "eigenvalues": lam, "eigenvalue_residuals": eig.residuals, "X": X,
            "trace_X": jnp.trace(X), "sdcp_residual": sol.residual, "sdcp_status": sol.status,
            "eigsh_status": eig.status,
            "hvps": eig.num_matvecs + jnp.where(refloor, 3, 0)}
    return info, dw, dnu, (U, eig.measured_floor)


@functools.partial(jax.jit, static_argnames=("cfg", "loss_fn"))
def _integrate(cfg: _Config, loss_fn, params, nu0, dataset, key):
    dim = T.ravel(params)[0].shape[0]
    dtype = T.ravel(params)[0].dtype
    npairs = cfg.k * (cfg.k + 1) // 2
    # first eigenpairs from a random start, with eigsh's default (larger) step budget
    k0, kf, ke, key = jax.random.split(key, 4)
    D0, _ = _scaling(cfg, nu0, T.ravel(params)[0])
    make_op = _make_op(cfg, loss_fn, dataset, D0)
    floor0 = spectral.linearity_defect(make_op(params), kf).astype(dtype)
    eig0 = sharpness(loss_fn, params, dataset, key=ke, k=cfg.k, batch_size=cfg.batch_size,
                     v0=jax.random.normal(k0, (dim, cfg.k), dtype), tol=cfg.tol,
                     measured_floor=floor0, operator=make_op, check=False)
    counters = (eig0.num_matvecs + 3, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

    def euler(state, _):
        w, nu, vecs, floor, count, key, (nh, nt, ng) = state
        key, sub = jax.random.split(key)
        info, dw, dnu, (vecs, floor) = _evaluate(cfg, loss_fn, dataset, w, nu, vecs, floor,
                                                 count, sub)
        w = jax.tree.map(lambda a, b: a + cfg.dt * b, w, dw)
        if dnu is not None:
            nu = jax.tree.map(lambda a, b: a + cfg.dt * b, nu, dnu)
        nh = nh + info.pop("hvps")
        cnt = (nh, nt + npairs, ng + 1)
        return (w, nu, vecs, floor, count + 1, key, cnt), info

    def record(state, info):
        w, nu, *_, (nh, nt, ng) = state
        rec = dict(info, num_hvps=nh, num_third_order=nt, num_grads=ng)
        rec["params"] = w if cfg.record_params else None
        rec["nu"] = nu
        return rec

    def block(state, _):
        # the record at the start of the block is the evaluation of its first Euler step
        new, infos = jax.lax.scan(euler, state, None, length=cfg.substeps)
        return new, record(state, jax.tree.map(lambda a: a[0], infos))

    init = (params, nu0, eig0.eigenvectors, floor0, jnp.ones((), jnp.int32), key, counters)
    state, recs = jax.lax.scan(block, init, None, length=cfg.num_records)
    _, last = euler(state, None)
    last = record(state, last)
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), recs, last)


def _check_inputs(loss_fn, params, dataset, key, learning_rate, num_steps, dt, k,
                  record_every, batch_size):
    validate.check_params(params)
    validate.check_key(key)
    eta = validate.check_positive(learning_rate, "learning_rate")
    num_steps = validate.check_int(num_steps, "num_steps", low=1)
    dt = validate.check_positive(dt, "dt")
    record_every = validate.check_int(record_every, "record_every", low=1)
    if num_steps % record_every:
        raise ValueError(f"num_steps ({num_steps}) must be a multiple of record_every "
                         f"({record_every})")
    substeps = record_every / dt
    if abs(substeps - round(substeps)) > 1e-9 * substeps or round(substeps) < 1:
        raise ValueError(f"dt must divide record_every ({record_every}) into a whole number "
                         f"of Euler steps; got dt={dt}")
    dim, _ = validate.flat_dim_dtype(params)
    k = validate.check_int(k, "k", low=1, high=dim)
    batching.num_examples(dataset)
    batch_size = batching.check_batch_size(batch_size)
    validate.check_scalar_loss(loss_fn, params, batching.first_batch(dataset, batch_size))
    if validate.is_concrete((params, dataset)):
        loss, g = full_loss_and_grad(loss_fn, params, dataset, batch_size)
        validate.check_finite_value(loss, "the dataset loss")
    else:
        g = None
    return eta, num_steps, dt, record_every, int(round(substeps)), k, batch_size, g


def _run(rule, loss_fn, params, dataset, *, learning_rate, num_steps, key, dt, k, batch_size,
         record_every, tol, max_steps, refloor_every, record_params, sdcp_iters, b2=0.99,
         eps=0.0, nu0=None):
    eta, num_steps, dt, record_every, substeps, k, batch_size, g = _check_inputs(
        loss_fn, params, dataset, key, learning_rate, num_steps, dt, k, record_every,
        batch_size)
    if rule != "gd":
        if not 0 < float(b2) < 1:
            raise ValueError(f"b2 must be in (0, 1); got {b2!r}")
        if not (np.isfinite(float(eps)) and float(eps) >= 0):
            raise ValueError(f"eps must be a finite number >= 0; got {eps!r}")
        if dt * (1 - b2) / b2 > 1:
            raise ValueError(f"dt * (1 - b2) / b2 must be <= 1 (else nu can turn negative); "
                             f"got dt={dt}, b2={b2}")
        nu0 = _initial_nu(rule, params, nu0, g)
    if max_steps is None:
        # warm-started tracking needs few steps; <= 64 also keeps the tridiagonal eigh of each
        # convergence check small (jnp.linalg.eigh on CPU slows down sharply above n = 64)
        max_steps = min(validate.flat_dim_dtype(params)[0], max(63, 4 * k + 16))
    cfg = _Config(rule, eta, dt, k, batch_size, num_steps // record_every, substeps, float(b2),
                  float(eps), tol, max_steps,
                  validate.check_int(refloor_every, "refloor_every", low=1),
                  bool(record_params), validate.check_int(sdcp_iters, "sdcp_iters", low=1))
    out = _integrate(cfg, loss_fn, params, nu0, dataset, key)
    times = np.arange(cfg.num_records + 1) * record_every
    return CentralFlowResult(
        times=jnp.asarray(times), params=out["params"], nu=out["nu"], loss=out["loss"],
        predicted_loss=out["predicted_loss"], eigenvalues=out["eigenvalues"],
        eigenvalue_residuals=out["eigenvalue_residuals"], X=out["X"], trace_X=out["trace_X"],
        sdcp_residual=out["sdcp_residual"], sdcp_status=out["sdcp_status"],
        eigsh_status=out["eigsh_status"], num_hvps=out["num_hvps"],
        num_third_order=out["num_third_order"], num_grads=out["num_grads"],
        threshold=2.0 / eta, learning_rate=eta, dt=dt)


def _initial_nu(rule, params, nu0, g):
    """``nu(0)``: given, or the squared gradient at ``params`` (RMSProp's first EMA value
    with bias correction)."""
    if nu0 is None:
        if g is None:
            raise ValueError("nu0 is required when params or dataset are traced")
        if rule == "scalar_rmsprop":
            return T.tree_vdot(g, g)
        return jax.tree.map(jnp.square, g)
    if rule == "scalar_rmsprop":
        nu0 = jnp.asarray(nu0, T.ravel(params)[0].dtype)
        if nu0.shape != ():
            raise ValueError(f"nu0 must be a scalar for scalar RMSProp; got shape {nu0.shape}")
        leaves = [nu0]
    else:
        validate.check_same_structure(params, nu0, "params", "nu0")
        nu0 = jax.tree.map(lambda p, v: jnp.asarray(v, jnp.result_type(p)), params, nu0)
        leaves = jax.tree.leaves(nu0)
    if validate.is_concrete(leaves) and not all(bool(jnp.all((x >= 0) & jnp.isfinite(x)))
                                                for x in leaves):
        raise ValueError("nu0 must be finite and >= 0")
    return nu0


_DOC_ARGS = """
    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over a batch.
      params: initial parameters (pytree of floating arrays).
      dataset: pytree with a leading example axis (or a ``ShardedDataset``), the full batch.
      learning_rate: ``eta``; the threshold is ``2 / eta``.
      num_steps: length of the flow, in optimizer steps.
      key: PRNG key (Lanczos start and restarts, floor measurements).
      dt: Euler step in optimizer steps (must divide ``record_every``).
      k: number of top eigenpairs tracked (the rank of ``Sigma``), ``1 <= k <= dim``.
      batch_size: examples per batch of every dataset reduction (None: all at once).
      record_every: steps between records (``num_steps`` must be a multiple of it).
      tol, max_steps: Lanczos tolerance and step cap of the warm-started tracking
        (``landscape.spectral.eigsh``; default cap ``min(dim, max(63, 4k + 16))``); the first
        eigenpairs, from a random start, use eigsh's default cap.
      refloor_every: Euler steps between re-measurements of the Lanczos rounding floor.
      record_params: keep the parameters at every record (memory ``(R + 1) * dim``).
      sdcp_iters: iteration budget of the SDCP solver.

    Returns:
      :class:`CentralFlowResult`. The whole integration is one compiled ``lax.scan``.

    Raises:
      ValueError/TypeError naming the argument: ``k > dim``, ``dt <= 0`` or not dividing
      ``record_every``, a non-finite dataset loss at ``params``, bad ``learning_rate``,
      ``num_steps``, ``key``.
"""


def central_flow(loss_fn: Callable, params, dataset, *, learning_rate: float, num_steps: int,
                 key, dt: float = 0.5, k: int = 1, batch_size: int | None = None,
                 record_every: int = 1, tol: float | None = None, max_steps: int | None = None,
                 refloor_every: int = 16, record_params: bool = True,
                 sdcp_iters: int = 1000) -> CentralFlowResult:
    """The central flow of full-batch gradient descent with step ``learning_rate`` (module
    docstring: ``dw/dt = -eta [grad L + 1/2 grad <H, Sigma>]``, ``lambda_1(H) <= 2/eta``).
    """
    return _run("gd", loss_fn, params, dataset, learning_rate=learning_rate,
                num_steps=num_steps, key=key, dt=dt, k=k, batch_size=batch_size,
                record_every=record_every, tol=tol, max_steps=max_steps,
                refloor_every=refloor_every, record_params=record_params,
                sdcp_iters=sdcp_iters)


def rmsprop_central_flow(loss_fn: Callable, params, dataset, *, learning_rate: float,
                         num_steps: int, key, b2: float = 0.99, eps: float = 0.0, nu0=None,
                         dt: float = 0.5, k: int = 1, batch_size: int | None = None,
                         record_every: int = 1, tol: float | None = None,
                         max_steps: int | None = None, refloor_every: int = 16,
                         record_params: bool = True,
                         sdcp_iters: int = 1000) -> CentralFlowResult:
    """The central flow of RMSProp (module docstring), ``D = (nu + eps)^-1/2`` per coordinate.

    Extra args: ``b2`` the EMA decay, ``eps`` (inside the square root, as optax's default),
    ``nu0`` the initial ``nu`` (a pytree like ``params``; default ``grad L(params)^2``).
    ``eigenvalues`` are those of the preconditioned Hessian ``D^1/2 H D^1/2``.

    Choosing ``k``: RMSProp shrinks ``nu`` wherever gradients are small, so it tends to bring
    *several* preconditioned eigenvalues to the threshold; ``k`` must cover all of them (check
    that ``eigenvalues[:, -1]`` stays below ``threshold``). With too small a ``k`` the
    uncontrolled direction crosses the threshold and the tracked pair alternates between
    directions (on the two-parameter model of the tests, ``k = 1`` settles 3% above it).
    """
    return _run("rmsprop", loss_fn, params, dataset, learning_rate=learning_rate,
                num_steps=num_steps, key=key, dt=dt, k=k, batch_size=batch_size,
                record_every=record_every, tol=tol, max_steps=max_steps,
                refloor_every=refloor_every, record_params=record_params,
                sdcp_iters=sdcp_iters, b2=b2, eps=eps, nu0=nu0)


def scalar_rmsprop_central_flow(loss_fn: Callable, params, dataset, *, learning_rate: float,
                                num_steps: int, key, b2: float = 0.99, eps: float = 0.0,
                                nu0=None, dt: float = 0.5, k: int = 1,
                                batch_size: int | None = None, record_every: int = 1,
                                tol: float | None = None, max_steps: int | None = None,
                                refloor_every: int = 16, record_params: bool = True,
                                sdcp_iters: int = 1000) -> CentralFlowResult:
    """The central flow of scalar RMSProp (``nu_t = b2 nu_{t-1} + (1 - b2) ||g_t||^2``,
    ``w_{t+1} = w_t - eta g_t / sqrt(nu_t + eps)``); ``nu0`` a scalar (default
    ``||grad L(params)||^2``); ``eigenvalues`` are those of ``H / sqrt(nu + eps)``."""
    return _run("scalar_rmsprop", loss_fn, params, dataset, learning_rate=learning_rate,
                num_steps=num_steps, key=key, dt=dt, k=k, batch_size=batch_size,
                record_every=record_every, tol=tol, max_steps=max_steps,
                refloor_every=refloor_every, record_params=record_params,
                sdcp_iters=sdcp_iters, b2=b2, eps=eps, nu0=nu0)


for _f in (central_flow, rmsprop_central_flow, scalar_rmsprop_central_flow):
    _f.__doc__ += _DOC_ARGS

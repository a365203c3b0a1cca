"""Preconditioned sharpness of adaptive optimizers, read from the optax state.

An optimizer with a diagonal preconditioner ``P`` updates ``w <- w - eta P^-1 m`` (``m`` the
gradient or its moving average). On the quadratic model ``L(w) = 1/2 w^T H w`` it is GD (or heavy
ball) on ``P^-1 H``, so its stability is governed by the *preconditioned sharpness*
``lambda_max(P^-1 H)`` (Cohen et al. 2022, "Adaptive gradient methods at the edge of
stability"). ``P^-1 H`` is not symmetric, but it is similar to the symmetric
``D^1/2 H D^1/2`` with ``D = P^-1`` (``P^-1 H = D^1/2 (D^1/2 H D^1/2) D^-1/2``), which has the
same eigenvalues; that is the operator Lanczos runs on.

``D`` (the per-coordinate factor the optimizer multiplies its first moment by) is read from the
optimizer state exactly as optax applies it:

* ``"adam"`` / ``"adamw"`` (``ScaleByAdamState``): ``D = 1 / (sqrt(nu / (1 - b2^t) + eps_root)
  + eps)`` with ``t`` the state's count (the preconditioner of the last update taken);
* ``"rmsprop"`` (``ScaleByRmsState``; optax's default ``eps_in_sqrt=True``):
  ``D = 1 / sqrt(nu + eps)``, or ``1 / (sqrt(nu) + eps)`` with ``eps_in_sqrt=False``; with
  ``bias_correction=True`` (``ScaleByRmsWithCountState``) ``nu`` is divided by ``1 - decay^t``;
* ``"adagrad"`` (``ScaleByRssState``): ``D = 1 / sqrt(sum_sq + eps)`` where ``sum_sq > 0``, else 0;
* ``"sgd"`` (with or without momentum): ``D = 1``.

The hyperparameters (``b2``, ``eps``, ``eps_root``, ``decay``) are not stored in plain optax
states; they are taken, in this order, from the explicit ``args``, from the hyperparameters of an
``optax.inject_hyperparams`` state (or of :func:`landscape.train.train`'s ``hyperparams=``), and
from optax's defaults for the alias.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from landscape import spectral, validate
from landscape import tree as T
from landscape.linop import LinearOperator, as_operator

__all__ = ["preconditioner", "preconditioned_operator", "preconditioned_sharpness", "RULES"]

# optax's defaults for each alias (the values its factory uses when not given).
RULES: dict[str, dict] = {
    "adam": {"b2": 0.999, "eps": 1e-8, "eps_root": 0.0},
    "adamw": {"b2": 0.999, "eps": 1e-8, "eps_root": 0.0},
    "rmsprop": {"decay": 0.9, "eps": 1e-8, "eps_in_sqrt": True},
    "adagrad": {"eps": 1e-7},
    "sgd": {},
}

@functools.cache
def _rms_with_count():
    """The state type of ``optax.scale_by_rms(bias_correction=True)`` (not exported by optax),
    found from its public constructor without touching a device."""
    return type(jax.eval_shape(optax.scale_by_rms(bias_correction=True).init, jnp.zeros(())))


def _states(rule: str) -> tuple:
    if rule == "rmsprop":
        return (optax.ScaleByRmsState, _rms_with_count())
    return {"adam": (optax.ScaleByAdamState,), "adamw": (optax.ScaleByAdamState,),
            "adagrad": (optax.ScaleByRssState,)}[rule]


def _find(opt_state, types):
    """The first node of ``opt_state`` (depth first) that is an instance of ``types``, and the
    hyperparameters of the innermost ``InjectHyperparamsState`` around it."""
    found = []

    def walk(node, hyper):
        if found:
            return
        if isinstance(node, types):
            found.append((node, hyper))
            return
        if isinstance(node, optax.InjectHyperparamsState | optax.InjectStatefulHyperparamsState):
            walk(node.inner_state, {**hyper, **dict(node.hyperparams)})
            return
        if isinstance(node, tuple | list):
            for child in node:
                walk(child, hyper)
        elif isinstance(node, Mapping):
            for child in node.values():
                walk(child, hyper)

    walk(opt_state, {})
    return found[0] if found else (None, {})


def _state_types(opt_state) -> list[str]:
    names = []

    def walk(node):
        if isinstance(node, tuple | list) and not hasattr(node, "_fields"):
            for c in node:
                walk(c)
        else:
            names.append(type(node).__name__)
            if hasattr(node, "inner_state"):
                walk(node.inner_state)

    walk(opt_state)
    return names


def preconditioner(opt_state, params, rule: str = "adam", args: Mapping | None = None,
                   hyperparams: Mapping | None = None):
    """The diagonal ``D = P^-1`` the optimizer applies, as a pytree like ``params``.

    Args:
      opt_state: the optax state (any chain; ``inject_hyperparams`` states are looked into).
      params: the parameter pytree (for the structure, and the ``"sgd"`` rule).
      rule: ``"adam"``, ``"adamw"``, ``"rmsprop"``, ``"adagrad"`` or ``"sgd"`` (see
        :data:`RULES` and the module docstring for the formulas).
      args: explicit hyperparameters of the rule (``b2``, ``eps``, ``eps_root``; ``decay``,
        ``eps``, ``eps_in_sqrt``; ``eps``), overriding the others.
      hyperparams: traced hyperparameters of the run (``ProbeContext.hyperparams``).

    Raises:
      ValueError: unknown ``rule``, or an ``opt_state`` without the state the rule reads (the
        message lists the state types it found); unknown keys in ``args``.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {tuple(RULES)}; got {rule!r}")
    args = dict(args or {})
    unknown = set(args) - set(RULES[rule])
    if unknown:
        raise ValueError(f"preconditioner args for {rule!r} take {sorted(RULES[rule])}; got "
                         f"unknown {sorted(unknown)}")
    if rule == "sgd":
        return jax.tree.map(jnp.ones_like, params)
    state, injected = _find(opt_state, _states(rule))
    if state is None:
        raise ValueError(f"opt_state has no {' or '.join(t.__name__ for t in _states(rule))} "
                         f"for the {rule!r} preconditioner; found {_state_types(opt_state)}")
    h = {**RULES[rule], **{k: v for k, v in {**injected, **dict(hyperparams or {})}.items()
                           if k in RULES[rule]}, **args}
    if rule in ("adam", "adamw"):
        t = state.count.astype(jnp.result_type(float))
        corr = 1 - jnp.asarray(h["b2"], t.dtype) ** t
        return jax.tree.map(lambda nu: 1 / (jnp.sqrt(nu / corr + h["eps_root"]) + h["eps"]),
                            state.nu)
    if rule == "rmsprop":
        nu = state.nu
        if isinstance(state, _rms_with_count()):
            corr = 1 - jnp.asarray(h["decay"], jnp.result_type(float)) ** state.count
            nu = jax.tree.map(lambda n: n / corr, nu)
        if h["eps_in_sqrt"]:
            return jax.tree.map(lambda n: jax.lax.rsqrt(n + h["eps"]), nu)
        return jax.tree.map(lambda n: 1 / (jnp.sqrt(n) + h["eps"]), nu)
    return jax.tree.map(lambda s: jnp.where(s > 0, jax.lax.rsqrt(s + h["eps"]), 0.0),
                        state.sum_of_squares)


def resolve(preconditioner_spec, args: Mapping | None = None) -> Callable:
    """``(opt_state, params, hyperparams) -> D`` for a rule name or a user function."""
    if isinstance(preconditioner_spec, str):
        if preconditioner_spec not in RULES:
            raise ValueError(f"preconditioner must be one of {tuple(RULES)} or a function "
                             f"(opt_state, params, hyperparams) -> pytree; got "
                             f"{preconditioner_spec!r}")
        return lambda s, p, h: preconditioner(s, p, preconditioner_spec, args, h)
    if callable(preconditioner_spec):
        return preconditioner_spec
    raise TypeError("preconditioner must be a rule name or a function (opt_state, params, "
                    f"hyperparams) -> pytree; got {type(preconditioner_spec).__name__}")


def preconditioned_operator(op: LinearOperator, scaling) -> LinearOperator:
    """``D^1/2 A D^1/2`` for a diagonal ``D`` given as a pytree (ravelled like the params) or a
    flat ``(dim,)`` vector; its eigenvalues are those of ``D A`` (= ``P^-1 A``)."""
    d = scaling if isinstance(scaling, jax.Array) and scaling.ndim == 1 else T.ravel(scaling)[0]
    if d.shape != (op.dim,):
        raise ValueError(f"preconditioner must have {op.dim} entries (the operator's dim); got "
                         f"{d.shape}")
    s = jnp.sqrt(d.astype(op.dtype))
    return as_operator(lambda v: s * op.matvec(s * v), dim=op.dim, dtype=op.dtype)


def preconditioned_sharpness(loss_fn: Callable, params, dataset, opt_state, *, key,
                             rule: str = "adam", args: Mapping | None = None,
                             diagonal=None, k: int = 1, batch_size: int | None = None,
                             v0=None, tol: float | None = None,
                             operator: Callable | None = None) -> spectral.EigshResult:
    """Top-``k`` eigenvalues of ``P^-1 H`` (as ``D^1/2 H D^1/2``, ``D = P^-1``), certified.

    ``P`` is the preconditioner of the optax optimizer whose state is ``opt_state`` (``rule``;
    see the module docstring for the exact formulas), or ``D = P^-1`` given directly as
    ``diagonal`` (a pytree like ``params``, nonnegative). ``H`` is the full-dataset Hessian of
    ``loss_fn`` (or ``operator(params)``). The stability threshold to compare with is
    :func:`landscape.dynamics.stability_threshold` (``(2 + 2 b1) / ((1 - b1) eta)`` for Adam).

    Returns:
      ``spectral.EigshResult`` of ``D^1/2 H D^1/2``; ``eigenvectors`` are in those coordinates
      (``D^-1/2 v`` is an eigenvector of ``P^-1 H``).

    Raises:
      ValueError: an Adam/RMSProp state that has not taken a step (``count == 0``: there is no
        preconditioner yet), a state the rule cannot read, a negative or non-finite ``diagonal``.
    """
    from landscape.dynamics.sharpness import curvature_operator

    validate.check_params(params)
    validate.check_key(key)
    if diagonal is None:
        scale = preconditioner(opt_state, params, rule, args)
        if rule in ("adam", "adamw"):
            st, _ = _find(opt_state, _states(rule))
            if validate.is_concrete(st.count) and int(st.count) == 0:
                raise ValueError("opt_state has count 0: the optimizer has not taken a step, "
                                 "so it has no preconditioner yet")
    else:
        validate.check_same_structure(params, diagonal, "params", "diagonal")
        scale = diagonal
        flat = T.ravel(scale)[0]
        if validate.is_concrete(flat) and not bool(jnp.all(jnp.isfinite(flat) & (flat >= 0))):
            raise ValueError("diagonal must be finite and >= 0 (it is D = P^-1)")
    op = curvature_operator(loss_fn, params, dataset, batch_size=batch_size, operator=operator)
    return spectral.eigsh(preconditioned_operator(op, scale), k=k, which="LA", key=key, v0=v0,
                          tol=tol)

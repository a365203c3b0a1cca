"""Curved low-loss paths: a quadratic Bezier curve with one trainable bend (Garipov, Izmailov,
Podoprikhin, Vetrov, Wilson 2018, "Loss surfaces, mode connectivity, and fast ensembling").

    phi(t) = (1 - t)^2 theta_A + 2 t (1 - t) theta_bend + t^2 theta_B,     t in [0, 1].

The bend starts at the midpoint of the endpoints (the curve is then the linear path) and is
trained to minimise ``E_{t ~ U[0,1]} L(phi(t))`` with Adam on random minibatches, one ``t`` per
step, in the library's one training loop (``landscape.train.run_steps``: a ``batch_fn`` draws
the step's ``t`` and minibatch, a probe records the step's loss). Expected: the curve's maximum
loss stays close to the endpoints even where the linear path has a large barrier.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from landscape import batching, reprs, train, validate
from landscape import tree as T
from landscape.connectivity.paths import Path, check_alphas, evaluate_path
from landscape.validate import check_models

__all__ = ["BezierFit", "bezier_point", "fit_bezier", "bezier_path"]


class BezierFit(NamedTuple):
    """``bend`` (params pytree) and ``losses`` ``(num_steps,)``, the sampled training losses."""

    bend: object
    losses: jax.Array

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.line("BezierFit", [f"bend={reprs.tree(self.bend)}",
                                        f"losses={reprs.trend(self.losses)}"])


def bezier_point(t, params_a, bend, params_b):
    """``phi(t)`` of the quadratic Bezier curve."""
    return jax.tree.map(lambda a, c, b: (1 - t) ** 2 * a + 2 * t * (1 - t) * c + t**2 * b,
                        params_a, bend, params_b)


def fit_bezier(loss_fn, params_a, params_b, dataset, *, key, num_steps: int = 500,
               batch_size: int = 128, learning_rate: float = 1e-2, init_bend=None) -> BezierFit:
    """Train the bend of a Bezier curve between two models (see the module docstring).

    Step ``s`` draws ``t`` and a minibatch of ``min(batch_size, n)`` examples (without
    replacement) from ``split(key, num_steps)[s]``; ``losses[s]`` is its loss before the update.
    """
    check_models(params_a, params_b)
    n = validate.check_batch(dataset, "dataset")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}")
    bend = T.tree_lerp(params_a, params_b, 0.5) if init_bend is None else init_bend
    check_models(params_a, bend, "params_a", "init_bend")
    opt = optax.adam(learning_rate)
    b = min(batch_size, n)

    @jax.jit
    def run(bend, pa, pb, data, key):
        def sample(step_keys, step, _):  # step's t ~ U[0, 1] and b examples without replacement
            kt, kb = jax.random.split(step_keys[step])
            t = jax.random.uniform(kt, (), dtype=jnp.result_type(float))
            return t, T.take(data, jax.random.choice(kb, n, (b,), replace=False))

        def loss(c, batch):
            t, examples = batch
            return loss_fn(bezier_point(t, pa, c, pb), examples)

        record = train.probe(lambda ctx, s: (ctx.loss, s))  # the loss of every step
        state, _, trace, _, _ = train.run_steps(
            loss, opt, train.init_state(bend, opt), jax.random.split(key, num_steps), key=key,
            num_steps=num_steps, probes={"loss": record}, batch_fn=sample)
        return state.params, trace["loss"][:num_steps]

    bend, losses = run(bend, params_a, params_b, dataset, key)
    return BezierFit(bend, losses)


def _bezier_eval(t, ends):
    pa, c, pb = ends
    return bezier_point(t, pa, c, pb), None


def bezier_path(loss_fn, params_a, bend, params_b, dataset, num_points: int = 25, *,
                error_fn=None, test_dataset=None, batch_size=None) -> Path:
    """Metrics along the Bezier curve at ``num_points`` values of ``t`` (one compiled call)."""
    check_models(params_a, params_b)
    check_models(params_a, bend, "params_a", "bend")
    ts = check_alphas(jnp.linspace(0.0, 1.0, num_points))
    out = evaluate_path(_bezier_eval, ts, (params_a, bend, params_b), loss_fn, dataset,
                        error_fn=error_fn, test_dataset=test_dataset, batch_size=batch_size)
    return Path(ts, out["loss"], out.get("error"), out.get("test_loss"), out.get("test_error"),
                "none", batching.num_examples(dataset))

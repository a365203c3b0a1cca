"""Linear self-attention does one step of gradient descent in context (von Oswald et al. 2023).

Tokens ``e_j = (x_j, y_j)`` in ``R^{d+1}`` for the ``N`` context examples and ``e_q = (x_q, 0)`` for
the query (``landscape.data.icl_tokens``). A linear self-attention (LSA) layer with parameters
``{"W_K", "W_Q", "W_V", "P"}`` (each ``(d+1, d+1)``; plain arrays rather than the flax model, so
the construction can be written down exactly) updates the query token by

    e_q <- e_q + P sum_{k <= N} (W_V e_k) (W_K e_k)^T (W_Q e_q),

and predicts ``y_hat = -(e_q)_{d+1}`` (minus the target slot). With
``W_K = W_Q = [[I, 0], [0, 0]]``, ``W_V = [[0, 0], [W_0, -1]]`` and ``P = (eta / N) I`` the
prediction equals ``Delta W x_q`` where ``Delta W = -eta grad L(W_0)`` is one GD step on
``L(W) = (1/2N) sum_k (W x_k - y_k)^2``; from
``W_0 = 0`` this is exactly the prediction of the one-step GD learner (``lsa_construction``). In
float64 the two agree to rounding (~1e-15 relative); in float32 to ~1e-6.

``compare_with_gd`` measures how close a trained LSA layer is to that learner: the prediction
difference, the cosine of the input sensitivities ``d y_hat / d x_q`` and the cosine between the
layer's effective weights and the construction's (equal up to scale means cosine 1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from landscape import reprs, train
from landscape.data.icl import icl_tokens, linear_regression_tasks

__all__ = [
    "lsa_construction",
    "init_lsa",
    "lsa_predict",
    "lsa_loss",
    "gd_step_prediction",
    "optimal_gd_learning_rate",
    "effective_weights",
    "LSAvsGD",
    "compare_with_gd",
    "train_lsa",
]

HIGHEST = lax.Precision.HIGHEST


def lsa_construction(dim: int, eta: float, num_context: int, W0=None, dtype=None) -> dict:
    """von Oswald et al. weights: one GD step of size ``eta`` from ``W0`` ``(dim,)`` (default 0)."""
    dtype = dtype or jnp.result_type(float)
    D = dim + 1
    WK = jnp.zeros((D, D), dtype).at[:dim, :dim].set(jnp.eye(dim, dtype=dtype))
    W0 = jnp.zeros((dim,), dtype) if W0 is None else jnp.asarray(W0, dtype)
    WV = jnp.zeros((D, D), dtype).at[dim, :dim].set(W0).at[dim, dim].set(-1.0)
    P = (eta / num_context) * jnp.eye(D, dtype=dtype)
    return {"W_K": WK, "W_Q": WK, "W_V": WV, "P": P}


def init_lsa(key, dim: int, scale: float = 0.05, dtype=None) -> dict:
    """Random LSA parameters, i.i.d. ``N(0, scale^2)`` entries."""
    dtype = dtype or jnp.result_type(float)
    keys = jax.random.split(key, 4)
    D = dim + 1
    return {n: scale * jax.random.normal(k, (D, D), dtype)
            for n, k in zip(("W_K", "W_Q", "W_V", "P"), keys)}


def lsa_predict(params, tokens) -> jax.Array:
    """Predictions ``(B,)`` of the LSA layer for tokens ``(B, N+1, d+1)`` (last = the query)."""
    ctx, q = tokens[:, :-1], tokens[:, -1]
    keys = jnp.einsum("bnd,ed->bne", ctx, params["W_K"], precision=HIGHEST)
    query = jnp.einsum("bd,ed->be", q, params["W_Q"], precision=HIGHEST)
    vals = jnp.einsum("bnd,ed->bne", ctx, params["W_V"], precision=HIGHEST)
    att = jnp.einsum("bne,be->bn", keys, query, precision=HIGHEST)
    delta = jnp.einsum("bn,bne->be", att, vals, precision=HIGHEST)
    return -(q[:, -1] + jnp.dot(delta, params["P"][-1], precision=HIGHEST))


def lsa_loss(params, tasks) -> jax.Array:
    """Mean ``(y_hat - y_q)^2 / 2`` of the LSA layer over a task batch."""
    return 0.5 * jnp.mean((lsa_predict(params, icl_tokens(tasks)) - tasks["y_query"]) ** 2)


def gd_step_prediction(tasks, eta, W0=None) -> jax.Array:
    """Query predictions ``(B,)`` after one GD step of size ``eta`` from ``W0`` on each task's
    in-context loss ``(1/2N) sum_k (W x_k - y_k)^2`` (gradient by autodiff)."""
    x, y, xq = tasks["x"], tasks["y"], tasks["x_query"]
    W0 = jnp.zeros(x.shape[-1], x.dtype) if W0 is None else jnp.asarray(W0, x.dtype)

    def one(xi, yi, xqi):
        loss = lambda w: 0.5 * jnp.mean((xi @ w - yi) ** 2)  # noqa: E731
        return jnp.dot(W0 - eta * jax.grad(loss)(W0), xqi, precision=HIGHEST)

    return jax.vmap(one)(x, y, xq)


def optimal_gd_learning_rate(tasks) -> jax.Array:
    """The step ``eta*`` minimising the mean squared error of one GD step from 0 (closed form:
    the prediction is ``eta u``, so ``eta* = E[u y_q] / E[u^2]``)."""
    u = gd_step_prediction(tasks, 1.0)
    return jnp.mean(u * tasks["y_query"]) / jnp.mean(u * u)


def effective_weights(params) -> jax.Array:
    """The tensor the LSA prediction depends on: ``c (x) M[:, :d]`` with ``c = W_V^T P[-1]`` and
    ``M = W_K^T W_Q`` (the query's target slot is 0). Invariant to rescalings between factors."""
    c = jnp.dot(params["W_V"].T, params["P"][-1], precision=HIGHEST)
    M = jnp.dot(params["W_K"].T, params["W_Q"], precision=HIGHEST)
    return jnp.einsum("a,bf->abf", c, M[:, :-1])


class LSAvsGD(NamedTuple):
    """A trained LSA layer against one GD step (scalars, on an evaluation task batch).

    Fields: loss_lsa, loss_gd (mean squared error / 2); pred_diff (root-mean-square difference of
    the predictions); sensitivity_cos (mean cosine between ``d y_hat / d x_q`` of both);
    weight_cos (cosine between the effective weights and the construction's).
    """

    loss_lsa: jax.Array
    loss_gd: jax.Array
    pred_diff: jax.Array
    sensitivity_cos: jax.Array
    weight_cos: jax.Array

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.namedtuple_repr(self)


def compare_with_gd(params, tasks, eta) -> LSAvsGD:
    """Compare ``params`` with the one-step GD learner of step ``eta`` (from 0). jit-able."""
    gd = lsa_construction(tasks["x"].shape[-1], eta, tasks["x"].shape[1], dtype=tasks["x"].dtype)
    tok = icl_tokens(tasks)
    p_lsa, p_gd = lsa_predict(params, tok), lsa_predict(gd, tok)

    def sens(p):
        f = lambda xq: lsa_predict(p, icl_tokens({**tasks, "x_query": xq})).sum()  # noqa: E731
        return jax.grad(f)(tasks["x_query"])

    s1, s2 = sens(params), sens(gd)
    cos = jnp.sum(s1 * s2, -1) / (jnp.linalg.norm(s1, axis=-1) * jnp.linalg.norm(s2, axis=-1))
    e1, e2 = effective_weights(params).ravel(), effective_weights(gd).ravel()
    wcos = jnp.dot(e1, e2) / (jnp.linalg.norm(e1) * jnp.linalg.norm(e2))
    y = tasks["y_query"]
    return LSAvsGD(0.5 * jnp.mean((p_lsa - y) ** 2), 0.5 * jnp.mean((p_gd - y) ** 2),
                   jnp.sqrt(jnp.mean((p_lsa - p_gd) ** 2)), jnp.mean(cos), wcos)


def train_lsa(key, params, eval_tasks, eta, *, num_steps: int, batch_size: int = 256,
              learning_rate: float = 1e-3, record_every: int = 100, noise_std: float = 0.0):
    """Train an LSA layer with Adam (cosine-decayed step) on fresh tasks each step.

    Step ``t`` draws ``batch_size`` new tasks (``linear_regression_tasks``) from its own key:
    ``split(split(key, C)[t // record_every], record_every)[t % record_every]`` with
    ``C = num_steps // record_every``. The steps run in the library's one training loop
    (``landscape.train.run_steps``, whose ``batch_fn`` draws the tasks), in segments of
    ``record_every`` steps, after each of which ``compare_with_gd`` is recorded on
    ``eval_tasks``. Returns ``(params, steps (R,), LSAvsGD of (R,))`` with
    ``R = num_steps // record_every + 1`` (first record at step 0). jit-able with the ints
    static.
    """
    if num_steps % record_every:
        raise ValueError(
            f"num_steps ({num_steps}) must be a multiple of record_every ({record_every})")
    N, d = eval_tasks["x"].shape[1:]
    dtype = eval_tasks["x"].dtype
    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps))
    C = num_steps // record_every
    step_keys = jax.vmap(lambda k: jax.random.split(k, record_every))(jax.random.split(key, C))
    step_keys = step_keys.reshape((num_steps,) + step_keys.shape[2:])

    def tasks_at(keys, step, _):
        return linear_regression_tasks(keys[step], batch_size, N, d, noise_std=noise_std,
                                       dtype=dtype)

    def segment(state, _):  # record_every steps, then a record
        state = train.run_steps(lsa_loss, opt, state, step_keys, key=key,
                                num_steps=record_every, batch_fn=tasks_at)[0]
        return state, compare_with_gd(state.params, eval_tasks, eta)

    state, recs = lax.scan(segment, train.init_state(params, opt), None, length=C)
    first = compare_with_gd(params, eval_tasks, eta)
    recs = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, recs)
    return state.params, np.arange(C + 1) * record_every, recs

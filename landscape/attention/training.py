"""Training one-layer attention toward its max-margin token selection (Tarzanagh et al. 2023).

The model is ``f(X) = h(X^T softmax(X W z))`` with a fixed head ``h`` (linear, ``h(u) = v^T u``,
or nonlinear; see ``landscape.attention.nonlinear``), trained with the logistic loss
``L = mean_i log(1 + exp(-Y_i f(X_i)))``. Two parameterisations work on plain pytrees:
``{"W": (d, d)}`` and ``{"K": (d, m), "Q": (d, m)}`` with ``W = K Q^T``. (The flax NNX models in
``landscape.models`` hold the same maps; the plain pytrees keep the theory transparent.)

Normalised gradient descent, ``P <- P - eta g / ||g||`` *per leaf* (each of ``K`` and ``Q``
normalised separately), is an optax ``GradientTransformation`` (``normalized_gd``). For ``(K, Q)`` a
tiny ridge ``(ridge/2)(||K||^2 + ||Q||^2)`` keeps the direction from drifting once the softmax
saturates. ``train_attention`` runs ``num_steps`` full-batch steps through the library's one
training loop (``landscape.train.run_steps``), in consecutive segments of ``record_every`` steps
(or up to each step of ``record_at``), and records ``W_t`` after each segment; ``track_svm``
turns the records into the convergence metrics:
``corr(W_t, W_mm) = <W_t, W_mm> / (||W_t|| ||W_mm||)``, the softmax mass on the selected tokens
and ``||W_t||``. Run in float64 (``jax.enable_x64(True)``): in float32 the softmax saturates
and the correlation stalls near 1 - 1e-4.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from landscape import reprs, train

__all__ = [
    "normalize_per_leaf",
    "normalized_gd",
    "combined_W",
    "attention_probs",
    "attention_output",
    "attention_loss",
    "linear_head",
    "AttentionTrajectory",
    "train_attention",
    "SVMTracking",
    "matrix_corr",
    "track_svm",
    "selected_tokens",
]


def normalize_per_leaf(eps: float = 0.0) -> optax.GradientTransformation:
    """Optax transformation dividing each leaf of the update by its own Euclidean norm.

    ``g -> g / (||g|| + eps)``; a leaf whose gradient underflows to exactly zero gets a zero
    update (not NaN).
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        def scale(g):
            big = jnp.max(jnp.abs(g))  # scaled norm: no underflow of g**2 for tiny gradients
            safe = jnp.where(big > 0, big, 1.0)
            nrm = big * jnp.linalg.norm((g / safe).ravel()) + eps
            return jnp.where(nrm > 0, g / jnp.where(nrm > 0, nrm, 1.0), 0.0)

        out = jax.tree.map(scale, updates)
        return out, state

    return optax.GradientTransformation(init_fn, update_fn)


def normalized_gd(learning_rate: float = 0.1, eps: float = 0.0) -> optax.GradientTransformation:
    """Normalised GD with step ``learning_rate``: ``P <- P - lr * g / ||g||`` per leaf."""
    return optax.chain(normalize_per_leaf(eps), optax.scale(-learning_rate))


def combined_W(params) -> jax.Array:
    """``W`` of either parameterisation: ``params["W"]`` or ``params["K"] @ params["Q"].T``."""
    if "W" in params:
        return params["W"]
    return jnp.dot(params["K"], params["Q"].T, precision=lax.Precision.HIGHEST)


def attention_probs(W, X, Z) -> jax.Array:
    """Softmax attention ``(n, T)``: ``softmax_t(x_it^T W z_i)``."""
    return jax.nn.softmax(jnp.einsum("ntd,de,ne->nt", X, W, Z), axis=-1)


def attention_output(W, X, Z) -> jax.Array:
    """``X_i^T softmax(X_i W z_i)`` ``(n, d)``, written for accurate gradients at saturation.

    Computed as ``x_ref + sum_t s_t (x_t - x_ref)`` with ``x_ref`` the (stop-gradient) token of
    largest logit. This equals the plain form because ``sum_t s_t = 1``, but once the softmax
    saturates (``1 - s_ref`` below machine epsilon) the plain form's gradient is dominated by
    rounding noise of size ``eps ||x||``, while here the selected token's term vanishes exactly and
    the gradient keeps its tiny but correct value. Without this, normalised GD in float64 loses
    the max-margin direction after ``||W||`` grows past ~40 / margin.
    """
    logits = jnp.einsum("ntd,de,ne->nt", X, W, Z)
    ref = lax.stop_gradient(jnp.argmax(logits, axis=-1))
    x_ref = jnp.take_along_axis(X, ref[:, None, None], axis=1)
    s = jax.nn.softmax(logits, axis=-1)
    return x_ref[:, 0] + jnp.einsum("nt,ntd->nd", s, X - x_ref)


def linear_head(v) -> Callable[[jax.Array], jax.Array]:
    """The linear head ``h(u) = v^T u`` (applied to a batch ``(n, d) -> (n,)``)."""
    return lambda u: u @ v


def attention_loss(params, X, Z, Y, head, ridge: float = 0.0) -> jax.Array:
    """Logistic loss of ``f(X) = head(X^T softmax(X W z))`` plus ``(ridge/2) ||params||^2``."""
    out = head(attention_output(combined_W(params), X, Z))
    reg = sum(jnp.sum(p**2) for p in jax.tree.leaves(params))
    return jnp.mean(jax.nn.softplus(-Y * out)) + 0.5 * ridge * reg


class AttentionTrajectory(NamedTuple):
    """Records of one training run.

    Fields: steps ``(R,)`` int (step index after which ``W`` was recorded, starting at 0),
    W ``(R, d, d)`` the combined matrix, loss ``(R,)`` the training loss (without ridge),
    params the final parameters.
    """

    steps: jax.Array
    W: jax.Array
    loss: jax.Array
    params: dict

    @reprs.repr_method
    def __repr__(self) -> str:
        w = reprs.host(self.W)
        final = f"final_norm={reprs.num(np.linalg.norm(w[-1]))}" if len(w) else None
        return reprs.line("AttentionTrajectory", [
            f"num_records={np.size(self.steps)}", f"steps={reprs.ends(self.steps)}",
            f"loss={reprs.ends(self.loss)}", f"W={reprs.shape(self.W)}", final,
            f"params={reprs.tree(self.params)}"])


def train_attention(
    params, X, Z, Y, head, *, num_steps: int, learning_rate: float = 0.1, ridge: float = 0.0,
    record_every: int = 10, optimizer: optax.GradientTransformation | None = None,
    record_at=None,
) -> AttentionTrajectory:
    """Run normalised GD (or ``optimizer``) for ``num_steps`` and record ``W`` periodically.

    ``params`` is ``{"W": (d,d)}`` or ``{"K": (d,m), "Q": (d,m)}``. ``num_steps`` must be a
    multiple of ``record_every``; ``R = num_steps // record_every + 1`` records (the first at step
    0). jit-able with ``num_steps``, ``record_every`` and ``head`` static.

    ``record_at``: instead of a fixed interval, a host sequence of non-decreasing step counts
    ``(R,)`` (for example log-spaced, to follow a run over several decades of ``t``); ``W`` is
    recorded after exactly those many steps, ``num_steps`` must equal ``record_at[-1]`` and
    ``record_every`` is ignored. Each segment is one ``landscape.train.run_steps`` call with a
    traced step count, so the number of steps costs no memory and no compile time.
    """
    if record_at is not None:
        at = np.asarray(record_at)
        if at.ndim != 1 or at.size == 0 or not np.issubdtype(at.dtype, np.integer):
            raise ValueError(f"record_at must be a non-empty 1-D sequence of ints; got {at!r}")
        if at[0] < 0 or np.any(np.diff(at) < 0):
            raise ValueError("record_at must be non-negative and non-decreasing")
        if at[-1] != num_steps:
            raise ValueError(
                f"record_at[-1] ({int(at[-1])}) must equal num_steps ({num_steps})")
    elif num_steps % record_every:
        raise ValueError(
            f"num_steps ({num_steps}) must be a multiple of record_every ({record_every})")
    opt = optimizer or normalized_gd(learning_rate)

    def loss(p, data):
        return attention_loss(p, *data, head, ridge)

    def record(p):  # W and the training loss without the ridge
        return combined_W(p), attention_loss(p, X, Z, Y, head, 0.0)

    state = train.init_state(params, opt)
    # full batch and a deterministic loss: the run's key draws nothing
    run = functools.partial(train.run_steps, loss, opt, dataset=(X, Z, Y),
                            key=jax.random.key(0))

    def segment(state, n):  # n more steps, then a record
        state = run(state, num_steps=n)[0]
        return state, record(state.params)

    if record_at is not None:
        lengths = jnp.asarray(np.diff(at, prepend=0), jnp.int32)
        state, (Ws, losses) = lax.scan(segment, state, lengths)
        return AttentionTrajectory(jnp.asarray(at), Ws, losses, state.params)
    state, (Ws, losses) = lax.scan(lambda st, _: segment(st, record_every), state, None,
                                   length=num_steps // record_every)
    W0, loss0 = record(params)
    Ws, losses = jnp.concatenate([W0[None], Ws]), jnp.concatenate([loss0[None], losses])
    return AttentionTrajectory(jnp.arange(Ws.shape[0]) * record_every, Ws, losses, state.params)


class SVMTracking(NamedTuple):
    """Convergence metrics along a trajectory, all ``(R,)``.

    Fields: corr ``corr(W_t, W_ref)``; mass softmax mass on the selected tokens (minimum over
    examples); mean_mass (mean over examples); norm ``||W_t||_F``.
    """

    corr: jax.Array
    mass: jax.Array
    mean_mass: jax.Array
    norm: jax.Array

    @reprs.repr_method
    def __repr__(self) -> str:
        return reprs.line("SVMTracking", [f"num_records={np.size(self.corr)}"] + [
            f"{f}={reprs.ends(getattr(self, f))}" for f in self._fields])


def matrix_corr(A, B) -> jax.Array:
    """``<A, B> / (||A|| ||B||)`` over the last two axes (batched over leading axes)."""
    num = jnp.sum(A * B, axis=(-2, -1))
    return num / (jnp.linalg.norm(A, axis=(-2, -1)) * jnp.linalg.norm(B, axis=(-2, -1)))


def track_svm(Ws, X, Z, W_ref, selected) -> SVMTracking:
    """Metrics of records ``Ws`` ``(R, d, d)`` against ``W_ref`` and a selection (``(n,)`` int or
    ``(n, T)`` bool mask)."""
    sel = jnp.asarray(selected)
    if sel.dtype != jnp.bool_:
        sel = jnp.arange(X.shape[1])[None, :] == sel[:, None]
    probs = jax.vmap(lambda W: attention_probs(W, X, Z))(Ws)
    per_example = jnp.sum(jnp.where(sel, probs, 0.0), axis=-1)
    corr = matrix_corr(Ws, jnp.asarray(W_ref, Ws.dtype)[None])
    return SVMTracking(corr, per_example.min(-1), per_example.mean(-1),
                       jnp.linalg.norm(Ws, axis=(-2, -1)))


def selected_tokens(W, X, Z) -> np.ndarray:
    """The token of each example with the largest attention weight under ``W`` (``(n,)`` int)."""
    return np.asarray(jnp.argmax(attention_probs(W, X, Z), axis=-1)).astype(np.int32)

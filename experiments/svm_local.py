"""Gradient descent on attention can converge to a locally optimal token selection.

Part 1 (frequency): for many seeds, train ``W`` with normalised GD (step 0.1, float64) from a
random initialisation of a given scale, read off the token selection it converged to, and
classify it with ``is_locally_optimal`` (Tarzanagh et al. 2023): ``global`` (the highest-scoring
tokens), ``local`` (a different selection whose selected tokens beat their support tokens) or
``none``. Also records the final ``corr(W_t, W_mm(selection))``.

Part 2 (picture): one example with T tokens in d = 2 and query ``z = e_1``. The attention logits
depend on ``u = W z`` only, and normalised GD on ``W`` is normalised GD on ``u``, so the GD paths
of ``u_t`` from several initialisations can be drawn in the token plane against the directions
``W_mm(alpha) z`` of every feasible selection ``alpha`` (a vertex of the tokens' convex hull).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from experiments.layouts.svm_local import KINDS, Metrics
from landscape import attention as att
from landscape import data
from landscape.experiment import RunContext, check_fields


@dataclass(frozen=True)
class Config:
    """Default: 30 seeds x init scales {0.01, 1} at n=6, T=8, d=10; a 2-D picture with 16 paths."""

    seed: int = 0
    num_seeds: int = 30
    n: int = 6
    T: int = 8
    d: int = 10
    init_scales: tuple[float, ...] = (0.01, 1.0)
    num_steps: int = 2000
    learning_rate: float = 0.1
    record_every: int = 100
    picture_T: int = 6
    picture_paths: int = 16
    picture_steps: int = 150
    picture_init_scale: float = 1.0
    picture_max_tries: int = 50

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_seeds=2, n=3, T=4, d=4, init_scales=(0.01,), num_steps=200,
                   picture_T=4, picture_paths=3, picture_steps=50)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("num_seeds", "n", "d", "init_scales", "num_steps",
                                     "learning_rate", "record_every", "picture_paths",
                                     "picture_steps", "picture_init_scale",
                                     "picture_max_tries"))
        for key in ("T", "picture_T"):
            if getattr(self, key) < 2:
                raise ValueError(f"config key {key!r} must be >= 2 (tokens to select from); "
                                 f"got {getattr(self, key)}")
        if not self.init_scales:
            raise ValueError("config key 'init_scales' must be non-empty; got ()")
        if self.num_steps % self.record_every:
            raise ValueError(f"config key 'num_steps' must be a multiple of record_every "
                             f"({self.record_every}); got {self.num_steps}")


def _train(params, X, Z, Y, v, *, num_steps, record_every, learning_rate):
    return att.train_attention(params, X, Z, Y, att.linear_head(v), num_steps=num_steps,
                               learning_rate=learning_rate, record_every=record_every).W


_TRAIN = jax.jit(_train, static_argnames=("num_steps", "record_every", "learning_rate"))


def frequency_seed(config: Config, s: int, scale: float) -> dict:
    """One (seed, init scale): the kind of selection reached and the final correlation."""
    c = config
    with jax.enable_x64(True):
        kd, kw = jax.random.split(jax.random.fold_in(jax.random.key(c.seed), s))
        tok = data.token_selection_data(kd, c.n, c.T, c.d, dtype=jnp.float64)
        W0 = scale * jax.random.normal(kw, (c.d, c.d), jnp.float64)
        Ws = _TRAIN({"W": W0}, tok.X, tok.Z, tok.Y, tok.v, num_steps=c.num_steps,
                    record_every=c.record_every, learning_rate=c.learning_rate)
        sel = att.selected_tokens(Ws[-1], tok.X, tok.Z)
        verdict = att.is_locally_optimal(tok.X, tok.Z, tok.scores, sel)
        corr = float(att.matrix_corr(Ws[-1], verdict.solution.W)) if verdict.feasible else np.nan
        mass = float(att.track_svm(Ws[-1:], tok.X, tok.Z, Ws[-1], sel).mass[0])
    return {"kind": verdict.kind, "corr": corr, "mass": mass,
            "num_wrong": int((sel != np.asarray(tok.opt_index)).sum())}


def _token_kinds(X, Z, scores, T):
    """Kind of the selection {alpha} for every token alpha, and its SVM direction ``W_mm e_1``."""
    directions, kinds = np.full((T, 2), np.nan), []
    for a in range(T):
        verdict = att.is_locally_optimal(X, Z, scores, np.array([a]))
        kinds.append(verdict.kind)
        if verdict.feasible:
            directions[a] = verdict.solution.W[:, 0]
    return kinds, directions


def picture(config: Config) -> dict:
    """Paths of ``u_t = W_t z`` for one 2-D example with a locally optimal token.

    Draws examples (keys ``fold_in(seed, 10_000 + try)``) until one has a locally-but-not-globally
    optimal token (at most ``picture_max_tries``), then runs GD from ``picture_paths`` inits.
    """
    c = config
    with jax.enable_x64(True):
        Z, Y = jnp.array([[1.0, 0.0]]), jnp.ones((1,))
        for attempt in range(c.picture_max_tries):
            key = jax.random.fold_in(jax.random.key(c.seed), 10_000 + attempt)
            kx, kv, kp = jax.random.split(key, 3)
            X = jax.random.normal(kx, (1, c.picture_T, 2), jnp.float64)
            v = jax.random.normal(kv, (2,), jnp.float64)
            scores = np.asarray(data.token_scores(X, Y, v))
            kinds, directions = _token_kinds(X, Z, scores, c.picture_T)
            if "local" in kinds:
                break
        W0s = c.picture_init_scale * jax.random.normal(kp, (c.picture_paths, 2, 2), jnp.float64)
        train = lambda W0: _TRAIN({"W": W0}, X, Z, Y, v, num_steps=c.picture_steps,  # noqa: E731
                                  record_every=1, learning_rate=c.learning_rate)
        paths = np.stack([np.asarray(train(W0))[:, :, 0] for W0 in W0s])  # u_t = W_t e_1
        final = [int(np.argmax(np.asarray(X[0]) @ p[-1])) for p in paths]
    return {"tokens": np.asarray(X[0]), "scores": scores[0], "paths": paths, "attempt": attempt,
            "final_token": final, "svm_u": directions, "token_kind": kinds}


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    freq = {}
    for scale in config.init_scales:
        rows = [ctx.stage(f"scale{scale}_seed{s}",
                          lambda s=s, sc=scale: frequency_seed(config, s, sc))
                for s in ctx.progress(range(config.num_seeds), desc=f"init {scale}")]
        kinds = [r["kind"] for r in rows]
        freq[str(scale)] = {
            "kinds": kinds,
            "fraction": {k: kinds.count(k) / len(kinds) for k in KINDS},
            "final_corr": np.array([r["corr"] for r in rows]),
            "final_mass": np.array([r["mass"] for r in rows]),
            "num_wrong_tokens": [r["num_wrong"] for r in rows],
        }
    return {"frequency": freq, "picture": ctx.stage("picture", lambda: picture(config))}

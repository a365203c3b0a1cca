"""Small-scale proxies for large-scale Transformer training instabilities (Wortsman et al. 2023).

Protocol (the paper's, shrunk to a 2-core CPU; the gap is stated in the README):

* **Data.** ``landscape.data.text.stdlib_text``: character windows of ``seq_len + 1`` ids of
  the standard-library docstring corpus (97 symbols), the last 10 % of the characters held out.
  Training draws ``batch_size * num_steps`` windows once and reads them in order, so every run
  sees each window once (one epoch, as the paper's runs) and all runs see the same batches;
  validation uses ``num_valid`` held-out windows. The corpus fingerprint (Python version,
  sha256, length) is stored, and ``expected_sha256`` pins it.
* **Models.** ``landscape.models.Transformer`` (pre-LN, GELU MLP of width 4 d, learned
  positions) at the sizes ``d_models x n_layers x n_heads`` (same initial weights for every
  learning rate of a size), in the variants of ``VARIANTS``: ``plain``; ``qk_layernorm``
  (LayerNorm on queries and keys); ``z_loss`` (``z_loss_coef * mean(log Z)^2`` added to the
  cross-entropy, ``Z`` the softmax normaliser of the output logits); and both.
* **Optimiser.** AdamW as in the paper: global-norm clipping at ``clip_norm``, Adam with
  ``b1, b2 = 0.9, 0.95`` and ``eps``, and weight decay *independent of the learning rate*:
  ``theta <- theta - s_t (eta u_t + weight_decay theta)``, with ``u_t`` Adam's direction and
  ``s_t`` the schedule (linear warm-up over ``warmup_fraction`` of the steps, then cosine
  decay to 0). The peak rate ``eta`` runs over ``learning_rates`` (log-spaced).
* **Runs.** All learning rates and both z-loss settings of one (size, qk-layernorm) pair train
  together under ``jax.vmap`` of ``landscape.train.run_steps`` (the learning rate a traced
  hyperparameter, the z-loss coefficient a traced part of the batch): one compilation per
  (size, qk-layernorm) pair, which is also the resumable stage.
* **Probes** (every ``record_every`` steps, on ``probe_size`` fixed validation windows, and
  once more after the last step): the maximum attention logit of every layer
  (``Transformer.max_attention_logit``), the mean ``log Z`` and the largest ``|logit|`` of the
  output, the cross-entropy on the probe batch and the training minibatch loss.
* **Outcome.** Final validation cross-entropy per (size, variant, learning rate); a run is
  *diverged* when it is not finite or above the loss at initialisation ``l0`` (the same initial
  weights give the same ``l0`` for every rate). The learning-rate sensitivity
  ``E_eta[min(l(eta), l0)] - min_eta l(eta)`` per (size, variant) is
  ``landscape.optim.protocol.lr_sensitivity`` with ``l0`` the measured initial validation loss
  (close to ``ln 97 = 4.57``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.layouts.small_scale_proxies import Metrics
from landscape import losses, models, train
from landscape.data.text import VOCAB_SIZE, stdlib_text
from landscape.experiment import RunContext, check_fields
from landscape.nnx import functional
from landscape.optim import protocol

#: variant name -> (qk_layernorm, z_loss)
VARIANTS = {"plain": (False, False), "qk_layernorm": (True, False), "z_loss": (False, True),
            "qk_layernorm_z_loss": (True, True)}
#: ``fold_in`` salts of the data and of the initial weights
DATA_SALT, INIT_SALT = 1, 2


@dataclass(frozen=True)
class Config:
    """Default: three sizes (0.03M, 0.12M and 0.36M parameters), the variants plain,
    qk-layernorm and z-loss (``qk_layernorm_z_loss`` on request), six learning rates
    1e-3 .. 3e-1 (a factor about 3 apart, 2.5 decades); 300 steps of 16 windows of 64
    characters (0.3M tokens per run; the paper's small models see some 4000 times more). Sized
    for about 12 minutes on an idle 2-core CPU (most of it the largest size)."""

    seed: int = 0
    seq_len: int = 64
    d_models: tuple[int, ...] = (32, 64, 96)
    n_layers: tuple[int, ...] = (2, 2, 3)
    n_heads: tuple[int, ...] = (2, 4, 4)
    variants: tuple[str, ...] = ("plain", "qk_layernorm", "z_loss")
    learning_rates: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
    num_steps: int = 300
    batch_size: int = 16
    record_every: int = 20
    warmup_fraction: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 1e-4  #: independent of the learning rate (see the module docstring)
    clip_norm: float = 1.0
    z_loss_coef: float = 1e-4
    num_valid: int = 256
    probe_size: int = 16
    #: pin of the corpus (``landscape.data.text.corpus_fingerprint()["sha256"]``), the value of
    #: Python 3.11.7's standard library; another interpreter fails with both hashes named (set
    #: ``expected_sha256=None`` to record without checking). The smoke config records only.
    expected_sha256: str | None = "ba3dbbb1b2b20c366d169d2b6cc3ed45c4d5e90edcfd4ae943acd308865143de"

    @classmethod
    def smoke(cls) -> Config:
        return cls(seq_len=16, d_models=(16,), n_layers=(1,), n_heads=(2,),
                   variants=("plain", "z_loss"), learning_rates=(1e-3, 3e-1), num_steps=20,
                   batch_size=4, record_every=5, num_valid=16, probe_size=4,
                   expected_sha256=None)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("seq_len", "d_models", "n_layers", "n_heads",
                                     "learning_rates", "num_steps", "batch_size",
                                     "record_every", "eps", "clip_norm", "num_valid",
                                     "probe_size"),
                     nonnegative=("weight_decay", "z_loss_coef"),
                     unit=("warmup_fraction", "b1", "b2"), choices={"variants": VARIANTS})
        if not (len(self.d_models) == len(self.n_layers) == len(self.n_heads) >= 1):
            raise ValueError(f"config keys 'd_models', 'n_layers', 'n_heads' must have one entry "
                             f"per size (equal lengths >= 1); got {len(self.d_models)}, "
                             f"{len(self.n_layers)}, {len(self.n_heads)}")
        for d, h in zip(self.d_models, self.n_heads, strict=True):
            if d % h:
                raise ValueError(f"config key 'n_heads' must divide d_models; got {h} for {d}")
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise ValueError(f"config key 'variants' must be distinct and non-empty; got "
                             f"{self.variants}")
        if not self.learning_rates or list(self.learning_rates) != sorted(self.learning_rates):
            raise ValueError(f"config key 'learning_rates' must be increasing and non-empty; "
                             f"got {self.learning_rates}")
        if self.num_steps % self.record_every:
            raise ValueError(f"config key 'num_steps' must be a multiple of record_every "
                             f"({self.record_every}); got {self.num_steps}")
        if self.probe_size > self.num_valid:
            raise ValueError(f"config key 'probe_size' must be at most num_valid "
                             f"({self.num_valid}); got {self.probe_size}")


# ------------------------------------------------------------------------------ pieces


def size_name(config: Config, s: int) -> str:
    return f"d{config.d_models[s]}_l{config.n_layers[s]}_h{config.n_heads[s]}"


def corpus(config: Config):
    """``stdlib_text`` windows: ``batch_size * num_steps`` training, ``num_valid`` validation."""
    key = jax.random.fold_in(jax.random.key(config.seed), DATA_SALT)
    return stdlib_text(key, seq_len=config.seq_len, num_train=config.batch_size * config.num_steps,
                       num_valid=config.num_valid, expected_sha256=config.expected_sha256)


def model(config: Config, s: int, qk_layernorm: bool):
    """The ``Functional`` of size ``s``, initial weights from ``fold_in(key(seed), INIT_SALT)``.

    With qk-layernorm every weight the plain model also has is the plain model's (the query and
    key LayerNorms start at scale 1, bias 0), so the variants of a size start from the same
    network and differ only in the normalisation."""
    key = jax.random.fold_in(jax.random.key(config.seed), INIT_SALT)
    make = functools.partial(models.Transformer, VOCAB_SIZE, config.d_models[s],
                             config.n_layers[s], config.n_heads[s], config.seq_len, key=key)
    fm = functional(make(qk_layernorm=qk_layernorm))
    if qk_layernorm:
        fm = dataclasses.replace(fm, params=_overlay(fm.params,
                                                     functional(make()).params))
    return fm


def _overlay(target: dict, source: dict) -> dict:
    """``target`` with every leaf that ``source`` also has (same path) taken from ``source``."""
    return {k: (_overlay(v, source[k]) if isinstance(v, dict) else source[k]) if k in source
            else v for k, v in target.items()}


def adamw(config: Config, num_steps: int):
    """``(learning_rate) -> optax transformation``: clipping, Adam (b1, b2, eps), weight decay
    independent of the peak rate, warm-up + cosine schedule ``s_t``:
    ``update = -s_t (eta * adam + weight_decay * theta)``."""
    warmup = max(1, int(round(config.warmup_fraction * num_steps)))
    shape = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, num_steps, 0.0)

    def make(learning_rate):
        return optax.chain(
            optax.clip_by_global_norm(config.clip_norm),
            optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps),
            optax.add_decayed_weights(config.weight_decay / learning_rate),
            optax.scale_by_learning_rate(lambda count: learning_rate * shape(count)))

    return make


def _stats(fm, params, tokens):
    """Probe record on ``tokens (n, T+1)``: max attention logit per layer, mean ``log Z``, max
    ``|logit|`` of the output and the cross-entropy."""
    net = fm.merge(params)
    x, y = tokens[:, :-1], tokens[:, 1:]
    logits = net(x)
    return {"max_attention_logit": net.max_attention_logit(x),
            "log_z": jnp.mean(jax.nn.logsumexp(logits, axis=-1)),
            "max_abs_logit": jnp.max(jnp.abs(logits)),
            "probe_loss": losses.softmax_cross_entropy(logits, y)}


def _loss(fm):
    def loss_fn(params, batch):
        x, y = batch["tokens"][:, :-1], batch["tokens"][:, 1:]
        logits = fm.apply(params, x)
        return (losses.softmax_cross_entropy(logits, y)
                + batch["z_coef"] * models.z_loss(logits))

    return loss_fn


def _batch_fn(batch_size: int):
    def batch_fn(data, step, key):
        del key
        toks = jax.lax.dynamic_slice_in_dim(data["tokens"], step * batch_size, batch_size)
        return {"tokens": toks, "z_coef": data["z_coef"]}

    return batch_fn


def train_group(config: Config, s: int, qk_layernorm: bool, z_coefs, text) -> dict:
    """Every learning rate x ``z_coefs`` of size ``s`` with or without qk-layernorm, in one
    vmapped ``run_steps``. Returns float64 arrays ``[z, lr, ...]``: the probe records
    ``[z, lr, record, ...]`` (``num_steps / record_every + 1`` records, the last after the
    final step), ``final_loss`` (validation cross-entropy) and ``initial_loss`` (scalar)."""
    fm = model(config, s, qk_layernorm)
    loss_fn, make = _loss(fm), adamw(config, config.num_steps)
    dtype = jnp.result_type(float)
    lrs = jnp.asarray(np.tile(config.learning_rates, len(z_coefs)), dtype)
    zs = jnp.asarray(np.repeat(z_coefs, len(config.learning_rates)), dtype)

    def valid_ce(params, valid):
        return losses.softmax_cross_entropy(fm.apply(params, valid[:, :-1]), valid[:, 1:])

    # the data and the initial weights enter as arguments: as closure constants XLA would
    # constant-fold the initial validation loss at compile time (tens of seconds)
    def one(lr, z, tokens, valid, params):
        probe_tokens = valid[: config.probe_size]
        probes = {"p": train.probe(lambda c, st: (dict(_stats(fm, c.params, c.data),
                                                       train_loss=c.loss), st),
                                   every=config.record_every, data=probe_tokens)}
        state = train.init_state(params, make, None, {"learning_rate": lr})
        state, _, trace, _, _ = train.run_steps(
            loss_fn, make, state, {"tokens": tokens, "z_coef": z}, key=jax.random.key(0),
            num_steps=config.num_steps, hyperparams={"learning_rate": lr}, probes=probes,
            batch_fn=_batch_fn(config.batch_size))
        last = dict(_stats(fm, state.params, probe_tokens),
                    train_loss=jnp.asarray(jnp.nan, dtype))
        rows = config.num_steps // config.record_every
        trace = jax.tree.map(lambda a, b: jnp.concatenate([a[:rows], b[None]]), trace["p"], last)
        # the initial loss does not depend on the run: vmap leaves it unbatched (computed once)
        return trace, valid_ce(state.params, valid), valid_ce(params, valid)

    trace, final, initial = jax.jit(jax.vmap(one, in_axes=(0, 0, None, None, None)))(
        lrs, zs, text.train["tokens"], text.valid["tokens"], fm.params)
    shape = (len(z_coefs), len(config.learning_rates))
    out = {k: np.asarray(v, np.float64).reshape(shape + v.shape[1:]) for k, v in trace.items()}
    out["final_loss"] = np.asarray(final, np.float64).reshape(shape)
    out["initial_loss"] = float(initial[0])
    out["num_params"] = sum(int(np.size(a)) for a in jax.tree.leaves(fm.params))
    return out


# ------------------------------------------------------------------------------ run


def _groups(config: Config):
    """``{qk_layernorm: [variant, ...]}`` in config order: one compiled program per group."""
    groups: dict[bool, list[str]] = {}
    for v in config.variants:
        groups.setdefault(VARIANTS[v][0], []).append(v)
    return groups


def divergence_lr(lrs, final, initial: float) -> float:
    """The smallest learning rate whose run diverged (not finite or above ``l0``); nan if none."""
    bad = ~np.isfinite(final) | (final > initial)
    return float(np.asarray(lrs)[bad].min()) if bad.any() else float("nan")


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    text = corpus(config)
    S, V, L = len(config.d_models), len(config.variants), len(config.learning_rates)
    R, layers = config.num_steps // config.record_every + 1, max(config.n_layers)
    per = {k: np.full((S, V, L, R), np.nan) for k in ("log_z", "max_abs_logit", "probe_loss",
                                                      "train_loss")}
    attn = np.full((S, V, L, R, layers), np.nan)
    final, initial = np.full((S, V, L), np.nan), np.full((S, V), np.nan)
    num_params = np.zeros((S, V), np.int64)
    for s in range(S):
        for qk, names in _groups(config).items():
            z = [config.z_loss_coef if VARIANTS[v][1] else 0.0 for v in names]
            out = ctx.stage(f"{size_name(config, s)}_qk{int(qk)}",
                            functools.partial(train_group, config, s, qk, z, text))
            for i, v in enumerate(names):
                j = config.variants.index(v)
                for k in per:
                    per[k][s, j] = out[k][i]
                attn[s, j, ..., :config.n_layers[s]] = out["max_attention_logit"][i]
                final[s, j], initial[s, j] = out["final_loss"][i], out["initial_loss"]
                num_params[s, j] = out["num_params"]
    final = np.where(np.isfinite(final), final, np.nan)
    diverged = ~np.isfinite(final) | (final > initial[..., None])
    lrs = np.asarray(config.learning_rates)
    sens = np.array([[protocol.lr_sensitivity(final[s, j], initial[s, j]) for j in range(V)]
                     for s in range(S)])
    return {
        "fingerprint": dict(text.fingerprint),
        "sizes": [size_name(config, s) for s in range(S)],
        "num_params": num_params,
        "record_steps": np.append(np.arange(0, config.num_steps, config.record_every),
                                  config.num_steps).astype(np.int64),
        "initial_loss": initial,
        "final_loss": final,
        "diverged": diverged,
        "sensitivity": sens,
        "divergence_lr": np.array([[divergence_lr(lrs, final[s, j], initial[s, j])
                                    for j in range(V)] for s in range(S)]),
        "best_lr": np.array([[lrs[np.nanargmin(np.where(diverged[s, j], np.nan, final[s, j]))]
                              if not diverged[s, j].all() else np.nan for j in range(V)]
                             for s in range(S)]),
        "max_attention_logit": attn,
        "final_max_attention_logit": np.fmax.reduce(attn[..., -1, :], axis=-1),
        **per,
    }

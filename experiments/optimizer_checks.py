"""Three per-paper checks of ``landscape.optim`` on a ReLU MLP on MNIST-1D.

The setting is ``experiments._eos.setting(loss="cross_entropy", activation="relu",
dataset="mnist1d")``: its first ``num_train`` examples train, the next ``num_test`` test (the
inputs are centred with the mean of all of them). Seed index ``i`` uses the initialisation of
``_eos.setting(seed=seed + i)`` and the data order ``fold_in(key(seed), i)``, shared by every
optimizer (paired comparisons). Minibatches of ``batch_size`` follow ``landscape.train``'s
epoch order. The runs are ``jax.vmap``-ed ``train.run_steps`` over hyperparameters and seeds,
with probes recording the minibatch loss and second moment at every step and the training
loss, test loss and test accuracy every ``record_every`` steps: Adam's and SPAM's runs share
one compiled program (:func:`either`), M-FAC's have another.

1. **SPAM vs Adam under injected spikes** (Huang et al., ICLR 2025, "SPAM: Spike-Aware Adam with
   Momentum Reset for Stable LLM Training"). :func:`inject_spikes`, placed before the optimizer
   in an ``optax.chain``, multiplies a random ``spike_fraction`` of the gradient's coordinates by
   ``spike_factor`` at ``num_spikes`` steps drawn once from the seed (the same steps and
   coordinates for every run). Adam (``optax.adam``) and ``optim.spam`` (threshold ``theta``,
   reset every ``spam_reset_interval`` steps, ``spam_warmup_steps``) run at every learning rate
   of ``learning_rates`` with and without spikes. Expected from the paper: a spike enters
   Adam's moments, the few steps after it are large, and its second moment stays inflated for
   about ``1/(1 - b2) = 1000`` steps (smaller steps afterwards); SPAM clips the spike to
   ``sqrt(theta v)`` and resets the moments, so it trains almost as without spikes.
2. **AdAdaGrad's batch size** (Lau, Liu, Kolar 2024, "AdAdaGrad: Adaptive Batch Size Schemes
   for Adaptive Gradient Methods"). ``optim.adaptive_batch_train`` with ``optim.adagrad_norm``
   under the norm and the inner-product tests, starting at ``ada_initial_batch_size`` and
   testing every ``ada_check_every`` steps, against AdaGrad-Norm at the fixed initial batch
   size. Expected: the batch size grows as training proceeds.
3. **M-FAC vs Adam** (Frantar, Kurtic, Alistarh, NeurIPS 2021, "M-FAC: Efficient Matrix-Free
   Approximations of Second-Order Information"). ``optim.mfac`` (window ``mfac_num_grads``) over
   ``learning_rates x mfac_damps`` against Adam over ``learning_rates x adam_eps`` (its own
   damping): the same number of trials and steps for both. The paper reports M-FAC on par with
   or better than the first-order baselines on image classifiers; whichever wins here is the
   result (``Config`` says how the grids were fixed).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import _eos
from experiments.layouts.optimizer_checks import Metrics
from landscape import losses, optim, train
from landscape.data import seed_from_key
from landscape.experiment import RunContext, check_fields

#: Tests of ``adaptive_batch_train`` this experiment can run; "fixed" keeps the initial size.
ADA_TESTS = ("norm", "inner_product", "orthogonality", "augmented")
#: ``fold_in`` salts of the keys other than the data orders (which use the seed index).
SPIKE_STEPS_SALT, SPIKE_MASKS_SALT, ADA_SALT = 1001, 1002, 1003


@dataclass(frozen=True)
class Config:
    """Default: MLP 40-64-64-10, 4000/1000 MNIST-1D, batch 64, 3 seeds; checks 1 and 3 run 3000
    steps at learning rates 1e-3, 3e-3, 1e-2, 3e-2; check 2 runs 1500 AdaGrad-Norm steps at
    lr 8.

    How the grids were fixed: the learning-rate grid is shared by Adam, SPAM and M-FAC and must
    bracket each optimizer's best setting in check 3 (the best strictly inside it). A first run
    at (3e-4, 1e-3, 3e-3) put both optimizers' best at the top edge, a second at (3e-3, 1e-2,
    3e-2) Adam's at the bottom edge; the grid was widened to cover both, and not changed after
    that. The AdaGrad-Norm rate is the best final training loss of (0.5, 1, 2, 4, 8, 16) at the
    fixed batch of 16 (one seed, 1500 steps); the tests then run at that rate. The smoke config
    runs the inner-product test only (its batch stays at 8, so the controller compiles once).
    """

    seed: int = 0
    num_train: int = 4000
    num_test: int = 1000
    width: int = 64
    depth: int = 2
    batch_size: int = 64
    num_seeds: int = 3
    num_steps: int = 3000
    record_every: int = 100
    learning_rates: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)
    # check 1: SPAM vs Adam under spikes
    num_spikes: int = 6
    spike_factor: float = 1000.0
    spike_fraction: float = 0.1
    spike_window: int = 50
    spam_threshold: float = 5000.0
    spam_reset_interval: int = 500
    spam_warmup_steps: int = 150
    # check 3: M-FAC vs Adam
    mfac_num_grads: int = 32
    mfac_damps: tuple[float, ...] = (1e-5, 1e-4, 1e-3)
    adam_eps: tuple[float, ...] = (1e-8, 1e-6, 1e-4)
    # check 2: AdAdaGrad
    ada_tests: tuple[Literal["norm", "inner_product", "orthogonality", "augmented"], ...] = (
        "norm", "inner_product")
    ada_num_steps: int = 1500
    ada_learning_rate: float = 8.0
    ada_b0: float = 0.1
    ada_initial_batch_size: int = 16
    ada_max_batch_size: int = 1000
    ada_check_every: int = 50

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_train=96, num_test=32, width=8, depth=1, batch_size=16, num_seeds=1,
                   num_steps=40, record_every=10, learning_rates=(1e-3, 3e-3), num_spikes=2,
                   spike_window=4, spam_reset_interval=30, spam_warmup_steps=5, mfac_num_grads=4,
                   mfac_damps=(1e-3,), adam_eps=(1e-8,), ada_tests=("inner_product",),
                   ada_num_steps=20, ada_initial_batch_size=8, ada_max_batch_size=48,
                   ada_check_every=10)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("num_train", "num_test", "width", "depth", "batch_size",
                                     "num_seeds", "num_steps", "record_every", "learning_rates",
                                     "num_spikes", "spike_factor", "spike_fraction",
                                     "spike_window", "spam_threshold", "spam_reset_interval",
                                     "spam_warmup_steps", "mfac_num_grads", "mfac_damps",
                                     "adam_eps", "ada_num_steps", "ada_learning_rate", "ada_b0",
                                     "ada_initial_batch_size", "ada_max_batch_size",
                                     "ada_check_every"),
                     unit=("spike_fraction",), choices={"ada_tests": ADA_TESTS})
        for name in ("learning_rates", "mfac_damps", "adam_eps", "ada_tests"):
            if not getattr(self, name):
                raise ValueError(f"config key {name!r} must not be empty")
        if len(self.mfac_damps) != len(self.adam_eps):
            raise ValueError(f"config key 'adam_eps' must have as many values as mfac_damps "
                             f"({len(self.mfac_damps)}: the same tuning budget); got "
                             f"{len(self.adam_eps)}")
        if self.batch_size > self.num_train:
            raise ValueError(f"config key 'batch_size' must be at most num_train "
                             f"({self.num_train}); got {self.batch_size}")
        if self.num_steps % self.record_every:
            raise ValueError(f"config key 'num_steps' must be a multiple of record_every "
                             f"({self.record_every}); got {self.num_steps}")
        if self.num_spikes * 4 * self.spike_window > self.num_steps:
            raise ValueError(f"config key 'num_spikes' times 4 spike_window must be at most "
                             f"num_steps ({self.num_steps}); got {self.num_spikes}")
        if not 2 <= self.ada_initial_batch_size <= self.ada_max_batch_size <= self.num_train:
            raise ValueError(f"config key 'ada_max_batch_size' must satisfy 2 <= "
                             f"ada_initial_batch_size <= ada_max_batch_size <= num_train; got "
                             f"{self.ada_initial_batch_size}, {self.ada_max_batch_size}, "
                             f"{self.num_train}")


# ----------------------------------------------------------------------------- setting


class Data(NamedTuple):
    """The shared pieces: loss and forward pass, stacked initial params ``[seed, ...]``,
    train and test sets, and the batch order ``[seed, step, batch_size]`` (example indices, for
    ``num_steps + 1`` steps: :func:`train_runs` takes one extra step)."""

    loss_fn: object
    apply_fn: object
    params: object
    train: dict
    test: dict
    order: jax.Array


def data_key(config: Config, i: int):
    """The data-order key of seed index ``i``: ``fold_in(key(seed), i)``."""
    return jax.random.fold_in(jax.random.key(config.seed), i)


def _salted(config: Config, salt: int):
    """``fold_in(key(seed), salt)``: the keys of the spikes and of check 2 (salts above 1000,
    apart from the data orders' seed indices)."""
    return jax.random.fold_in(jax.random.key(config.seed), salt)


def batch_order(key, n: int, batch_size: int, num_steps: int) -> jax.Array:
    """``[num_steps, batch_size]`` example indices: ``landscape.train``'s epoch order (epoch
    ``e`` visits ``permutation(fold_in(key, e), n)`` in full batches, the rest dropped), as
    ``train.batch_at`` draws it at each step."""
    per_epoch = n // batch_size
    epochs = -(-num_steps // per_epoch)
    perms = [jax.random.permutation(jax.random.fold_in(key, e), n)[:per_epoch * batch_size]
             for e in range(epochs)]
    return jnp.concatenate(perms).reshape(-1, batch_size)[:num_steps]


def setting(config: Config) -> Data:
    """The :class:`Data` of ``config`` (module docstring: the split, the inits, the orders)."""
    kw = dict(width=config.width, depth=config.depth, loss="cross_entropy", activation="relu",
              dataset="mnist1d")
    st = _eos.setting(seed=config.seed, num_examples=config.num_train + config.num_test, **kw)
    inits = [st.params] + [_eos.setting(seed=config.seed + i, num_examples=1, **kw).params
                           for i in range(1, config.num_seeds)]
    n = config.num_train
    order = jnp.stack([batch_order(data_key(config, i), n, config.batch_size,
                                   config.num_steps + 1) for i in range(config.num_seeds)])
    return Data(st.loss_fn, st.apply_fn, jax.tree.map(lambda *a: jnp.stack(a), *inits),
                jax.tree.map(lambda a: a[:n], st.dataset),
                jax.tree.map(lambda a: a[n:], st.dataset), order)


def _rng(config: Config, salt: int) -> np.random.Generator:
    """A NumPy generator seeded from ``fold_in(key(seed), salt)`` (``data.seed_from_key``)."""
    return np.random.default_rng(seed_from_key(_salted(config, salt)))


def spike_steps(config: Config) -> np.ndarray:
    """``num_spikes`` distinct 0-based steps, sorted, drawn uniformly from ``[2 spike_window,
    num_steps - 2 spike_window)`` by ``_rng(config, SPIKE_STEPS_SALT)``."""
    w = 2 * config.spike_window
    pick = _rng(config, SPIKE_STEPS_SALT).choice(config.num_steps - 2 * w, config.num_spikes,
                                                 replace=False)
    return np.sort(pick.astype(np.int64) + w)


def spike_masks(rng: np.random.Generator, params, num_spikes: int, fraction: float):
    """For every leaf a bool array ``[num_spikes, *leaf.shape]``: the coordinates each spike
    hits, i.i.d. with probability ``fraction`` (one ``rng.random((num_spikes, num_params))``
    draw, split leaf by leaf in flattening order, ``< fraction``)."""
    leaves, treedef = jax.tree.flatten(params)
    sizes = [int(np.prod(np.shape(x))) for x in leaves]
    u = rng.random((num_spikes, sum(sizes))) < fraction
    parts = np.split(u, np.cumsum(sizes)[:-1], axis=1)
    return jax.tree.unflatten(treedef, [jnp.asarray(p.reshape((num_spikes,) + np.shape(x)))
                                        for p, x in zip(parts, leaves, strict=True)])


class SpikeState(NamedTuple):
    count: jax.Array  #: int32, gradients seen so far


def inject_spikes(steps, masks, factor) -> optax.GradientTransformation:
    """Gradient spikes: at the ``j``-th of the sorted 0-based ``steps`` multiply the
    coordinates where ``masks[j]`` holds (:func:`spike_masks`) by ``factor``; every other step
    passes the gradient through. ``factor`` may be traced (``factor = 1``: no spikes). Place it
    first in an ``optax.chain``, before the optimizer, so the spike enters its state as a real
    gradient spike would."""
    steps = jnp.asarray(steps, jnp.int32)

    def init(params):
        del params
        return SpikeState(jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        del params
        hit = state.count == steps
        j = jnp.argmax(hit)
        out = jax.tree.map(lambda g, m: jnp.where(jnp.any(hit) & m[j], g * factor, g)
                           .astype(g.dtype), updates, masks)
        return out, SpikeState(state.count + 1)

    return optax.GradientTransformation(init, update)


def _evaluate(apply_fn, params, data):
    train_logits, test_logits = apply_fn(params, data[0]["x"]), apply_fn(params, data[1]["x"])
    return {"train_loss": losses.softmax_cross_entropy(train_logits, data[0]["y"]),
            "test_loss": losses.softmax_cross_entropy(test_logits, data[1]["y"]),
            "test_accuracy": losses.accuracy(test_logits, data[1]["y"])}


def _second_moment(opt_state):
    """Sum of every ``nu`` leaf of the optimizer state (0 if it has none)."""
    nus = [n for n in optax.tree_utils.tree_get_all_with_path(opt_state, "nu")]
    return sum((sum(jnp.sum(x) for x in jax.tree.leaves(v)) for _, v in nus), jnp.zeros(()))


class EitherState(NamedTuple):
    first: object  #: the state of the first transformation
    second: object  #: the state of the second


def either(first, second, use_second) -> optax.GradientTransformation:
    """Both transformations see every gradient; the update is the second's where
    ``use_second`` (a traced bool) holds, else the first's. It lets one compiled ``vmap`` hold
    runs of two optimizers (each run pays for both updates, cheap next to the forward and
    backward pass of the model)."""

    def init(params):
        return EitherState(first.init(params), second.init(params))

    def update(updates, state, params=None):
        u1, s1 = first.update(updates, state.first, params)
        u2, s2 = second.update(updates, state.second, params)
        return (jax.tree.map(lambda a, b: jnp.where(use_second, b, a), u1, u2),
                EitherState(s1, s2))

    return optax.GradientTransformation(init, update)


def _ordered_batch(data, step, key):
    """``batch_fn`` of :func:`train_runs`: the run's precomputed indices of ``step``."""
    del key
    train_set, order, seed_index = data
    return jax.tree.map(lambda x: x[order[seed_index, step]], train_set)


def train_runs(config: Config, d: Data, factory, hyperparams: dict, seed_index,
               second_moment=None) -> dict:
    """Run ``len(seed_index)`` trainings of ``factory(**hyperparams[r])`` in one vmapped call
    (one compilation): run ``r`` starts from the init of seed index ``seed_index[r]`` and
    follows its batch order ``d.order[seed_index[r]]``.

    Returns float64 NumPy arrays ``[run, ...]``: ``step_loss`` and ``second_moment`` ``[run,
    step]`` (the minibatch loss, and ``second_moment(opt_state, hyperparams)`` before each
    update, default the sum of every ``nu`` in the state) and ``train_loss``, ``test_loss``,
    ``test_accuracy`` ``[run, record]`` at ``eval_steps``.
    """
    seed_index = np.asarray(seed_index, np.int32)
    hp = {k: jnp.asarray(v, jnp.result_type(float)) for k, v in hyperparams.items()}
    params = jax.tree.map(lambda a: a[seed_index], d.params)
    moment = second_moment or (lambda opt_state, hp: _second_moment(opt_state))

    def one(hp, params, i, data, order):
        probes = {"step": train.probe(lambda c, s: ({"loss": c.loss, "nu": moment(
                      c.opt_state, c.hyperparams)}, s), every=1),
                  "eval": train.probe(lambda c, s: (_evaluate(d.apply_fn, c.params, c.data), s),
                                      every=config.record_every, data=data)}
        state = train.init_state(params, factory, None, hp)
        # one step more than num_steps, so that the eval probe's last record (at step
        # num_steps, before that extra update) is the trained model; that step is discarded
        _, _, trace, _, _ = train.run_steps(
            d.loss_fn, factory, state, (data[0], order, i), key=jax.random.key(0),
            num_steps=config.num_steps + 1, hyperparams=hp, probes=probes,
            batch_fn=_ordered_batch)
        num_records = config.num_steps // config.record_every + 1
        return {"step_loss": trace["step"]["loss"][:config.num_steps],
                "second_moment": trace["step"]["nu"][:config.num_steps],
                **{k: v[:num_records] for k, v in trace["eval"].items()}}

    out = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None, None)))(
        hp, params, jnp.asarray(seed_index), (d.train, d.test), d.order)
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def _grid_runs(config, d, factory, grid: list[dict], second_moment=None) -> list[dict]:
    """:func:`train_runs` over a list of settings ``{hyperparameter: value, "seed": i}``;
    returns one dict of arrays per setting, in order."""
    hp = {k: [g[k] for g in grid] for k in grid[0] if k != "seed"}
    res = train_runs(config, d, factory, hp, [g["seed"] for g in grid], second_moment)
    return [{k: v[r] for k, v in res.items()} for r in range(len(grid))]


# ----------------------------------------------------------------------------- the checks

#: Adam's eps in check 1 (optax's default).
ADAM_EPS = 1e-8


def first_order_grid(config: Config) -> list[dict]:
    """Every Adam and SPAM run of checks 1 and 3, once: Adam (``spam = 0``) at ``eps =
    ADAM_EPS`` with and without spikes (check 1) and without spikes at every ``adam_eps``
    (check 3; shared where they coincide); SPAM (``spam = 1``) with and without spikes."""
    runs = [(0.0, f, lr, ADAM_EPS, i) for f in (1.0, config.spike_factor)
            for lr in config.learning_rates for i in range(config.num_seeds)]
    runs += [(0.0, 1.0, lr, e, i) for lr in config.learning_rates for e in config.adam_eps
             for i in range(config.num_seeds)]
    runs += [(1.0, f, lr, ADAM_EPS, i) for f in (1.0, config.spike_factor)
             for lr in config.learning_rates for i in range(config.num_seeds)]
    runs = list(dict.fromkeys(runs))
    return [dict(spam=o, spike_factor=f, learning_rate=lr, eps=e, seed=i)
            for o, f, lr, e, i in runs]


def _spikes(config: Config, d: Data):
    """The spike steps and masks shared by every run of check 1 (masks drawn by
    ``_rng(config, SPIKE_MASKS_SALT)``)."""
    one = jax.tree.map(lambda a: a[0], d.params)
    return spike_steps(config), spike_masks(_rng(config, SPIKE_MASKS_SALT), one,
                                            config.num_spikes, config.spike_fraction)


def run_first_order(config: Config, d: Data) -> dict:
    """The runs of :func:`first_order_grid` in one compiled call: the spikes, then Adam
    (``optax.adam``) or SPAM (``optim.spam``) by :func:`either`; arrays ``[run, ...]``."""
    steps, masks = _spikes(config, d)

    def factory(learning_rate, eps, spike_factor, spam):
        return optax.chain(
            inject_spikes(steps, masks, spike_factor),
            either(optax.adam(learning_rate, eps=eps),
                   optim.spam(learning_rate, threshold=config.spam_threshold,
                              reset_interval=config.spam_reset_interval,
                              warmup_steps=config.spam_warmup_steps), spam > 0.5))

    def moment(opt_state, hp):  # the nu of the optimizer the run uses
        state = opt_state[1]
        return jnp.where(hp["spam"] > 0.5, _second_moment(state.second),
                         _second_moment(state.first))

    runs = _grid_runs(config, d, factory, first_order_grid(config), moment)
    return {k: np.stack([r[k] for r in runs]) for k in runs[0]}


def run_mfac(config: Config, d: Data) -> dict:
    """Check 3's M-FAC runs, arrays ``[setting, seed, ...]`` (setting ``j`` is
    ``(learning_rates[j // D], mfac_damps[j % D])``)."""
    m = config.mfac_num_grads
    factory = lambda learning_rate, damp: optim.mfac(  # noqa: E731
        learning_rate, num_grads=m, damp=damp)
    grid = [dict(learning_rate=lr, damp=dp, seed=i) for lr in config.learning_rates
            for dp in config.mfac_damps for i in range(config.num_seeds)]
    runs = _grid_runs(config, d, factory, grid)
    return {k: np.stack([r[k] for r in runs]).reshape((-1, config.num_seeds) + runs[0][k].shape)
            for k in ("train_loss", "test_loss", "test_accuracy")}


def assemble(config: Config, first: dict, mfac: dict) -> tuple[dict, dict]:
    """Check 1's arrays ``[optimizer (adam, spam), spikes, lr, seed, ...]`` and check 3's
    ``[optimizer (adam, mfac), setting, seed, ...]`` from the runs."""
    index = {(g["spam"], g["spike_factor"], g["learning_rate"], g["eps"], g["seed"]): r
             for r, g in enumerate(first_order_grid(config))}
    S, lrs = range(config.num_seeds), config.learning_rates
    c1 = [[[[index[(o, f, lr, ADAM_EPS, i)] for i in S] for lr in lrs]
           for f in (1.0, config.spike_factor)] for o in (0.0, 1.0)]
    c3 = [[index[(0.0, 1.0, lr, e, i)] for i in S] for lr in lrs for e in config.adam_eps]
    check1 = {k: v[np.asarray(c1)] for k, v in first.items()}
    check3 = {k: np.stack([first[k][np.asarray(c3)], mfac[k]]) for k in mfac}
    return check1, check3


def run_adadagrad(config: Config, d: Data) -> dict:
    """Check 2: arrays ``[test (fixed, *ada_tests), seed, segment]`` and ``[test, seed]``."""
    opt = optim.adagrad_norm(config.ada_learning_rate, b0=config.ada_b0)
    evaluate = jax.jit(lambda p, data: _evaluate(d.apply_fn, p, data))
    rows = {k: [] for k in ("batch_size", "requested", "loss", "examples", "train_loss",
                            "test_loss", "test_accuracy", "test_examples")}
    starts = None
    for test in ("fixed",) + tuple(config.ada_tests):
        per = {k: [] for k in rows}
        for i in range(config.num_seeds):
            params = jax.tree.map(lambda a, i=i: a[i], d.params)
            fixed = test == "fixed"
            res = optim.adaptive_batch_train(
                d.loss_fn, params, opt, d.train,
                key=jax.random.fold_in(_salted(config, ADA_SALT), i),
                num_steps=config.ada_num_steps, test="norm" if fixed else test,
                initial_batch_size=config.ada_initial_batch_size,
                max_batch_size=(config.ada_initial_batch_size if fixed
                                else config.ada_max_batch_size),
                check_every=config.ada_check_every)
            starts = res.segment_starts
            lengths = np.diff(np.append(starts, config.ada_num_steps))
            final = evaluate(res.params, (d.train, d.test))
            for k, v in (("batch_size", res.batch_sizes), ("requested", res.requested),
                         ("loss", res.losses), ("examples", np.cumsum(lengths * res.batch_sizes)),
                         ("test_examples", res.test_examples), *final.items()):
                per[k].append(np.asarray(v, np.float64))
        for k in rows:
            rows[k].append(np.stack(per[k]))
    out = {k: np.stack(v) for k, v in rows.items()}
    out["segment_starts"] = np.asarray(starts, np.int64)
    return out


# ----------------------------------------------------------------------------- summaries


def _mean(x, axis=-1):
    return np.mean(np.asarray(x, np.float64), axis=axis)


def spike_jumps(step_loss, spikes, window: int) -> np.ndarray:
    """Mean minibatch loss over the ``window`` steps after each spike minus over the
    ``window`` steps before it: ``[..., spike]`` for ``step_loss`` ``[..., step]``."""
    after = np.stack([step_loss[..., s + 1:s + 1 + window].mean(-1) for s in spikes], -1)
    before = np.stack([step_loss[..., s - window:s].mean(-1) for s in spikes], -1)
    return after - before


def summarize_spam(config: Config, r: dict) -> dict:
    out = {}
    jumps = spike_jumps(r["step_loss"], r["spike_steps"], config.spike_window)
    for o, name in enumerate(("adam", "spam")):
        tl, te, acc = r["train_loss"][o, ..., -1], r["test_loss"][o, ..., -1], \
            r["test_accuracy"][o, ..., -1]  # [spikes, lr, seed]
        nu = r["second_moment"][o]  # [spikes, lr, seed, step]
        after = [np.mean(nu[1, ..., s + 1:s + 1 + config.spike_window]
                         / nu[0, ..., s + 1:s + 1 + config.spike_window], -1)
                 for s in r["spike_steps"]]
        out[name] = {
            "train_loss_clean": _mean(tl[0]).tolist(), "train_loss_spiked": _mean(tl[1]).tolist(),
            "train_loss_excess": _mean(tl[1] - tl[0]).tolist(),
            "test_loss_clean": _mean(te[0]).tolist(), "test_loss_spiked": _mean(te[1]).tolist(),
            "test_loss_excess": _mean(te[1] - te[0]).tolist(),
            "test_accuracy_clean": _mean(acc[0]).tolist(),
            "test_accuracy_spiked": _mean(acc[1]).tolist(),
            # paired: the spiked run's jump minus the clean run's change over the same windows
            "spike_jump": _mean(jumps[o, 1] - jumps[o, 0], (-2, -1)).tolist(),
            "second_moment_inflation": _mean(np.stack(after, -1), (-2, -1)).tolist()}
    return out


def summarize_mfac(config: Config, r: dict) -> dict:
    out = {}
    for o, (name, seconds) in enumerate((("adam", config.adam_eps),
                                         ("mfac", config.mfac_damps))):
        settings = list(itertools.product(config.learning_rates, seconds))
        tl = _mean(r["train_loss"][o, :, :, -1])  # [setting], mean over seeds
        acc = _mean(r["test_accuracy"][o, :, :, -1])
        bad = ~np.isfinite(tl)
        best = int(np.argmin(np.where(bad, np.inf, tl)))
        best_acc = int(np.argmax(np.where(np.isfinite(acc), acc, -np.inf)))
        out[name] = {"final_train_loss": tl.tolist(), "final_test_accuracy": acc.tolist(),
                     "best_setting": best, "best_learning_rate": settings[best][0],
                     "best_second": settings[best][1], "best_train_loss": float(tl[best]),
                     "test_accuracy_at_best": float(acc[best]),
                     "best_test_accuracy": float(acc[best_acc]),
                     "best_test_setting": best_acc, "num_diverged": int(bad.sum()),
                     "best_inside_grid": bool(min(config.learning_rates) < settings[best][0]
                                              < max(config.learning_rates))}
    return out


def _nanquarter(req, which: int) -> float:
    """Mean of the finite requests ``[seed, segment]`` in the first (``which=0``) or last
    (``-1``) quarter of the segments that ran a test; NaN if none did."""
    ok = np.isfinite(req).any(0)
    cols = np.flatnonzero(ok)
    if cols.size == 0:
        return float("nan")
    q = max(cols.size // 4, 1)
    part = req[:, cols[:q] if which == 0 else cols[-q:]]
    return float(np.nanmean(part))


def summarize_adadagrad(config: Config, r: dict) -> dict:
    out = {}
    for t, test in enumerate(("fixed",) + tuple(config.ada_tests)):
        b = r["batch_size"][t]  # [seed, segment]
        reached = [int(r["segment_starts"][np.argmax(row >= config.ada_max_batch_size)])
                   if np.any(row >= config.ada_max_batch_size) else -1 for row in b]
        out[test] = {"initial_batch_size": float(_mean(b[:, 0], 0)),
                     "final_batch_size": float(_mean(b[:, -1], 0)),
                     "mid_batch_size": float(_mean(b[:, b.shape[1] // 2], 0)),
                     "monotone": bool(np.all(np.diff(b, axis=1) >= 0)),
                     "requested_first_quarter": _nanquarter(r["requested"][t], 0),
                     "requested_last_quarter": _nanquarter(r["requested"][t], -1),
                     "step_reaching_max": reached,
                     "examples": float(_mean(r["examples"][t, :, -1], 0)),
                     "test_examples": float(_mean(r["test_examples"][t], 0)),
                     "final_segment_loss": float(_mean(r["loss"][t, :, -1], 0)),
                     "final_train_loss": float(_mean(r["train_loss"][t], 0)),
                     "final_test_accuracy": float(_mean(r["test_accuracy"][t], 0))}
    return out


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    d = setting(config)
    first = ctx.stage("adam_spam", lambda: run_first_order(config, d))
    mfac = ctx.stage("mfac", lambda: run_mfac(config, d))
    ada = ctx.stage("adadagrad", lambda: run_adadagrad(config, d))
    check1, check3 = assemble(config, first, mfac)
    check1["spike_steps"] = spike_steps(config)
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    return {
        "eval_steps": np.arange(0, config.num_steps + 1, config.record_every, dtype=np.int64),
        "spike_steps": np.asarray(check1["spike_steps"], np.int64),
        **{f"spam_{k}": f64(check1[k]) for k in ("step_loss", "second_moment", "train_loss",
                                                  "test_loss", "test_accuracy")},
        **{f"mfac_{k}": f64(check3[k]) for k in ("train_loss", "test_loss", "test_accuracy")},
        "ada_tests": ["fixed", *config.ada_tests],
        "ada_segment_starts": np.asarray(ada["segment_starts"], np.int64),
        **{f"ada_{k}": f64(ada[k]) for k in ("batch_size", "requested", "loss", "examples",
                                              "train_loss", "test_loss", "test_accuracy")},
        "summary": {"spam": summarize_spam(config, check1),
                    "mfac": summarize_mfac(config, check3),
                    "adadagrad": summarize_adadagrad(config, ada)},
    }

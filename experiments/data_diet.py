"""Pruning a training set by EL2N and GraNd scores computed early in training (Paul et al. 2021).

Paul, Ganguli, Dziugaite 2021, "Deep learning on a data diet: finding important examples early
in training": score every training example by EL2N (the norm of softmax output minus one-hot
label) or GraNd (the norm of the example's loss gradient), averaged over a few networks trained
for a few epochs from independent initialisations (GraNd also at initialisation), keep the
highest-scoring examples and train a fresh network on them. On CIFAR-10 EL2N after 20 of 200
epochs prunes half the training set with no loss of test accuracy, where random pruning loses
some; keeping the easiest examples is worst; at very high fractions keeping only the hardest
hurts too.

Here: MNIST-1D (``landscape.data.mnist1d``, inputs standardised by the training set's mean and
standard deviation) and ``landscape.models.CNN1D`` with softmax cross-entropy, Adam, minibatches
of ``batch_size``. Scores come from ``score_seeds`` networks trained ``score_epochs`` epochs on
the full set (about a tenth of the final training, the paper's ratio). For every fraction and
method a fresh network is trained on the kept examples for the same ``num_steps`` steps (a fixed
budget of updates, whatever the subset size) from the same initialisation per seed, and its test
accuracy recorded. Methods: ``el2n``, ``grand_early``, ``grand_init`` (keep the highest scores),
``random`` (a uniform subset, a fresh draw per seed) and ``easiest`` (keep the lowest EL2N).

Every training run, the short score runs included, is one compiled loop
(``landscape.train.run_steps`` with a custom data order): the dataset is the full training set
plus a padded index array of the kept examples and their count, each epoch visits the kept
examples in a random order, so subsets of every size share one compilation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.layouts.data_diet import Metrics
from landscape import data, losses, models, train
from landscape.dynamics import pruning
from landscape.experiment import RunContext, check_fields
from landscape.nnx import functional

Method = Literal["el2n", "grand_early", "grand_init", "random", "easiest"]
METHODS: tuple[str, ...] = ("el2n", "grand_early", "grand_init", "random", "easiest")


@dataclass(frozen=True)
class Config:
    """Default: MNIST-1D 4000/1000, CNN1D width 16 x 3 layers, Adam 3e-3, batch 64, 2000 steps
    (32 epochs of the full set); scores from 4 networks after 3 epochs; 2 final seeds."""

    seed: int = 0
    num_train: int = 4000
    num_test: int = 1000
    width: int = 16
    num_layers: int = 3
    learning_rate: float = 3e-3
    batch_size: int = 64
    num_steps: int = 2000
    score_seeds: int = 4
    score_epochs: int = 3
    train_seeds: int = 2
    fractions: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
    methods: tuple[Method, ...] = METHODS
    chunk_size: int = 500

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_train=256, num_test=200, width=4, num_layers=2, batch_size=32,
                   num_steps=40, score_seeds=2, score_epochs=1, train_seeds=1,
                   fractions=(0.0, 0.5), chunk_size=128)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("num_train", "num_test", "width", "num_layers",
                                     "learning_rate", "batch_size", "num_steps", "score_seeds",
                                     "score_epochs", "train_seeds", "chunk_size"),
                     nonnegative=("fractions",), choices={"methods": METHODS})
        if 0.0 not in self.fractions:
            raise ValueError(f"config key 'fractions' must include 0 (the unpruned baseline); "
                             f"got {self.fractions}")
        if not self.methods:
            raise ValueError("config key 'methods' must be non-empty")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"config key 'methods' has repeats: {self.methods}")
        if self.batch_size > self.num_train:
            raise ValueError(f"config key 'batch_size' must be <= num_train "
                             f"({self.num_train}); got {self.batch_size}")
        for f in self.fractions:
            if not 0 <= f < 1 or pruning.num_kept(self.num_train, f) < self.batch_size:
                raise ValueError(f"config key 'fractions': {f!r} must be in [0, 1) and keep at "
                                 f"least batch_size ({self.batch_size}) examples")


# ----------------------------------------------------------------------------- setting


def _data(config: Config):
    """``(train, test)`` MNIST-1D in the default float dtype, standardised by train statistics."""
    k_split = jax.random.fold_in(jax.random.key(config.seed), 0)
    tr, te = data.mnist1d(k_split, num_train=config.num_train, num_test=config.num_test)
    dtype = jnp.result_type(float)
    mean, std = jnp.mean(tr["x"]), jnp.std(tr["x"])
    norm = lambda d: {"x": ((d["x"] - mean) / std).astype(dtype), "y": d["y"]}  # noqa: E731
    return norm(tr), norm(te)


class _Setting:
    """The model family, its loss, and the one compiled training loop of the experiment."""

    def __init__(self, config: Config):
        self.config = config
        self.train, self.test = _data(config)
        self.apply = self.net(jax.random.key(0)).apply  # the graph is shared by every seed
        apply = self.apply

        def loss_fn(params, batch):
            return losses.softmax_cross_entropy(apply(params, batch["x"]), batch["y"])

        self.loss_fn = loss_fn
        # enough epoch orders for the longest run on the smallest subset
        b, n = config.batch_size, config.num_train
        smallest = min(pruning.num_kept(n, f) for f in config.fractions) // b
        self.max_epochs = -(-max(config.num_steps, score_steps(config)) // smallest)
        self.fit = jax.jit(self._fit)
        self.correct = jax.jit(lambda p, x, y: jnp.argmax(apply(p, x), axis=-1) == y)

    def net(self, key):
        return functional(models.CNN1D(10, width=self.config.width,
                                       num_layers=self.config.num_layers, key=key))

    def init(self, key):
        return self.net(key).params

    def _fit(self, params, full, kept, count, key, num_steps):
        """``num_steps`` Adam steps on the examples ``kept[:count]`` of ``full`` (``kept`` is
        padded to n). Epoch ``e`` visits ``kept[:count]`` in the order of a permutation drawn
        from ``fold_in(key, e)``; the ``max_epochs`` permutations are drawn before the loop."""
        b, n = self.config.batch_size, kept.shape[0]

        def order(e):
            u = jax.random.uniform(jax.random.fold_in(key, e), (n,))
            return kept[jnp.argsort(jnp.where(jnp.arange(n) < count, u, 2.0))]

        orders = jax.vmap(order)(jnp.arange(self.max_epochs))

        def batch_fn(ds, step, k):
            del k  # the data order is in ``orders``
            examples, rows, m = ds
            per_epoch = m // b
            row = jax.lax.dynamic_index_in_dim(rows, step // per_epoch, keepdims=False)
            idx = jax.lax.dynamic_slice_in_dim(row, (step % per_epoch) * b, b)
            return jax.tree.map(lambda x: x[idx], examples)

        opt = optax.adam(self.config.learning_rate)
        state = train.init_state(params, opt)
        state = train.run_steps(self.loss_fn, opt, state, (full, orders, count), key=key,
                                num_steps=num_steps, batch_fn=batch_fn)[0]
        return state.params

    def fit_on(self, params, indices, key, num_steps):
        n = self.config.num_train
        if -(-num_steps // (len(indices) // self.config.batch_size)) > self.max_epochs:
            raise ValueError(f"{num_steps} steps on {len(indices)} examples need more than "
                             f"max_epochs={self.max_epochs} epoch orders")
        kept = np.zeros(n, np.int32)
        kept[: len(indices)] = np.asarray(indices)
        return self.fit(params, self.train, jnp.asarray(kept), jnp.int32(len(indices)), key,
                        jnp.int32(num_steps))

    def correct_rows(self, params):
        """``(train correct (n,), test correct (n_test,))`` booleans, from one compiled call."""
        x = jnp.concatenate([self.train["x"], self.test["x"]])
        y = jnp.concatenate([self.train["y"], self.test["y"]])
        ok = np.asarray(self.correct(params, x, y))
        return ok[: self.config.num_train], ok[self.config.num_train:]


def _keys(config: Config, kind: int, index: int):
    """``(init key, data key)`` of score network (kind 1) or final seed (kind 2) ``index``."""
    k = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), kind), index)
    return tuple(jax.random.split(k))


def score_steps(config: Config) -> int:
    return config.score_epochs * (config.num_train // config.batch_size)


# ----------------------------------------------------------------------------- stages


def run_scores(config: Config, st: _Setting) -> dict:
    """EL2N and GraNd over ``score_seeds`` networks at init and after ``score_epochs``."""
    everything = np.arange(config.num_train)
    inits, early, train_acc, test_acc = [], [], [], []
    for s in range(config.score_seeds):
        k_init, k_data = _keys(config, 1, s)
        p0 = st.init(k_init)
        pt = st.fit_on(p0, everything, k_data, score_steps(config))
        inits.append(p0)
        early.append(pt)
        ok_train, ok_test = st.correct_rows(pt)
        train_acc.append(float(ok_train.mean()))
        test_acc.append(float(ok_test.mean()))
    c = config.chunk_size
    scores = {
        "el2n": pruning.el2n_scores(st.apply, early, st.train, batch_size=c),
        "el2n_init": pruning.el2n_scores(st.apply, inits, st.train, batch_size=c),
        "grand_init": pruning.grand_scores(st.loss_fn, inits, st.train, chunk_size=c),
        "grand_early": pruning.grand_scores(st.loss_fn, early, st.train, chunk_size=c),
    }
    return {"scores": {k: np.asarray(v, np.float64) for k, v in scores.items()},
            "train_accuracy": train_acc, "test_accuracy": test_acc}


def kept_indices(config: Config, scores: dict, method: str, fraction: float, seed: int):
    """The examples ``method`` keeps at ``fraction`` (``random``: a fresh draw per seed)."""
    if method == "random":
        j = config.fractions.index(fraction)
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 3),
                                 seed * len(config.fractions) + j)
        return np.asarray(pruning.random_indices(key, config.num_train, fraction))
    if method == "easiest":
        return np.asarray(pruning.prune_indices(scores["el2n"], fraction, keep="easiest"))
    return np.asarray(pruning.prune_indices(scores[method], fraction, keep="hardest"))


def run_seed(config: Config, st: _Setting, scores: dict, seed: int) -> dict:
    """Test (and kept-set train) accuracy of every method and fraction for one final seed."""
    k_init, k_data = _keys(config, 2, seed)
    p0 = st.init(k_init)
    test = {m: [] for m in config.methods}
    tr = {m: [] for m in config.methods}
    full = None
    for f in config.fractions:
        for m in config.methods:
            if f == 0 and full is not None:  # nothing pruned: one run serves every method
                test[m].append(full[0])
                tr[m].append(full[1])
                continue
            kept = kept_indices(config, scores, m, f, seed)
            params = st.fit_on(p0, kept, k_data, config.num_steps)
            ok_train, ok_test = st.correct_rows(params)
            out = (float(ok_test.mean()), float(ok_train[kept].mean()))
            if f == 0:
                full = out
            test[m].append(out[0])
            tr[m].append(out[1])
    return {"test": test, "train": tr}


def _spearman(a, b) -> float:
    """Spearman's rank correlation (ties get their average rank)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _summary(config: Config, test: dict, scores: dict) -> dict:
    mean = {m: [float(v) for v in np.mean(test[m], axis=1)] for m in config.methods}
    full = float(np.mean(test[config.methods[0]][config.fractions.index(0.0)]))
    diff = ([a - b for a, b in zip(mean["el2n"], mean["random"])]
            if {"el2n", "random"} <= set(config.methods) else [])
    return {"full_accuracy": full, "mean_accuracy": mean,
            "drop": {m: [full - v for v in mean[m]] for m in config.methods},
            "el2n_minus_random": diff,
            "spearman": {k: _spearman(scores["el2n"], v) for k, v in scores.items()
                         if k != "el2n"}}


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    st = _Setting(config)
    sc = ctx.stage("scores", lambda: run_scores(config, st))
    scores = {k: np.asarray(v) for k, v in sc["scores"].items()}
    runs = [ctx.stage(f"seed{r}", lambda r=r: run_seed(config, st, scores, r))
            for r in ctx.progress(range(config.train_seeds), desc="seeds")]
    stack = lambda part: {m: np.array([[r[part][m][i] for r in runs]  # noqa: E731
                                       for i in range(len(config.fractions))], np.float64)
                          for m in config.methods}
    test = stack("test")
    return {
        "fractions": [float(f) for f in config.fractions],
        "methods": list(config.methods),
        "num_kept": [pruning.num_kept(config.num_train, f) for f in config.fractions],
        "test_accuracy": test,
        "train_accuracy": stack("train"),
        "scores": {k: np.asarray(v, np.float64) for k, v in scores.items()},
        "score_networks": {"num_steps": score_steps(config),
                           "train_accuracy": [float(v) for v in sc["train_accuracy"]],
                           "test_accuracy": [float(v) for v in sc["test_accuracy"]]},
        "summary": _summary(config, test, scores),
    }

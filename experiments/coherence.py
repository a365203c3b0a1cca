"""Gradient coherence on real and random labels, and robust gradients against memorisation.

Chatterjee & Zielinski (2022, "On the generalization mystery in deep learning") explain
generalisation by the coherence of per-example gradients: the m-coherence
``alpha_m = m ||E g||^2 / E ||g||^2`` (1 for mutually orthogonal gradients, ``m`` for identical
ones) is high early in training on real labels, where examples of a class push the weights the
same way, and low on random labels, where each example is fitted on its own. Zielinski,
Krishnan & Chatterjee (2020, "Weak and strong gradient directions") and Chatterjee (2020,
"Coherent gradients") suppress the weak directions (those only a few examples push) with robust
means of the per-example gradients, winsorisation and median of means, and find that this slows
the memorisation of random labels far more than the learning of real ones.

Protocol, for each dataset (MNIST-1D and scikit-learn digits: the first ``num_train`` training
examples, inputs centred by the training mean; test accuracy on the held-out split) and each
labelling (``real``; ``random``: the training labels permuted by ``jax.random.permutation`` with
the key ``fold_in(key(seed), 1)``, so every input gets the label of another example, the class
frequencies are kept and the labels carry no information about the inputs): a ReLU MLP
(``landscape.models.MLP``, the same initialisation for every run of a dataset), softmax
cross-entropy, SGD with ``learning_rate`` on batches of ``batch_size`` drawn by
``landscape.train.batch_at`` (the same batch order for every run), ``num_steps`` steps.

* **plain** runs go through ``landscape.train.train`` with
  ``landscape.dynamics.gradient_probe(kind="cheap")`` on a fixed probe set (the first
  ``probe_size`` training examples with the labels being trained), recording the m-coherence
  with ``m = probe_size`` every ``record_every`` steps, and an accuracy probe (training loss and
  accuracy on all ``num_train`` examples with the trained labels, test accuracy on the true test
  labels);
* **winsorize** (``c`` per side) and **median_of_means** (``num_groups`` groups) runs go
  through ``landscape.train.train`` too, with the same batches, and with
  ``value_and_grad=landscape.dynamics.robust_value_and_grad(loss_fn, kind)``: each step applies
  SGD to the robust aggregate of the batch's per-example gradients. With ``kind="mean"`` this
  reproduces the plain run (checked).

Records are taken at steps ``0, record_every, ..., num_steps`` (before the update of that step).
The robust runs also record ``||aggregate|| / ||mean||`` of the per-example gradients of the
batch of that step (the share of the gradient that survives the robust aggregation, which also
acts as a smaller effective step). The summary gives, per dataset, the mean coherence over the
records with step ``<= early_steps`` for real and random labels and their ratio, the training
accuracy of every run at ``report_steps`` and the mean norm ratio of every run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.layouts.coherence import KINDS, LABELS, Metrics, run_key
from landscape.experiment import RunContext, check_fields

DATASETS = ("mnist1d", "digits")
NUM_CLASSES = 10


@dataclass(frozen=True)
class Config:
    """Default: 512 examples per dataset, ReLU MLP (in -> 64 -> 64 -> 10), SGD 0.1, batch 96,
    1500 steps (about 280 epochs), winsorisation with c = 4 (about 4% of the batch on each
    side), median of 3 means (Zielinski et al.'s M3)."""

    seed: int = 0
    datasets: tuple[str, ...] = DATASETS
    num_train: int = 512
    num_test: int = 359
    probe_size: int = 256
    width: int = 64
    depth: int = 2
    learning_rate: float = 0.1
    batch_size: int = 96
    num_steps: int = 1500
    record_every: int = 25
    c: int = 4
    num_groups: int = 3
    early_steps: int = 100
    report_steps: tuple[int, ...] = (250, 500, 1000, 1500)

    @classmethod
    def smoke(cls) -> Config:
        return cls(datasets=("digits",), num_train=96, num_test=64, probe_size=24, width=16,
                   depth=1, batch_size=12, num_steps=40, record_every=10, c=1, num_groups=3,
                   early_steps=10, report_steps=(20, 40))

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("num_train", "num_test", "probe_size", "width", "depth",
                                     "learning_rate", "batch_size", "num_steps",
                                     "record_every", "num_groups", "report_steps"),
                     nonnegative=("c", "early_steps"), choices={"datasets": DATASETS})
        if not self.datasets:
            raise ValueError("config key 'datasets' must be non-empty; got ()")
        if self.num_steps % self.record_every:
            raise ValueError(f"config key 'num_steps' must be a multiple of record_every "
                             f"({self.record_every}); got {self.num_steps}")
        for key, v in (("report_steps", self.report_steps), ("early_steps", (self.early_steps,))):
            bad = [s for s in v if s % self.record_every or s > self.num_steps]
            if bad:
                raise ValueError(f"config key {key!r} must hold multiples of record_every "
                                 f"({self.record_every}) up to num_steps; got {bad[0]}")
        if not self.probe_size <= self.num_train:
            raise ValueError(f"config key 'probe_size' must be <= num_train ({self.num_train}); "
                             f"got {self.probe_size}")
        if self.batch_size > self.num_train:
            raise ValueError(f"config key 'batch_size' must be <= num_train ({self.num_train}); "
                             f"got {self.batch_size}")
        if 2 * self.c >= self.batch_size or self.num_groups > self.batch_size:
            raise ValueError(f"config keys 'c' and 'num_groups' must satisfy 2 c < batch_size "
                             f"and num_groups <= batch_size ({self.batch_size}); got "
                             f"c={self.c}, num_groups={self.num_groups}")


class Setting(NamedTuple):
    """One dataset: ``loss_fn``, ``apply_fn``, initial ``params``, training sets per labelling
    (``{"real": {"x", "y"}, "random": {...}}``) and the test set (true labels)."""

    loss_fn: Any
    apply_fn: Any
    params: Any
    train: dict
    test: dict


@functools.lru_cache(maxsize=4)
def setting(config: Config, dataset: str) -> Setting:
    """The data, model and loss of ``dataset`` (a pure function of ``config.seed``; cached, so
    repeated calls share ``loss_fn`` and with it the compiled loops)."""
    from landscape import data, losses, models
    from landscape.nnx import functional

    k_split, k_init, k_labels = (jax.random.fold_in(jax.random.key(config.seed), i)
                                 for i in (0, 2, 1))
    if dataset == "digits":
        tr, te = data.digits(k_split, flatten=True)
    else:
        tr, te = data.mnist1d(k_split, num_train=config.num_train, num_test=config.num_test)
    for name, n, have in (("num_train", config.num_train, tr["y"].shape[0]),
                          ("num_test", config.num_test, te["y"].shape[0])):
        if n > have:
            raise ValueError(f"config key {name!r} must be <= {have} for {dataset}; got {n}")
    dtype = jnp.result_type(float)
    x = jnp.asarray(tr["x"][: config.num_train], dtype)
    shift = jnp.mean(x, axis=0)
    y = jnp.asarray(tr["y"][: config.num_train], jnp.int32)
    random = y[jax.random.permutation(k_labels, y.shape[0])]
    train = {"real": {"x": x - shift, "y": y}, "random": {"x": x - shift, "y": random}}
    test = {"x": jnp.asarray(te["x"][: config.num_test], dtype) - shift,
            "y": jnp.asarray(te["y"][: config.num_test], jnp.int32)}
    net = models.MLP(x.shape[1], config.width, config.depth, NUM_CLASSES, key=k_init)
    fm = functional(net, mode="eval")

    def loss_fn(params, batch):
        return losses.softmax_cross_entropy(fm.apply(params, batch["x"]), batch["y"])

    return Setting(loss_fn, fm.apply, fm.params, train, test)


def _evaluate(apply_fn, params, train, test):
    """``{"train_loss", "train_accuracy", "test_accuracy"}`` at ``params`` (traceable)."""
    from landscape import losses

    logits = apply_fn(params, train["x"])
    return {"train_loss": losses.softmax_cross_entropy(logits, train["y"]),
            "train_accuracy": losses.accuracy(logits, train["y"]),
            "test_accuracy": losses.accuracy(apply_fn(params, test["x"]), test["y"])}


def _records(config: Config) -> np.ndarray:
    return np.arange(0, config.num_steps + 1, config.record_every)


def run_plain(config: Config, st: Setting, labels: str) -> dict:
    """Plain SGD through ``train.train`` with the coherence and accuracy probes."""
    from landscape import dynamics, train

    data = st.train[labels]
    probe_set = jax.tree.map(lambda a: a[: config.probe_size], data)
    every = config.record_every

    def acc_fn(ctx, state):
        return _evaluate(st.apply_fn, ctx.params, ctx.data["train"], ctx.data["test"]), state

    probes = {"grad": dynamics.gradient_probe(st.loss_fn, probe_set, every=every, kind="cheap"),
              "acc": train.probe(acc_fn, every=every, data={"train": data, "test": st.test})}
    # one step more than num_steps, so that the probes also record the state after num_steps
    res = train.train(st.loss_fn, st.params, optax.sgd(config.learning_rate), data,
                      key=jax.random.key(config.seed), num_steps=config.num_steps + 1,
                      batch_size=config.batch_size, probes=probes, progress=False)
    out = {k: np.asarray(v, np.float64) for k, v in res.trace["acc"].items()}
    out["coherence"] = np.asarray(res.trace["grad"]["coherence"], np.float64)
    out["steps"] = np.asarray(res.trace_steps["acc"])
    return out


@functools.lru_cache(maxsize=16)
def robust_gradient(loss_fn, kind: str, c: int, num_groups: int):
    """``landscape.dynamics.robust_value_and_grad`` for ``kind``, one function object per
    arguments (``train.train`` compiles once per function object)."""
    from landscape import dynamics

    return dynamics.robust_value_and_grad(loss_fn, kind, c=c, num_groups=num_groups)


def run_robust(config: Config, st: Setting, labels: str, kind: str) -> dict:
    """SGD on the ``kind`` aggregate of per-example gradients (``kind`` in
    ``landscape.dynamics.robust.AGGREGATIONS``): ``landscape.train.train`` with
    ``value_and_grad=robust_value_and_grad(...)``, the plain run's batches, the accuracy probe
    and ``||aggregate|| / ||mean||`` of the per-example gradients of each recorded step's batch."""
    from landscape import dynamics, train
    from landscape import tree as T
    from landscape.dynamics import robust

    data = st.train[labels]
    every = config.record_every

    def acc_fn(ctx, state):
        g = dynamics.per_example_grads(st.loss_fn, ctx.params, ctx.batch)
        agg = robust.aggregate(g, kind, c=config.c, num_groups=config.num_groups)
        ratio = T.tree_norm(agg) / T.tree_norm(robust.aggregate(g, "mean"))
        return {**_evaluate(st.apply_fn, ctx.params, ctx.data["train"], ctx.data["test"]),
                "norm_ratio": ratio}, state

    probes = {"acc": train.probe(acc_fn, every=every, data={"train": data, "test": st.test})}
    res = train.train(st.loss_fn, st.params, optax.sgd(config.learning_rate), data,
                      key=jax.random.key(config.seed), num_steps=config.num_steps + 1,
                      batch_size=config.batch_size, probes=probes, progress=False,
                      value_and_grad=robust_gradient(st.loss_fn, kind, config.c,
                                                     config.num_groups))
    return {k: np.asarray(v, np.float64) for k, v in res.trace["acc"].items()}


def _run_dataset(config: Config, dataset: str, ctx: RunContext) -> dict:
    st = setting(config, dataset)
    out = {}
    for labels in LABELS:
        plain = ctx.stage(f"{dataset}-{labels}-plain", lambda lb=labels: run_plain(config, st, lb))
        runs = [plain] + [ctx.stage(f"{dataset}-{labels}-{kind}",
                                    lambda lb=labels, k=kind: run_robust(config, st, lb, k))
                          for kind in KINDS[1:]]
        plain = {**plain, "norm_ratio": np.ones_like(plain["train_loss"])}
        out[run_key(dataset, labels)] = {
            "coherence": plain["coherence"],
            **{k: np.stack([r[k] for r in [plain] + runs[1:]])
               for k in ("train_loss", "train_accuracy", "test_accuracy", "norm_ratio")}}
    return out


def _summary(config: Config, steps, runs, dataset: str) -> dict:
    early = steps <= config.early_steps
    at = np.searchsorted(steps, np.asarray(config.report_steps))
    coh = {lb: float(np.mean(runs[run_key(dataset, lb)]["coherence"][early])) for lb in LABELS}
    out = {"early_coherence_real": coh["real"], "early_coherence_random": coh["random"],
           "early_coherence_ratio": coh["real"] / coh["random"] if coh["random"] > 0
           else float("inf")}
    for lb in LABELS:
        acc = runs[run_key(dataset, lb)]["train_accuracy"]
        out[f"train_accuracy_{lb}"] = {kind: [float(a) for a in acc[i, at]]
                                       for i, kind in enumerate(KINDS)}
        ratio = runs[run_key(dataset, lb)]["norm_ratio"]
        out[f"mean_norm_ratio_{lb}"] = {kind: float(np.mean(ratio[i]))
                                        for i, kind in enumerate(KINDS)}
        test = runs[run_key(dataset, lb)]["test_accuracy"]
        out[f"final_test_accuracy_{lb}"] = {kind: float(test[i, -1])
                                            for i, kind in enumerate(KINDS)}
    return out


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    runs = {}
    for dataset in ctx.progress(config.datasets, desc="datasets"):
        runs.update(_run_dataset(config, dataset, ctx))
    steps = _records(config)
    return {"steps": steps, "kinds": list(KINDS), "runs": runs,
            "summary": {d: _summary(config, steps, runs, d) for d in config.datasets}}

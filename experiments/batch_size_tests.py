"""The batch size the adaptive-sampling tests ask for, and the gradient noise scale, over training.

Three tests decide whether a minibatch of ``b`` examples is large enough for the gradient it
estimates: the norm test of Byrd, Chin, Nocedal, Wu (2012, "Sample size selection in optimization
methods for machine learning") and the inner-product and orthogonality tests of Bollapragada,
Byrd, Nocedal (2018, "Adaptive sampling strategies for stochastic optimization"), used by
AdAdaGrad (Lau, Liu, Kolar 2024). Each asks for the smallest ``b`` with (``g_i`` per-example
gradients, ``G`` their mean, sums over the ``n`` examples of a probe set)

    norm:          b >= (1/(n-1)) sum_i ||g_i - G||^2 / (eta^2 ||G||^2)
    inner product: b >= (1/(n-1)) sum_i (<g_i, G> - ||G||^2)^2 / (theta^2 ||G||^4)
    orthogonality: b >= (1/(n-1)) sum_i ||g_i - (<g_i, G>/||G||^2) G||^2 / (nu^2 ||G||^2)

at ``eta = 0.5, theta = 0.9, nu = 5.84`` (``landscape.dynamics`` defaults). The simple gradient
noise scale of McCandlish, Kaplan, Amodei et al. (2018, "An empirical model of large-batch
training") is ``B_simple = tr(Sigma) / ||G||^2``, the norm test's statistic (so the norm test asks
for ``B_simple / eta^2``). Expected from the papers: as training proceeds the gradient shrinks
relative to the per-example noise, so every requested batch size grows, and McCandlish et al.
observe that ``B_simple`` grows as the loss decreases.

Here a ReLU MLP (``experiments._eos.setting``: inputs centred, ``landscape.models.MLP``) is
trained with plain SGD (fixed learning rate and batch size, examples drawn by
``landscape.train``) on MNIST-1D or digits with softmax cross-entropy. Every ``record_every``
steps ``landscape.dynamics.gradient_probe(kind="full")`` measures the statistics on a fixed probe
set (the first ``probe_size`` training examples), at the parameters before that step's update,
and a second probe records the probe set's mean loss. The summary compares the first and last
quarters of the records and gives the Spearman rank correlations with the step and with the
loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import optax

from experiments import _eos
from experiments.layouts.batch_size_tests import Metrics
from landscape import dynamics, train
from landscape.experiment import RunContext, check_fields

#: The per-record series of the metrics, as named in the gradient probe's trace.
SERIES = ("norm_test_batch_size", "inner_product_batch_size", "orthogonality_batch_size",
          "noise_scale", "grad_norm", "total_variance", "coherence")
#: The series summarised by growth factors and rank correlations.
TESTS = ("norm_test_batch_size", "inner_product_batch_size", "orthogonality_batch_size",
         "noise_scale")


@dataclass(frozen=True)
class Config:
    """Default: ReLU MLP 40-64-64-10 on 4000 MNIST-1D examples, SGD(0.05), batch 32, 20000
    steps (160 epochs); statistics on 1000 fixed training examples every 100 steps."""

    seed: int = 0
    dataset: str = "mnist1d"
    num_examples: int = 4000
    width: int = 64
    depth: int = 2
    activation: str = "relu"
    learning_rate: float = 0.05
    batch_size: int = 32
    num_steps: int = 20000
    record_every: int = 100
    probe_size: int = 1000
    chunk_size: int = 250

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_examples=128, width=8, depth=1, batch_size=16, num_steps=40,
                   record_every=10, probe_size=48, chunk_size=20)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("num_examples", "width", "depth", "learning_rate",
                                     "batch_size", "num_steps", "record_every", "probe_size",
                                     "chunk_size"),
                     choices={"dataset": _eos.DATASETS, "activation": ("relu", "tanh")})
        if self.batch_size > self.num_examples:
            raise ValueError(f"config key 'batch_size' must be at most num_examples "
                             f"({self.num_examples}); got {self.batch_size}")
        if not 2 <= self.probe_size <= self.num_examples:
            raise ValueError(f"config key 'probe_size' must be in [2, num_examples = "
                             f"{self.num_examples}]; got {self.probe_size}")
        if self.num_steps % self.record_every:
            raise ValueError(f"config key 'num_steps' must be a multiple of record_every "
                             f"({self.record_every}); got {self.num_steps}")


def setting(config: Config) -> tuple[_eos.Setting, dict]:
    """The model, the training set and the probe set (its first ``probe_size`` examples)."""
    st = _eos.setting(seed=config.seed, num_examples=config.num_examples, width=config.width,
                      depth=config.depth, loss="cross_entropy", activation=config.activation,
                      dataset=config.dataset)
    probe_set = jax.tree.map(lambda a: a[: config.probe_size], st.dataset)
    return st, probe_set


def _loss_probe(loss_fn, data, every):
    return train.probe(lambda ctx, s: ({"loss": loss_fn(ctx.params, ctx.data)}, s),
                       every=every, data=data)


def run_training(config: Config) -> dict:
    """SGD with the two probes; the per-record series (float64) and the record steps."""
    st, probe_set = setting(config)
    probes = {"g": dynamics.gradient_probe(st.loss_fn, probe_set, every=config.record_every,
                                           kind="full", chunk_size=config.chunk_size),
              "loss": _loss_probe(st.loss_fn, probe_set, config.record_every)}
    res = train.train(st.loss_fn, st.params, optax.sgd(config.learning_rate), st.dataset,
                      key=jax.random.key(config.seed), num_steps=config.num_steps,
                      batch_size=config.batch_size, probes=probes, progress=False)
    out = {k: np.asarray(res.trace["g"][k], np.float64) for k in SERIES}
    out["loss"] = np.asarray(res.trace["loss"]["loss"], np.float64)
    out["steps"] = np.asarray(res.trace_steps["g"], np.int64)
    out["num_params"] = int(st.num_params)
    return out


def spearman(a, b) -> float:
    """Spearman's rank correlation of two 1-D arrays (average ranks for ties); NaN if either is
    constant or shorter than 2."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)

    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=np.float64)
        for v in np.unique(x):  # average ranks of ties
            tie = x == v
            r[tie] = r[tie].mean()
        return r

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def quarters(x) -> tuple[float, float]:
    """Means of the first and the last quarter (at least one record each) of ``x``."""
    x = np.asarray(x, np.float64)
    q = max(len(x) // 4, 1)
    return float(np.mean(x[:q])), float(np.mean(x[-q:]))


def summarize(config: Config, tr: dict) -> dict:
    out = {}
    for k in TESTS:
        start, end = quarters(tr[k])
        out[k] = {"initial": float(tr[k][0]), "first_quarter": start, "last_quarter": end,
                  "growth": end / start if start > 0 else float("nan"),
                  "spearman_step": spearman(tr["steps"], tr[k]),
                  "spearman_loss": spearman(tr["loss"], tr[k]),
                  "fraction_passed": float(np.mean(config.batch_size >= tr[k]))
                  if k != "noise_scale" else float("nan")}
    augmented = np.maximum(tr["inner_product_batch_size"], tr["orthogonality_batch_size"])
    loss0, loss1 = quarters(tr["loss"])
    return {"tests": out,
            "augmented_fraction_passed": float(np.mean(config.batch_size >= augmented)),
            "loss_initial": float(tr["loss"][0]), "loss_final": float(tr["loss"][-1]),
            "loss_first_quarter": loss0, "loss_last_quarter": loss1,
            "grad_norm_growth": quarters(tr["grad_norm"])[1] / quarters(tr["grad_norm"])[0],
            "total_variance_growth": (quarters(tr["total_variance"])[1]
                                      / quarters(tr["total_variance"])[0]),
            "num_params": tr["num_params"]}


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    tr = ctx.stage("train", lambda: run_training(config))
    metrics = {k: np.asarray(tr[k], np.float64) for k in SERIES + ("loss",)}
    metrics["steps"] = np.asarray(tr["steps"], np.int64)
    metrics["summary"] = summarize(config, tr)
    return metrics

"""Loss spikes at a large step size and the opposing groups of examples behind them.

Rosenfeld & Risteski (2024, ICLR, "Outliers with opposing signals have an outsized effect on
neural network optimization"): at large step sizes, small groups of training examples with
large gradients that pull in opposing directions drive the loss spikes of GD; around a spike
one group's loss jumps while the other's drops (anti-phase), and the spikes come with the
sharpness at ``2 / eta``. They find the groups among the examples whose loss changes most.

Here full-batch GD (``optax.sgd``) trains the small tanh 1D CNN of the shared
edge-of-stability setting (``experiments._eos``: MNIST-1D, square loss on one-hot targets) at a
step size above the one where it reaches the edge of stability. Inside the compiled loop
:func:`landscape.dynamics.per_example_loss_probe` records the loss of every training example at
every step, and :func:`landscape.dynamics.sharpness_probe` the sharpness every
``sharpness_every`` steps. :func:`landscape.dynamics.opposing.opposing_signals` finds the
spikes of the mean loss and the two groups (found on the window of the largest spike only;
their anti-phase correlation at every other spike is out of sample). What the groups are: their
class composition, their mean inputs against the mean input of their dominant class, and a
feature statistic, the norm ``||x_i||`` of the centred input; as a control, the top and bottom
``feature_fraction`` of examples by that feature are treated as groups too.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import optax

from experiments import _eos
from experiments.layouts.opposing_signals import Metrics
from landscape import dynamics, train
from landscape.dynamics import opposing as ops
from landscape.experiment import RunContext, check_fields

NUM_CLASSES = 10


@dataclass(frozen=True)
class Config:
    """Default: 1000 MNIST-1D examples, tanh CNN (8 channels, 2 layers), mse, eta 0.4, 2000
    steps."""

    seed: int = 0
    dataset: str = "mnist1d"
    model: str = "cnn"
    num_examples: int = 1000
    width: int = 8
    depth: int = 2
    loss: str = "mse"
    learning_rate: float = 0.4
    num_steps: int = 2000
    sharpness_every: int = 10
    k: int = 20
    window: int = 10
    min_rise: float = 0.1
    threshold: float = 0.5
    feature_fraction: float = 0.1

    @classmethod
    def smoke(cls) -> Config:
        return cls(num_examples=48, width=2, depth=1, learning_rate=1.0, num_steps=60,
                   k=4, window=4)

    def __post_init__(self):
        check_fields(self, positive=("num_examples", "width", "depth", "learning_rate",
                                     "num_steps", "sharpness_every", "k", "window",
                                     "min_rise", "threshold", "feature_fraction"),
                     choices={"dataset": _eos.DATASETS, "model": _eos.MODELS,
                              "loss": _eos.LOSSES})
        if self.threshold > 1:
            raise ValueError(f"config key 'threshold' must be in (0, 1]; got {self.threshold}")
        if self.feature_fraction > 0.5:
            raise ValueError(f"config key 'feature_fraction' must be in (0, 0.5]; got "
                             f"{self.feature_fraction}")
        if self.k > self.num_examples:
            raise ValueError(f"config key 'k' must be <= num_examples ({self.num_examples}); "
                             f"got {self.k}")
        if self.num_steps < 2:
            raise ValueError(f"config key 'num_steps' must be >= 2; got {self.num_steps}")


def setting(config: Config) -> _eos.Setting:
    c = config
    return _eos.setting(seed=c.seed, num_examples=c.num_examples, width=c.width, depth=c.depth,
                        loss=c.loss, dataset=c.dataset, model=c.model)


def labels(st: _eos.Setting) -> np.ndarray:
    y = np.asarray(st.dataset["y"])
    return (y.argmax(axis=1) if y.ndim == 2 else y).astype(np.int64)


def run_gd(config: Config) -> dict:
    """One GD run: per-example losses and the step loss at every step, sparse sharpness."""
    st = setting(config)
    probes = {"L": ops.per_example_loss_probe(st.loss_fn, st.dataset, every=1),
              "loss": train.probe(lambda ctx, s: (ctx.loss, s), every=1),
              "S": dynamics.sharpness_probe(st.loss_fn, st.dataset, every=config.sharpness_every)}
    res = train.train(st.loss_fn, st.params, optax.sgd(config.learning_rate), st.dataset,
                      key=jax.random.key(config.seed + 1), num_steps=config.num_steps,
                      probes=probes)
    return {"steps": res.trace_steps["L"], "losses": res.trace["L"],
            "train_loss": res.trace["loss"], "sharpness_steps": res.trace_steps["S"],
            "sharpness": np.asarray(res.trace["S"]["eigenvalues"])[:, 0],
            "num_params": st.num_params}


def _median(x) -> float:
    x = np.asarray(x, np.float64)
    return float(np.median(x)) if x.size else float("nan")


def _summary(config, r, res, feat, comp, feat_anti, sharp_steps, sharp) -> dict:
    thr = 2.0 / config.learning_rate
    big = res.biggest
    others = np.delete(res.anti_phase, big) if big >= 0 else np.zeros(0)
    sizes = [int(v) for v in res.group_sizes]
    dominant = [int(np.argmax(comp[j])) if sizes[j] else -1 for j in range(2)]
    crossed = np.flatnonzero(sharp >= thr)
    first = int(sharp_steps[crossed[0]]) if crossed.size else -1
    steps = np.asarray(r["steps"])
    before = [sharp[max(np.searchsorted(sharp_steps, steps[a], side="right") - 1, 0)] / thr
              for a, _ in res.spikes]
    return {
        "threshold": thr, "num_spikes": len(res.spikes),
        "biggest_spike_step": int(steps[res.spikes[big, 1]]) if big >= 0 else -1,
        "biggest_spike_rise": float(res.spike_rise[big]) if big >= 0 else float("nan"),
        "anti_phase_biggest": float(res.anti_phase[big]) if big >= 0 else float("nan"),
        "anti_phase_others_median": _median(others[np.isfinite(others)]),
        "fraction_others_negative": float(np.mean(others < 0)) if others.size else float("nan"),
        "group_sizes": sizes, "dominant_class": dominant,
        "purity": [float(comp[j].max() / sizes[j]) if sizes[j] else float("nan")
                   for j in range(2)],
        "group_feature_mean": [float(feat[res.groups == j].mean()) if sizes[j] else float("nan")
                               for j in range(2)],
        "feature_mean": float(feat.mean()), "feature_std": float(feat.std()),
        "feature_anti_phase_median": _median(feat_anti[np.isfinite(feat_anti)]),
        "sharpness_first_crossing": first,
        "sharpness_ratio_before_spikes": _median(before),
        "sharpness_ratio_after_crossing": _median(sharp[crossed[0]:] / thr) if crossed.size
        else float("nan"),
        "num_params": int(r["num_params"]),
    }


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    r = ctx.stage("gd", lambda: run_gd(config))
    st = setting(config)
    L = np.asarray(r["losses"], np.float64)
    steps = np.asarray(r["steps"])
    res = ops.opposing_signals(L, steps, k=config.k, window=config.window,
                               min_rise=config.min_rise, threshold=config.threshold)
    y = labels(st)
    x = np.asarray(st.dataset["x"], np.float64).reshape(len(y), -1)
    feat = np.linalg.norm(x, axis=1)
    comp = ops.group_composition(res.groups, y, NUM_CLASSES)
    fgroups = ops.feature_groups(feat, fraction=config.feature_fraction)
    feat_anti = ops.anti_phase(L, fgroups, res.spikes, window=config.window)
    sharp_steps = np.asarray(r["sharpness_steps"])
    sharp = np.asarray(r["sharpness"], np.float64)
    zero = np.zeros(x.shape[1])
    group_mean = np.stack([x[res.groups == j].mean(0) if res.group_sizes[j] else zero * np.nan
                           for j in range(2)])
    dominant = [int(np.argmax(comp[j])) for j in range(2)]
    class_mean = np.stack([x[y == c].mean(0) if np.any(y == c) else zero * np.nan
                           for c in dominant])
    return {
        "steps": steps, "mean_loss": res.mean_loss,
        "train_loss": np.asarray(r["train_loss"], np.float64),
        "sharpness_steps": sharp_steps, "sharpness": sharp,
        "spike_steps": steps[res.spikes].reshape(-1, 2).astype(np.int64),
        "spike_rise": res.spike_rise, "anti_phase": res.anti_phase,
        "groups": res.groups, "loadings": res.loadings, "group_losses": res.group_losses,
        "labels": y, "feature": feat, "composition": comp,
        "group_mean_input": group_mean, "class_mean_input": class_mean,
        "feature_groups": fgroups, "feature_group_losses": ops.group_losses(L, fgroups),
        "feature_anti_phase": feat_anti,
        "summary": _summary(config, r, res, feat, comp, feat_anti, sharp_steps, sharp),
    }

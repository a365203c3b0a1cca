"""Figure: weight distance against log t, and the large-batch gap before and after the fixes
(Hoffer, Hubara, Soudry 2017).

(a) ``||w_t - w_0||`` (mean over seeds, band +-1 std) against the step ``t`` on a log axis,
one colour per batch size, all at the same learning rate; dashed: the fit ``a + b log t``
(seed-mean coefficients). (b) Per batch size: the ``R^2`` of that fit and the exponent ``p`` of
a power-law fit ``d ~ t^p`` (a random walk has ``p = 1/2``; a logarithm looks like a small,
falling ``p``), mean +- std over seeds. (c) Test accuracy of the small batch and of the large
batch under each fix (one dot per seed, bar = mean), with the gap to the small batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.large_batch import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("large_batch",)

LABELS = {"small": "small B", "baseline": "large B", "+sqrt_lr": "+√ lr", "+ghost_bn": "+GBN",
          "+regime": "+RA", "sqrt_lr+regime": "√ lr + RA", "all": "all three"}


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["large_batch"]
    cfg = res.config
    m: Metrics = res.metrics
    steps = np.asarray(m["steps"], float)
    dist = np.asarray(m["distance"], float)
    fit = m["fit"]
    batch_sizes = list(cfg["batch_sizes"])
    fig, axes = plotting.figure(ncols=3, width=3.4, height=2.8)
    pos = steps >= 1
    t = steps[pos]
    for j, B in enumerate(batch_sizes):
        color = plotting.COLORS[j % len(plotting.COLORS)]
        plotting.band(axes[0], t, dist[:, j, pos], color=color, label=f"B = {B}")
        a = np.mean(np.asarray(fit["intercept"])[:, j])
        b = np.mean(np.asarray(fit["slope"])[:, j])
        tf = t[t >= cfg["fit_min_step"]]
        axes[0].plot(tf, a + b * np.log(tf), color=color, ls="--", lw=0.8)
    axes[0].set_xscale("log")
    axes[0].plot([], [], color="0.4", ls="--", lw=0.8, label="a + b log t")
    axes[0].set_xlabel("step t")
    axes[0].set_ylabel(r"$\|w_t - w_0\|$")
    axes[0].set_title(f"lr {cfg['learning_rate']:g}, momentum {cfg['momentum']:g}, "
                      f"{len(dist)} seed(s)")
    axes[0].legend(fontsize=6, loc="upper left")
    plotting.headroom(axes[0], 0.3)

    x = np.arange(len(batch_sizes))
    for key, label, color in (("r2", "R² of a + b log t", plotting.COLORS[0]),
                              ("power_exponent", "p of d ~ t^p", plotting.COLORS[1])):
        v = np.asarray(fit[key], float)
        axes[1].errorbar(x, v.mean(axis=0), yerr=v.std(axis=0), color=color, marker="o",
                         ms=3, capsize=2, label=label)
    axes[1].axhline(0.5, color="0.5", ls=":", lw=0.9, label="random walk p = 1/2")
    axes[1].set_xticks(x, [str(B) for B in batch_sizes])
    axes[1].set_xlabel("batch size B")
    axes[1].set_title(f"fits over t ≥ {cfg['fit_min_step']}")
    axes[1].set_ylim(0, 1.05)
    axes[1].legend(fontsize=6, loc="center right")

    acc = 100 * np.asarray(m["test_accuracy"], float)
    variants = list(m["variants"])
    xv = np.arange(len(variants))
    means = acc.mean(axis=1)
    axes[2].bar(xv, means, color=[plotting.COLORS[0]] + [plotting.COLORS[1]] * (len(xv) - 1),
                alpha=0.5)
    for i in range(len(variants)):
        axes[2].plot(np.full(acc.shape[1], xv[i]), acc[i], "k.", ms=3)
    axes[2].axhline(means[0], color=plotting.COLORS[0], ls="--", lw=0.9)
    lo = min(acc.min(), means[0]) - 5
    axes[2].set_ylim(max(lo, 0), min(100, acc.max() + 0.35 * (acc.max() - lo)))
    gaps, std = m["summary"]["gap_mean"], m["summary"]["gap_std"]
    for i in range(1, len(variants)):
        axes[2].text(xv[i], means[i], f"{100 * gaps[i - 1]:+.1f}\n±{100 * std[i - 1]:.1f}",
                     ha="center", va="bottom", fontsize=6)
    axes[2].set_xticks(xv, [LABELS.get(v, v) for v in variants], rotation=30, fontsize=7)
    axes[2].set_ylabel("test accuracy (%); text: gap to small B")
    axes[2].set_title(f"B={cfg['small_batch']} vs {cfg['large_batch']}, "
                      f"ghost {cfg['ghost_batch_size']}")
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "large_batch")

"""Figure: gradient coherence on real vs random labels, and robust gradients vs memorisation.

One row per dataset. (a) m-coherence of plain SGD (m = the probe set's size) against the step,
real labels (solid) and random labels (dashed), with the "early" window shaded
(the summary's ratio is the mean over it). (b) Training accuracy on random labels
(memorisation) for plain, winsorised and median-of-means gradients. (c) The same on real labels,
with the test accuracy dotted. Chance level 0.1 dotted grey in (b) and (c).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.coherence import Metrics, run_key
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("coherence",)
NAMES = {"plain": "plain SGD", "winsorize": "winsorised (c={c})",
         "median_of_means": "median of {k} means"}


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["coherence"]
    cfg = res.config
    m: Metrics = res.metrics
    steps = np.asarray(m["steps"])
    datasets = list(cfg["datasets"])
    fig, axes = plotting.figure(nrows=len(datasets), ncols=3, width=3.3, height=2.6)
    axes = np.asarray(axes).reshape(len(datasets), 3)
    names = [NAMES[k].format(c=cfg["c"], k=cfg["num_groups"]) for k in m["kinds"]]
    for row, ds in zip(axes, datasets):
        s = m["summary"][ds]
        for labels, ls in (("real", "-"), ("random", "--")):
            row[0].plot(steps, np.asarray(m["runs"][run_key(ds, labels)]["coherence"]),
                            color="0.15", ls=ls, label=f"{labels} labels")
        row[0].axvspan(0, cfg["early_steps"], color="0.85", lw=0,
                       label=f"early: ratio {s['early_coherence_ratio']:.2f}")
        row[0].set_ylabel(f"m-coherence (m={cfg['probe_size']})")
        row[0].set_title(f"{ds}: coherence of plain SGD")
        for col, labels in ((1, "random"), (2, "real")):
            run = m["runs"][run_key(ds, labels)]
            for i, name in enumerate(names):
                color = plotting.COLORS[i]
                row[col].plot(steps, np.asarray(run["train_accuracy"][i]), color=color,
                              label=name)
                if labels == "real":
                    row[col].plot(steps, np.asarray(run["test_accuracy"][i]), color=color,
                                  ls=":", lw=1)
            row[col].axhline(0.1, color="0.6", ls=":", lw=0.8)
            row[col].set_ylim(0, 1.05)
            row[col].set_ylabel("train accuracy" + (" (memorised)" if labels == "random"
                                                    else ""))
            row[col].set_title(f"{ds}: {labels} labels")
        row[2].plot([], [], color="0.4", ls=":", lw=1, label="test accuracy")
        for ax in row:
            ax.set_xlabel("SGD step")
            ax.legend(fontsize=6, loc="lower right" if ax is not row[0] else "upper right")
    plotting.label_panels(axes.ravel())
    return plotting.save(fig, out_dir, "coherence")

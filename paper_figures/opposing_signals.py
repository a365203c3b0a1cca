"""Figure: loss spikes of GD at a large step size and the opposing groups behind them.

(a) Mean training loss against the step, the peak of each detected spike marked. (b) Around the
largest spike: the mean losses of groups A and B (found on this spike's window) and the mean
loss. (c) Sharpness against the step with ``2 / eta`` (dashed) and the spike peaks (faint). (d)
Per spike, the correlation of the two groups' loss changes over the spike's window (-1: exact
anti-phase); the largest spike (where the groups were chosen) is ringed, and the control split
by the input norm is in grey. (e) Class composition of groups A and B. (f) Mean input of each
group (solid) against the mean input of its dominant class (dashed).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.opposing_signals import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("opposing_signals",)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["opposing_signals"]
    cfg = res.config
    m: Metrics = res.metrics
    s = m["summary"]
    steps = np.asarray(m["steps"])
    spikes = np.asarray(m["spike_steps"]).reshape(-1, 2)
    peaks = spikes[:, 1]
    eta = cfg["learning_rate"]
    A, B = plotting.COLORS[0], plotting.COLORS[1]
    fig, axes = plotting.figure(nrows=2, ncols=3, width=3.4, height=2.6)
    ax = axes[0, 0]
    ax.plot(steps, np.asarray(m["mean_loss"]), color="0.2", lw=1)
    idx = np.searchsorted(steps, peaks)
    ax.plot(peaks, np.asarray(m["mean_loss"])[idx], "v", color=plotting.COLORS[3], ms=4,
            label=f"spike peaks ({len(peaks)})")
    ax.set_xlabel("GD step")
    ax.set_ylabel("training loss (mean over examples)")
    ax.set_title(f"{cfg['model']} on {cfg['dataset']}, {cfg['loss']}, η = {eta:g}", fontsize=8)
    ax.legend(fontsize=7)

    ax = axes[0, 1]
    gl = np.asarray(m["group_losses"])
    if s["biggest_spike_step"] >= 0:
        p = int(np.searchsorted(steps, s["biggest_spike_step"]))
        lo, hi = max(p - 3 * cfg["window"], 0), min(p + 3 * cfg["window"], len(steps) - 1)
        sl = slice(lo, hi + 1)
        ax.plot(steps[sl], gl[0, sl], color=A, lw=1.1, marker=".", ms=3,
                label=f"group A (n={s['group_sizes'][0]})")
        ax.plot(steps[sl], gl[1, sl], color=B, lw=1.1, marker=".", ms=3,
                label=f"group B (n={s['group_sizes'][1]})")
        ax.plot(steps[sl], np.asarray(m["mean_loss"])[sl], color="0.2", lw=1, ls="--",
                label="all examples")
        ax.set_title(f"largest spike (step {s['biggest_spike_step']}): "
                     f"corr {s['anti_phase_biggest']:.2f}", fontsize=8)
    ax.set_xlabel("GD step")
    ax.set_ylabel("group mean loss")
    ax.legend(fontsize=6, loc="upper left")

    ax = axes[0, 2]
    ax.plot(np.asarray(m["sharpness_steps"]), np.asarray(m["sharpness"]), color=plotting.COLORS[2],
            lw=1.1, label=f"λ_max(H), every {cfg['sharpness_every']} steps")
    ax.axhline(2.0 / eta, color="0.3", ls="--", lw=1, label="2 / η")
    for p in peaks:
        ax.axvline(p, color=plotting.COLORS[3], lw=0.5, alpha=0.4)
    ax.set_xlabel("GD step")
    ax.set_ylabel("sharpness")
    ax.set_title("sharpness (faint: spike peaks)", fontsize=8)
    ax.legend(fontsize=6, loc="lower right")
    plotting.headroom(ax, 0.15)

    ax = axes[1, 0]
    anti, fanti = np.asarray(m["anti_phase"]), np.asarray(m["feature_anti_phase"])
    ax.axhline(0, color="0.5", lw=0.8)
    ax.plot(peaks, fanti, "x", color="0.6", ms=4, label="control: split by ||x||")
    ax.plot(peaks, anti, "o", color=A, ms=3.5, label="groups A vs B")
    if s["biggest_spike_step"] >= 0:
        ax.plot([s["biggest_spike_step"]], [s["anti_phase_biggest"]], "o", mfc="none",
                color="k", ms=8, label="groups chosen here")
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlim(0, cfg["num_steps"])
    ax.set_xlabel("spike peak step")
    ax.set_ylabel("corr of group loss changes")
    med = s["anti_phase_others_median"]
    ax.set_title("anti-phase, out of sample: " + (f"median {med:.2f}" if np.isfinite(med)
                                                 else "no other spike"), fontsize=8)
    ax.legend(fontsize=6, loc="upper right")

    ax = axes[1, 1]
    comp = np.asarray(m["composition"])
    classes = np.arange(comp.shape[1])
    ax.bar(classes - 0.2, comp[0], width=0.4, color=A, label="group A")
    ax.bar(classes + 0.2, comp[1], width=0.4, color=B, label="group B")
    ax.set_xticks(classes)
    ax.set_xlabel("class")
    ax.set_ylabel("examples")
    ax.set_title("what the groups are: classes", fontsize=8)
    ax.legend(fontsize=7)

    ax = axes[1, 2]
    gm, cm = np.asarray(m["group_mean_input"]), np.asarray(m["class_mean_input"])
    feats = np.arange(gm.shape[1])
    for j, (name, color) in enumerate((("A", A), ("B", B))):
        ax.plot(feats, gm[j], color=color, lw=1.2, label=f"group {name}")
        ax.plot(feats, cm[j], color=color, lw=0.9, ls="--",
                label=f"class {s['dominant_class'][j]} (all)")
    ax.set_xlabel("input feature")
    ax.set_ylabel("mean centred input")
    ax.set_title("mean inputs: group vs its dominant class", fontsize=8)
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    plotting.headroom(ax, 0.3)
    plotting.label_panels(axes.ravel())
    return plotting.save(fig, out_dir, "opposing_signals")

"""Figure: the optimizer comparison (AlgoPerf-style protocol, ``experiments.optimizer_comparison``).

(a) Performance profiles of the tuned scores: for each optimizer, the fraction of the workloads
it solves (reaches the fixed target, median over the tuning studies) within ``r`` times the
steps of the fastest optimizer on that workload. (b) The same at the relaxed targets (the median
baseline sweep trial's best). (c) The defaults runs (one run at the authors' recommended
settings) at the relaxed targets. The optimizer-state memory is in the README table. (d-f)
Learning-rate sensitivity: the final validation metric against the peak learning rate relative
to the optimizer's recommended one (other hyperparameters at their defaults), one panel per
workload, with the target (dotted) and the metric at initialisation (grey); the legend gives
Wortsman et al.'s sensitivity ``E[min(l, l0)] - min l``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np

from experiments.layouts.optimizer_comparison import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("optimizer_comparison",)

_STYLES = ("-", "--", ":", "-.")


def _style(i: int) -> dict:
    cmap = matplotlib.colormaps["tab20"]
    return {"color": cmap((2 * i) % 20 + (i // 10)), "ls": _STYLES[i % len(_STYLES)]}


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["optimizer_comparison"]
    m: Metrics = res.metrics
    names, wls = list(m["optimizers"]), list(m["workloads"])
    ratios = np.asarray(m["ratios"])
    fig, axes = plotting.figure(nrows=2, ncols=3, width=3.4, height=2.7)
    axes = np.asarray(axes).reshape(2, 3)
    panels = ((axes[0, 0], "profile", "strict"), (axes[0, 1], "relaxed_profile", "relaxed"),
              (axes[0, 2], "relaxed_default_profile", "relaxed"))
    for ax, key, which in panels:
        prof = np.asarray(m[key])
        for i, n in enumerate(names):
            jitter = 0.004 * (i - len(names) / 2)  # keep overlapping steps apart
            ax.step(ratios, prof[i] + jitter, where="post", lw=1.1, label=n, **_style(i))
        ax.set_xlim(ratios[0], ratios[-1])
        ax.set_ylim(-0.05, 1.08)
        ax.set_xlabel("r (steps / fastest steps)")
        ax.set_ylabel("fraction of workloads solved")
        tgt = ", ".join(f"{t:.3g}" for t in m["targets" if which == "strict" else
                                               "relaxed_targets"])
        kind = "defaults" if "default" in key else "tuned"
        ax.set_title(f"{kind}, {which} targets ({tgt})", fontsize=7)
    axes[0, 0].legend(fontsize=5, ncol=2, loc="upper left")

    for j, w in enumerate(wls):
        ax = axes[1, j]
        c = m["curves"][w]
        grid_lr, final = np.asarray(c["grid_lr"]), np.asarray(c["grid_final"])
        centre = np.sqrt(grid_lr[:, :1] * grid_lr[:, -1:])  # the recommended rate
        for i, n in enumerate(names):
            ax.semilogx(grid_lr[i] / centre[i, 0], final[i], marker=".", ms=3, lw=1,
                        label=f"{n}: {np.asarray(m['sensitivity'])[i, j]:.2g}", **_style(i))
        ax.axhline(m["targets"][j], color="k", ls=":", lw=0.8)
        ax.axhline(c["initial"], color="0.6", lw=0.8)
        if np.isfinite(m["floors"][j]):
            ax.axhline(m["floors"][j], color="0.3", ls="--", lw=0.8)
        ax.set_xlabel("peak learning rate / recommended")
        ax.set_ylabel(f"final validation {m['metric_names'][j]}")
        ax.set_title(f"{w}: lr sensitivity")
        ax.legend(fontsize=4.5, ncol=2, loc="upper center")
        plotting.headroom(ax, 0.45)
    plotting.label_panels(axes.ravel())
    return plotting.save(fig, out_dir, "optimizer_comparison")

"""Figure: (a) test accuracy of two-model merges: endpoints, ensemble, plain average, weight
matching, WM + REPAIR, and PLeaS against the merged width; (b) merging m models: plain average
vs WM alignment to a common reference."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.merging import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("merging",)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["merging"]
    cfg = res.config
    m: Metrics = res.metrics
    fig, axes = plotting.figure(ncols=2, width=3.4, height=2.7)
    ax = axes[0]
    factors = np.asarray(cfg["pleas_factors"])
    ax.plot(factors, m["pleas"], "o-", color=plotting.COLORS[5], label="PLeaS")
    for j, (key, name) in enumerate((("endpoints", "endpoints"), ("ensemble", "ensemble"),
                                     ("average", "plain average"), ("wm", "weight matching"),
                                     ("wm_repair", "WM + REPAIR"))):
        ax.axhline(m[key], color=plotting.COLORS[j], ls="--" if j < 2 else "-", lw=1.2,
                   label=name)
    ax.set_xlabel("merged width / original width")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"two models, {cfg['dataset']}, width {cfg['width']}")
    plotting.headroom(ax, 0.3)  # the legend sits above every line
    ax.legend(fontsize=6, ncol=2, loc="upper center")
    ax = axes[1]
    ax.plot(m["num_merged"], m["multi_average"], "o-", label="plain average")
    ax.plot(m["num_merged"], m["multi_wm"], "s-", label="WM to a common reference")
    ax.set_xlabel("models merged")
    ax.set_ylabel("test accuracy")
    ax.set_xticks(np.asarray(m["num_merged"]))
    ax.set_title(f"m models, {cfg['dataset']}, width {cfg['width']}")
    ax.legend()
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "merging")

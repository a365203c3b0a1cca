"""Figure: linear-path barrier vs width, without alignment and after WM, AM, STE, WM+REPAIR.

One column per dataset: (top) test-loss barrier, (bottom) test-error barrier, ``max_minus_mean``,
mean over pairs with a +-1 std band, log-2 width axis. Every panel has its own legend, above
the curves.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.barrier_vs_width import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("barrier_vs_width",)
LABELS = {"none": "no alignment", "wm": "weight matching", "am": "activation matching",
          "ste": "STE", "wm_repair": "WM + REPAIR"}


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["barrier_vs_width"]
    cfg = res.config
    m: Metrics = res.metrics
    datasets, widths, methods = list(cfg["datasets"]), np.asarray(cfg["widths"]), m["methods"]
    fig, axes = plotting.figure(nrows=2, ncols=len(datasets), width=3.3, height=2.7)
    axes = np.asarray(axes).reshape(2, len(datasets))
    for j, d in enumerate(datasets):
        for row, (key, name) in enumerate((("barrier_loss", "loss"), ("barrier_error", "error"))):
            ax = axes[row, j]
            vals = np.asarray(m[key], float)[j]  # dataset j (axes: Metrics)
            for k, meth in enumerate(methods):
                v = vals[:, k, :]
                ok = np.isfinite(v).all(axis=1)
                if ok.any():
                    plotting.band(ax, widths[ok], v[ok].T, label=LABELS.get(meth, meth),
                                  color=plotting.COLORS[k])
            ax.set_xscale("log", base=2)
            ax.axhline(0, color="k", lw=0.6)
            ax.set_xlabel("hidden width")
            ax.set_ylabel(f"test {name} barrier")
            pairs = f"{cfg['num_pairs']} pair" + ("s" if cfg["num_pairs"] != 1 else "")
            ax.set_title(f"{d}, depth {cfg['depth']}: mean ± std over {pairs}", fontsize=8)
            plotting.headroom(ax, 0.3)  # the legend sits above the curves
            ax.legend(fontsize=6, ncol=2, loc="upper center")
    plotting.label_panels(axes.ravel())
    return plotting.save(fig, out_dir, "barrier_vs_width")

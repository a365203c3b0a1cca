"""Figure: test accuracy of the linear model, MLP and CNN on MNIST-1D and digits.

Left: mean +- std over seeds per dataset and model, with the published MNIST-1D reference as
open markers. Right: test accuracy against training step (mean and band over seeds).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.baselines import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("baselines",)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["baselines"]
    cfg = res.config
    metrics: Metrics = res.metrics
    datasets, models = cfg["datasets"], cfg["models"]
    fig, axes = plotting.figure(ncols=2, width=3.6, height=2.8)
    ax = axes[0]
    width = 0.8 / len(models)
    for j, model in enumerate(models):
        xs = np.arange(len(datasets)) + (j - (len(models) - 1) / 2) * width
        means = [metrics["summary"][d][model]["mean"] for d in datasets]
        stds = [metrics["summary"][d][model]["std"] for d in datasets]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=model,
               color=plotting.COLORS[j])
        refs = [metrics["reference"].get(d, {}).get(model, np.nan) for d in datasets]
        ax.plot(xs, refs, "o", mfc="none", mec="k", ms=6,
                label="published (MNIST-1D)" if j == 0 else None)
    ax.set_xticks(np.arange(len(datasets)), datasets)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.22)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_title(f"mean ± std over {cfg['num_seeds']} seed(s)")
    ax.legend(loc="upper center", ncol=2, fontsize=7)
    ax = axes[1]
    for j, model in enumerate(models):
        for d, style in zip(datasets, ("-", "--")):
            runs = metrics["results"][d][model]
            curves = np.stack([r["curve_test_acc"] for r in runs])
            line = plotting.band(ax, runs[0]["curve_step"], curves, color=plotting.COLORS[j])
            line.set_linestyle(style)
            line.set_label(f"{model} / {d}")
    ax.set_xlabel("Adam step")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"mean ± std over {cfg['num_seeds']} seed(s)")
    ax.legend(ncol=2, fontsize=7)
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "baselines")

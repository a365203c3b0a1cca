"""Figure: Hessian/GGN outliers track the number of classes; the bulk moves with the width.

(a) Top eigenvalues of the Hessian at the widest network, one curve per number of classes C
(dotted verticals between index C and C + 1, explained in the legend). (b) Outlier count
(last-gap rule) against C for the Hessian (filled) and the GGN (open), one colour per width,
with the lines count = C and C - 1; small dots are the counts of every seed.
(c) SLQ spectral density of the Hessian for the largest C, one curve per width (Gaussian
smoothing of width 2% of the largest node), on a log axis cut at ``DENSITY_FLOOR`` where a
density falls below it: a curve that leaves through the bottom edge has fallen below the floor
(the axis label says so). (d) Overlap (mean squared cosine of principal
angles) between the top-C eigenspace and the span of the class-mean gradients.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.hessian_outliers import Metrics, run_key
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("hessian_outliers",)
DENSITY_FLOOR = 1e-6  # bottom of the density axis in (c)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["hessian_outliers"]
    cfg = res.config
    metrics: Metrics = res.metrics
    classes, widths = list(cfg["num_classes"]), list(cfg["widths"])
    runs, summary = metrics["runs"], metrics["summary"]
    fig, axes = plotting.figure(nrows=2, ncols=2, width=3.4, height=2.7)
    axes = np.asarray(axes).ravel()

    ax = axes[0]
    for j, c in enumerate(classes):
        lam = np.asarray(runs[run_key(c, widths[-1])]["hessian"]["eigenvalues"])
        ax.semilogy(
            np.arange(1, lam.size + 1),
            np.maximum(lam, 1e-8),
            "o-",
            ms=3,
            color=plotting.COLORS[j],
            label=f"C={c}",
        )
        ax.axvline(c + 0.5, color=plotting.COLORS[j], ls=":", lw=1)
    ax.plot([], [], color="0.4", ls=":", lw=1, label="dotted: between\nindex C and C + 1")
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("Hessian eigenvalue")
    ax.set_title(f"top eigenvalues, width {widths[-1]}")
    ax.legend(fontsize=7)

    ax = axes[1]
    cs = np.asarray(classes)
    ax.plot(cs, cs, "k-", lw=0.8, label="C")
    ax.plot(cs, cs - 1, "k--", lw=0.8, label="C - 1")
    for j, w in enumerate(widths):
        off = (j - (len(widths) - 1) / 2) * 0.08
        h = [row[j] for row in summary["hessian"]["outlier_count"]]
        g = [row[j] for row in summary["ggn"]["outlier_count"]]
        ax.plot(cs + off, h, "o", color=plotting.COLORS[j], label=f"H, width {w}")
        ax.plot(cs + off, g, "s", mfc="none", color=plotting.COLORS[j], label=f"GGN, width {w}")
        if "counts_by_seed" in summary["hessian"]:  # every seed, the one above included
            for kind, dx in (("hessian", -0.02), ("ggn", 0.02)):
                counts = np.asarray(summary[kind]["counts_by_seed"])[:, j, :]
                for col in counts.T:
                    ax.plot(cs + off + dx, col, ".", ms=3, alpha=0.45, color=plotting.COLORS[j])
    if "seeds" in summary:
        ax.set_title(f"large markers: seed {summary['seeds'][0]}; dots: "
                     f"{len(summary['seeds'])} seeds", fontsize=8)
    ax.set_xlabel("number of classes C")
    ax.set_ylabel(f"outliers (last gap >= {cfg['gap_threshold']})")
    ax.legend(fontsize=6, ncol=2)

    ax = axes[2]
    c = classes[-1]
    top = max(float(np.max(runs[run_key(c, w)]["hessian"]["density_nodes"])) for w in widths)
    bottom = min(float(np.min(runs[run_key(c, w)]["hessian"]["density_nodes"])) for w in widths)
    grid = np.linspace(bottom - 0.05 * top, 1.05 * top, 600)
    lowest, peak = np.inf, 0.0
    for j, w in enumerate(widths):
        r = runs[run_key(c, w)]["hessian"]
        pdf = plotting.smoothed_density(
            np.asarray(r["density_nodes"]), np.asarray(r["density_weights"]), grid, 0.02 * top
        )
        lowest, peak = min(lowest, float(np.min(pdf))), max(peak, float(np.max(pdf)))
        ax.semilogy(  # below the floor the curve leaves through the bottom edge of the axis
            grid,
            np.maximum(pdf, DENSITY_FLOOR / 100),
            color=plotting.COLORS[j],
            label=f"width {w} (P={runs[run_key(c, w)]['num_params']})",
        )
    ylabel = "density (SLQ)"
    if lowest < DENSITY_FLOOR:  # cut the axis at the floor, and say so
        lo, hi = np.log10(DENSITY_FLOOR), np.log10(peak)
        ax.set_ylim(DENSITY_FLOOR, 10 ** (hi + 0.05 * (hi - lo)))  # top: matplotlib's margin
        ylabel += f", cut at $10^{{{round(lo)}}}$"
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel(ylabel)
    ax.set_title(f"Hessian spectral density, C={c}")
    ax.legend(fontsize=7)

    ax = axes[3]
    for j, w in enumerate(widths):
        h = [row[j] for row in summary["hessian"]["overlap"]]
        g = [row[j] for row in summary["ggn"]["overlap"]]
        ax.plot(cs, h, "o-", color=plotting.COLORS[j], label=f"H, width {w}")
        ax.plot(cs, g, "s--", mfc="none", color=plotting.COLORS[j], label=f"GGN, width {w}")
    ax.plot(cs, (cs - 1) / cs, "k:", lw=0.8, label="(C-1)/C")
    rand = [runs[run_key(c, widths[0])]["overlap_random"] for c in classes]
    ax.plot(cs, rand, "k-", lw=0.6, label=f"random, width {widths[0]}")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("number of classes C")
    ax.set_ylabel("overlap with class-mean grads")
    ax.legend(fontsize=6, ncol=2)
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "hessian_outliers")

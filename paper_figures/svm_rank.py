"""Figure: rank of the Frobenius and nuclear-norm Att-SVM solutions against d, and infeasibility.

(a) Mean numerical rank over feasible draws against d for each n (solid: Frobenius, dashed:
nuclear), with the bound rank <= n as a dotted line. (b) Fraction of infeasible draws against d.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.svm_rank import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("svm_rank",)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["svm_rank"]
    cfg = res.config
    m: Metrics = res.metrics
    ds = np.asarray(cfg["ds"])
    fig, axes = plotting.figure(ncols=2, width=3.3, height=2.6)
    for j, n in enumerate(cfg["ns"]):
        row, color = m["per_n"][str(n)], plotting.COLORS[j]
        axes[0].plot(ds, np.asarray(row["rank_fro_mean"], float), "o-", color=color,
                     label=f"n={n} Frobenius")
        axes[0].plot(ds, np.asarray(row["rank_nuc_mean"], float), "s--", color=color,
                     label=f"n={n} nuclear")
        axes[0].axhline(n, color=color, lw=0.8, ls=":")
        axes[1].plot(ds, row["infeasible_fraction"], "o-", color=color, label=f"n={n}")
    axes[0].plot([], [], color="0.4", lw=0.8, ls=":", label="bound rank = n")
    axes[0].set_xlabel("d")
    axes[0].set_ylabel("rank of W_mm")
    axes[0].set_title(f"T={cfg['T']}; mean over feasible draws of {cfg['num_draws']}")
    axes[0].legend(fontsize=6)
    axes[1].set_xlabel("d")
    axes[1].set_ylabel("fraction of infeasible draws")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_title(f"T={cfg['T']}; {cfg['num_draws']} draws per point")
    axes[1].legend()
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "svm_rank")

"""Figure: attention converges in direction to its own max-margin SVM (W: Frobenius, KQ: nuclear).

(a) corr(W_t, W_mm) against the step, mean and band over seeds, for W (against the Frobenius
solution) and (K, Q) (against the nuclear-norm solution); dashed: each run against the *other*
norm's solution; dotted: the convergence threshold. (b) Softmax mass on the selected tokens.
(c) Ridge ablation for (K, Q).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.svm_convergence import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("svm_convergence",)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["svm_convergence"]
    cfg = res.config
    m: Metrics = res.metrics
    steps = np.asarray(m["steps"])
    fig, axes = plotting.figure(ncols=3, width=3.2, height=2.6)
    ax = axes[0]
    plotting.band(ax, steps, m["corr_W"], label="W vs Frobenius SVM (mean ± std)",
                  color=plotting.COLORS[0])
    plotting.band(ax, steps, m["corr_KQ"], label="(K,Q) vs nuclear SVM (mean ± std)",
                  color=plotting.COLORS[1])
    ax.plot(steps, np.mean(m["cross_W_to_nuc"], 0), "--", color=plotting.COLORS[0], lw=1,
            label="W vs nuclear SVM (mean)")
    ax.plot(steps, np.mean(m["cross_KQ_to_fro"], 0), "--", color=plotting.COLORS[1], lw=1,
            label="(K,Q) vs Frobenius SVM (mean)")
    ax.axhline(cfg["threshold"], color="0.5", lw=0.8, ls=":",
               label=f"threshold {cfg['threshold']:g}")
    ax.set_ylim(0.5, 1.005)
    ax.set_xlabel("normalised-GD step")
    ax.set_ylabel(r"corr$(W_t, W^{mm})$")
    ax.set_title(f"n={cfg['n']}, T={cfg['T']}, d={cfg['d']}, {cfg['num_seeds']} seeds")
    ax.legend(loc="lower right", fontsize=6)
    ax = axes[1]
    for key, label, color in (("mass_W", "W", plotting.COLORS[0]),
                              ("mass_KQ", "(K,Q)", plotting.COLORS[1])):
        rest = np.clip(1.0 - np.asarray(m[key]), 1e-17, None)
        ax.plot(steps, rest.T, color=color, lw=0.4, alpha=0.35)
        ax.plot(steps, np.median(rest, 0), color=color, label=f"{label} (median)")
    ax.set_yscale("log")
    ax.set_xlabel("normalised-GD step")
    ax.set_ylabel("1 - softmax mass on selected token")
    ax.set_title("worst example; thin: seeds")
    ax.legend()
    ax = axes[2]
    abl = np.asarray(m["ablation_corr"])
    for j, ridge in enumerate(cfg["ridge_ablation"]):
        ax.plot(steps, abl[:, j].mean(0), label=f"ridge {ridge:g}", color=plotting.COLORS[j + 2])
    ax.set_ylim(0.5, 1.005)
    ax.set_xlabel("normalised-GD step")
    ax.set_ylabel("(K,Q): corr with nuclear SVM")
    ax.set_title("ridge ablation (mean over seeds)")
    ax.legend(fontsize=6)
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "svm_convergence")

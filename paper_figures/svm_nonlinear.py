"""Figure: ReLU head, general SVM prediction against GD.

(a) corr of the component of W_t orthogonal to the tie space S_fin with the general Att-SVM
solution (solid), and of the full W_t (dashed), mean and band over seeds with a feasible SVM.
(b) Norms of the two components: the orthogonal part grows, the S_fin part should level off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from landscape import plotting

EXPERIMENTS = ("svm_nonlinear",)


def draw(results: dict, out_dir: Path) -> list[Path]:
    res = results["svm_nonlinear"]
    cfg, m = res.config, res.metrics
    steps = np.asarray(m["steps"])
    ok = np.asarray(m["feasible"], bool)
    fig, axes = plotting.figure(2, 1, width=3.3, height=2.6)
    ax = axes[0]
    if ok.any():
        plotting.band(ax, steps, np.asarray(m["corr_perp"])[ok], label=r"corr$(W_\perp, W^{mm})$")
        plotting.band(ax, steps, np.asarray(m["corr_full"])[ok], label=r"corr$(W, W^{mm})$")
    ax.set_xlabel("normalised-GD step")
    ax.set_ylabel("correlation with general SVM")
    ax.set_title(f"ReLU head width {cfg['head_width']}; {ok.sum()}/{len(ok)} seeds feasible")
    ax.legend(fontsize=7)
    ax = axes[1]
    if ok.any():
        plotting.band(ax, steps, np.asarray(m["norm_perp"])[ok], label=r"$\|W_\perp\|$")
        plotting.band(ax, steps, np.asarray(m["norm_fin"])[ok], label=r"$\|W_{fin}\|$")
    ax.set_xlabel("normalised-GD step")
    ax.set_ylabel("Frobenius norm")
    ax.legend(fontsize=7)
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "svm_nonlinear")

"""Figure: ReLU head, the general SVM prediction against GD.

Seeds whose selected sets are unambiguous (the same at the threshold and at a tenth of it) and
whose general SVM is feasible are drawn; the title counts them.
(a) Correlation with the general Att-SVM solution W_mm(O): of the growth of the orthogonal part
over the last decade (solid), of the orthogonal part itself and of the full W_t (dashed); mean
and band over seeds. (b) Norms of the two parts: ||W_perp|| grows like log t, ||W_fin|| levels
off. (c) Softmax mass outside the selected sets (decays like a power of t) and the smallest
weight of a selected token (stays finite), one line per seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.svm_nonlinear import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("svm_nonlinear",)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["svm_nonlinear"]
    cfg = res.config
    m: Metrics = res.metrics
    steps = np.asarray(m["steps"])[1:]
    ok = (np.asarray(m["feasible"], bool)
          & np.asarray(m["set_stable_at_threshold_over_10"], bool))
    get = lambda k: np.asarray(m[k], float)[ok][:, 1:]  # noqa: E731
    fig, axes = plotting.figure(ncols=3, width=3.2, height=2.6)
    ax = axes[0]
    if ok.any():
        plotting.band(ax, steps, get("corr_growth"), label=r"growth of $W_\perp$ over a decade")
        plotting.band(ax, steps, get("corr_perp"), label=r"$W_\perp$")
        line = plotting.band(ax, steps, get("corr_full"), label=r"$W$")
        line.set_linestyle("--")
    ax.set_xscale("log")
    ax.set_xlabel("GD step t")
    ax.set_ylabel(r"corr with general SVM $W^{mm}(\mathcal{O})$")
    ax.set_title(f"ReLU head width {cfg['head_width']}; {ok.sum()}/{len(ok)} seeds")
    if ok.any():
        ax.legend(fontsize=6, title="mean ± std over seeds", title_fontsize=6)
    ax = axes[1]
    if ok.any():
        plotting.band(ax, steps, get("norm_perp"), label=r"$\|W_\perp\|$")
        plotting.band(ax, steps, get("norm_fin"), label=r"$\|W_{fin}\|$")
    ax.set_xscale("log")
    ax.set_xlabel("GD step t")
    ax.set_ylabel("Frobenius norm")
    if ok.any():
        ax.legend(fontsize=7, title="mean ± std over seeds", title_fontsize=7)
    ax = axes[2]
    positive = lambda v: np.where((v > 0) & np.isfinite(v), v, np.nan)  # noqa: E731
    mass_out, mass_in = positive(get("mass_out")), positive(get("mass_in_min"))
    for j, (out, inn) in enumerate(zip(mass_out, mass_in, strict=True)):
        color = plotting.COLORS[j % len(plotting.COLORS)]
        ax.plot(steps, out, color=color, lw=0.9)
        ax.plot(steps, inn, color=color, lw=0.9, ls="--")
    ax.plot([], [], color="0.3", label="mass outside the sets (max over examples)")
    ax.plot([], [], color="0.3", ls="--", label="smallest selected weight")
    ax.set_xscale("log")
    if np.isfinite(mass_out).any() or np.isfinite(mass_in).any():
        ax.set_yscale("log")
    ax.set_xlabel("GD step t")
    ax.set_ylabel("softmax weight")
    ax.set_title("one colour per seed")
    ax.legend(fontsize=6)
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "svm_nonlinear")

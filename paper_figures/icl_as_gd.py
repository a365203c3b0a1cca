"""Figure: a trained linear self-attention layer matches one step of GD in context.

(a) Query loss of the LSA layer during training against the one-step GD learner at the optimal
step eta*. (b) Cosine of input sensitivities, cosine of effective weights and RMS prediction
difference during training. (c) Loss of one GD step against its step size, with eta* marked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.icl_as_gd import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("icl_as_gd",)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["icl_as_gd"]
    cfg = res.config
    m: Metrics = res.metrics
    steps = np.asarray(m["steps"])
    fig, axes = plotting.figure(3, 1, width=3.1, height=2.6)
    ax = axes[0]
    plotting.band(ax, steps, m["loss_lsa"], label="trained LSA")
    ax.axhline(np.mean(np.asarray(m["loss_gd"])[:, -1]), color="k", ls="--", lw=1,
               label=r"one GD step, $\eta^*$")
    ax.set_yscale("log")
    ax.set_xlabel("Adam step")
    ax.set_ylabel("query loss")
    ax.set_title(f"d={cfg['dim']}, N={cfg['num_context']}, {cfg['num_seeds']} seed(s)")
    ax.legend()
    ax = axes[1]
    plotting.band(ax, steps, m["sensitivity_cos"], label="cos of input sensitivities")
    plotting.band(ax, steps, m["weight_cos"], label="cos of effective weights")
    plotting.band(ax, steps, m["pred_diff"], label="RMS prediction difference")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("Adam step")
    ax.legend(fontsize=6)
    ax = axes[2]
    for j, curve in enumerate(np.asarray(m["gd_curve"])):
        ax.plot(cfg["eta_grid"], curve, color=plotting.COLORS[j])
        ax.axvline(m["eta_star"][j], color=plotting.COLORS[j], ls=":", lw=1)
    ax.set_xlabel(r"GD step size $\eta$")
    ax.set_ylabel("query loss of one GD step")
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "icl_as_gd")

"""Figure: a trained linear self-attention layer matches one step of GD in context.

(a) Query loss of the LSA layer during training against the one-step GD learner at the optimal
step eta*. (b) Cosine of input sensitivities, cosine of effective weights and RMS prediction
difference during training (mean and +-1 std band over seeds in both). (c) Loss of one GD step
against its step size, one curve per seed, with that seed's eta* dotted.
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
    fig, axes = plotting.figure(ncols=3, width=3.1, height=2.6)
    ax = axes[0]
    plotting.band(ax, steps, m["loss_lsa"], label="trained LSA (mean ± std)")
    ax.axhline(np.mean(np.asarray(m["loss_gd"])[:, -1]), color="k", ls="--", lw=1,
               label=r"one GD step at $\eta^*$ (mean)")
    ax.set_yscale("log")
    ax.set_xlabel("Adam step")
    ax.set_ylabel("query loss")
    ax.set_title(f"d={cfg['dim']}, N={cfg['num_context']}, {cfg['num_seeds']} seed(s)")
    ax.legend()
    ax = axes[1]
    top = 1.05
    for key, label in (("sensitivity_cos", "cos of input sensitivities"),
                       ("weight_cos", "cos of effective weights"),
                       ("pred_diff", "RMS prediction difference")):
        v = np.asarray(m[key], float)
        if np.max(v.mean(0) + v.std(0)) > top:
            label += f" (cut at {top})"
        plotting.band(ax, steps, v, label=label)
    ax.set_ylim(-0.05, top)
    ax.set_xlabel("Adam step")
    ax.set_ylabel("LSA vs one GD step: cos, RMS")
    ax.set_title("mean ± std over seeds", fontsize=8)
    ax.legend(fontsize=6)
    ax = axes[2]
    for j, curve in enumerate(np.asarray(m["gd_curve"])):
        ax.plot(cfg["eta_grid"], curve, color=plotting.COLORS[j], label=f"seed {j}")
        ax.axvline(m["eta_star"][j], color=plotting.COLORS[j], ls=":", lw=1)
    ax.plot([], [], color="0.4", ls=":", lw=1, label=r"its optimal $\eta^*$")
    ax.set_xlabel(r"GD step size $\eta$")
    ax.set_ylabel("query loss of one GD step")
    ax.set_title("one GD step in context, per seed", fontsize=8)
    ax.legend(fontsize=6)
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "icl_as_gd")

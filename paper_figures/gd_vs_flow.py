"""Figure: GD follows gradient flow until its sharpness reaches 2/eta (Cohen et al. 2021).

One colour per step size eta. (a) Distance ``||w_GD(t) - w_flow(t eta)||`` against the GD step,
with a dashed vertical at the first recorded step where GD's sharpness reaches ``2 / eta``.
(b) Sharpness of GD (solid) and of the flow at ``t eta`` (dashed) against the step, with the
thresholds ``2 / eta`` (dotted). (c) Full-dataset loss of GD (solid) and of the flow (dashed),
log scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.gd_vs_flow import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("gd_vs_flow",)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["gd_vs_flow"]
    cfg = res.config
    m: Metrics = res.metrics
    steps = np.asarray(m["steps"])
    etas = list(cfg["learning_rates"])
    crossing = m["summary"]["crossing_step"]
    fig, axes = plotting.figure(ncols=3, width=3.3, height=2.7)
    for j, eta in enumerate(etas):
        color = plotting.COLORS[j]
        axes[0].plot(steps, np.asarray(m["distance"][j]), color=color, label=f"η = {eta:g}")
        if crossing[j] >= 0:
            axes[0].axvline(crossing[j], color=color, ls="--", lw=0.9)
        axes[1].plot(steps, np.asarray(m["gd_sharpness"][j]), color=color,
                     label=f"GD, η = {eta:g}")
        axes[1].plot(steps, np.asarray(m["flow_sharpness"][j]), color=color, ls="--", lw=1)
        axes[1].axhline(2.0 / eta, color=color, ls=":", lw=0.9)
        axes[2].semilogy(steps, np.asarray(m["gd_loss"][j]), color=color,
                         label=f"GD, η = {eta:g}")
        axes[2].semilogy(steps, np.asarray(m["flow_loss"][j]), color=color, ls="--", lw=1)
    for ax in axes[1:]:
        ax.plot([], [], color="0.4", ls="--", lw=1, label="flow at t·η")
    axes[1].plot([], [], color="0.4", ls=":", lw=0.9, label="2 / η")
    axes[0].plot([], [], color="0.4", ls="--", lw=0.9, label="GD sharpness ≥ 2/η")
    axes[0].set_ylabel(r"$\|w_{GD}(t) - w_{flow}(t\eta)\|$")
    axes[0].set_title(f"{cfg['loss']}, width {cfg['width']}, depth {cfg['depth']}, "
                      f"n={cfg['num_examples']}")
    axes[1].set_ylabel("sharpness λ_max(H)")
    axes[1].set_title("sharpness: GD vs flow")
    axes[2].set_ylabel("training loss")
    axes[2].set_title("loss")
    for ax in axes:
        ax.set_xlabel("GD step t")
        plotting.headroom(ax, 0.3)
        ax.legend(fontsize=6, loc="upper left" if ax is not axes[2] else "upper right")
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "gd_vs_flow")

"""Figure: Adam at the adaptive edge of stability.

(a) preconditioned sharpness ``lambda_max(P^-1 H)`` of full-batch Adam, one colour per step
size, with Adam's threshold ``(2 + 2 b1) / ((1 - b1) eta)`` dashed in the same colour (log
scale); (b) the raw sharpness ``lambda_max(H)`` of the same runs; (c) the training loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.adaptive_eos import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("adaptive_eos",)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["adaptive_eos"]
    cfg = res.config
    m: Metrics = res.metrics
    fig, axes = plotting.figure(ncols=3, width=3.3, height=2.6)
    runs = sorted(m["runs"].items(), key=lambda nr: nr[1]["eta"])
    for j, (name, r) in enumerate(runs):
        color = plotting.COLORS[j % len(plotting.COLORS)]
        s = m["summary"][name]
        steps = np.asarray(r["steps"])
        axes[0].plot(steps[1:], np.asarray(r["pre_sharpness"])[1:, 0], color=color, lw=0.8,
                     label=f"$\\eta$={r['eta']:g} (last {cfg['tail_fraction']:.0%}: "
                           f"{s['tail_ratio_mean']:.2f} of threshold)")
        axes[0].axhline(s["threshold"], color=color, ls="--", lw=0.8)
        axes[1].plot(steps, np.asarray(r["raw_sharpness"])[:, 0], color=color, lw=0.8,
                     label=f"$\\eta$={r['eta']:g}")
        loss = np.asarray(r["loss"])
        axes[2].plot(np.arange(loss.size), loss, color=color, lw=0.6,
                     label=f"$\\eta$={r['eta']:g}")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("Adam step")
    axes[0].set_title("preconditioned sharpness", fontsize=8)
    axes[0].set_ylabel(r"$\lambda_{\max}(P^{-1}H)$ (dashed: (2+2$\beta_1$)/((1-$\beta_1$)$\eta$))",
                       fontsize=7)
    axes[0].legend(fontsize=6, loc="lower right")
    axes[1].set_xlabel("Adam step")
    axes[1].set_ylabel(r"$\lambda_{\max}(H)$")
    axes[1].set_title("raw sharpness")
    axes[1].legend(fontsize=6)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("Adam step")
    axes[2].set_ylabel("training loss")
    axes[2].set_title(f"{cfg['dataset']} ({cfg['num_examples']}), width {cfg['width']}, "
                      f"{cfg['loss']}")
    axes[2].legend(fontsize=6)
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "adaptive_eos")

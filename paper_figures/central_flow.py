"""Figure: GD against its central flow and against gradient flow.

(a) training losses: GD at every step (thin), GD smoothed (centred moving average), the central
flow's predicted time-averaged loss ``L + 1/2 <H, Sigma>`` and its own ``L(w)``, and gradient flow
at time ``t eta``; (b) sharpness of GD, of the central flow (top ``k``) and of gradient flow, with
``2 / eta`` dashed; (c) distance from smoothed GD, ``(w_t + w_{t+1}) / 2``, to the central flow
and to gradient flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.central_flow import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("central_flow",)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["central_flow"]
    cfg = res.config
    m: Metrics = res.metrics
    s = m["summary"]
    steps = np.asarray(m["steps"])
    C = plotting.COLORS
    fig, axes = plotting.figure(ncols=3, width=3.3, height=2.6)
    ax = axes[0]
    gd = np.asarray(m["gd_loss"])
    ax.plot(np.arange(gd.size), gd, color="0.75", lw=0.4, label="GD (every step)")
    ax.plot(np.arange(gd.size), m["gd_loss_smoothed"], color=C[6], lw=1.0,
            label=f"GD smoothed ({cfg['smooth_window']} steps)")
    ax.plot(steps, m["cf_predicted_loss"], color=C[1], lw=1.0, ls="--",
            label=r"central flow: $L + \frac{1}{2}\langle H, \Sigma\rangle$")
    ax.plot(steps, m["cf_loss"], color=C[1], lw=0.7, ls=":", label="central flow: $L(w)$")
    ax.plot(steps, m["gf_loss"], color=C[0], lw=0.8, label=r"gradient flow at $t\eta$")
    ax.set_yscale("log")
    ax.set_xlabel("GD step t")
    ax.set_ylabel("training loss")
    ax.set_title(f"$\\eta$={cfg['learning_rate']:g}: predicted loss within "
                 f"{100 * s['cf_predicted_loss_rel_error_median']:.1f}% (median)", fontsize=7)
    ax.legend(fontsize=5.5)
    ax = axes[1]
    ax.plot(steps, m["gd_sharpness"], color=C[6], lw=0.8, label="GD")
    cf = np.asarray(m["cf_sharpness"])
    for j in range(cf.shape[1]):
        ax.plot(steps, cf[:, j], color=C[1], lw=1.0 if j == 0 else 0.6,
                ls="-" if j == 0 else "--", label=f"central flow $\\lambda_{j + 1}$")
    ax.plot(steps, m["gf_sharpness"], color=C[0], lw=0.8, label="gradient flow")
    ax.axhline(s["threshold"], color="0.3", ls="--", lw=0.8, label=r"2/$\eta$")
    ax.set_xlabel("GD step t")
    ax.set_ylabel(r"$\lambda(H)$")
    ax.set_title("sharpness")
    ax.legend(fontsize=6)
    ax = axes[2]
    ax.plot(steps, m["distance_cf"], color=C[1], label="smoothed GD to central flow")
    ax.plot(steps, m["distance_gf"], color=C[0], label="smoothed GD to gradient flow")
    if s["gd_crossing_step"] >= 0:
        ax.axvline(s["gd_crossing_step"], color="0.5", lw=0.8, ls=":",
                   label=r"GD reaches 2/$\eta$")
    ax.set_xlabel("GD step t")
    ax.set_ylabel("distance in parameter space")
    ax.set_title(f"{cfg['dataset']} ({cfg['num_examples']}), width {cfg['width']}, "
                 f"k={cfg['k']}, dt={cfg['dt']:g}", fontsize=7)
    ax.legend(fontsize=6)
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "central_flow")

"""Figure: progressive sharpening and the edge of stability under full-batch GD.

Rows: square loss, cross-entropy (the MLP), square loss (the CNN). Left: sharpness
``lambda_max(H)`` at every recorded step, one colour per step size, with ``2 / eta`` dashed in
the same colour; right: the full-batch training loss (log scale).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.edge_of_stability import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("edge_of_stability",)

_TITLES = {"mse": "square loss", "cross_entropy": "cross-entropy"}


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["edge_of_stability"]
    cfg = res.config
    m: Metrics = res.metrics
    rows = [(kind, "mlp") for kind in _TITLES
            if any(r["loss_kind"] == kind and r.get("model", "mlp") == "mlp"
                   for r in m["runs"].values())]
    if any(r.get("model", "mlp") == "cnn" for r in m["runs"].values()):
        rows.append(("mse", "cnn"))
    fig, axes = plotting.figure(nrows=len(rows), ncols=2, width=3.4, height=2.5)
    axes = np.asarray(axes).reshape(len(rows), 2)
    for row, (kind, model) in enumerate(rows):
        runs = [(n, r) for n, r in m["runs"].items()
                if r["loss_kind"] == kind and r.get("model", "mlp") == model]
        title = f"MLP, {_TITLES[kind]}" if model == "mlp" else (
            f"CNN ({cfg['cnn_width']} ch, {cfg['cnn_layers']} layers), {_TITLES[kind]}")
        ax_s, ax_l = axes[row]
        top = 0.0
        for j, (name, r) in enumerate(sorted(runs, key=lambda nr: nr[1]["eta"])):
            color = plotting.COLORS[j % len(plotting.COLORS)]
            s = m["summary"][name]
            sharp = np.asarray(r["sharpness"])[:, 0]
            ax_s.plot(r["steps"], sharp, color=color, lw=0.8,
                      label=f"$\\eta$={r['eta']:g} (last {cfg['tail_fraction']:.0%}: "
                            f"{s['tail_ratio_mean']:.2f} of 2/$\\eta$)")
            ax_s.axhline(2.0 / r["eta"], color=color, ls="--", lw=0.8)
            top = max(top, float(np.max(sharp)), 2.0 / r["eta"])
            loss = np.asarray(r["loss"])
            ax_l.plot(np.arange(loss.size), loss, color=color, lw=0.6,
                      label=f"$\\eta$={r['eta']:g}")
        ax_s.set_ylim(0, 1.15 * top)
        ax_s.set_xlabel("GD step")
        ax_s.set_ylabel(r"$\lambda_{\max}(H)$ (dashed: 2/$\eta$)")
        ax_s.set_title(f"{title}: sharpness", fontsize=7)
        ax_s.legend(fontsize=6, loc="lower right")
        ax_l.set_yscale("log")
        ax_l.set_xlabel("GD step")
        ax_l.set_ylabel("training loss")
        ax_l.set_title(f"{title}: full-batch loss", fontsize=7)
        ax_l.legend(fontsize=6)
    fig.suptitle(f"{cfg['dataset']} ({cfg['num_examples']} examples), full-batch GD; tanh MLP "
                 f"width {cfg['width']} depth {cfg['depth']}; tanh 1D CNN", fontsize=8)
    plotting.label_panels(axes.ravel())
    return plotting.save(fig, out_dir, "edge_of_stability")

"""Figure: what weight matching changes. (a) L2 distance before/after matching next to the
parameter norms; (b, c) top-k left/right singular-subspace overlap of the last hidden weight
matrix (named in the panel titles) before and after matching; (d) layer-wise midpoint barriers
(one layer interpolated, the rest held at model A) beside the second-order prediction."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.matching_anatomy import LAYER_COLUMNS, Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("matching_anatomy",)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["matching_anatomy"]
    cfg = res.config
    m: Metrics = res.metrics
    fig, axes = plotting.figure(ncols=4, width=3.0, height=2.6)
    d = m["distances"]
    ax = axes[0]
    names = ["||A||", "||B||", "before", "after"]
    ax.bar(names, [d["norm_a"], d["norm_b"], d["before"], d["after"]],
           color=[plotting.COLORS[6]] * 2 + [plotting.COLORS[0], plotting.COLORS[1]])
    ax.set_ylabel("L2 norm / distance")
    ax.set_title("L2 distance A-B, before/after WM", fontsize=8)
    layer = sorted(k for k in m["overlap_before"] if "hidden" in k)[-1]
    layer_name = layer.replace("'", "").replace("][", "/").strip("[]")
    for ax, side in ((axes[1], "left"), (axes[2], "right")):
        for j, (tag, ov) in enumerate((("before", m["overlap_before"]),
                                       ("after", m["overlap_after"]))):
            v = np.asarray(ov[layer][side])
            ax.plot(np.arange(1, v.size + 1), v, "o-", ms=2, label=f"{tag} matching",
                    color=plotting.COLORS[j])
        ax.set_xlabel("k (top singular vectors)")
        ax.set_ylabel(f"{side} subspace overlap")
        ax.set_title(f"weight matrix {layer_name}", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.legend()
    ax = axes[3]
    layers, table = list(m["layers"]), np.asarray(m["layer_table"], float)
    x = np.arange(len(layers))
    column = LAYER_COLUMNS.index
    ax.bar(x - 0.2, table[:, column("midpoint_barrier")], 0.4, label="measured (midpoint)")
    ax.bar(x + 0.2, table[:, column("predicted")], 0.4, label="2nd-order prediction")
    ax.set_xticks(x, [n.replace("'", "").replace("][", "/").strip("[]") for n in layers],
                  rotation=30, fontsize=7)
    ax.set_yscale("symlog", linthresh=1e-2)
    ax.set_xlabel("layer interpolated (others at A)")
    ax.set_ylabel("train-loss barrier")
    ax.set_title(f"layer-wise, width {cfg['width']}")
    ax.legend()
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "matching_anatomy")

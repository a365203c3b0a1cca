"""Figure: GD on attention can select a locally (not globally) optimal token.

(a) Fraction of seeds whose converged selection is globally optimal, locally optimal or neither,
per initialisation scale. (b) One example in 2-D: tokens (labelled by score, coloured by the kind
of their selection), GD paths of u_t = W_t z from several initialisations, and the SVM direction
W_mm(alpha) z of every globally or locally optimal token alpha (arrows). Tokens are drawn
magnified (stars, labelled by their score) so that they share the plot with the paths; the
legend gives the factor, and says what each colour, star, dot and arrow is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.svm_local import KINDS, Metrics, Picture
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("svm_local",)
KIND_COLOR = dict(zip(KINDS, (plotting.COLORS[2], plotting.COLORS[3], "0.6"), strict=True))


def _picture(ax, pic: Picture):
    tokens, paths = np.asarray(pic["tokens"]), np.asarray(pic["paths"])
    scale = np.abs(paths).max()
    factor = 0.3 * scale / np.abs(tokens).max()
    shown = tokens * factor  # tokens drawn magnified
    for p, tok in zip(paths, pic["final_token"]):
        color = KIND_COLOR[pic["token_kind"][tok]]
        ax.plot(p[:, 0], p[:, 1], color=color, lw=0.8, alpha=0.8)
        ax.plot(p[0, 0], p[0, 1], "o", color=color, ms=2)
    for a, (x, s) in enumerate(zip(shown, pic["scores"])):
        kind = pic["token_kind"][a]
        ax.plot(x[0], x[1], "*", color=KIND_COLOR[kind], ms=9, mec="k", mew=0.5)
        ax.annotate(f"{s:+.2f}", x, fontsize=6, xytext=(3, 3), textcoords="offset points")
        u = np.asarray(pic["svm_u"][a])
        if np.all(np.isfinite(u)) and kind != "none":
            u = 0.9 * scale * u / np.linalg.norm(u)
            ax.annotate("", xy=u, xytext=(0, 0),
                        arrowprops={"arrowstyle": "->", "color": KIND_COLOR[kind], "lw": 1.2})
    for kind, color in KIND_COLOR.items():
        ax.plot([], [], color=color, lw=2, label=kind)
    ax.plot([], [], "*", color="w", mec="k", mew=0.5, ms=8,
            label=f"token × {factor:.3g}\n(text: its score)")
    ax.plot([], [], "-", color="0.4", lw=0.8, label="GD path of u")
    ax.plot([], [], "o", color="0.4", ms=2, label="its initialisation")
    ax.plot([], [], ls="none", marker=r"$\rightarrow$", color="0.4", ms=9,
            label="SVM direction\n" + r"$W^{mm}(\alpha)\,z$ of token $\alpha$")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("u_1")
    ax.set_ylabel("u_2")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5), title_fontsize=6,
              title="colour: kind of the token\n(of a path: of the token\nit converges to)")


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["svm_local"]
    cfg = res.config
    m: Metrics = res.metrics
    fig, axes = plotting.figure(ncols=2, width=3.8, height=3.0,
                                gridspec_kw={"width_ratios": [1.0, 1.5]})
    ax = axes[0]
    scales = [str(s) for s in cfg["init_scales"]]
    bottom = np.zeros(len(scales))
    for kind, color in KIND_COLOR.items():
        vals = np.array([m["frequency"][s]["fraction"][kind] for s in scales])
        ax.bar(np.arange(len(scales)), vals, bottom=bottom, color=color, label=kind, width=0.6)
        bottom += vals
    ax.set_xticks(np.arange(len(scales)), [f"init scale {s}" for s in scales])
    ax.set_ylabel("fraction of seeds")
    ax.set_ylim(0, 1.3)  # room for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_title(f"W, n={cfg['n']}, T={cfg['T']}, d={cfg['d']}, {cfg['num_seeds']} seeds")
    ax.legend(fontsize=6, title="converged selection", title_fontsize=6, ncol=3,
              loc="upper center")
    _picture(axes[1], m["picture"])
    axes[1].set_title(f"GD paths of u = W z (T={cfg['picture_T']}, d=2)")
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "svm_local")

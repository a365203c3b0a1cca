"""Figure: 2D test-loss slices around an MLP without and with BatchNorm, along filter-normalised
Gaussian directions and along the top-2 Hessian eigenvectors (same norm); and the test loss
along the linear path and along a trained Bezier curve between two independently trained MLPs.

(a-d) Filled contours of the test loss at ``theta* + x d1 + y d2`` (star: the trained
``theta*``), with 15 colour levels at quantiles of the panel's losses (so the colour bar is not
linear in the loss); each panel names its directions on its axes and has its own colour bar.
(e) Test loss along the line and along the Bezier curve.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.surfaces import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("surfaces",)


def _contour(ax, grid, loss, title):
    levels = np.quantile(loss, np.linspace(0, 1, 15))
    cs = ax.contourf(grid, grid, loss, levels=np.unique(levels), cmap="viridis")
    ax.plot(0, 0, "r*", ms=6)
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")
    return cs


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["surfaces"]
    cfg = res.config
    m: Metrics = res.metrics
    fig, axes = plotting.figure(ncols=5, width=2.8, height=2.6,
                                gridspec_kw={"width_ratios": [1.0, 1.0, 1.0, 1.0, 1.0]})
    panels = [("none", "gauss_loss", "no BN, filter-norm."),
              ("none", "hess_loss", "no BN, Hessian"),
              ("batch", "gauss_loss", "BN, filter-norm."), ("batch", "hess_loss", "BN, Hessian")]
    seeds = tuple(cfg["direction_seeds"])
    for ax, (norm, key, title) in zip(axes[:4], panels):
        cs = _contour(ax, np.asarray(m[norm]["grid"]), np.asarray(m[norm][key]),
                      f"{title}\n(star: trained weights)")
        bar = fig.colorbar(cs, ax=ax, shrink=0.8)
        bar.set_label("test loss (quantile levels)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
        if key == "gauss_loss":
            ax.set_xlabel(f"x: Gaussian d1 (seed {seeds[0]})", fontsize=7)
            ax.set_ylabel(f"y: Gaussian d2 (seed {seeds[1]})", fontsize=7)
        else:
            lam = np.asarray(m[norm]["eigenvalues"], float)
            ax.set_xlabel(rf"x: Hessian eigvec 1 ($\lambda$={lam[0]:.3g})", fontsize=7)
            ax.set_ylabel(rf"y: Hessian eigvec 2 ($\lambda$={lam[1]:.3g})", fontsize=7)
    ax = axes[4]
    b = m["bezier"]
    ax.plot(b["t"], b["linear_loss"], "o-", ms=2, label="linear")
    ax.plot(b["t"], b["bezier_loss"], "s-", ms=2, label="Bezier (trained bend)")
    ax.set_xlabel("t (position along the path)")
    ax.set_ylabel("test loss")
    ax.set_title(f"{cfg['dataset']}, width {cfg['width']}", fontsize=8)
    plotting.headroom(ax, 0.28)  # the legend sits above both curves
    ax.legend(loc="upper center")
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "surfaces")

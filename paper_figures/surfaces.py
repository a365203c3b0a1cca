"""Figure: 2D test-loss slices around an MLP without and with BatchNorm, along filter-normalised
Gaussian directions and along the top-2 Hessian eigenvectors (same norm); and the test loss
along the linear path and along a trained Bezier curve between two independently trained MLPs."""

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
    fig, axes = plotting.figure(5, 1, width=2.6, height=2.5)
    panels = [("none", "gauss_loss", "no BN, filter-norm."),
              ("none", "hess_loss", "no BN, Hessian"),
              ("batch", "gauss_loss", "BN, filter-norm."), ("batch", "hess_loss", "BN, Hessian")]
    for ax, (norm, key, title) in zip(axes[:4], panels):
        cs = _contour(ax, np.asarray(m[norm]["grid"]), np.asarray(m[norm][key]), title)
        fig.colorbar(cs, ax=ax, shrink=0.8)
    seeds = tuple(cfg["direction_seeds"])
    axes[0].set_xlabel(f"d1 (seed {seeds[0]})")
    axes[0].set_ylabel(f"d2 (seed {seeds[1]})")
    ax = axes[4]
    b = m["bezier"]
    ax.plot(b["t"], b["linear_loss"], "o-", ms=2, label="linear")
    ax.plot(b["t"], b["bezier_loss"], "s-", ms=2, label="Bezier (trained bend)")
    ax.set_xlabel("t")
    ax.set_ylabel("test loss")
    ax.set_title(f"{cfg['dataset']}, width {cfg['width']}", fontsize=8)
    ax.legend()
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "surfaces")

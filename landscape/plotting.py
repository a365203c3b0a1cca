"""One house style for every figure, and deterministic PNG + PDF output.

This module imports matplotlib only (never JAX), so figure scripts that read stored results stay
light. ``save`` strips timestamps and software tags from the files, so the same results give
byte-identical figures. It never chooses a matplotlib backend: in Jupyter figures show inline,
and the command line that writes figure files picks a non-interactive backend itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["STYLE", "COLORS", "figure", "save", "band", "label_panels"]

COLORS = ["#1b6ca8", "#d1495b", "#66a182", "#edae49", "#8d6a9f", "#00798c", "#3d3d3d", "#f28f3b"]

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "lines.linewidth": 1.6,
    "axes.prop_cycle": matplotlib.cycler(color=COLORS),
    "svg.hashsalt": "landscape",
    "pdf.fonttype": 42,
}


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 3.2, height: float = 2.6, **kw):
    """A new figure in the house style with ``nrows x ncols`` panels of ``width x height`` inches.

    Returns ``(fig, axes)`` where ``axes`` is always a 2-D array ``(nrows, ncols)`` flattened to
    1-D when either dimension is 1.
    """
    plt.rcParams.update(STYLE)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
        constrained_layout=True, **kw,
    )
    if nrows == 1 or ncols == 1:
        axes = axes.ravel()
    return fig, axes


def save(fig, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``out_dir/stem.png`` and ``out_dir/stem.pdf`` deterministically and close ``fig``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"
    fig.savefig(png, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Producer": None,
                               "Creator": None})
    plt.close(fig)
    return [png, pdf]


def band(ax, x, samples, *, label: str | None = None, color=None, axis: int = 0, alpha=0.2):
    """Plot the mean of ``samples`` along ``axis`` with a +-1 std band; returns the line."""
    samples = np.asarray(samples, dtype=float)
    mean, std = samples.mean(axis=axis), samples.std(axis=axis)
    (line,) = ax.plot(x, mean, label=label, color=color)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=alpha, lw=0)
    return line


def label_panels(axes: Iterable, start: str = "a") -> None:
    """Write (a), (b), ... in the top-left corner of each panel."""
    for i, ax in enumerate(axes):
        ax.text(-0.02, 1.04, f"({chr(ord(start) + i)})", transform=ax.transAxes,
                fontweight="bold", va="bottom", ha="right")

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

__all__ = ["STYLE", "COLORS", "figure", "save", "band", "label_panels", "headroom",
           "smoothed_density"]

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


def figure(*, nrows: int = 1, ncols: int = 1, width: float = 3.2, height: float = 2.6, **kw):
    """A new figure in the house style with ``nrows x ncols`` panels of ``width x height`` inches.

    ``nrows`` and ``ncols`` are keyword-only, so no positional call can swap them (they mean
    what they mean in ``plt.subplots(nrows, ncols)``). Returns ``(fig, axes)`` where ``axes`` is
    always a 2-D array ``(nrows, ncols)`` flattened to 1-D when either dimension is 1.
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


def headroom(ax, fraction: float = 0.25) -> None:
    """Raise the top of ``ax``'s y-axis so that its top ``fraction`` holds no data.

    Gives an upper legend room above every curve without touching the bottom of the axis or the
    data. Call it after drawing; linear and log y-axes.
    """
    bottom, top = ax.get_ylim()
    if ax.get_yscale() == "log":
        lo, hi = np.log10(bottom), np.log10(top)
        ax.set_ylim(bottom, 10 ** ((hi - fraction * lo) / (1 - fraction)))
    elif ax.get_yscale() == "linear":
        ax.set_ylim(bottom, (top - fraction * bottom) / (1 - fraction))
    else:
        raise ValueError(f"headroom handles linear and log y-axes, not {ax.get_yscale()!r}")


def smoothed_density(nodes, weights, grid, sigma: float) -> np.ndarray:
    """Gaussian-smoothed spectral density of quadrature ``(nodes, weights)`` on ``grid``.

    ``nodes`` and ``weights`` have shape ``(num_probes, num_nodes)`` (as stored by
    ``spectral.density``); each probe's density ``sum_i w_i N(x; theta_i, sigma^2)`` is evaluated
    at every point of the 1-D ``grid`` and the probes are averaged. NumPy only; the arrays keep
    their dtype. Returns an array of ``grid``'s length.
    """
    nodes, weights, grid = np.asarray(nodes), np.asarray(weights), np.asarray(grid)
    z = (grid[:, None, None] - nodes[None]) / sigma
    kern = np.exp(-0.5 * z**2) / (sigma * np.sqrt(2 * np.pi))
    return np.mean(np.sum(kern * weights[None], axis=-1), axis=-1)

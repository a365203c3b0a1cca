"""Figure: blockwise Hessian spectra of a transformer, a CNN and an MLP (Zhang et al. 2024).

One row per model of the ``blockwise_spectra`` experiment:
(left, middle) the smoothed SLQ density of every parameter block (one curve per tensor; the
transformer's q/k/v split), at initialisation and after training, as stored by the run: the
density of ``x = asinh(lambda / tau)`` (``tau = tau_rel * max |node|``; linear near 0,
logarithmic in ``|lambda|`` beyond; tick labels show ``lambda``) on a log y-axis cut at
``DENSITY_FLOOR``. These are exactly the curves whose pairwise Jensen-Shannon distances make
the heterogeneity number.
(right) the pairwise JS distance matrix of the blocks at initialisation (0 = identical,
``sqrt(ln 2) = 0.83`` = disjoint).
Bottom: the mean pairwise JS distance per model (init and trained), for leaf blocks on the
asinh axis (the headline), on the linear axis, shape-only (each block divided by its largest
``|eigenvalue|``), and for the transformer's per-head blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.blockwise_spectra import Metrics, Partition
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("blockwise_spectra",)
DENSITY_FLOOR = 1e-4  # bottom of the density axes
MAX_JS = float(np.sqrt(np.log(2.0)))


def _ticks(ax, tau: float, lo: float, hi: float):
    """Ticks at 0 and +-10^e inside the axis, every ``step`` decades (at most ~9 ticks)."""
    exps = [e for e in range(-15, 16) if 10.0**e >= tau]
    for step in (1, 2, 3, 4, 6):
        values = [0.0] + [s * 10.0**e for e in exps[::step] for s in (-1.0, 1.0)
                          if lo <= np.arcsinh(s * 10.0**e / tau) <= hi]
        if len(values) <= 9:
            break
    values = sorted(values)
    ax.set_xticks([np.arcsinh(v / tau) for v in values])
    ax.set_xticklabels(["0" if v == 0 else f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
                        for v in values], fontsize=6, rotation=45)


def _densities(ax, part: Partition, title: str):
    import matplotlib

    grid, pdfs = np.asarray(part["grid"]), np.asarray(part["pdfs"])
    cmap = matplotlib.colormaps["viridis"]
    for b in range(pdfs.shape[0]):
        ax.semilogy(grid, np.maximum(pdfs[b], 1e-12), lw=0.8, alpha=0.8,
                    color=cmap(b / max(1, pdfs.shape[0] - 1)))
    ax.set_ylim(DENSITY_FLOOR, max(1.0, float(pdfs.max()) * 2))
    ax.set_xlim(grid[0], grid[-1])
    _ticks(ax, part["tau"], grid[0], grid[-1])
    ax.set_xlabel(r"eigenvalue $\lambda$ (asinh axis)", fontsize=7)
    ax.set_ylabel(f"density (cut at 1e{round(np.log10(DENSITY_FLOOR))})", fontsize=7)
    ax.set_title(f"{title}\n{pdfs.shape[0]} blocks, mean JS {part['mean_js']:.2f}", fontsize=8)


def _heatmap(fig, ax, part: Partition, title: str):
    im = ax.imshow(np.asarray(part["js"]), vmin=0.0, vmax=MAX_JS, cmap="magma")
    ax.set_title(f"{title}: pairwise JS (init)", fontsize=8)
    ax.set_xlabel("block", fontsize=7)
    ax.set_ylabel("block", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def _bars(ax, models: Mapping, names):
    series = [("leaf, asinh", lambda s: s["leaf"]["mean_js"]),
              ("leaf, linear", lambda s: s["leaf"]["mean_js_linear"]),
              ("leaf, shape only", lambda s: s["leaf"]["mean_js_shape"]),
              ("heads, asinh", lambda s: s["heads"]["mean_js"] if "heads" in s else np.nan)]
    width = 0.8 / (2 * len(series))
    for j, (label, get) in enumerate(series):
        for t, when in enumerate(("init", "trained")):
            x = np.arange(len(names)) + (2 * j + t - len(series) + 0.5) * width
            vals = [get(models[n][when]) for n in names]
            ax.bar(x, vals, width, color=plotting.COLORS[j], alpha=1.0 if t else 0.5,
                   label=f"{label} ({when})")
    ax.axhline(MAX_JS, color="0.5", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, fontsize=7)
    ax.set_ylabel("mean pairwise JS distance", fontsize=7)
    ax.set_ylim(0, 1.0)
    ax.legend(fontsize=5, ncol=4, loc="upper center")
    ax.set_title("block heterogeneity per model (light: init, dark: trained; "
                 r"dotted: $\sqrt{\ln 2}$)", fontsize=8)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["blockwise_spectra"]
    cfg = res.config
    metrics: Metrics = res.metrics
    models = metrics["models"]
    names = [n for n in cfg["models"] if n in models]
    fig, axes = plotting.figure(nrows=len(names) + 1, ncols=3, width=3.3, height=2.5)
    axes = np.asarray(axes).reshape(len(names) + 1, 3)
    for row, name in enumerate(names):
        m = models[name]
        label = f"{name}, P={m['num_params']}"
        _densities(axes[row, 0], m["init"]["leaf"], f"{label}, init")
        _densities(axes[row, 1], m["trained"]["leaf"], f"{label}, trained")
        _heatmap(fig, axes[row, 2], m["init"]["leaf"], name)
    gs = axes[-1, 0].get_gridspec()
    for ax in axes[-1]:
        ax.remove()
    bars = fig.add_subplot(gs[-1, :])
    _bars(bars, models, names)
    plotting.label_panels(list(axes[:-1].ravel()) + [bars])
    return plotting.save(fig, out_dir, "blockwise_spectra")

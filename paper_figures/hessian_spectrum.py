"""Figure: Hessian and Gauss-Newton spectra at initialisation and after training.

One row per (dataset, model) run of the ``hessian_spectrum`` experiment.

(left) SLQ spectral density on a symmetric-log axis. Each Ritz node ``theta`` (weight ``tau``)
is mapped to ``s = asinh(theta / c)`` with ``c = display_tau * lambda_max`` (``lambda_max``:
the largest final Hessian eigenvalue of that row), which is linear for ``|theta| << c`` and
logarithmic beyond, so the bulk near zero, the negative tail and the outliers are all visible;
the density of ``s`` is smoothed with a Gaussian of width ``display_sigma`` (both from the
config) and drawn on a log y-axis cut at ``DENSITY_FLOOR`` (a curve that leaves through the
bottom edge has fallen below it; the axis label says so). Tick labels show ``theta``.
(right) The top-k eigenvalues by Lanczos, with error bars equal to the explicit residuals
``||Av - theta v||`` (the certified eigenvalue error; mostly smaller than the markers), on a
log y-axis (symmetric-log if any is negative).
Every panel has its own legend (colour: operator; line style or marker fill: init/trained).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from experiments.layouts.hessian_spectrum import Metrics, Run
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("hessian_spectrum",)

_SERIES = (  # (time, operator, label, colour index, filled)
    ("init", "hessian", "H, init", 0, False),
    ("final", "hessian", "H, trained", 0, True),
    ("init", "ggn", "GGN, init", 1, False),
    ("final", "ggn", "GGN, trained", 1, True),
)
DENSITY_FLOOR = 1e-4  # bottom of the density axis


def _ticks(ax, scale, s_lo, s_hi):
    values = [0.0]
    for e in range(-8, 9):
        for sign in (-1.0, 1.0):
            v = sign * 10.0**e
            if abs(v) >= scale and s_lo <= np.arcsinh(v / scale) <= s_hi:
                values.append(v)
    values = sorted(values)
    ax.set_xticks([np.arcsinh(v / scale) for v in values])
    ax.set_xticklabels(["0" if v == 0 else f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
                        for v in values], fontsize=6, rotation=45)


def _density_panel(ax, run: Run, cfg):
    scale = cfg["display_tau"] * float(np.max(run["final"]["hessian"]["eigenvalues"]))
    nodes = [np.arcsinh(np.asarray(run[t][o]["density_nodes"]) / scale) for t, o, *_ in _SERIES]
    lo = min(float(n.min()) for n in nodes) - 1.0
    hi = max(float(n.max()) for n in nodes) + 1.0
    grid = np.linspace(lo, hi, 800)
    lowest = np.inf
    for (t, o, label, c, filled), s in zip(_SERIES, nodes):
        w = np.asarray(run[t][o]["density_weights"])
        pdf = plotting.smoothed_density(s, w, grid, cfg["display_sigma"])
        lowest = min(lowest, float(np.min(pdf)))
        ax.semilogy(grid, np.maximum(pdf, 1e-6), color=plotting.COLORS[c],
                    ls="-" if filled else "--", lw=1.2, label=label)
    ax.set_ylim(DENSITY_FLOOR, None)
    plotting.headroom(ax, 0.25)  # the legend sits above the curves
    _ticks(ax, scale, lo, hi)
    ax.set_xlabel(r"eigenvalue $\lambda$ (asinh axis)")
    cut = f", cut at $10^{{{round(np.log10(DENSITY_FLOOR))}}}$" if lowest < DENSITY_FLOOR else ""
    ax.set_ylabel("density" + cut)
    ax.legend(fontsize=6, ncol=2, loc="upper center")


def _eigen_panel(ax, run: Run, cfg):
    for t, o, label, c, filled in _SERIES:
        lam = np.asarray(run[t][o]["eigenvalues"])
        res = np.asarray(run[t][o]["residuals"])
        idx = np.arange(1, lam.size + 1) + (0.15 if o == "ggn" else -0.15)
        ax.errorbar(idx, lam, yerr=res, fmt="o", ms=3, capsize=1.5, lw=0.8,
                    color=plotting.COLORS[c], mfc=plotting.COLORS[c] if filled else "none",
                    label=label)
    every = np.concatenate([np.asarray(run[t][o]["eigenvalues"]) for t, o, *_ in _SERIES])
    if np.all(every > 0):
        ax.set_yscale("log")
    else:
        top = float(np.max(np.abs(every)))
        ax.set_yscale("symlog", linthresh=max(cfg["display_tau"] * top, 1e-12))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"index (top {cfg['top_k']}, Lanczos)")
    ax.set_ylabel(r"eigenvalue $\pm$ residual")
    ax.legend(fontsize=6, ncol=2, loc="best")


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["hessian_spectrum"]
    cfg = res.config
    metrics: Metrics = res.metrics
    runs = metrics["runs"]
    names = list(cfg["runs"])
    fig, axes = plotting.figure(nrows=len(names), ncols=2, width=3.4, height=2.5)
    axes = np.asarray(axes).reshape(len(names), 2)
    for row, name in enumerate(names):
        run = runs[name]
        _density_panel(axes[row, 0], run, cfg)
        _eigen_panel(axes[row, 1], run, cfg)
        title = (f"{name.replace('_', ' ')} (P={run['num_params']}, "
                 f"test acc {run['test_accuracy']:.2f})")
        axes[row, 0].set_title(title, fontsize=8)
        axes[row, 1].set_title(f"{name.replace('_', ' ')}: top eigenvalues, "
                               f"{cfg['curvature_examples']} examples", fontsize=8)
    plotting.label_panels(axes.ravel())
    return plotting.save(fig, out_dir, "hessian_spectrum")

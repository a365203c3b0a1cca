"""Figure: GD on separable logistic regression approaches the hard-margin SVM at rate 1/log t.

(a) The first dataset, the SVM separator and GD separators at a few times. (b) Direction gap
times log t against t (solid), the same for the predicted path w_hat log t + w_tilde (dotted) and
its limit ||P_perp w_tilde|| / ||w_hat|| (dashed). (c) The residual ||w_t - w_hat log t - w_tilde||
with the predicted power law t^-kappa (dashed). (d) Loss times t and its limit ||w_hat||^2 / eta.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.implicit_bias_logistic import Dataset, Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("implicit_bias_logistic",)


def _separators(ax, row: Dataset):
    X, y, w_hat = np.asarray(row["X"]), np.asarray(row["y"]), np.asarray(row["w_hat"])
    ax.scatter(*X[y > 0].T, s=10, color=plotting.COLORS[0], label="y=+1")
    ax.scatter(*X[y < 0].T, s=10, color=plotting.COLORS[1], label="y=-1")
    r = np.abs(X).max() * 1.1
    line = lambda w: np.array([[-w[1], w[0]], [w[1], -w[0]]]) * r / np.linalg.norm(w)  # noqa: E731
    ws, steps = np.asarray(row["ws"]), np.asarray(row["steps"])
    for k in np.linspace(0, len(steps) - 1, 4).astype(int):
        seg = line(ws[k])
        ax.plot(seg[:, 0], seg[:, 1], color="0.6", lw=0.8, alpha=0.4 + 0.6 * k / len(steps))
    ax.plot([], [], color="0.6", lw=0.8, label="GD separator")
    seg = line(w_hat)
    ax.plot(seg[:, 0], seg[:, 1], "k--", lw=1, label="hard-margin SVM")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.legend(fontsize=6)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["implicit_bias_logistic"]
    cfg = res.config
    m: Metrics = res.metrics
    fig, axes = plotting.figure(ncols=4, width=2.9, height=2.6)
    _separators(axes[0], m["datasets"][0])
    axes[0].set_title("dataset 0 (darker = later)", fontsize=8)
    for j, row in enumerate(m["datasets"]):
        steps, color = np.asarray(row["steps"]), plotting.COLORS[j]
        pred = row["prediction"]
        logt = np.log(steps)
        axes[1].plot(steps, row["gap_times_log"], color=color, label=f"dataset {j}")
        axes[1].plot(steps, np.asarray(row["predicted_gap"]) * logt, ":", color=color)
        axes[1].axhline(pred["gap_limit"], color=color, ls="--", lw=0.8)
        resid = np.asarray(row["residual"])
        fitted = row["residual_decay_exponent"]
        axes[2].plot(steps, resid, color=color,
                     label=rf"dataset {j}: $\kappa$ = {pred['exponent']:.2f} (fit {fitted:.2f})")
        axes[2].plot(steps, resid[-1] * (steps / steps[-1]) ** (-pred["exponent"]), "--",
                     color=color, lw=0.8)
        axes[3].plot(steps, np.asarray(row["loss"]) * steps, color=color, label=f"dataset {j}")
        axes[3].axhline(pred["loss_times_t"], color=color, ls="--", lw=0.8)
    for ax in axes[1:]:
        ax.set_xscale("log")
        ax.set_xlabel("GD step t")
    axes[1].set_yscale("log")
    axes[1].set_ylabel(r"direction gap $\cdot \log t$")
    axes[1].set_title(f"GD step size {cfg['learning_rate']}")
    axes[1].plot([], [], ":", color="0.4", label=r"predicted path $\hat w \log t + \tilde w$")
    axes[1].plot([], [], "--", color="0.4", lw=0.8,
                 label=r"limit $\|P_\perp \tilde w\| / \|\hat w\|$")
    axes[1].legend(fontsize=6)
    axes[2].set_yscale("log")
    axes[2].set_ylabel(r"$\|w_t - \hat w \log t - \tilde w\|$")
    axes[2].set_title(r"dashed: predicted $t^{-\kappa}$")
    axes[2].legend(fontsize=6)
    axes[3].set_ylabel(r"loss $\cdot\, t$")
    axes[3].set_title(r"dashed: $\|\hat w\|^2/\eta$")
    axes[3].legend(fontsize=6)
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "implicit_bias_logistic")

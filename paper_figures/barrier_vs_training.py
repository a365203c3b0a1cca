"""Figure: (a) test-loss barrier between two independently trained MLPs along training, without
alignment and after weight matching; (b) Frankle's instability: test-error barrier between two
children spawned at step k and trained to the end with different data orders."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.barrier_vs_training import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("barrier_vs_training",)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["barrier_vs_training"]
    cfg = res.config
    m: Metrics = res.metrics
    fig, axes = plotting.figure(ncols=2, width=3.3, height=2.6)
    steps = np.maximum(np.asarray(m["steps"]), 1)
    ax = axes[0]
    ax.plot(steps, m["naive_loss"], "o-", label="no alignment")
    ax.plot(steps, m["wm_loss"], "s-", label="weight matching")
    ax.set_xscale("log")
    ax.set_xlabel("training step (0 plotted at 1)")
    ax.set_ylabel("test-loss barrier")
    ax.set_title(f"{cfg['dataset']}, width {cfg['width']}")
    ax.legend()
    ax = axes[1]
    k = np.maximum(np.asarray(m["spawn_steps"]), 1)
    ax.plot(k, m["spawn_error"], "o-", color=plotting.COLORS[2], label="error barrier")
    ax.plot(k, m["spawn_loss"], "s--", color=plotting.COLORS[3], label="loss barrier")
    ax.set_xscale("log")
    ax.set_xlabel("spawn step k (0 plotted at 1)")
    ax.set_ylabel("barrier between children")
    ax.set_title(f"instability, children trained to {cfg['num_steps']}")
    ax.legend()
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "barrier_vs_training")

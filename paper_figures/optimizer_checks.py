"""Figure: three per-paper checks of ``landscape.optim`` on an MLP on MNIST-1D.

(a) SPAM vs Adam under injected gradient spikes (Huang et al. 2025): the minibatch loss
(moving average over ``spike_window`` steps, mean over seeds) at the learning rate where Adam
without spikes ends lowest, with (solid) and without (dashed) spikes; dotted lines mark the
spikes, triangles SPAM's momentum resets; the legend gives the final training-loss excess
caused by the spikes. (b) AdAdaGrad
(Lau, Liu, Kolar 2024): the batch size of AdaGrad-Norm under each test against the step (thin:
seeds), with the examples processed and the final training loss; dots: the batch size each
test asked for after each segment (``ada_requested``, below the line where the test passed).
(c) M-FAC vs Adam (Frantar et al. 2021): the full training-set loss of each optimizer's best
setting (mean and spread over seeds), with its test accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.optimizer_checks import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("optimizer_checks",)


def _smooth(x, w: int):
    """Moving average over ``w`` steps along the last axis ('valid' part)."""
    w = max(1, min(int(w), x.shape[-1]))
    c = np.cumsum(np.concatenate([np.zeros(x.shape[:-1] + (1,)), x], -1), -1)
    return (c[..., w:] - c[..., :-w]) / w


def _spam_panel(ax, cfg, m: Metrics):
    s = m["summary"]["spam"]
    lrs = list(cfg["learning_rates"])
    j = int(np.nanargmin(s["adam"]["train_loss_clean"]))
    w = cfg["spike_window"]
    loss = np.asarray(m["spam_step_loss"])  # [opt, spikes, lr, seed, step]
    x = np.arange(loss.shape[-1])[w - 1:]
    for o, name in enumerate(("adam", "spam")):
        color = plotting.COLORS[o]
        ex = s[name]["train_loss_excess"][j]
        ax.semilogy(x, _smooth(loss[o, 1, j], w).mean(0), color=color,
                    label=f"{name.upper() if name == 'spam' else 'Adam'} + spikes: "
                          f"excess {ex:+.3f}")
        ax.semilogy(x, _smooth(loss[o, 0, j], w).mean(0), color=color, ls="--", lw=1,
                    label="  no spikes")
    for t in np.asarray(m["spike_steps"]):
        ax.axvline(t, color="0.5", ls=":", lw=0.8)
    resets = np.arange(cfg["spam_reset_interval"], loss.shape[-1], cfg["spam_reset_interval"])
    ax.plot(resets, np.full(len(resets), 0.02), "^", ms=4, color=plotting.COLORS[1],
            transform=ax.get_xaxis_transform(), clip_on=False, label="SPAM resets")
    ax.set_xlabel("step")
    ax.set_ylabel("minibatch loss (moving avg.)")
    ax.set_title(f"SPAM vs Adam, lr {lrs[j]:g}", fontsize=9)
    plotting.headroom(ax, 0.45)
    ax.legend(fontsize=5.5, loc="upper right", ncol=1,
              title=f"{len(m['spike_steps'])} spikes: ×{cfg['spike_factor']:g} on "
                    f"{cfg['spike_fraction']:.0%} of the coordinates", title_fontsize=5.5)


def _ada_panel(ax, cfg, m: Metrics):
    s = m["summary"]["adadagrad"]
    starts = np.append(m["ada_segment_starts"], cfg["ada_num_steps"])
    b = np.asarray(m["ada_batch_size"])  # [test, seed, segment]
    b = np.concatenate([b, b[..., -1:]], -1)  # the last segment runs to ada_num_steps
    for t, test in enumerate(m["ada_tests"]):
        color = plotting.COLORS[2 + t]
        ls = "--" if test == "fixed" else "-"
        for i in range(b.shape[1]):
            ax.step(starts, b[t, i], where="post", color=color, lw=0.7, alpha=0.5, ls=ls)
        req = np.asarray(m["ada_requested"])[t]  # [seed, segment], after each segment
        ax.plot(np.broadcast_to(starts[1:], req.shape).ravel(), req.ravel(), ".", ms=2.5,
                color=color, alpha=0.7)
        ax.step(starts, b[t].mean(0), where="post", color=color, lw=1.6, ls=ls,
                label=f"{test}: {s[test]['examples']:,.0f} examples, "
                      f"loss {s[test]['final_train_loss']:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("batch size")
    ax.set_title(f"AdAdaGrad-Norm, lr {cfg['ada_learning_rate']:g}", fontsize=9)
    plotting.headroom(ax, 0.3)
    ax.legend(fontsize=5.5, loc="upper left", title=f"test every {cfg['ada_check_every']} "
              f"steps, mean of {b.shape[1]} seeds (thin: each); dots: requests",
              title_fontsize=5.5)


def _mfac_panel(ax, cfg, m: Metrics):
    s = m["summary"]["mfac"]
    steps = np.asarray(m["eval_steps"])
    loss = np.asarray(m["mfac_train_loss"])  # [opt, setting, seed, record]
    for o, (name, label, second) in enumerate((("adam", "Adam", "eps"),
                                               ("mfac", f"M-FAC m={cfg['mfac_num_grads']}",
                                                "damp"))):
        r = s[name]
        plotting.band(ax, steps, loss[o, r["best_setting"]], color=plotting.COLORS[o],
                      label=f"{label}, lr {r['best_learning_rate']:g}, {second} "
                            f"{r['best_second']:g}: test acc. {r['test_accuracy_at_best']:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    n = len(cfg["learning_rates"]) * len(cfg["mfac_damps"])
    ax.set_title("M-FAC vs Adam, best settings", fontsize=9)
    plotting.headroom(ax, 0.3)
    ax.legend(fontsize=5.5, loc="upper right", title=f"best final training loss of {n} "
              f"settings each; band: ±1 std over seeds", title_fontsize=5.5)


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["optimizer_checks"]
    cfg, m = res.config, res.metrics
    fig, axes = plotting.figure(ncols=3, width=3.3, height=2.7)
    _spam_panel(axes[0], cfg, m)
    _ada_panel(axes[1], cfg, m)
    _mfac_panel(axes[2], cfg, m)
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "optimizer_checks")

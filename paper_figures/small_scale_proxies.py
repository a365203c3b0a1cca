"""Figure: small-scale proxies for Transformer training instabilities (Wortsman et al. 2023).

Character-level transformers on the standard-library docstring corpus, AdamW over a
learning-rate sweep, in the variants plain / qk-layernorm / z-loss / both.
(a) Final validation loss against the peak learning rate, one colour per model size, one line
style per variant; crosses mark diverged runs (non-finite or above the initial loss, drawn at
the initial loss). (b) The largest attention logit (max over layers) during training of the
largest model, at the plain model's best learning rate (or, when it diverges at higher rates,
the largest at which it did not) and at the largest rate of the sweep, without (solid) and with
(dashed) qk-layernorm.
(c) The mean output ``log Z`` of the same model at the largest learning rate, without (solid)
and with (dotted) z-loss. (d) Learning-rate sensitivity ``E_eta[min(l, l0)] - min_eta l`` per
size and variant (lower: less sensitive).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.small_scale_proxies import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("small_scale_proxies",)

STYLES = {"plain": "-", "qk_layernorm": "--", "z_loss": ":", "qk_layernorm_z_loss": "-."}
LABELS = {"plain": "plain", "qk_layernorm": "qk-LN", "z_loss": "z-loss",
          "qk_layernorm_z_loss": "qk-LN + z-loss"}


def _loss_panel(ax, cfg, m: Metrics):
    lrs = np.asarray(cfg["learning_rates"])
    final, div = np.asarray(m["final_loss"]), np.asarray(m["diverged"])
    init = np.asarray(m["initial_loss"])
    for s, size in enumerate(m["sizes"]):
        color = plotting.COLORS[s]
        for j, v in enumerate(cfg["variants"]):
            y = np.where(div[s, j], init[s, j], final[s, j])
            ax.semilogx(lrs, y, STYLES[v], color=color, lw=1.2,
                        label=f"{size} ({int(m['num_params'][s, j]) / 1e3:.0f}k)" if j == 0
                        else None)
            ax.plot(lrs[div[s, j]], y[div[s, j]], "x", color=color, ms=5)
    for v in cfg["variants"]:
        ax.plot([], [], STYLES[v], color="0.3", lw=1.2, label=LABELS[v])
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final validation loss (nats)")
    ax.set_title("loss vs learning rate", fontsize=9)
    plotting.headroom(ax, 0.35)
    ax.legend(fontsize=5.5, ncol=2, loc="upper center")


def _pick_lrs(cfg, m: Metrics, s: int):
    """The plain model's best learning rate (or the largest at which it did not diverge, if it
    diverged above its best) and the largest rate of the sweep."""
    lrs = list(cfg["learning_rates"])
    j = _variant(cfg, "plain") if "plain" in cfg["variants"] else 0
    stable = [i for i in range(len(lrs)) if not m["diverged"][s, j, i]]
    best = m["best_lr"][s, j]
    picks = [lrs.index(best)] if np.isfinite(best) else []
    if stable and stable[-1] != len(lrs) - 1:
        picks = [stable[-1]]
    return sorted(set(picks + [len(lrs) - 1]))


def _variant(cfg, name):
    return list(cfg["variants"]).index(name)


def _attention_panel(ax, cfg, m: Metrics):
    s = len(m["sizes"]) - 1
    steps = np.asarray(m["record_steps"])
    attn = np.fmax.reduce(np.asarray(m["max_attention_logit"]), axis=-1)  # over layers
    lrs = cfg["learning_rates"]
    for c, i in enumerate(_pick_lrs(cfg, m, s)):
        for v in ("plain", "qk_layernorm"):
            if v in cfg["variants"]:
                ax.semilogy(steps, attn[s, _variant(cfg, v), i], STYLES[v],
                            color=plotting.COLORS[4 + c], label=f"lr {lrs[i]:g}, {LABELS[v]}")
    ax.set_xlabel("step")
    ax.set_ylabel("max attention logit")
    ax.set_title(f"attention logits, {m['sizes'][s]}", fontsize=9)
    plotting.headroom(ax, 0.3)
    ax.legend(fontsize=5.5, loc="upper left")


def _logz_panel(ax, cfg, m: Metrics):
    s = len(m["sizes"]) - 1
    steps = np.asarray(m["record_steps"])
    lrs = cfg["learning_rates"]
    i = len(lrs) - 1
    log_z = np.asarray(m["log_z"])
    for c, v in enumerate(("plain", "z_loss", "qk_layernorm", "qk_layernorm_z_loss")):
        if v in cfg["variants"]:
            ax.plot(steps, log_z[s, _variant(cfg, v), i], STYLES[v],
                    color=plotting.COLORS[c // 2 * 2], label=LABELS[v])
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_xlabel("step")
    ax.set_ylabel("mean output log Z")
    ax.set_title(f"output logits, {m['sizes'][s]}, lr {lrs[i]:g}", fontsize=9)
    plotting.headroom(ax, 0.3)
    ax.legend(fontsize=5.5, loc="upper right")


def _sensitivity_panel(ax, cfg, m: Metrics):
    sens = np.asarray(m["sensitivity"])
    variants = list(cfg["variants"])
    width = 0.8 / len(variants)
    x = np.arange(len(m["sizes"]))
    for j, v in enumerate(variants):
        ax.bar(x + (j - (len(variants) - 1) / 2) * width, sens[:, j], width,
               color=plotting.COLORS[j], label=LABELS[v])
    params = np.asarray(m["num_params"])[:, 0]
    ax.set_xticks(x, [f"{s}\n{int(p) / 1e3:.0f}k" for s, p in zip(m["sizes"], params,
                                                                   strict=True)], fontsize=6)
    ax.set_ylabel("LR sensitivity (nats)")
    ax.set_title("learning-rate sensitivity", fontsize=9)
    plotting.headroom(ax, 0.3)
    ax.legend(fontsize=5.5, ncol=2, loc="upper left")


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["small_scale_proxies"]
    cfg, m = res.config, res.metrics
    fig, axes = plotting.figure(ncols=4, width=3.0, height=2.7)
    _loss_panel(axes[0], cfg, m)
    _attention_panel(axes[1], cfg, m)
    _logz_panel(axes[2], cfg, m)
    _sensitivity_panel(axes[3], cfg, m)
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "small_scale_proxies")

"""Figure: the batch size the adaptive-sampling tests ask for, and the noise scale, over SGD.

(a) The batch size requested by the norm test (Byrd et al. 2012, eta = 0.5), the inner-product
and orthogonality tests (Bollapragada et al. 2018, theta = 0.9, nu = 5.84) and the simple noise
scale ``B_simple = tr(Sigma)/||G||^2`` (McCandlish et al. 2018, dashed) against the step, log
scale, with the training batch size (dotted); the legend gives each series' mean over the last
quarter of the records over its mean over the first quarter. (b) Their two ingredients,
``||G||^2`` and ``tr(Sigma)``, on the probe set. (c) The probe-set loss, and ``B_simple``
against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.batch_size_tests import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("batch_size_tests",)

_LABELS = {"norm_test_batch_size": "norm test (η = 0.5)",
           "inner_product_batch_size": "inner product (θ = 0.9)",
           "orthogonality_batch_size": "orthogonality (ν = 5.84)"}


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["batch_size_tests"]
    cfg = res.config
    m: Metrics = res.metrics
    s = m["summary"]["tests"]
    steps = np.asarray(m["steps"])
    fig, axes = plotting.figure(ncols=3, width=3.3, height=2.7)
    ax = axes[0]
    for j, (key, label) in enumerate(_LABELS.items()):
        ax.semilogy(steps, np.asarray(m[key]), color=plotting.COLORS[j],
                    label=f"{label}: ×{s[key]['growth']:.2g}")
    ax.semilogy(steps, np.asarray(m["noise_scale"]), color=plotting.COLORS[3], ls="--",
                label=f"B_simple: ×{s['noise_scale']['growth']:.2g}")
    ax.axhline(cfg["batch_size"], color="0.4", ls=":", lw=1,
               label=f"SGD batch size {cfg['batch_size']}")
    ax.set_ylabel("requested batch size")
    ax.set_title(f"{cfg['dataset']}, MLP {cfg['width']}x{cfg['depth']}, "
                 f"SGD η={cfg['learning_rate']:g}")
    plotting.headroom(ax, 0.3)
    ax.legend(fontsize=5.5, loc="upper left", ncol=2, title="×: last / first quarter",
              title_fontsize=5.5)

    ax = axes[1]
    ax.semilogy(steps, np.asarray(m["grad_norm"]) ** 2, color=plotting.COLORS[0],
                label=r"$\|G\|^2$")
    ax.semilogy(steps, np.asarray(m["total_variance"]), color=plotting.COLORS[1],
                label=r"tr(Σ) (per example)")
    ax.set_ylabel("probe set")
    ax.set_title(f"gradient and noise, n = {cfg['probe_size']}")
    ax.legend(fontsize=6, loc="upper right")

    ax = axes[2]
    ax.semilogy(steps, np.asarray(m["loss"]), color=plotting.COLORS[6], label="loss")
    ax.set_ylabel("probe-set loss")
    ax.set_title("loss (and B_simple vs loss, inset)")
    ax.legend(fontsize=6, loc="lower left")
    inset = ax.inset_axes([0.55, 0.55, 0.42, 0.4])
    inset.loglog(np.asarray(m["loss"]), np.asarray(m["noise_scale"]), ".", ms=2,
                 color=plotting.COLORS[3])
    inset.invert_xaxis()
    inset.set_xlabel("loss", fontsize=6, labelpad=1)
    inset.set_ylabel("B_simple", fontsize=6, labelpad=1)
    inset.tick_params(labelsize=5)
    for ax in axes:
        ax.set_xlabel("SGD step")
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "batch_size_tests")

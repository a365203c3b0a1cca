"""Figure: test accuracy against the fraction of MNIST-1D pruned by each method (Paul et al. 2021).

(a) Test accuracy of a CNN trained on the kept examples against the fraction pruned, one colour
per method (EL2N and GraNd keep the highest scores, ``easiest`` the lowest EL2N, ``random`` a
uniform subset): the mean over final-training seeds with their range as a band, and the
unpruned accuracy dotted. (b) Training accuracy on the kept examples (how hard the kept subset
is to fit). (c) EL2N against GraNd after the same short training, one point per training
example, with the rank correlation in the title.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.layouts.data_diet import Metrics
from landscape import plotting
from landscape.experiment import Result

EXPERIMENTS = ("data_diet",)

LABELS = {"el2n": "EL2N (early)", "grand_early": "GraNd (early)", "grand_init": "GraNd (init)",
          "random": "random", "easiest": "easiest EL2N kept"}


def draw(results: Mapping[str, Result], out_dir: Path) -> list[Path]:
    res = results["data_diet"]
    cfg = res.config
    m: Metrics = res.metrics
    fr = np.asarray(m["fractions"])
    order = np.argsort(fr, kind="stable")
    fig, axes = plotting.figure(ncols=3, width=3.3, height=2.8)
    for j, method in enumerate(m["methods"]):
        color = plotting.COLORS[j % len(plotting.COLORS)]
        for ax, key in ((axes[0], "test_accuracy"), (axes[1], "train_accuracy")):
            acc = np.asarray(m[key][method])[order]
            ax.plot(fr[order], acc.mean(axis=1), "o-", ms=3, color=color,
                    label=LABELS.get(method, method))
            ax.fill_between(fr[order], acc.min(axis=1), acc.max(axis=1), color=color,
                            alpha=0.15, lw=0)
    axes[0].axhline(m["summary"]["full_accuracy"], color="0.4", ls=":", lw=0.9,
                    label="no pruning")
    seeds = np.asarray(m["test_accuracy"][m["methods"][0]]).shape[1]
    axes[0].set_title(f"MNIST-1D, CNN1D, n={cfg['num_train']}, {seeds} seed(s)")
    axes[0].set_ylabel("test accuracy")
    axes[1].set_ylabel("train accuracy on kept examples")
    axes[1].set_title(f"same {cfg['num_steps']} steps on every subset")
    for ax, loc in ((axes[0], "lower left"), (axes[1], "lower right")):
        ax.set_xlabel("fraction of training set pruned")
        ax.set_ylim(top=1.005)  # accuracies: nothing above 1
        ax.legend(fontsize=6, loc=loc, ncols=2)
    sc = m["scores"]
    axes[2].scatter(np.asarray(sc["grand_early"]), np.asarray(sc["el2n"]), s=2, alpha=0.3,
                    color=plotting.COLORS[0], lw=0, rasterized=True)
    rho = m["summary"]["spearman"]["grand_early"]
    axes[2].set_title(f"Spearman ρ = {rho:.2f}")
    axes[2].set_xlabel(f"GraNd after {cfg['score_epochs']} epoch(s), mean of "
                       f"{cfg['score_seeds']} nets")
    axes[2].set_ylabel("EL2N, same networks")
    plotting.label_panels(axes)
    return plotting.save(fig, out_dir, "data_diet")

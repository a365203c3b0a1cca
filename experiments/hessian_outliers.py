"""Hessian outliers: about C eigenvalues stand out of the bulk for a C-class problem.

Reproduces the structure reported by Sagun et al. (2017), "Empirical analysis of the Hessian of
over-parametrized neural networks", and Papyan (2019, 2020), "Measurements of three-level
hierarchical structure in the outliers in the spectrum of deepnet Hessians" / "Traces of
class/cross-class structure pervade deep learning spectra": on a C-class Gaussian mixture, an
MLP trained to near-convergence has a Hessian (and GGN) spectrum made of a bulk near zero plus
a few outliers, about C of them; widening the network changes the bulk while the outliers stay;
and the outlier eigenspace is close to the span of the class-mean gradients.

For every (C, width) the run trains an MLP with Adam on full batches, then computes
* the top ``C + num_extra`` eigenpairs of the Hessian H and of the GGN G
  (``spectral.eigsh``, Lanczos with full reorthogonalisation; residuals are reported);
* the outlier count by a last-gap rule: with the top eigenvalues sorted,
  ``l_1 >= ... >= l_k``, the count is the largest ``i`` with ``l_i / l_{i+1} >= gap_threshold``
  (1.4 by default; inside the bulk consecutive ratios are mostly ~1.0-1.35). The bulk edge is
  ``l_{count+1}`` and ``outlier_gap = l_count / l_{count+1}``. The count is only as sharp as
  that threshold: report it together with the eigenvalues (figure panel a);
* the SLQ spectral density of H (``spectral.density``) for the figure;
* the overlap between the top-C eigenspace ``V`` and the span ``S`` of the C class-mean
  gradients ``g_c = grad (1/n_c) sum_{i: y_i = c} l_i``: the mean squared cosine of the
  principal angles, ``||Q_S^T V||_F^2 / C`` (1 = same subspace; a random C-dimensional
  subspace gives about ``C / P``, reported as ``overlap_random``). Near convergence the class
  means sum to about zero (``sum_c n_c g_c = n grad L``), so ``S`` is nearly (C-1)-dimensional
  and an overlap near ``(C-1)/C`` already means the class-mean span is inside the top space.
* for small models (``P <= dense_check_max_dim``) the dense Hessian's top eigenvalues
  (``numpy.linalg.eigvalsh``), as an independent check of eigsh.

``extra_seeds`` more seeds (new data, initialisation and training order) repeat the training
and the top eigenvalues of every (C, width), so the counts come with their seed-to-seed
spread; ``summary["threshold_sensitivity"]`` recounts every run at gap thresholds 1.2-2.0.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.layouts.hessian_outliers import Metrics, run_key
from landscape.experiment import RunContext, check_fields


@dataclass(frozen=True)
class Config:
    """Default: C in {2, 5, 10} x widths {16, 32, 64}, 2 hidden layers, a 20-d mixture."""

    seed: int = 0
    num_classes: tuple[int, ...] = (2, 5, 10)
    widths: tuple[int, ...] = (16, 32, 64)
    depth: int = 2
    input_dim: int = 20
    num_per_class: int = 100
    separation: float = 1.0
    noise: float = 1.0
    learning_rate: float = 1e-3
    num_steps: int = 300
    num_extra: int = 10
    curvature_batch_size: int = 1000
    density_probes: int = 4
    density_steps: int = 60
    dense_check_max_dim: int = 400
    gap_threshold: float = 1.4
    extra_seeds: int = 2

    @classmethod
    def smoke(cls) -> Config:
        return cls(
            num_classes=(2, 3),
            widths=(6,),
            depth=1,
            input_dim=4,
            num_per_class=15,
            num_steps=100,
            num_extra=3,
            curvature_batch_size=16,
            density_probes=2,
            density_steps=12,
            extra_seeds=1,
        )

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("widths", "input_dim", "num_per_class", "learning_rate",
                                     "num_steps", "curvature_batch_size", "density_probes",
                                     "density_steps"),
                     nonnegative=("depth", "separation", "noise", "num_extra",
                                  "dense_check_max_dim", "extra_seeds"))
        for key in ("num_classes", "widths"):
            if not getattr(self, key):
                raise ValueError(f"config key {key!r} must be non-empty; got ()")
        if min(self.num_classes) < 2:
            raise ValueError(f"config key 'num_classes' must be >= 2 (classes of the mixture); "
                             f"got {min(self.num_classes)}")
        if not self.gap_threshold > 1:
            raise ValueError(f"config key 'gap_threshold' must be > 1 (a ratio of consecutive "
                             f"eigenvalues); got {self.gap_threshold}")


def outlier_count(eigenvalues, gap_threshold: float = 1.4) -> int:
    """Number of eigenvalues above the last multiplicative gap of at least ``gap_threshold``.

    With ``l_1 >= ... >= l_k`` (the top of the spectrum), the count is the largest ``i < k``
    with ``l_i / l_{i+1} >= gap_threshold`` (denominators floored at ``1e-3 l_1``), or 0 when
    there is no such gap. Taking the last large gap rather than the largest one keeps a
    dominant top eigenvalue from hiding the other outliers.
    """
    lam = np.asarray(eigenvalues, np.float64)
    floor = 1e-3 * max(lam[0], np.finfo(np.float64).tiny)
    ratios = lam[:-1] / np.maximum(lam[1:], floor)
    big = np.flatnonzero(ratios >= gap_threshold)
    return int(big[-1]) + 1 if big.size else 0


def subspace_overlap(vectors, basis_vectors) -> float:
    """Mean squared cosine of the principal angles between span(vectors) and span(basis).

    Both are ``(P, k)`` column sets; the result is ``||Q_b^T Q_v||_F^2 / min(k_v, k_b)``.
    """
    qv = np.linalg.qr(np.asarray(vectors, np.float64))[0]
    qb = np.linalg.qr(np.asarray(basis_vectors, np.float64))[0]
    return float(np.sum((qb.T @ qv) ** 2) / min(qv.shape[1], qb.shape[1]))


def _class_mean_gradients(loss_per_example, params, data, num_classes):
    """``(P, C)``: columns ``grad (1/n_c) sum_{i in c} l_i`` in ravel order."""
    from landscape.tree import ravel

    def one(c):
        w = (data["y"] == c).astype(jnp.result_type(*jax.tree.leaves(params)))
        loss = lambda p: jnp.sum(w * loss_per_example(p, data)) / jnp.sum(w)
        return ravel(jax.grad(loss)(params))[0]

    return np.stack([np.asarray(one(c)) for c in range(num_classes)], axis=1)


def _spectrum(op, key, k, config, with_density):
    from landscape import spectral

    k_e, k_d = jax.random.split(key)
    r = spectral.eigsh(op, k=min(k, op.dim), which="LA", key=k_e)
    lam = np.asarray(r.eigenvalues, np.float64)
    count = outlier_count(lam, config.gap_threshold)
    out = {
        "eigenvalues": lam,
        "residuals": np.asarray(r.residuals, np.float64),
        "converged": bool(np.all(np.asarray(r.converged))),
        "num_matvecs": int(r.num_matvecs),
        "outlier_count": count,
        "bulk_edge": float(lam[count]) if count < lam.size else float("nan"),
        "outlier_gap": float(lam[count - 1] / lam[count]) if 0 < count < lam.size else 1.0,
    }
    if with_density:
        steps = min(config.density_steps, op.dim)
        d = spectral.density(op, key=k_d, num_probes=config.density_probes, num_steps=steps)
        out["density_nodes"] = np.asarray(d.nodes, np.float64)
        out["density_weights"] = np.asarray(d.weights, np.float64)
        out["num_matvecs"] += int(d.num_matvecs)
    return out, np.asarray(r.eigenvectors)


THRESHOLDS = (1.2, 1.4, 1.6, 2.0)


def run_one(config: Config, num_classes: int, width: int, seed: int | None = None,
            full: bool = True) -> dict:
    """Train one MLP on the C-class mixture and analyse its Hessian and GGN spectra.

    ``full=False`` keeps only the top eigenvalues and counts (no density, overlap or dense check).
    """

    from landscape import curvature, data, losses, models, train
    from landscape.nnx import functional

    seed = config.seed if seed is None else seed
    key = jax.random.fold_in(jax.random.key(seed), num_classes)
    k_data, k_init, k_train, k_spec = jax.random.split(jax.random.fold_in(key, width), 4)
    dataset = data.gaussian_mixture(
        jax.random.fold_in(key, 0),
        num_classes=num_classes,
        num_per_class=config.num_per_class,
        dim=config.input_dim,
        separation=config.separation,
        noise=config.noise,
    )
    model = models.MLP(
        config.input_dim, width, config.depth, num_classes, key=k_init
    )
    fm = functional(model, mode="eval")
    loss_fn = lambda p, b: losses.softmax_cross_entropy(fm.apply(p, b["x"]), b["y"])
    res = train.train(
        loss_fn,
        fm.params,
        optax.adam(config.learning_rate),
        dataset,
        key=k_train,
        num_steps=config.num_steps,
        progress=False,
    )
    params = res.params
    logits = fm.apply(params, dataset["x"])
    b = config.curvature_batch_size
    ops = {
        "hessian": curvature.hessian(loss_fn, params, dataset, batch_size=b),
        "ggn": curvature.ggn(fm.apply, "cross_entropy", params, dataset, batch_size=b),
    }
    if not full:
        k = num_classes + config.num_extra
        return {name: _spectrum(op, jax.random.fold_in(k_spec, len(name)), k, config,
                                with_density=False)[0]
                for name, op in ops.items()}
    per_example = lambda p, d: losses.softmax_cross_entropy_per_example(fm.apply(p, d["x"]), d["y"])
    means = _class_mean_gradients(per_example, params, dataset, num_classes)
    out = {
        "num_params": int(ops["hessian"].dim),
        "train_loss": float(losses.softmax_cross_entropy(logits, dataset["y"])),
        "train_accuracy": float(losses.accuracy(logits, dataset["y"])),
        "overlap_random": num_classes / ops["hessian"].dim,
    }
    for name, op in ops.items():
        k = num_classes + config.num_extra
        key_op = jax.random.fold_in(k_spec, len(name))
        spec, vecs = _spectrum(op, key_op, k, config, with_density=name == "hessian")
        spec["overlap"] = subspace_overlap(vecs[:, :num_classes], means)
        out[name] = spec
    if out["num_params"] <= config.dense_check_max_dim:
        top = np.linalg.eigvalsh(np.asarray(curvature.dense(ops["hessian"]), np.float64))[::-1]
        out["dense_hessian_top"] = top[: out["hessian"]["eigenvalues"].size]
    return out


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    grid = [(c, w) for c in config.num_classes for w in config.widths]
    runs = {}
    for c, w in ctx.progress(grid, desc="hessian_outliers", total=len(grid)):
        key = run_key(c, w)
        runs[key] = ctx.stage(key, lambda c=c, w=w: run_one(config, c, w))
        ctx.log(f"C={c} width={w}: outliers H={runs[key]['hessian']['outlier_count']}"
                f" G={runs[key]['ggn']['outlier_count']}")
    seeds = [config.seed + 1 + i for i in range(config.extra_seeds)]
    extra = {}
    for c, w, sd in ctx.progress([(c, w, sd) for c, w in grid for sd in seeds],
                                 desc="hessian_outliers, extra seeds",
                                 total=len(grid) * len(seeds)):
        extra[(c, w, sd)] = ctx.stage(f"C{c}_w{w}_seed{sd}", lambda c=c, w=w, sd=sd: run_one(
            config, c, w, seed=sd, full=False))

    def by_seed(kind, th):
        return [[[outlier_count(r[kind]["eigenvalues"], th)
                  for r in [runs[run_key(c, w)]] + [extra[(c, w, sd)] for sd in seeds]]
                 for w in config.widths] for c in config.num_classes]

    summary = {
        "seeds": [config.seed, *seeds],
        "threshold_sensitivity": {
            str(th): {kind: by_seed(kind, th) for kind in ("hessian", "ggn")}
            for th in THRESHOLDS},
    }
    summary |= {
        kind: {
            "counts_by_seed": by_seed(kind, config.gap_threshold),
            "outlier_count": [
                [runs[run_key(c, w)][kind]["outlier_count"] for w in config.widths]
                for c in config.num_classes
            ],
            "overlap": [
                [runs[run_key(c, w)][kind]["overlap"] for w in config.widths]
                for c in config.num_classes
            ],
            "bulk_edge": [
                [runs[run_key(c, w)][kind]["bulk_edge"] for w in config.widths]
                for c in config.num_classes
            ],
        }
        for kind in ("hessian", "ggn")
    }
    return {"runs": runs, "summary": summary}

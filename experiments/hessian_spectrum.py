"""Hessian and Gauss-Newton spectra of small networks at initialisation and after training.

For each dataset (scikit-learn digits, MNIST-1D) and model (MLP, CNN) the run trains with Adam
on minibatches and, at initialisation and at the end of training, analyses two curvature
operators of the mean cross-entropy over a fixed subset of ``curvature_examples`` training
examples (the same subset at both times; a subset keeps each product cheap):

* the Hessian ``H`` (``curvature.hessian``) and the Gauss-Newton matrix ``G``
  (``curvature.ggn``; PSD, ``H = G +`` a term weighted by the residuals);
* the top ``top_k`` eigenvalues by Lanczos with full reorthogonalisation
  (``spectral.eigsh``, which="LA"), each with its explicit residual ``||Av - theta v||``,
  which bounds the eigenvalue error, and a convergence flag;
* the spectral density by stochastic Lanczos quadrature (``spectral.density``,
  ``density_probes`` Rademacher probes x ``density_steps`` steps): raw nodes and weights are
  stored; the figure smooths them on a symmetric-log axis (see ``paper_figures``);
* ``tr/P`` from the SLQ first moment (with its standard error) and the negative-to-positive
  curvature-mass ratio ``sum_{l<0}|l| / sum_{l>0} l`` estimated from the same quadrature.

Expected (Sagun et al. 2017; Ghorbani, Krishnan, Xiao 2019; Papyan 2020): the density is a bulk
concentrated near zero plus a handful of outliers (about one per class, C = 10); training moves
outliers away from the bulk; the Hessian has negative mass that shrinks with training while
``G`` has none; the top eigenvalues of ``H`` and ``G`` nearly coincide at the end of training.

Default config: MLP 2x32 and CNN 2 layers of width 8 (about 0.9k-3.5k parameters), 3000 Adam
steps, curvature on 500 training examples (convolution HVPs are the cost on CPU), SLQ with
5 probes x 60 steps; about 3 CPU-minutes in all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import numpy as np
import optax

from experiments.layouts.hessian_spectrum import Metrics
from landscape.experiment import RunContext, check_fields

_DATASETS = ("digits", "mnist1d")
_MODELS = ("mlp", "cnn")


@dataclass(frozen=True)
class Config:
    """Every field has a default; the default is the science run."""

    seed: int = 0
    # "DATASET_MODEL" with DATASET in {digits, mnist1d} and MODEL in {mlp, cnn}.
    runs: tuple[Literal["digits_mlp", "digits_cnn", "mnist1d_mlp", "mnist1d_cnn"], ...] = (
        "digits_mlp", "digits_cnn", "mnist1d_mlp", "mnist1d_cnn")
    mlp_width: int = 32
    mlp_depth: int = 2
    cnn_width: int = 8
    cnn_layers: int = 2
    mnist1d_train: int = 4000
    learning_rate: float = 1e-3
    num_steps: int = 3000
    batch_size: int = 128
    curvature_examples: int = 500
    curvature_batch_size: int = 500
    top_k: int = 20
    eigsh_max_steps: int = 150
    density_probes: int = 5
    density_steps: int = 60
    # Display of the density (read by the figure): x = asinh(lambda / (display_tau * l_max)),
    # Gaussian smoothing of width display_sigma in that coordinate.
    display_tau: float = 1e-3
    display_sigma: float = 0.15
    # Models with at most this many parameters also get the dense Hessian's top eigenvalues
    # (numpy.linalg.eigvalsh of curvature.dense) at the end, as an independent check.
    dense_check_max_dim: int = 500

    @classmethod
    def smoke(cls) -> Config:
        return cls(runs=("digits_cnn", "mnist1d_mlp"), mlp_width=8, mlp_depth=1, cnn_width=4,
                   cnn_layers=1, mnist1d_train=200, num_steps=20, batch_size=32,
                   curvature_examples=64, curvature_batch_size=64, top_k=3,
                   eigsh_max_steps=20, density_probes=2, density_steps=10)

    def __post_init__(self):
        """Reject values ``run`` cannot use before any work (``make_config`` reports them)."""
        check_fields(self, positive=("mlp_width", "cnn_width", "cnn_layers", "mnist1d_train",
                                     "learning_rate", "num_steps", "batch_size",
                                     "curvature_examples", "curvature_batch_size", "top_k",
                                     "eigsh_max_steps", "density_probes", "density_steps",
                                     "display_tau", "display_sigma"),
                     nonnegative=("mlp_depth", "dense_check_max_dim"),
                     choices={"runs": [f"{d}_{m}" for d in _DATASETS for m in _MODELS]})
        if not self.runs:
            raise ValueError("config key 'runs' must be non-empty; got ()")
        if self.eigsh_max_steps < self.top_k:
            raise ValueError(f"config key 'eigsh_max_steps' must be >= top_k ({self.top_k}): "
                             f"Lanczos needs at least k steps for k eigenpairs; "
                             f"got {self.eigsh_max_steps}")
        if any(r.startswith("mnist1d_") for r in self.runs):
            for key in ("batch_size", "curvature_examples"):
                if getattr(self, key) > self.mnist1d_train:
                    raise ValueError(f"config key {key!r} must be <= mnist1d_train "
                                     f"({self.mnist1d_train}); got {getattr(self, key)}")


def _load(name: str, key, config: Config, flatten: bool):
    from landscape import data

    if name == "digits":
        return data.digits(key, flatten=flatten)
    if name == "mnist1d":
        return data.mnist1d(key, num_train=config.mnist1d_train)
    raise ValueError(f"unknown dataset {name!r}; expected 'digits' or 'mnist1d'")


def _model(kind: str, dataset: str, x, key, config: Config):
    from landscape import models

    if kind == "mlp":
        in_features = int(np.prod(x.shape[1:]))
        return models.MLP(in_features, config.mlp_width, config.mlp_depth, 10, key=key)
    if kind == "cnn":
        cls = models.CNN2D if dataset == "digits" else models.CNN1D
        return cls(10, width=config.cnn_width, num_layers=config.cnn_layers, key=key)
    raise ValueError(f"unknown model {kind!r}; expected 'mlp' or 'cnn'")


def _spectrum(op, key, config: Config) -> dict:
    """Top-k eigenpairs (with residuals) and the SLQ density of one operator."""
    from landscape import spectral

    k_eig, k_den = jax.random.split(key)
    k = min(config.top_k, op.dim)
    r = spectral.eigsh(op, k=k, which="LA", key=k_eig,
                       max_steps=max(k, min(config.eigsh_max_steps, op.dim)))
    d = spectral.density(op, key=k_den, num_probes=config.density_probes,
                         num_steps=min(config.density_steps, op.dim))
    m1, m1_se = d.moment(1)
    return {
        "eigenvalues": np.asarray(r.eigenvalues, np.float64),
        "residuals": np.asarray(r.residuals, np.float64),
        "converged": np.asarray(r.converged, bool),
        "lanczos_steps": int(r.num_steps),
        "num_matvecs": int(r.num_matvecs) + int(d.num_matvecs),
        "density_nodes": np.asarray(d.nodes, np.float64),
        "density_weights": np.asarray(d.weights, np.float64),
        "trace_per_param": float(m1),
        "trace_per_param_stderr": float(m1_se),
        "neg_pos_ratio": float(spectral.negative_positive_ratio(d)),
    }


def _analyse(fm, loss_fn, params, subset, key, config: Config) -> dict:
    from landscape import curvature

    b = config.curvature_batch_size
    ops = {
        "hessian": curvature.hessian(loss_fn, params, subset, batch_size=b),
        "ggn": curvature.ggn(fm.apply, "cross_entropy", params, subset, batch_size=b),
    }
    return {name: _spectrum(op, jax.random.fold_in(key, i), config)
            for i, (name, op) in enumerate(ops.items())}


def run_one(config: Config, dataset: str, kind: str) -> dict:
    """Train one model on one dataset; spectra of H and G at init and at the end."""
    from landscape import losses, train
    from landscape.nnx import functional

    key = jax.random.fold_in(jax.random.key(config.seed), _DATASETS.index(dataset))
    k_data, k_init, k_train, k_spec = jax.random.split(
        jax.random.fold_in(key, _MODELS.index(kind)), 4)
    train_set, test_set = _load(dataset, k_data, config, flatten=kind == "mlp")
    model = _model(kind, dataset, train_set["x"], k_init, config)
    fm = functional(model, mode="eval")
    loss_fn = lambda p, b: losses.softmax_cross_entropy(fm.apply(p, b["x"]), b["y"])
    subset = jax.tree.map(lambda a: a[: config.curvature_examples], train_set)
    out = {"num_params": int(sum(np.size(x) for x in jax.tree.leaves(fm.params)))}
    out["init"] = _analyse(fm, loss_fn, fm.params, subset, jax.random.fold_in(k_spec, 0), config)
    res = train.train(loss_fn, fm.params, optax.adam(config.learning_rate), train_set,
                      key=k_train, num_steps=config.num_steps, batch_size=config.batch_size,
                      callback_every=max(1, config.num_steps // 20), progress=False)
    params = res.params
    out["final"] = _analyse(fm, loss_fn, params, subset, jax.random.fold_in(k_spec, 1), config)
    if out["num_params"] <= config.dense_check_max_dim:
        from landscape import curvature

        op = curvature.hessian(loss_fn, params, subset, batch_size=config.curvature_batch_size)
        dense = np.asarray(curvature.dense(op), np.float64)
        k = out["final"]["hessian"]["eigenvalues"].size
        out["dense_hessian_top"] = np.linalg.eigvalsh((dense + dense.T) / 2)[::-1][:k]
    for split, ds in (("train", train_set), ("test", test_set)):
        logits = fm.apply(params, ds["x"])
        out[f"{split}_loss"] = float(losses.softmax_cross_entropy(logits, ds["y"]))
        out[f"{split}_accuracy"] = float(losses.accuracy(logits, ds["y"]))
    out["loss_history_step"] = np.asarray(res.history.get("step", []), np.float64)
    out["loss_history"] = np.asarray(res.history.get("loss", []), np.float64)
    return out


def _parse_runs(names) -> list[tuple[str, str]]:
    pairs = []
    for name in names:
        dataset, _, kind = name.partition("_")
        if dataset not in _DATASETS or kind not in _MODELS:
            raise ValueError(f"runs entries must be DATASET_MODEL with DATASET in {_DATASETS} "
                             f"and MODEL in {_MODELS}; got {name!r}")
        pairs.append((dataset, kind))
    return pairs


def run(config: Config, ctx: RunContext | None = None) -> Metrics:
    ctx = ctx or RunContext.ephemeral()
    grid = _parse_runs(config.runs)
    runs = {}
    for d, m in ctx.progress(grid, desc="hessian_spectrum", total=len(grid)):
        name = f"{d}_{m}"
        runs[name] = ctx.stage(name, lambda d=d, m=m: run_one(config, d, m))
        top = runs[name]["final"]["hessian"]["eigenvalues"][0]
        ctx.log(f"{name}: P={runs[name]['num_params']} test acc "
                f"{runs[name]['test_accuracy']:.3f} final lambda_max(H)={top:.4g}")
    return {"runs": runs}

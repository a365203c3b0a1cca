"""Metric layout of ``blockwise_spectra``."""

from typing import NotRequired, TypedDict

import numpy as np


class Partition(TypedDict):
    """Blockwise spectra of one model at one time for one partition (``B`` blocks)."""

    names: list[str]  #: [B] block names (keystr paths; ".q/.k/.v" for split qkv; "layerL.headH")
    dims: np.ndarray  #: [B] block sizes
    nodes: np.ndarray  #: [B, probe, step] SLQ Ritz nodes of each block A[S_b, S_b]
    weights: np.ndarray  #: [B, probe, step] their Gauss weights (each probe sums to 1)
    top_eigenvalues: np.ndarray  #: [B, k] largest eigenvalues of each block (eigsh, "LA")
    top_residuals: np.ndarray  #: [B, k] their certificates |lambda - theta| <= residual
    grid: np.ndarray  #: [G] common grid of the comparison, x = asinh(lambda / tau)
    tau: float  #: tau = tau_rel * max |node| over the blocks: lambda = tau sinh(x)
    pdfs: np.ndarray  #: [B, G] smoothed densities of x on grid (sigma = sigma_rel * range)
    js: np.ndarray  #: [B, B] pairwise Jensen-Shannon distances (natural log, max sqrt(ln 2))
    mean_js: float  #: mean of js over pairs b < c (asinh axis: the headline number)
    mean_js_linear: float  #: same on the linear eigenvalue axis
    mean_js_shape: float  #: same (asinh) after dividing each block by its largest |node|
    num_matvecs: int  #: Hessian-vector products spent on this partition


class Snapshot(TypedDict):
    """One model at one time (``init`` or ``trained``)."""

    leaf: Partition  #: one block per parameter tensor (qkv split into q, k, v)
    heads: NotRequired[Partition]  #: transformer only: one block per attention head
    train_loss: float  #: mean loss over the curvature examples at this time


class Model(TypedDict):
    num_params: int  #: parameters of the model
    init: Snapshot  #: at initialisation (the paper's JS^0)
    trained: Snapshot  #: after num_steps AdamW steps
    loss_history: np.ndarray  #: [record] training minibatch loss
    loss_history_step: np.ndarray  #: [record] steps of loss_history


class Corpus(TypedDict):
    """Fingerprint of the text corpus (``landscape.data.text``) the transformer trained on."""

    python_version: str  #: interpreter whose standard-library docstrings form the corpus
    sha256: str  #: sha256 of the UTF-8 text (pin it with config text_sha256)
    num_chars: int  #: characters in the corpus
    split_index: int  #: first validation character
    vocab_size: int  #: character vocabulary (97)


class Metrics(TypedDict):
    models: dict[str, Model]  #: "transformer" / "cnn" / "mlp" -> results
    corpus: NotRequired[Corpus]  #: present when the transformer ran

"""Metric layout of ``small_scale_proxies``.

Axes: ``size`` follows ``config.d_models`` (with ``n_layers``, ``n_heads``; names in ``sizes``);
``variant`` follows ``config.variants``; ``lr`` follows ``config.learning_rates``; ``record``
follows ``record_steps`` (every ``record_every`` steps from 0, then once after the last step);
``layer`` is the transformer layer, padded with NaN beyond a size's ``n_layers``. Losses are
next-character cross-entropies in nats (the z-loss term is not included, except in
``train_loss``). NaN marks a non-finite value (a run that blew up).
"""

from typing import TypedDict

import numpy as np


class Fingerprint(TypedDict):
    """The corpus the run trained on (``landscape.data.text.corpus_fingerprint``)."""

    python_version: str  #: the interpreter whose standard library gave the text
    sha256: str  #: of the UTF-8 encoded corpus
    num_chars: int  #: characters in the corpus
    split_index: int  #: first validation character (the last 10 % are validation)
    vocab_size: int  #: 97: newline, printable ASCII, one unknown id


class Metrics(TypedDict):
    fingerprint: Fingerprint
    sizes: list[str]  #: [size] "d{d_model}_l{n_layers}_h{n_heads}"
    num_params: np.ndarray  #: [size, variant] int, parameters of the model
    record_steps: np.ndarray  #: [record] int, the step of each probe record
    initial_loss: np.ndarray  #: [size, variant] validation loss at initialisation (l0)
    final_loss: np.ndarray  #: [size, variant, lr] validation loss after training (NaN: inf/NaN)
    #: [size, variant, lr] bool: final_loss not finite or above initial_loss
    diverged: np.ndarray
    #: [size, variant] Wortsman et al.'s E_lr[min(l, l0)] - min_lr l (landscape.optim.protocol)
    sensitivity: np.ndarray
    divergence_lr: np.ndarray  #: [size, variant] smallest diverged lr (NaN: none diverged)
    best_lr: np.ndarray  #: [size, variant] lr of the lowest final_loss (NaN: all diverged)
    #: [size, variant, lr, record, layer] max |q.k|/sqrt(head_dim) over causal pairs, probe batch
    max_attention_logit: np.ndarray
    final_max_attention_logit: np.ndarray  #: [size, variant, lr] max over layers, last record
    log_z: np.ndarray  #: [size, variant, lr, record] mean log of the softmax normaliser Z
    max_abs_logit: np.ndarray  #: [size, variant, lr, record] largest |output logit|
    probe_loss: np.ndarray  #: [size, variant, lr, record] cross-entropy on the probe batch
    #: [size, variant, lr, record] minibatch training loss of that step, with the z-loss term
    #: (NaN at the last record, which follows the last step)
    train_loss: np.ndarray

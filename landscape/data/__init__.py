"""Offline datasets as pytrees of arrays with a leading example axis.

Every generator is deterministic given its ``jax.random`` key (or integer seed where the
upstream generator takes one). Nothing here touches the network.

Supervised datasets are dicts ``{"x": inputs, "y": labels}``; loaders return ``(train, test)``.

Modules: ``real`` (scikit-learn digits, mnist1d), ``synthetic`` (Gaussian mixtures),
``tokens`` (token-selection data for attention), ``icl`` (in-context linear regression),
``text`` (a character-level corpus from the docstrings of the interpreter's standard library).
Their public names are re-exported here. The SVM constraint algebra over token data lives in
``landscape.attention.constraints``.
"""

from landscape.data import text
from landscape.data.icl import icl_tokens, linear_regression_tasks
from landscape.data.real import digits, mnist1d, seed_from_key
from landscape.data.synthetic import gaussian_mixture
from landscape.data.text import TextData, corpus_fingerprint, stdlib_corpus, stdlib_text
from landscape.data.tokens import (
    TokenData,
    optimal_tokens,
    score_gap,
    selection_mask,
    token_scores,
    token_selection_data,
)

__all__ = [
    "TextData",
    "TokenData",
    "corpus_fingerprint",
    "digits",
    "gaussian_mixture",
    "icl_tokens",
    "linear_regression_tasks",
    "mnist1d",
    "optimal_tokens",
    "score_gap",
    "seed_from_key",
    "selection_mask",
    "stdlib_corpus",
    "stdlib_text",
    "text",
    "token_scores",
    "token_selection_data",
]

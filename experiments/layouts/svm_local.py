"""Metric layout of ``svm_local``."""

from typing import TypedDict

import numpy as np

#: The kinds of a token selection (``attention.is_locally_optimal``).
KINDS = ("global", "local", "none")

#: Fraction of seeds per kind (a keyword among the keys: functional syntax).
Fraction = TypedDict("Fraction", {"global": float, "local": float, "none": float})


class Frequency(TypedDict):
    """The seeds run from one initialisation scale."""

    kinds: list[str]  #: [seed]
    fraction: Fraction
    final_corr: np.ndarray  #: [seed] NaN where the selection's SVM is infeasible
    final_mass: np.ndarray  #: [seed]
    num_wrong_tokens: list[int]  #: [seed]


class Picture(TypedDict):
    """One 2-D example with a locally optimal token, and GD paths of u = W z."""

    tokens: np.ndarray  #: [token, 2]
    scores: np.ndarray  #: [token]
    paths: np.ndarray  #: [path, step, 2]
    attempt: int  #: index of the drawn example
    final_token: list[int]  #: [path] token selected at the end
    svm_u: np.ndarray  #: [token, 2] SVM direction of each single-token selection (NaN if none)
    token_kind: list[str]  #: [token]


class Metrics(TypedDict):
    frequency: dict[str, Frequency]  #: str(init scale) -> frequency
    picture: Picture

"""SVM-equivalence checks for attention and in-context learning.

Submodules (imported lazily; their public names are re-exported here):

- ``svm``: ``att_svm`` (Frobenius via a JAX dual QP, nuclear via a cvxpy SDP, general index sets,
  LP feasibility); ``qp``: the dual QP solver itself.
- ``locality``: support tokens and local optimality of a token selection.
- ``training``: one-layer attention in ``W`` and ``(K, Q)`` trained by normalised GD, with SVM
  tracking.
- ``nonlinear``: nonlinear heads and the general SVM prediction.
- ``implicit_bias``: logistic regression on separable data (Soudry et al. 2018).
- ``icl``: linear self-attention as one step of GD (von Oswald et al. 2023).

References: Tarzanagh, Li, Zhang, Oymak (2023) "Max-margin token selection in attention
mechanism"; Tarzanagh, Li, Thrampoulidis, Oymak (2023) "Transformers as support vector machines";
Soudry et al. (2018) "The implicit bias of gradient descent on separable data"; von Oswald et al.
(2023) "Transformers learn in-context by gradient descent".
"""

from __future__ import annotations

import importlib

_MODULES = ("svm", "qp", "locality", "training", "nonlinear", "implicit_bias", "icl")


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"landscape.attention.{name}")
    for mod in _MODULES:
        module = importlib.import_module(f"landscape.attention.{mod}")
        if name in getattr(module, "__all__", ()):
            return getattr(module, name)
    raise AttributeError(f"module 'landscape.attention' has no attribute {name!r}")


def __dir__():
    names = list(_MODULES)
    for mod in _MODULES:
        names += list(getattr(importlib.import_module(f"landscape.attention.{mod}"), "__all__", ()))
    return sorted(set(names) | set(globals()))

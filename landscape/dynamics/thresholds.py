"""Stability thresholds of first-order optimizers on the quadratic model.

Near a point, ``L(w) ~ L0 + g^T w + 1/2 w^T H w``; along an eigenvector of ``H`` (or of ``P^-1 H``
for a fixed diagonal preconditioner ``P``) with eigenvalue ``lambda`` the iteration is a linear
recurrence in one coordinate ``x``, and it is stable iff every root of its characteristic
polynomial lies inside the unit circle. The first root to leave does so at ``z = -1`` (the
period-two oscillation seen at the edge of stability), which gives the threshold on ``lambda``:

* **GD**, ``x+ = (1 - eta lambda) x``: ``|1 - eta lambda| < 1`` iff ``lambda < 2 / eta``.
* **Heavy ball** (``optax.sgd(eta, momentum=beta)``: ``m+ = g + beta m``, ``x+ = x - eta m+``,
  i.e. ``x+ = x - eta lambda x + beta (x - x-)``): ``z^2 - (1 + beta - eta lambda) z + beta``
  has its root at ``-1`` when ``2 + 2 beta - eta lambda = 0``: ``lambda < (2 + 2 beta) / eta``.
* **Nesterov** (``optax.sgd(eta, momentum=beta, nesterov=True)``: ``m+ = g + beta m``,
  ``x+ = x - eta (g + beta m+)``): on ``(x, eta m)`` the matrix ``[[1 - a (1 + beta), -beta^2],
  [a, beta]]`` with ``a = eta lambda`` has ``1 + trace + det = 2 + 2 beta - a (1 + 2 beta)``:
  ``lambda < (2 + 2 beta) / ((1 + 2 beta) eta)``.
* **Adam with a frozen preconditioner** (``m+ = b1 m + (1 - b1) g``, ``x+ = x - eta P^-1 m+``):
  heavy ball with step ``eta (1 - b1)`` and momentum ``b1`` on ``P^-1 H``:
  ``lambda(P^-1 H) < (2 + 2 b1) / ((1 - b1) eta)`` (``38 / eta`` at ``b1 = 0.9``; Cohen et al.
  2022, "Adaptive gradient methods at the edge of stability"). Bias correction of ``m`` tends
  to 1 and is ignored; so is decoupled weight decay (it adds ``eta wd`` to the contraction).
* **RMSProp / Adagrad** (no momentum): GD on ``P^-1 H``: ``lambda(P^-1 H) < 2 / eta``.

The threshold is exact for a quadratic with a frozen preconditioner; on a neural network it
locates the edge of stability (Cohen et al. 2021, "Gradient descent on neural networks
typically occurs at the edge of stability").
"""

from __future__ import annotations

from landscape import validate

__all__ = ["stability_threshold", "THRESHOLD_RULES"]

THRESHOLD_RULES = ("gd", "sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")


def stability_threshold(rule: str, learning_rate: float, *, momentum: float = 0.0,
                        b1: float = 0.9):
    """The largest stable (preconditioned) sharpness of ``rule`` at step size ``learning_rate``.

    Args:
      rule: ``"gd"``/``"sgd"`` (``2 / eta``, or ``(2 + 2 momentum) / eta`` with ``momentum``),
        ``"momentum"`` (heavy ball, ``(2 + 2 beta) / eta``), ``"nesterov"``
        (``(2 + 2 beta) / ((1 + 2 beta) eta)``), ``"adam"``/``"adamw"``
        (``(2 + 2 b1) / ((1 - b1) eta)`` on ``P^-1 H``), ``"rmsprop"``/``"adagrad"``
        (``2 / eta`` on ``P^-1 H``). The module docstring derives each.
      learning_rate: ``eta > 0`` (a float or an array; the result broadcasts).
      momentum: ``beta`` in ``[0, 1)`` for the SGD rules.
      b1: Adam's first-moment decay in ``[0, 1)``.

    Returns:
      The threshold (same type as ``learning_rate``): the iteration is stable on a quadratic
      iff the (preconditioned) sharpness is below it.
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"rule must be one of {THRESHOLD_RULES}; got {rule!r}")
    if validate.is_concrete(learning_rate):
        import numpy as np

        if not np.all(np.asarray(learning_rate) > 0):
            raise ValueError(f"learning_rate must be > 0; got {learning_rate!r}")
    for name, value in (("momentum", momentum), ("b1", b1)):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{name} must be in [0, 1); got {value!r}")
    eta = learning_rate
    if rule in ("gd", "sgd", "momentum"):
        return (2 + 2 * momentum) / eta
    if rule == "nesterov":
        return (2 + 2 * momentum) / ((1 + 2 * momentum) * eta)
    if rule in ("adam", "adamw"):
        return (2 + 2 * b1) / ((1 - b1) * eta)
    return 2 / eta

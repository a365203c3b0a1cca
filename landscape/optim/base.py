"""What every optimizer alias of ``landscape.optim`` shares."""

from __future__ import annotations

from typing import Any

import optax

__all__ = ["chain_with_decay_and_lr"]


def chain_with_decay_and_lr(
    transform: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: float | Any = 0.0,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """``transform``, then decoupled weight decay, then ``-learning_rate``.

    The update of an alias built here is ``u_t = -eta_t (d_t + lambda w_t)`` with ``d_t`` the
    output of ``transform`` (the AdamW convention of Loshchilov & Hutter 2019: the decay is
    scaled by the learning rate, not by the preconditioner). ``learning_rate`` is a float or an
    ``optax`` schedule of the step count; ``mask`` is a pytree of bools (or a function of the
    params returning one) selecting the leaves that decay, as in ``optax.add_decayed_weights``.
    The decay stage is always present (a zero ``weight_decay`` adds nothing), so that
    ``optax.inject_hyperparams`` can trace ``weight_decay`` like any other hyperparameter.
    """
    return optax.chain(transform, optax.add_decayed_weights(weight_decay, mask),
                       optax.scale_by_learning_rate(learning_rate))

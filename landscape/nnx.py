"""The one bridge between flax NNX models and landscape's pure functions.

``functional(model, mode=...)`` splits a model with ``nnx.split`` into a static graph and three
pure pytrees (plain nested dicts):

* ``params``: every ``nnx.Param`` (what curvature, connectivity and training act on);
* ``state``: every other non-RNG variable, e.g. BatchNorm running statistics (``nnx.BatchStat``);
* the RNG streams, never exposed: randomness (dropout) comes from an explicit ``key``;
* any other variable (caches, custom variables), held fixed at its split-time value.

and rebuilds the model inside a pure function with ``nnx.merge``. The mode is an explicit, static
choice made once: ``"eval"`` (BatchNorm uses running statistics, dropout off) or ``"train"``
(BatchNorm uses batch statistics and *returns* the updated running statistics; dropout on, with
the key you pass). The caller's model is never mutated.

**BatchNorm.** Train a model with BatchNorm through a ``mode="train"`` loss and ``model_state=``
(``landscape.train.train``), so that the running statistics are updated; then evaluate it, and
build curvature operators, with ``mode="eval"`` and the *trained* statistics::

    lf, params, state = loss_fn(model, mode="train")
    result = train.train(lf, params, opt, data, key=key, num_steps=n, model_state=state)
    lf_eval, _, _ = loss_fn(model, mode="eval", state=result.model_state)
    hess = curvature.hessian(lf_eval, result.params, data)

Training an eval-mode loss of a model with BatchNorm leaves the statistics frozen at their
split-time values; ``train`` then emits a :class:`FrozenBatchStatsWarning` (once per compiled
training step; filter the class if the freeze is intended).

This is the only module of landscape that imports flax.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any, Literal

import jax
from flax import nnx

from landscape import losses
from landscape.train import TRACING_STEP
from landscape.validate import check_same_structure

__all__ = ["Functional", "FrozenBatchStatsWarning", "functional", "loss_fn", "merge"]

Mode = Literal["eval", "train"]


class FrozenBatchStatsWarning(UserWarning):
    """A training step evaluates an eval-mode model with BatchNorm: its statistics stay frozen."""


_FROZEN_MESSAGE = (
    "landscape.train is training an eval-mode model that has BatchNorm running statistics: "
    "they stay frozen at their current values (every step normalises with them and never "
    "updates them). To train BatchNorm, build the loss with landscape.nnx.loss_fn(model, ..., "
    "mode='train') and pass model_state=state to train.train; then evaluate and build "
    "curvature operators with mode='eval' and the trained statistics, e.g. "
    "loss_fn(model, ..., mode='eval', state=result.model_state) or "
    "functional(model).apply(params, x, state=result.model_state). If the freeze is "
    "intended, filter landscape.nnx.FrozenBatchStatsWarning."
)


def _warn_if_training_frozen_stats() -> None:
    """Warn once per traced training step (``landscape.train.TRACING_STEP`` is set)."""
    step = TRACING_STEP.get()
    if step is None or step.get("frozen_stats_warned"):
        return
    step["frozen_stats_warned"] = True
    warnings.warn(_FROZEN_MESSAGE, FrozenBatchStatsWarning, stacklevel=3)


@dataclasses.dataclass(frozen=True)
class Functional:
    """A flax NNX model as pure functions of explicit pytrees.

    Attributes:
      graphdef: the static structure (including the mode) from ``nnx.split``.
      params: nested dict of the model's ``nnx.Param`` arrays.
      state: nested dict of non-parameter variables (BatchNorm statistics); ``{}`` if none.
      mode: ``"eval"`` or ``"train"``.
      has_rng: whether the model has dropout with a positive rate, which then needs a ``key``
        in train mode.
    """

    graphdef: Any
    params: Any
    state: Any
    mode: Mode
    has_rng: bool
    _templates: tuple = dataclasses.field(repr=False)

    def merge(self, params=None, state=None, *, key: jax.Array | None = None) -> nnx.Module:
        """Rebuild an NNX model from ``params`` and ``state`` (defaults: the split-time values)."""
        params = self.params if params is None else params
        state = self.state if state is None else state
        check_same_structure(self.params, params, "the model's params", "params")
        p_tmpl, s_tmpl, r_tmpl, rest = self._templates
        p_tmpl, s_tmpl = _filled(p_tmpl, params), _filled(s_tmpl, state)
        model = nnx.merge(self.graphdef, p_tmpl, s_tmpl, r_tmpl, rest, copy=True)
        if key is not None and self.has_rng:
            nnx.reseed(model, default=key, dropout=key)
        return model

    def apply_with_state(self, params, state, x, *, key: jax.Array | None = None):
        """``(outputs, new_state)``: one forward pass on a batch ``x`` with a leading example axis.

        In train mode ``new_state`` holds the updated BatchNorm running statistics; in eval mode
        it equals ``state`` (and inside a training step, a :class:`FrozenBatchStatsWarning` is
        emitted when there are statistics, since they would stay frozen).
        """
        self._check_key(key)
        if self.mode == "eval" and self.state:
            _warn_if_training_frozen_stats()
        model = self.merge(params, state, key=key)
        out = model(x)
        new_state = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)) if self.state else {}
        return out, new_state

    def apply(self, params, x, *, state=None, key: jax.Array | None = None):
        """``outputs = f(params, x)`` with the non-parameter ``state`` held fixed.

        In train mode a model with BatchNorm would update its statistics, which this function
        would drop; it refuses, pointing to ``apply_with_state``.
        """
        if self.mode == "train" and self.state:
            raise ValueError(
                "apply() would drop the BatchNorm statistics updated in train mode; "
                "use apply_with_state(params, state, x) instead"
            )
        return self.apply_with_state(params, self.state if state is None else state, x, key=key)[0]

    def _check_key(self, key):
        if self.mode == "train" and self.has_rng and key is None:
            raise ValueError("this model draws random numbers (dropout) in train mode: pass key=")


def _filled(template: nnx.State, values):
    template = jax.tree.map(lambda x: x, template)  # shallow copy; the template stays pristine
    if values:
        nnx.replace_by_pure_dict(template, values)
    return template


def _uses_dropout(model: nnx.Module) -> bool:
    return any(
        isinstance(node, nnx.Dropout) and node.rate > 0 for _, node in nnx.iter_graph(model)
    )


def functional(model: nnx.Module, *, mode: Mode = "eval") -> Functional:
    """Split an NNX ``model`` into a ``Functional`` in the given ``mode`` (``"eval"``/``"train"``).

    The model passed in is cloned, so its own mode and variables are untouched.
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train'; got {mode!r}")
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax nnx.Module; got {type(model).__name__}")
    model = nnx.clone(model)
    model.eval() if mode == "eval" else model.train()
    graphdef, params, stats, rngs, rest = nnx.split(
        model, nnx.Param, nnx.BatchStat, nnx.RngState, ...
    )
    return Functional(
        graphdef=graphdef,
        params=nnx.to_pure_dict(params),
        state=nnx.to_pure_dict(stats),
        mode=mode,
        has_rng=_uses_dropout(model),
        _templates=(params, stats, rngs, rest),
    )


def merge(fm: Functional, params=None, state=None) -> nnx.Module:
    """Rebuild the NNX model of ``fm`` (see ``Functional.merge``)."""
    return fm.merge(params, state)


def loss_fn(
    model: nnx.Module,
    output_loss: str | Callable = "cross_entropy",
    *,
    mode: Mode = "eval",
    state=None,
) -> tuple[Callable, Any, Any]:
    """Turn an NNX model into ``(loss_fn, params, state)``.

    Batches are dicts ``{"x": inputs, "y": targets}``; ``output_loss(outputs, targets)`` is a mean
    loss (a name from ``landscape.losses.get`` or a callable).

    * ``mode="eval"``: ``loss_fn(params, batch) -> scalar`` with the state held fixed: the
      deterministic function curvature and connectivity need. Training it leaves BatchNorm
      statistics frozen (``train`` warns with :class:`FrozenBatchStatsWarning`).
    * ``mode="train"``: ``loss_fn(params, batch, state, key=None) -> (scalar, new_state)``;
      BatchNorm uses batch statistics and the updated running statistics are returned.

    ``state``: the BatchNorm statistics to use, e.g. ``result.model_state`` after training
    (default: the model's own, at split time). In eval mode the loss holds them fixed; in both
    modes they are the returned ``state``.
    """
    fm = functional(model, mode=mode)
    if state is None:
        state = fm.state
    else:
        check_same_structure(fm.state, state, "the model's BatchNorm statistics", "state")
    out_loss = losses.get(output_loss)
    if mode == "eval":

        def eval_loss(params, batch):
            return out_loss(fm.apply(params, batch["x"], state=state), batch["y"])

        return eval_loss, fm.params, state

    def train_loss(params, batch, state, key=None):
        out, new_state = fm.apply_with_state(params, state, batch["x"], key=key)
        return out_loss(out, batch["y"]), new_state

    return train_loss, fm.params, state

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

This is the only module of landscape that imports flax.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import jax
from flax import nnx

from landscape import losses
from landscape.validate import check_same_structure

__all__ = ["Functional", "functional", "loss_fn", "merge"]

Mode = Literal["eval", "train"]


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
        it equals ``state``.
        """
        self._check_key(key)
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
) -> tuple[Callable, Any, Any]:
    """Turn an NNX model into ``(loss_fn, params, state)``.

    Batches are dicts ``{"x": inputs, "y": targets}``; ``output_loss(outputs, targets)`` is a mean
    loss (a name from ``landscape.losses.get`` or a callable).

    * ``mode="eval"``: ``loss_fn(params, batch) -> scalar`` with the state fixed at its split-time
      value: the deterministic function curvature and connectivity need.
    * ``mode="train"``: ``loss_fn(params, batch, state, key=None) -> (scalar, new_state)``;
      BatchNorm uses batch statistics and the updated running statistics are returned.
    """
    fm = functional(model, mode=mode)
    out_loss = losses.get(output_loss)
    if mode == "eval":

        def eval_loss(params, batch):
            return out_loss(fm.apply(params, batch["x"]), batch["y"])

        return eval_loss, fm.params, fm.state

    def train_loss(params, batch, state, key=None):
        out, new_state = fm.apply_with_state(params, state, batch["x"], key=key)
        return out_loss(out, batch["y"]), new_state

    return train_loss, fm.params, fm.state

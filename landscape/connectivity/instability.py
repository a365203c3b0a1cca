"""Linear-mode-connectivity instability (Frankle, Dziugaite, Roy, Carbin 2020).

Train a parent network for ``k`` steps, spawn two children from it, train each to the end with
a different data order (different keys), and measure the barrier between the children. A
network is *stable* at ``k`` when the barrier is about zero; stability sets in early in training.
The training itself is the caller's ``train_fn``, so this works with any trainer
(``landscape.train``) and any loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax

from landscape import reprs
from landscape.connectivity.paths import Path, barrier, interpolate

__all__ = ["Spawn", "spawn_and_compare"]


class Spawn(NamedTuple):
    """``path`` between the two children, its ``barrier`` (``max_minus_mean`` of the error when
    ``error_fn`` is given, else of the loss) and the children's params ``child_a``/``child_b``."""

    path: Path
    barrier: float
    child_a: object
    child_b: object

    @reprs.repr_method
    def __repr__(self) -> str:
        path = self.path
        curves = [None if getattr(path, f) is None
                  else f"{f}={reprs.curve(path.alphas, getattr(path, f))}"
                  for f in ("losses", "errors")]
        return reprs.line("Spawn", [
            f"barrier={reprs.num(self.barrier)}", f"num_points={reprs.host(path.alphas).size}",
            *curves, f"children=2 x {reprs.tree(self.child_a)}"])


def spawn_and_compare(train_fn: Callable, parent, loss_fn, dataset, *, key, error_fn=None,
                      test_dataset=None, num_points: int = 11, batch_size=None) -> Spawn:
    """Spawn two children of ``parent`` and measure their linear barrier.

    ``train_fn(params, key) -> params`` trains one child to the end; the two children get
    independent keys from ``key`` (their data orders, dropout ...).
    """
    ka, kb = jax.random.split(key)
    child_a, child_b = train_fn(parent, ka), train_fn(parent, kb)
    path = interpolate(loss_fn, child_a, child_b, dataset, num_points, error_fn=error_fn,
                       test_dataset=test_dataset, batch_size=batch_size)
    metric = "error" if error_fn is not None else "loss"
    split = "test" if test_dataset is not None else "train"
    b = barrier(path, "max_minus_mean", metric=metric, split=split)
    return Spawn(path, float(b.value), child_a, child_b)

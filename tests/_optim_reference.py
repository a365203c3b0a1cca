"""Feed the same gradients to an optimizer of ``landscape.optim`` and to its reference code.

Both sides start from the same float64 params and receive the same sequence of gradients (a
fixed sequence, not a function of the params: equality of the update rules is the point), and
the params after every step are compared. The PyTorch side sets ``p.grad`` and calls
``optimizer.step()``; the optax side applies ``tx.update`` in float64
(``jax.enable_x64``).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax


def import_fira(monkeypatch):
    """``(torch, fira.fira_adamw, fira.gradient_projection)``, skipping when missing.

    ``fira`` imports ``transformers.utils.versions.require_version`` at the top of its package
    and never calls it on the optimizer's path; when transformers is not installed a stub module
    stands in for it (through ``monkeypatch``, so it is gone after the test)."""
    import pytest

    torch = pytest.importorskip("torch")
    try:
        import transformers.utils.versions  # noqa: F401
    except ImportError:
        stub = types.ModuleType("transformers.utils.versions")
        stub.require_version = lambda *a, **k: None
        for name in ("transformers", "transformers.utils"):
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        monkeypatch.setitem(sys.modules, "transformers.utils.versions", stub)
    return (torch, pytest.importorskip("fira.fira_adamw"),
            pytest.importorskip("fira.gradient_projection"))


def gradients(shapes: dict, num_steps: int, *, seed: int = 0, spikes: tuple = ()) -> list:
    """``num_steps`` dicts of float64 NumPy gradients; ``spikes`` lists ``(step, factor)``
    pairs that multiply that step's gradient (for spike-aware optimizers)."""
    rng = np.random.default_rng(seed)
    out = [{k: rng.normal(size=s) for k, s in shapes.items()} for _ in range(num_steps)]
    for step, factor in spikes:
        out[step] = {k: factor * v for k, v in out[step].items()}
    return out


def initial_params(shapes: dict, *, seed: int = 100) -> dict:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s) for k, s in shapes.items()}


def optax_trajectory(tx: optax.GradientTransformation, params: dict, grads: list) -> list:
    """Params after each step of ``tx`` (float64)."""
    with jax.enable_x64(True):
        p = {k: jnp.asarray(v, jnp.float64) for k, v in params.items()}
        state = tx.init(p)
        step = jax.jit(tx.update)
        out = []
        for g in grads:
            u, state = step({k: jnp.asarray(v, jnp.float64) for k, v in g.items()}, state, p)
            p = optax.apply_updates(p, u)
            out.append({k: np.asarray(v) for k, v in p.items()})
        return out


def torch_trajectory(make_optimizer: Callable, params: dict, grads: list) -> list:
    """Params after each ``optimizer.step()`` of ``make_optimizer(list_of_parameters)``
    (float64), in the order of ``params``' keys."""
    import torch

    keys = list(params)
    ps = [torch.nn.Parameter(torch.tensor(params[k], dtype=torch.float64)) for k in keys]
    opt = make_optimizer(ps)
    out = []
    for g in grads:
        for p, k in zip(ps, keys, strict=True):
            p.grad = torch.tensor(g[k], dtype=torch.float64)
        opt.step()
        out.append({k: p.detach().numpy().copy() for k, p in zip(keys, ps, strict=True)})
    return out


def max_relative_error(ours: list, theirs: list) -> float:
    """``max over steps and leaves of max|a - b| / max|b|``."""
    worst = 0.0
    for a, b in zip(ours, theirs, strict=True):
        for k in b:
            den = max(float(np.max(np.abs(b[k]))), np.finfo(np.float64).tiny)
            worst = max(worst, float(np.max(np.abs(a[k] - b[k]))) / den)
    return worst

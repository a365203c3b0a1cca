"""diffGrad against the authors' corrected code and its packaged copies, in float64.

References: torch-optimizer 0.3.0 ``DiffGrad`` (a line-for-line port of the authors'
``diffGrad_v2.py``: L2 weight decay added to the gradient, ``eps`` on the uncorrected
``sqrt(v)``, previous gradient initialised to zero) and pytorch_optimizer 4.1.0 ``DiffGrad``
(the same rule with decoupled weight decay and ``1e-15`` inside the square root). The paper's
form (``eps`` after the bias correction) and the first published version's aliasing bug are
checked against NumPy transcriptions written here from the paper and from ``diffGrad.py``.
"""

from __future__ import annotations

import _optim_conventions as conv
import _optim_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from landscape.optim.diffgrad import diffgrad, scale_by_diffgrad

pytestmark = pytest.mark.single_dtype

SHAPES = {"w": (8, 6), "b": (6,), "c": (5, 4)}
STEPS = 300


def _numpy_diffgrad(params, grads, lr, b1, b2, eps, *, paper_eps, alias_previous=False):
    """Params after each step, transcribed from the paper (``paper_eps``) or the code.

    ``alias_previous`` reproduces ``diffGrad.py`` (v1): the previous gradient is the gradient
    buffer itself, which the framework overwrites in place with the next gradient.
    """
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    prev = {k: np.zeros_like(x) for k, x in p.items()}
    buf = {k: np.zeros_like(x) for k, x in p.items()}  # the framework's gradient buffer
    out, updates = [], []
    for t, g_new in enumerate(grads, start=1):
        step = {}
        for k in p:
            buf[k][...] = g_new[k]  # in-place write, as zero_grad() + backward() did
            g = buf[k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            xi = 1.0 / (1.0 + np.exp(-np.abs(prev[k] - g)))
            prev[k] = g if alias_previous else g.copy()
            bc1, bc2 = 1 - b1**t, 1 - b2**t
            if paper_eps:
                step[k] = -lr * xi * (m[k] / bc1) / (np.sqrt(v[k] / bc2) + eps)
            else:
                step[k] = -lr * np.sqrt(bc2) / bc1 * xi * m[k] / (np.sqrt(v[k]) + eps)
            p[k] = p[k] + step[k]
        out.append({k: x.copy() for k, x in p.items()})
        updates.append(step)
    return out, updates


def test_matches_torch_optimizer_v2_code():
    """Coupled L2 decay + our direction == torch-optimizer's port of ``diffGrad_v2.py``."""
    torch_optimizer = pytest.importorskip("torch_optimizer")
    grads, params = ref.gradients(SHAPES, STEPS), ref.initial_params(SHAPES)
    lr, wd = 1e-2, 0.05
    tx = optax.chain(optax.add_decayed_weights(wd), scale_by_diffgrad(0.9, 0.999, 1e-8),
                     optax.scale_by_learning_rate(lr))
    ours = ref.optax_trajectory(tx, params, grads)
    theirs = ref.torch_trajectory(
        lambda ps: torch_optimizer.DiffGrad(ps, lr=lr, betas=(0.9, 0.999), eps=1e-8,
                                           weight_decay=wd), params, grads)
    err = ref.max_relative_error(ours, theirs)
    assert err <= 1e-10, err


def test_matches_pytorch_optimizer_decoupled():
    """The alias (decoupled decay, ``eps_root=1e-15``) == pytorch_optimizer 4.1.0."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    grads, params = ref.gradients(SHAPES, STEPS, seed=5), ref.initial_params(SHAPES)
    lr, wd = 3e-3, 0.1
    ours = ref.optax_trajectory(
        diffgrad(lr, 0.8, 0.99, 1e-6, eps_root=1e-15, weight_decay=wd), params, grads)
    theirs = ref.torch_trajectory(
        lambda ps: pytorch_optimizer.DiffGrad(ps, lr=lr, betas=(0.8, 0.99), eps=1e-6,
                                              weight_decay=wd), params, grads)
    err = ref.max_relative_error(ours, theirs)
    assert err <= 1e-10, err


@pytest.mark.parametrize("paper_eps", [False, True])
def test_matches_numpy_transcription(paper_eps):
    """Both ``eps`` placements against NumPy; a large ``eps`` makes them differ visibly."""
    grads, params = ref.gradients(SHAPES, 50, seed=7), ref.initial_params(SHAPES)
    lr, b1, b2, eps = 1e-2, 0.9, 0.99, 1e-2
    ours = ref.optax_trajectory(diffgrad(lr, b1, b2, eps, paper_eps=paper_eps), params, grads)
    want, _ = _numpy_diffgrad(params, grads, lr, b1, b2, eps, paper_eps=paper_eps)
    other, _ = _numpy_diffgrad(params, grads, lr, b1, b2, eps, paper_eps=not paper_eps)
    assert ref.max_relative_error(ours, want) <= 1e-12
    assert ref.max_relative_error(ours, other) > 1e-6


def test_first_version_aliasing_was_adam_at_half_the_learning_rate():
    """``diffGrad.py`` (v1) kept a reference to the overwritten gradient buffer: from step 2 on
    ``xi = sigmoid(0) = 1/2`` and its updates are ``optax.adam(lr / 2)``'s exactly (``eps = 0``
    on both sides, since v1 and optax place ``eps`` differently); only the first step, where the
    previous gradient is still the zero tensor, is scaled by ``2 sigmoid(|g_1|)`` instead."""
    grads, params = ref.gradients(SHAPES, 40, seed=9), ref.initial_params(SHAPES)
    lr = 1e-2
    _, v1 = _numpy_diffgrad(params, grads, lr, 0.9, 0.999, 0.0, paper_eps=False,
                            alias_previous=True)
    with jax.enable_x64(True):
        adam, _ = conv.apply_sequence(
            optax.adam(lr / 2, eps=0.0), {k: jnp.asarray(x) for k, x in params.items()},
            [{k: jnp.asarray(x) for k, x in g.items()} for g in grads])
    for t, (a, b) in enumerate(zip(v1, adam, strict=True)):
        for k in a:
            factor = 2.0 / (1.0 + np.exp(-np.abs(grads[0][k]))) if t == 0 else 1.0
            np.testing.assert_allclose(a[k], factor * np.asarray(b[k]), rtol=1e-12, err_msg=k)
    # the corrected version is not Adam at half the rate
    _, v2 = _numpy_diffgrad(params, grads, lr, 0.9, 0.999, 0.0, paper_eps=False)
    assert not np.allclose(v2[5]["w"], np.asarray(adam[5]["w"]), rtol=1e-3)


def test_optax_conventions():
    conv.check_convergence(diffgrad(0.05), rosenbrock_tx=diffgrad(0.01))
    kwargs = dict(learning_rate=1e-2, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-12,
                  weight_decay=0.1)
    conv.check_inject_hyperparams(diffgrad, kwargs, {"w": (4, 3), "b": (3,)})
    conv.check_dtypes_and_state(diffgrad(1e-2), {"w": (4, 3), "b": (3,)})
    conv.check_multisteps(diffgrad(1e-2), {"w": (4, 3), "b": (3,)})
    conv.check_weight_decay_mask(diffgrad, {"learning_rate": 1e-2}, {"w": (4, 3), "b": (3,)})


def test_schedule_learning_rate():
    """A schedule reaches the update: step ``t`` is scaled by ``schedule(t)``."""
    sched = optax.linear_schedule(1e-2, 0.0, 4)
    grads = conv.gradient_sequence({"w": (3,)}, 4, seed=11)
    params = {"w": jnp.zeros(3)}
    a, _ = conv.apply_sequence(diffgrad(sched), params, grads)
    b, _ = conv.apply_sequence(diffgrad(1.0), params, grads)
    for t in range(4):
        np.testing.assert_allclose(a[t]["w"], sched(t) * b[t]["w"], rtol=1e-5, atol=1e-12)

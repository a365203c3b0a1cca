"""SPAM (``landscape.optim.spam``) against ``pytorch_optimizer.SPAM`` (4.1.0) and the optax
conventions.

The reference is ``pytorch_optimizer``'s port of the authors' code (``SPAM-Optimizer``): both
keep the global step in the bias corrections, add ``eps`` to ``sqrt(v)`` and clip against the
second moment before the step. For sparse momentum the reference draws its masks with torch's
global RNG; the test overwrites its masks with ours (:func:`spam_masks`, the same key and
phase) right after construction and after every mask refresh, so both sides mask the same
entries. Weight decay is left at zero in the reference comparisons (the reference decays only
masked entries, after the step; the alias decays through ``chain_with_decay_and_lr``).
"""

from __future__ import annotations

import _optim_conventions as conv
import _optim_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from landscape.optim.spam import scale_by_spam, spam, spam_masks, spam_warmup_factor

pytestmark = pytest.mark.single_dtype

SHAPES = {"w": (8, 6), "b": (6,), "c": (5, 4)}
STEPS = 300
SPIKES = ((25, 40.0), (130, 100.0), (215, 60.0), (260, 30.0))
HP = dict(b1=0.9, b2=0.999, eps=1e-6, threshold=5000.0, reset_interval=100, warmup_steps=20,
          clip_delay=10)
LR = 0.05


def _reference(density=1.0, key=None, **hp):
    """``make_optimizer`` for ``ref.torch_trajectory``; with a ``key``, the reference's masks
    are replaced by :func:`spam_masks` of the same phase."""
    pytest.importorskip("torch")
    spam_mod = pytest.importorskip("pytorch_optimizer.optimizer.spam")
    names = list(SHAPES)

    def make(params):
        opt = spam_mod.SPAM(params, lr=LR, betas=(hp["b1"], hp["b2"]), eps=hp["eps"],
                            threshold=hp["threshold"], update_proj_gap=hp["reset_interval"],
                            warmup_epoch=hp["warmup_steps"], grad_accu_steps=hp["clip_delay"],
                            density=density, weight_decay=0.0)
        if key is None:
            return opt
        import torch

        def set_masks(phase):
            masks = spam_masks(key, {k: np.zeros(s) for k, s in SHAPES.items()}, density, phase)
            for name, p in zip(names, params, strict=True):
                if p.dim() == 2:
                    opt.state[p]["mask"] = torch.as_tensor(np.array(masks[name]))

        class Stepper:
            def step(self):
                opt.step()
                t = opt.state["total_step"]
                if (t + 1) % hp["reset_interval"] == 0:  # the reference refreshed its masks
                    set_masks((t + 1) // hp["reset_interval"])

        set_masks(0)
        return Stepper()

    return make


def test_matches_reference_with_spikes_and_resets():
    """300 steps with 4 gradient spikes and resets at 100, 200, 300: relative error <= 1e-10;
    the spikes are clipped (the trajectory differs from the one with ``threshold=0``)."""
    grads = ref.gradients(SHAPES, STEPS, spikes=SPIKES)
    params = ref.initial_params(SHAPES)
    ours = ref.optax_trajectory(spam(LR, **HP), params, grads)
    theirs = ref.torch_trajectory(_reference(**HP), params, grads)
    err = ref.max_relative_error(ours, theirs)
    assert err <= 1e-10, err
    # the spike at step 26 inflates the second moment only without clipping
    spiky = [{k: jnp.asarray(v, jnp.float32) for k, v in g.items()} for g in grads[:26]]
    zeros = {k: jnp.zeros(s, jnp.float32) for k, s in SHAPES.items()}
    nu = {}
    for theta in (HP["threshold"], 0.0):
        tx = scale_by_spam(**{**HP, "threshold": theta})
        _, before = conv.apply_sequence(tx, zeros, spiky[:-1])
        _, after = conv.apply_sequence(tx, zeros, spiky)
        nu[theta] = before.nu["w"], after.nu["w"]
    np.testing.assert_array_equal(nu[0.0][0], nu[HP["threshold"]][0])
    assert np.max(nu[HP["threshold"]][1]) < 0.2 * np.max(nu[0.0][1])


def test_sparse_momentum_matches_reference_with_the_same_masks():
    """Density 0.5 on the 2-D leaves, masks from one key, 250 steps over 2 refreshes."""
    key = jax.random.key(3)
    grads = ref.gradients(SHAPES, 250, seed=5, spikes=SPIKES[:2])
    params = ref.initial_params(SHAPES)
    ours = ref.optax_trajectory(spam(LR, **HP, density=0.5, key=key), params, grads)
    theirs = ref.torch_trajectory(_reference(density=0.5, key=key, **HP), params, grads)
    err = ref.max_relative_error(ours, theirs)
    assert err <= 1e-10, err
    # entries outside the first mask did not move during the first period
    m0 = np.asarray(spam_masks(key, params, 0.5, 0)["w"])
    assert 0 < m0.sum() < m0.size
    np.testing.assert_array_equal(ours[98]["w"][~m0], params["w"][~m0])


def test_warmup_factor():
    """1 before the first reset; ~0.01 at a reset, rising to 1 after ``N`` steps (closed form
    of the reference's ``1 - CosineDecay(0.99, N)``)."""
    t = jnp.arange(1, 260)
    w = np.asarray(spam_warmup_factor(t, 100, 20))
    np.testing.assert_allclose(w[:99], 1.0)
    np.testing.assert_allclose(w[99], 1 - 0.99 * (1 + np.cos(np.pi / 21)) / 2, rtol=1e-6)
    assert np.all(np.diff(w[99:119]) > 0) and w[99] < 0.02
    np.testing.assert_allclose(w[119:199], 1.0)


def test_density_below_one_needs_a_key():
    with pytest.raises(ValueError, match="key"):
        scale_by_spam(density=0.5)


def test_optax_conventions():
    kw = dict(reset_interval=4, warmup_steps=2, clip_delay=2, threshold=50.0)
    conv.check_convergence(spam(0.05, reset_interval=500, warmup_steps=50),
                           rosenbrock_tx=spam(0.02, reset_interval=5000))
    # betas exact in float32: traced and constant (Python-float) hyperparameters then round
    # alike (after a reset, the bias corrections no longer cancel the rounding of 1 - b2)
    conv.check_inject_hyperparams(
        spam, dict(learning_rate=0.1, b1=0.5, b2=0.75, eps=1e-6, weight_decay=0.01, **kw),
        SHAPES)
    key = jax.random.key(0)
    conv.check_dtypes_and_state(spam(0.1, density=0.5, key=key, **kw), SHAPES)
    conv.check_multisteps(spam(0.1, **kw), SHAPES)
    conv.check_weight_decay_mask(lambda **a: spam(0.1, **kw, **a), {}, SHAPES)

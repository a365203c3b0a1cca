"""SGD-SaI against the authors' package and a NumPy transcription of the paper, in float64.

Reference: ``sgd-sai`` 1.0.3 (PyPI), class ``SGD_sai``, the authors' code (g-SNR
``||g|| / (std(g) + eps)`` of the first gradient per tensor, unbiased std with NaN mapped to 0,
momentum buffer started at ``g_1``, decay ``(1 - lr wd)``). The paper's Algorithm 1 also
divides each g-SNR by the largest one (``normalize=True``); that variant is checked against a
NumPy transcription of Algorithm 1 written here from the paper.
"""

from __future__ import annotations

import warnings

import _optim_conventions as conv
import _optim_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from landscape.optim.sgd_sai import gradient_snr, scale_by_sgd_sai, sgd_sai

pytestmark = pytest.mark.single_dtype

SHAPES = {"w": (8, 6), "b": (6,), "c": (5, 4), "s": (1,)}
STEPS = 300


def _schedule(count):
    """A cosine learning rate from 2e-2 to 2e-3 over the run (exercises the decay's lr)."""
    return 2e-3 + 9e-3 * (1 + jnp.cos(jnp.pi * count / STEPS))


LRS = [2e-3 + 9e-3 * (1 + np.cos(np.pi * t / STEPS)) for t in range(STEPS)]  # float64


def _numpy_paper(params, grads, lrs, mu, wd, eps):
    """Algorithm 1 of Xu et al. (2024), transcribed: g-SNR of the first gradient normalised by
    its maximum over blocks, ``m_1 = g_1``, EMA momentum, decoupled decay before the step."""
    p = {k: v.copy() for k, v in params.items()}
    m, snr, out = {}, {}, []
    for t, g in enumerate(grads):
        if t == 0:
            for k, x in g.items():
                sd = np.std(x, ddof=1) if x.size > 1 else 0.0
                snr[k] = np.linalg.norm(x) / (sd + eps)
            top = max(snr.values())
            snr = {k: v / top for k, v in snr.items()}
            m = {k: x.copy() for k, x in g.items()}
        else:
            m = {k: mu * m[k] + (1 - mu) * g[k] for k in g}
        for k in p:
            p[k] = p[k] - wd * lrs[t] * p[k]
            p[k] = p[k] - lrs[t] * snr[k] * m[k]
        out.append({k: v.copy() for k, v in p.items()})
    return out


def test_equals_the_authors_sgd_sai_package_with_a_schedule():
    torch = pytest.importorskip("torch")
    sgd_sai_pkg = pytest.importorskip("sgd_sai")
    params = ref.initial_params(SHAPES)
    grads = ref.gradients(SHAPES, STEPS)
    lrs = LRS

    class Scheduled:
        """Sets the group's lr to the schedule's value before each step."""

        def __init__(self, ps):
            self.opt = sgd_sai_pkg.SGD_sai(ps, lr=lrs[0], momentum=0.9, eps=1e-8,
                                           weight_decay=1e-2)
            self.t = 0

        def step(self):
            self.opt.param_groups[0]["lr"] = lrs[self.t]
            self.t += 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # std() of the one-element leaf; NaN -> 0
                self.opt.step()

    theirs = ref.torch_trajectory(Scheduled, params, grads)
    del torch
    ours = ref.optax_trajectory(sgd_sai(_schedule, 0.9, 1e-8, weight_decay=1e-2), params, grads)
    err = ref.max_relative_error(ours, theirs)
    assert err <= 1e-10, err
    # the one-element leaf got the reference's huge scale |g| / eps and moved accordingly
    assert np.max(np.abs(theirs[0]["s"] - params["s"])) > 1e3


def test_normalized_variant_equals_the_papers_algorithm():
    shapes = {k: v for k, v in SHAPES.items() if k != "s"}
    params = ref.initial_params(shapes)
    grads = ref.gradients(shapes, STEPS, seed=5)
    want = _numpy_paper(params, grads, LRS, 0.8, 3e-2, 1e-8)
    ours = ref.optax_trajectory(sgd_sai(_schedule, 0.8, 1e-8, normalize=True,
                                        weight_decay=3e-2), params, grads)
    err = ref.max_relative_error(ours, want)
    assert err <= 1e-10, err


def test_gradient_snr_values_and_the_fixed_scale():
    with jax.enable_x64(True):
        g = {"a": jnp.asarray([3.0, 4.0]), "one": jnp.asarray([2.0]), "flat": jnp.ones(4)}
        snr = gradient_snr(g, eps=1e-8)
        np.testing.assert_allclose(snr["a"], 5.0 / (1 / np.sqrt(2) + 1e-8), rtol=1e-14)
        np.testing.assert_allclose(snr["one"], 2.0 / 1e-8, rtol=1e-14)
        np.testing.assert_allclose(snr["flat"], 2.0 / 1e-8, rtol=1e-14)
        norm = gradient_snr(g, eps=1e-8, normalize=True)
        np.testing.assert_allclose(norm["one"], 1.0, rtol=1e-14)
        np.testing.assert_allclose(norm["a"], snr["a"] / snr["one"], rtol=1e-14)
        # the scale is fixed at the first step: later gradients do not change it, and with
        # momentum 0 the direction is G * g_t
        tx = scale_by_sgd_sai(momentum=0.0)
        p = {"a": jnp.zeros(2)}
        st = tx.init(p)
        _, st = tx.update({"a": jnp.asarray([3.0, 4.0])}, st)
        u, st = tx.update({"a": jnp.asarray([1.0, -1.0])}, st)
        np.testing.assert_allclose(st.gsnr["a"], snr["a"], rtol=1e-14)
        np.testing.assert_allclose(u["a"], snr["a"] * np.asarray([1.0, -1.0]), rtol=1e-14)
        assert st.count.dtype == jnp.int32 and int(st.count) == 2


def test_optax_conventions():
    shapes = {"w": (4, 3), "b": (3,)}
    # The mixed-pytree problem starts from zeros, where every leaf's first gradient is
    # constant (std 0): the reference's g-SNR is then ||g|| / eps for every leaf, and only the
    # paper's normalisation by the largest g-SNR gives usable scales, so convergence is
    # checked with normalize=True (the parabola and Rosenbrock, one leaf each, are then plain
    # SGD with EMA momentum at the given learning rate).
    conv.check_convergence(sgd_sai(0.05, momentum=0.9, normalize=True), num_steps=1500,
                           rosenbrock_tx=sgd_sai(0.02, momentum=0.9, normalize=True))
    # momentum 0.75: 1 - mu is exact in float32 both as a traced value and as a folded Python
    # constant (with 0.9 the two differ by an ulp, which the EMA's cancellations amplify)
    conv.check_inject_hyperparams(sgd_sai, dict(learning_rate=1e-2, momentum=0.75, eps=1e-8,
                                                weight_decay=1e-2), shapes)
    conv.check_dtypes_and_state(sgd_sai(1e-2, weight_decay=1e-2), shapes)
    conv.check_multisteps(sgd_sai(1e-2), shapes)
    conv.check_weight_decay_mask(sgd_sai, {"learning_rate": 1e-2}, shapes)
    # schedules and inject_hyperparams with the static flag
    tx = optax.inject_hyperparams(sgd_sai, static_args=("normalize",))(
        learning_rate=optax.linear_schedule(1e-2, 1e-3, 10), normalize=True)
    p = {"w": jnp.ones((2, 2))}
    u, _ = tx.update({"w": jnp.asarray([[1.0, 2.0], [3.0, 5.0]])}, tx.init(p), p)
    assert np.all(np.isfinite(np.asarray(u["w"])))

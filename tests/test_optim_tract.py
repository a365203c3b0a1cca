"""TrAct against NumPy transcriptions of the paper's closed form and the authors' backward.

No package of the authors' code installs (``torch_tract`` is not in the environment), so the
oracles are written here in NumPy: the paper's update ``-eta grad_W (x^T x / b + lambda I)^{-1}``
(a direct solve) and the two branches of the authors' ``TrActLinearFunction.backward``
(github.com/Felix-Petersen/tract, ``src/tract.py``: a direct inverse for ``b >= n``, a
Woodbury form for ``b < n``) and of their ``TrActConv2DFunction`` (patches by ``unfold``).
The defining property (the weight change is the ridge least-squares fit of a gradient step on
the pre-activations) is checked with autodiff.
"""

from __future__ import annotations

import _optim_conventions as conv
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from landscape.optim.tract import conv_patches, scale_by_tract, tract, tract_precondition

pytestmark = pytest.mark.single_dtype

KERNELS = {"w": True, "b": False}


def _bound(tx, inputs):
    """``tx`` with ``tract_inputs=inputs`` bound, for the shared convention checks."""

    def update(updates, state, params=None, **extra):
        return tx.update(updates, state, params, tract_inputs=inputs, **extra)

    return optax.GradientTransformation(tx.init, update)


def _authors_linear(grad_out, x, lam):
    """NumPy transcription of the authors' weight gradient (PyTorch layout ``(out, n)``)."""
    b, n = x.shape
    if b < n:
        aat = x @ x.T / b
        eye = np.eye(b)
        inner = aat @ np.linalg.inv(aat / lam + eye)
        return grad_out.T @ (eye - inner / lam) @ x / lam
    return grad_out.T @ x @ np.linalg.inv(x.T @ x / b + lam * np.eye(n))


@pytest.mark.parametrize("b", [40, 5])  # b >= n: direct solve; b < n: Woodbury branch
def test_linear_matches_paper_and_authors(b):
    rng = np.random.default_rng(0)
    n, out, lam = 8, 6, 0.1
    x = rng.normal(size=(b, n)) * np.linspace(0.2, 3.0, n)
    grad_out = rng.normal(size=(b, out)) / b  # d mean-loss / d z
    grad_w = x.T @ grad_out  # flax layout (n, out)
    paper = np.linalg.solve(x.T @ x / b + lam * np.eye(n), grad_w)
    authors = _authors_linear(grad_out, x, lam)  # (out, n)
    with jax.enable_x64(True):
        ours = np.asarray(tract_precondition(jnp.asarray(grad_w), jnp.asarray(x), lam))
        ours_t = np.asarray(tract_precondition(jnp.asarray(grad_w.T), jnp.asarray(x), lam,
                                               layout="out_in"))
    for got in (ours, ours_t.T):
        assert np.max(np.abs(got - paper)) / np.max(np.abs(paper)) <= 1e-10
        assert np.max(np.abs(got - authors.T)) / np.max(np.abs(authors)) <= 1e-10
    assert not np.allclose(ours, grad_w / lam, rtol=1e-2)  # TrAct is not a rescaled SGD here


def _unfold(x_nchw, k, stride, pad):
    """``torch.nn.functional.unfold`` in NumPy: ``(N, C*k*k, L)``, features ordered (c, i, j)."""
    x = np.pad(x_nchw, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, w = x.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    cols = np.empty((n, c, k, k, ho, wo))
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = x[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
    return cols.reshape(n, c * k * k, ho * wo)


def test_conv_matches_authors_unfold_and_conv_patches():
    """A conv kernel: our flax-layout TrAct with ``conv_patches`` equals the authors' rule on
    their PyTorch layout and ``unfold`` patches; ``conv_patches`` reproduces the convolution."""
    rng = np.random.default_rng(1)
    n_img, c, hw, k, out, stride, pad, lam = 3, 2, 6, 3, 4, 2, 1, 0.1
    x = rng.normal(size=(n_img, hw, hw, c))
    kernel = rng.normal(size=(k, k, c, out))
    with jax.enable_x64(True):
        patches = conv_patches(jnp.asarray(x), (k, k), stride, [(pad, pad)] * 2)
        z = jax.lax.conv_general_dilated(jnp.asarray(x), jnp.asarray(kernel), (stride,) * 2,
                                         [(pad, pad)] * 2,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        np.testing.assert_allclose(patches @ kernel.reshape(-1, out), z, rtol=1e-12,
                                   atol=1e-12)
        grad_z = rng.normal(size=z.shape) / n_img
        grad_k = np.einsum("nhwp,nhwo->po", patches, grad_z).reshape(kernel.shape)
        ours = np.asarray(tract_precondition(jnp.asarray(grad_k), patches, lam))
    # the authors' branch for b*H'*W' >= C*k*k, on their layout (out, c, k, k)
    a = _unfold(x.transpose(0, 3, 1, 2), k, stride, pad).transpose(0, 2, 1).reshape(-1, c * k * k)
    grad_torch = grad_k.transpose(3, 2, 0, 1).reshape(out, -1)
    want = grad_torch @ np.linalg.inv(a.T @ a / a.shape[0] + lam * np.eye(a.shape[1]))
    want = want.reshape(out, c, k, k).transpose(2, 3, 1, 0)
    assert np.max(np.abs(ours - want)) / np.max(np.abs(want)) <= 1e-10


def _first_layer_step(b, n, lam, lr=0.3, seed=2):
    """One ``tract`` step on ``L = mean_i sum tanh(z_i) * y_i``, ``z = x W + c``; returns
    ``x``, ``grad_z L``, ``grad_W L``, the weight change and the bias change (float64)."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(b, n)), rng.normal(size=(b, 3))
    params = {"w": rng.normal(size=(n, 3)), "b": rng.normal(size=(3,))}
    with jax.enable_x64(True):
        params = jax.tree.map(jnp.asarray, params)
        loss_z = lambda z: jnp.mean(jnp.sum(jnp.tanh(z) * y, axis=1))  # noqa: E731
        z = x @ params["w"] + params["b"]
        grad_z = np.asarray(jax.grad(loss_z)(z))
        grads = jax.grad(lambda p: loss_z(x @ p["w"] + p["b"]))(params)
        tx = tract(lr, lam, kernels=KERNELS)
        u, _ = tx.update(grads, tx.init(params), params, tract_inputs=jnp.asarray(x))
        return x, grad_z, np.asarray(grads["w"]), np.asarray(grads["b"]), u


def test_defining_property_ridge_fit_of_preactivation_step():
    """``Delta W`` minimises ``||x D - (-lr b grad_z L)||^2 / b + lambda ||D||^2`` (zero
    gradient of that objective); the bias takes the plain SGD step."""
    lr, lam, b = 0.3, 0.1, 30
    x, grad_z, _, grad_b, u = _first_layer_step(b, 8, lam, lr)
    dw = np.asarray(u["w"])
    target = -lr * b * grad_z
    objective_grad = 2 * x.T @ (x @ dw - target) / b + 2 * lam * dw
    assert np.max(np.abs(objective_grad)) <= 1e-12 * np.max(np.abs(x.T @ target / b))
    np.testing.assert_allclose(u["b"], -lr * grad_b, rtol=1e-14)


def test_limits_of_lambda():
    """``b < n`` and ``lambda -> 0``: the pre-activations move exactly by the gradient step
    ``-lr b grad_z L``; ``lambda -> inf``: SGD at rate ``lr / lambda``."""
    lr = 0.3
    x, grad_z, _, _, u = _first_layer_step(5, 12, 1e-6, lr)
    dz, target = x @ np.asarray(u["w"]), -lr * 5 * grad_z
    # off by a relative O(lambda / eig(x x^T / b)) ~ 1e-5
    assert np.max(np.abs(dz - target)) <= 1e-4 * np.max(np.abs(target))
    assert not np.allclose(_first_layer_step(5, 12, 1e-1, lr)[4]["w"], u["w"], rtol=1e-2)
    lam = 1e7
    x, _, grad_w, _, u = _first_layer_step(30, 8, lam, lr)
    np.testing.assert_allclose(u["w"], -lr / lam * grad_w, rtol=1e-5)


def test_extra_args_pass_through_chain_inject_and_multisteps():
    """``tract_inputs`` reaches the transformation through ``optax.chain`` (TrAct, then Adam),
    ``inject_hyperparams`` and ``MultiSteps`` (the latter applies TrAct to the averaged
    gradient with the inputs of the step that emits)."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(10, 4)), jnp.float32)
    grads = conv.gradient_sequence({"w": (4, 3), "b": (3,)}, 4, seed=5)
    params = jax.tree.map(jnp.zeros_like, grads[0])
    pre = [{"w": tract_precondition(g["w"], x, 0.1), "b": g["b"]} for g in grads]
    want, _ = conv.apply_sequence(optax.adam(1e-2), params, pre)
    chained = optax.chain(scale_by_tract(0.1, kernels=KERNELS), optax.adam(1e-2))
    injected = optax.inject_hyperparams(tract)(0.5, 0.1, kernels=KERNELS)
    multi = optax.MultiSteps(tract(0.5, 0.1, kernels=KERNELS), every_k_schedule=2)
    for tx, expect in [(chained, want),
                       (injected, [jax.tree.map(lambda a: -0.5 * a, g) for g in pre]),
                       (multi, None)]:
        state = tx.init(params)
        for i, g in enumerate(grads):
            u, state = jax.jit(tx.update)(g, state, params, tract_inputs=x)
            if expect is not None:
                for k in u:
                    np.testing.assert_allclose(u[k], expect[i][k], rtol=1e-5, atol=1e-7)
        if expect is None:  # MultiSteps: the last emitted update is TrAct of the mean
            mean_w = (grads[2]["w"] + grads[3]["w"]) / 2
            np.testing.assert_allclose(u["w"], -0.5 * tract_precondition(mean_w, x, 0.1),
                                       rtol=1e-5, atol=1e-7)


def test_optax_conventions():
    """The shared checks with the inputs bound (``_bound``); convergence is checked locally on
    a least-squares first layer, since TrAct defines a rule only for a linear layer's kernel
    fed its inputs (on the shared parabola/Rosenbrock losses it would be plain SGD)."""
    shapes = {"w": (4, 3), "b": (3,)}
    x = jnp.asarray(np.random.default_rng(4).normal(size=(10, 4)), jnp.result_type(float))

    def factory(learning_rate, lambda_=0.1, weight_decay=0.0, mask=None):
        return _bound(tract(learning_rate, lambda_, kernels=KERNELS, weight_decay=weight_decay,
                            mask=mask), x)

    conv.check_inject_hyperparams(factory, dict(learning_rate=0.1, lambda_=0.2,
                                                weight_decay=0.1), shapes)
    conv.check_dtypes_and_state(_bound(tract(0.1, kernels=KERNELS), x), shapes)
    conv.check_multisteps(_bound(tract(0.1, kernels=KERNELS), x), shapes)
    conv.check_weight_decay_mask(factory, {"learning_rate": 0.1}, shapes)


def test_converges_on_badly_scaled_least_squares():
    """Linear regression with input features on scales from 0.01 to 10: TrAct-SGD (a damped
    Newton step for this loss) reaches the solution in 30 steps; plain SGD at its largest
    stable rate does not."""
    rng = np.random.default_rng(6)
    f = jnp.result_type(float)
    x = jnp.asarray(rng.normal(size=(64, 5)) * np.array([10.0, 3.0, 1.0, 0.1, 0.01]), f)
    w_star = jnp.asarray(rng.normal(size=(5, 2)), f)
    y = x @ w_star + 0.5
    loss = lambda p: jnp.mean(jnp.sum((x @ p["w"] + p["b"] - y) ** 2, axis=1))  # noqa: E731
    params = {"w": jnp.zeros((5, 2), f), "b": jnp.zeros((2,), f)}
    tx = _bound(tract(0.5, 1e-6, kernels=KERNELS), x)
    p = conv.run(tx, loss, params, 30)
    np.testing.assert_allclose(p["w"], w_star, atol=2e-2)
    np.testing.assert_allclose(p["b"], 0.5, atol=2e-2)
    p_sgd = conv.run(optax.sgd(0.9 / (2 * 100.0)), loss, params, 30)  # 2 * max curvature ~ 200
    assert np.max(np.abs(p_sgd["w"] - w_star)) > 0.1


def test_bad_arguments():
    tx = tract(0.1, kernels=KERNELS)
    g = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match="tract_inputs"):
        tx.update(g, tx.init(g), g)
    with pytest.raises(ValueError, match="tract_inputs"):
        tx.update(g, tx.init(g), g, tract_inputs=jnp.ones((5, 7)))
    with pytest.raises(ValueError, match="kernels"):
        scale_by_tract(0.1, kernels=None)
    with pytest.raises(ValueError, match="kernels"):
        tx2 = tract(0.1, kernels={"w": True})
        tx2.update(g, tx2.init(g), g, tract_inputs=jnp.ones((5, 4)))
    with pytest.raises(ValueError, match="lambda_"):
        tract(0.1, 0.0, kernels=KERNELS)
    with pytest.raises(ValueError, match="layout"):
        tract(0.1, kernels=KERNELS, layout="oi")



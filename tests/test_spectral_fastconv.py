"""Convolutions rewritten for XLA:CPU loops (``landscape.conv_rewrite``) and the loops that use it:
``eigsh``, ``density``, the trace estimators and the training loop.

References are independent: the convolution primitive itself (``lax.conv_general_dilated`` and
its JAX derivatives), and ``eigsh`` on the same operator with the rewrite switched off.
"""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from landscape import conv_rewrite, curvature, spectral, train
from landscape.spectral import _loop_operator

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32
RTOL = 1e-12 if X64 else 2e-5

# (dimension numbers, input shape, kernel shape, strides, padding, lhs dil., rhs dil., groups)
CASES = [
    (("NCHW", "OIHW", "NCHW"), (2, 4, 9, 8), (6, 4, 3, 2), (2, 1), ((1, 0), (2, 1)), None, (2, 1),
     1, 1),
    (("NHWC", "HWIO", "NHWC"), (3, 8, 8, 6), (3, 3, 2, 9), (2, 2), "VALID", None, None, 3, 1),
    (("NWC", "WIO", "NWC"), (6, 11, 4), (5, 4, 6), (1,), "SAME", None, None, 1, 3),
]


def _conv(case):
    dn, _, _, s, pad, ld, rd, fg, bg = case
    return lambda x, w: lax.conv_general_dilated(x, w, s, pad, lhs_dilation=ld, rhs_dilation=rd,
                                                 dimension_numbers=dn, feature_group_count=fg,
                                                 batch_group_count=bg)


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        scale = float(jnp.max(jnp.abs(y))) or 1.0
        assert float(jnp.max(jnp.abs(x - y))) <= RTOL * scale


def _conv_eqns(jaxpr):
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive is lax.conv_general_dilated_p:
            out.append(eqn)
        for _, _, sub in conv_rewrite._sub_jaxprs(eqn.params):
            out += _conv_eqns(getattr(sub, "jaxpr", sub))
    return out


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_rewritten_convolutions_and_derivatives_equal_the_primitive(case):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(case[1]), DTYPE)
    w = jnp.asarray(rng.standard_normal(case[2]), DTYPE)
    f = _conv(case)
    ct = jnp.asarray(rng.standard_normal(f(x, w).shape), DTYPE)

    def hvp_in_scan(x, w):  # forward-over-reverse inside a loop body, as in a curvature product
        g = lambda w: jax.grad(lambda w: jnp.sum(jnp.sin(f(x, w))))(w)
        body = lambda c, _: (c, jax.jvp(g, (w,), (w,))[1])
        return lax.scan(body, 0.0, None, length=2)[1]

    for fn, args in ((lambda x, w, ct: jax.vjp(f, x, w)[1](ct), (x, w, ct)),
                     (hvp_in_scan, (x, w))):
        _close(conv_rewrite.rewrite_convs(fn)(*args), fn(*args))
    # what makes it fast: no convolution is left outside XLA:CPU's canonical form
    jaxpr = jax.make_jaxpr(conv_rewrite.rewrite_convs(hvp_in_scan))(x, w).jaxpr
    for eqn in _conv_eqns(jaxpr):
        lhs, rhs, out = eqn.params["dimension_numbers"]
        n = len(lhs)
        assert lhs == out == (0, n - 1, *range(1, n - 1)) and rhs == (n - 1, n - 2, *range(n - 2))
        assert eqn.params["feature_group_count"] == eqn.params["batch_group_count"] == 1
        assert eqn.invars[0].aval.dtype in (jnp.float32, jnp.float16)


@pytest.mark.single_dtype
def test_functions_without_convolutions_are_untouched():
    f = lambda p, x: {"y": jnp.tanh(x @ p["w"]).sum(), "z": lax.scan(lambda c, a: (c + a, c),
                                                                    0.0, x[0])[1]}
    p = {"w": jnp.linspace(-1, 1, 12).reshape(4, 3)}
    x = jnp.arange(8.0).reshape(2, 4) / 7
    assert not conv_rewrite.contains_conv(f, p, x)
    got, want = conv_rewrite.rewrite_convs(f)(p, x), f(p, x)
    assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want),
                                                     strict=True))
    with pytest.raises(TypeError, match="fn must be callable"):
        conv_rewrite.rewrite_convs(3)


def _tiny_cnn():
    """A user's lax.conv CNN: ``(loss, params, data)``."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((16, 6, 6, 1)), DTYPE)
    y = jnp.asarray(rng.integers(0, 3, 16))
    params = {"c": jnp.asarray(rng.standard_normal((3, 3, 1, 4)) / 3, DTYPE),
              "d": jnp.asarray(rng.standard_normal((144, 3)) / 12, DTYPE)}

    def loss(p, batch):
        h = lax.conv_general_dilated(batch["x"], p["c"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        logits = jnp.tanh(h).reshape(h.shape[0], -1) @ p["d"]
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
            logits, batch["y"][:, None], -1)[:, 0])

    return loss, params, {"x": x, "y": y}


def _tiny_cnn_hessian():
    loss, params, data = _tiny_cnn()
    return curvature.hessian(loss, params, data, batch_size=8)


@pytest.mark.single_dtype  # float32: the canonical-form path; the x64 pass checks the matmul
# rewrite against the primitive above, without two more eigsh compilations
def test_eigsh_rewrites_a_lax_conv_product_on_cpu_and_agrees():
    op = _tiny_cnn_hessian()
    assert _loop_operator.wants_rewrite(op, None) == (jax.default_backend() == "cpu")
    key = jax.random.key(0)
    fast = spectral.eigsh(op, k=2, key=key)
    assert bool(jnp.all(fast.converged)) and int(fast.status) == 0
    # the reference: the dense Hessian of the unrewritten product, built at the top level
    dense = np.linalg.eigvalsh(np.asarray(curvature.dense(op), np.float64))[::-1][:2]
    np.testing.assert_allclose(fast.eigenvalues, dense, rtol=1e-9 if X64 else 1e-4)
    assert np.all(np.abs(np.asarray(fast.eigenvalues) - dense) <= np.asarray(fast.residuals))
    # SLQ takes the same route: its moments match the dense matrix's to the probe error's
    # exactness (one probe's quadrature is exact for degree <= 2 num_steps - 1)
    d = spectral.density(op, key=key, num_probes=1, num_steps=6)
    z = np.asarray(jax.random.rademacher(jax.random.split(jax.random.split(key, 1)[0])[0],
                                         (op.dim,), op.dtype), np.float64)
    H = np.asarray(curvature.dense(op), np.float64)
    np.testing.assert_allclose(d.moment(2)[0] * op.dim, z @ H @ H @ z, rtol=1e-3)
    with pytest.raises(ValueError, match="rewrite_convs"):
        spectral.eigsh(op, k=2, key=key, rewrite_convs="yes")


CANONICAL_2D = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _slow_convs(fn):
    """The convolutions of ``fn()``'s computation that are not in XLA:CPU's canonical form."""
    return [e for e in _conv_eqns(jax.make_jaxpr(fn)().jaxpr)
            if e.params["dimension_numbers"] != CANONICAL_2D]


def test_a_dataset_product_over_several_batches_runs_canonical_convolutions():
    """The sum over batches is a scan: on CPU every convolution of the product is canonical
    (none at all in float64), and the product equals the dense Hessian's."""
    op = _tiny_cnn_hessian()  # 16 examples in batches of 8: two scan iterations
    v = jax.random.normal(jax.random.key(4), (op.dim,), op.dtype)
    if jax.default_backend() == "cpu":
        assert not _slow_convs(lambda: op.matvec(v))
    H = np.asarray(curvature.dense(op), np.float64)
    want = H @ np.asarray(v, np.float64)
    np.testing.assert_allclose(np.asarray(op.matvec(v), np.float64), want, rtol=0,
                               atol=(1e-10 if X64 else 1e-5) * np.max(np.abs(want)))


def test_trace_estimators_rewrite_a_lax_conv_product_and_agree():
    """``trace`` and ``diagonal`` on a user's bare Hessian-vector callable of the lax.conv CNN
    (no dataset operator, whose own product is already rewritten): on CPU every convolution of
    the compiled loops is in the canonical form (none at all in float64, where they become
    matrix products), while ``rewrite_convs=False`` keeps the derivative convolutions in their
    slow form; the estimates equal the same probes applied to the dense Hessian."""
    loss, params, data = _tiny_cnn()
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    mv = lambda v: jax.flatten_util.ravel_pytree(curvature.hvp(loss, params, data,
                                                               unravel(v)))[0]
    dim, key, m = flat.size, jax.random.key(3), 6
    est = lambda f, **kw: f(mv, dim=dim, dtype=flat.dtype, key=key, num_matvecs=m, **kw)
    if jax.default_backend() == "cpu":
        assert not _slow_convs(lambda: est(spectral.trace))
        assert not _slow_convs(lambda: est(spectral.diagonal))
        assert _slow_convs(lambda: est(spectral.trace, rewrite_convs=False))
    t, d = est(spectral.trace), est(spectral.diagonal)
    H = np.asarray(curvature.dense(_tiny_cnn_hessian()), np.float64)
    Z = np.asarray(jax.random.rademacher(key, (dim, m), flat.dtype), np.float64)
    np.testing.assert_allclose(float(t.estimate), np.mean(np.sum(Z * (H @ Z), axis=0)),
                               rtol=1e-9 if X64 else 1e-4)
    zs = [np.asarray(jax.random.rademacher(jax.random.fold_in(key, i), (dim,), flat.dtype),
                     np.float64) for i in range(m)]
    want = np.mean([z * (H @ z) for z in zs], axis=0)
    np.testing.assert_allclose(np.asarray(d.estimate), want, rtol=0,
                               atol=(1e-9 if X64 else 1e-4) * np.max(np.abs(want)))


def test_training_rewrites_the_whole_step_of_a_lax_conv_model():
    """``train.run_steps`` / ``train.train`` on a lax.conv loss: the step's gradient
    convolutions exist only once the step is traced, and all of them run in the canonical form
    (rewriting the loss alone would not reach them); the trajectory equals the unrewritten one to
    rounding; a model without convolutions is left alone."""
    loss, params, data = _tiny_cnn()
    state = train.init_state(params, optax.sgd(0.1))
    run = lambda **kw: train.run_steps(loss, optax.sgd(0.1), state, data, key=jax.random.key(0),
                                       num_steps=4, batch_size=8, **kw)
    if jax.default_backend() == "cpu":
        assert not _slow_convs(run)
        assert _slow_convs(lambda: run(rewrite_convs=False))
    kw = dict(key=jax.random.key(0), num_steps=4, batch_size=8, callback_every=2)
    fast = train.train(loss, params, optax.sgd(0.1), data, **kw)
    slow = train.train(loss, params, optax.sgd(0.1), data, rewrite_convs=False, **kw)
    _close(fast.params, slow.params)
    np.testing.assert_allclose(fast.history["loss"], slow.history["loss"], rtol=RTOL)
    dense = lambda p, b: jnp.mean((b["x"].reshape(b["x"].shape[0], -1) @ p["w"]) ** 2)
    spec = train._Spec(dense, None, 8, False, (), ())
    mlp_state = train.init_state({"w": jnp.ones((36, 2), DTYPE)}, optax.sgd(0.1))
    assert not train._wants_rewrite(spec, mlp_state, data, jax.random.key(0), None)
    with pytest.raises(ValueError, match="rewrite_convs"):
        run(rewrite_convs=1)

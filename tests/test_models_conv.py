"""ShiftConv: the same function, parameters and derivatives as nnx.Conv; specs still inferred."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from landscape import connectivity as C
from landscape import nnx as lnnx
from landscape.models import CNN1D, CNN2D, ResNet20, ShiftConv

F64 = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
TOL = 1e-12 if F64 == jnp.float64 else 2e-5

CONFIGS = [((3, 3), 1, "SAME", (2, 8, 8, 3)), ((5,), 1, "SAME", (2, 40, 1)),
           ((3, 3), 2, ((1, 1), (1, 1)), (2, 8, 8, 4)), ((1, 1), 2, "VALID", (2, 8, 8, 4)),
           ((3, 3), 2, "SAME", (2, 7, 9, 2)), ((4,), 3, "SAME", (2, 11, 2))]


@pytest.mark.parametrize("kernel,strides,padding,shape", CONFIGS)
def test_shift_conv_equals_library_conv_with_derivatives(kernel, strides, padding, shape):
    kw = dict(strides=strides, padding=padding, param_dtype=F64)
    ref = nnx.Conv(shape[-1], 5, kernel, rngs=nnx.Rngs(0), **kw)
    ours = ShiftConv(shape[-1], 5, kernel, rngs=nnx.Rngs(0), **kw)
    np.testing.assert_array_equal(ref.kernel[...], ours.kernel[...])  # same init, same key use
    x = jax.random.normal(jax.random.key(1), shape, F64)
    np.testing.assert_allclose(ours(x), ref(x), rtol=TOL, atol=TOL)

    def hvp(mod):
        graph, state = nnx.split(mod)
        f = lambda st: jnp.sum(jnp.tanh(nnx.merge(graph, st)(x)) ** 2)  # noqa: E731
        v = jax.tree.map(lambda a: jax.random.normal(jax.random.key(2), a.shape, a.dtype), state)
        return jax.jvp(jax.grad(f), (state,), (v,))

    (g_ref, h_ref), (g_ours, h_ours) = hvp(ref), hvp(ours)
    for a, b in zip(jax.tree.leaves((g_ours, h_ours)), jax.tree.leaves((g_ref, h_ref)),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=10 * TOL, atol=10 * TOL)


@pytest.mark.parametrize("make,shape", [
    (lambda impl: CNN1D(3, width=4, num_layers=2, conv_impl=impl, rngs=nnx.Rngs(0)), (5, 12)),
    (lambda impl: CNN2D(3, width=4, num_layers=2, norm="batch", conv_impl=impl,
                        rngs=nnx.Rngs(0)), (5, 6, 6)),
    (lambda impl: ResNet20(3, in_channels=1, conv_impl=impl, rngs=nnx.Rngs(0)), (3, 8, 8)),
])
def test_models_with_shift_conv_match_and_keep_their_permutation_symmetry(make, shape):
    x = jax.random.normal(jax.random.key(0), shape)
    fm = {impl: lnnx.functional(make(impl), mode="eval") for impl in ("lax", "shift")}
    jax.tree.map(np.testing.assert_array_equal, fm["lax"].params, fm["shift"].params)
    np.testing.assert_allclose(fm["shift"].apply(fm["shift"].params, x, state=fm["shift"].state),
                               fm["lax"].apply(fm["lax"].params, x, state=fm["lax"].state),
                               rtol=1e-4, atol=1e-5)
    specs = {}
    for impl, m in fm.items():
        tree = {"params": m.params, "state": m.state}
        f = lambda t, x, m=m: m.apply(t["params"], x, state=t["state"])  # noqa: E731
        specs[impl] = C.infer_spec(f, tree, x)
    as_sets = lambda s: {frozenset(ax) for ax in s.perm_to_axes.values()}  # noqa: E731
    assert as_sets(specs["shift"]) == as_sets(specs["lax"])


def test_auto_picks_shift_conv_on_cpu():
    assert jax.default_backend() == "cpu"  # the suite runs on CPU (conftest)
    assert CNN1D(3, width=2, num_layers=1, rngs=nnx.Rngs(0)).conv_impl == "shift"
    assert isinstance(CNN2D(3, width=2, num_layers=1, rngs=nnx.Rngs(0)).convs[0], ShiftConv)
    m = CNN1D(3, width=2, num_layers=1, conv_impl="lax", rngs=nnx.Rngs(0))
    assert m.conv_impl == "lax" and not isinstance(m.convs[0], ShiftConv)


def test_bad_conv_impl_and_unsupported_options_raise():
    with pytest.raises(ValueError, match="conv_impl"):
        CNN1D(3, conv_impl="fft", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="conv_impl"):
        ResNet20(3, conv_impl="fft", rngs=nnx.Rngs(0))
    conv = ShiftConv(2, 3, (3,), kernel_dilation=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dilation"):
        conv(jnp.ones((1, 8, 2)))
    with pytest.raises(ValueError, match="spatial"):
        ShiftConv(2, 3, (3,), rngs=nnx.Rngs(0))(jnp.ones((8, 2)))

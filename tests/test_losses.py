"""The loss registry: values, output gradients, output Hessian products and samplers agree with
independent formulas and with autodiff; unknown names are rejected with the known ones listed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from landscape import losses

X64 = jax.config.jax_enable_x64
DTYPE = jnp.float64 if X64 else jnp.float32
RTOL = 1e-12 if X64 else 2e-5
B, C = 4, 5


# Independent per-example references, written here from the definitions.
def _ce_reference(f, y):
    return jax.nn.logsumexp(f) - f[y]


def _mse_reference(f, y):
    return 0.5 * jnp.sum((f - y) ** 2)


REFERENCE = {"cross_entropy": _ce_reference, "mse": _mse_reference}


def _batch(name, key):
    kf, ky = jax.random.split(key)
    F = 2.0 * jax.random.normal(kf, (B, C), DTYPE)
    if name == "cross_entropy":
        Y = jax.random.randint(ky, (B,), 0, C)
    else:
        Y = jax.random.normal(ky, (B, C), DTYPE)
    return F, Y


def _dense_rows(product, F):
    """The ``(b, C, b, C)`` array ``M[i, a, j, c]`` whose product with ``T`` is ``product(T)``."""
    basis = jnp.eye(F.size, dtype=F.dtype).reshape((F.size,) + F.shape)
    cols = jax.vmap(product)(basis)  # (b*C, b, C): column (j, c) of M
    return jnp.moveaxis(cols.reshape(F.shape + F.shape), (0, 1), (2, 3))


def _blocks(M):
    """The per-example ``(b, C, C)`` diagonal blocks of a ``(b, C, b, C)`` array."""
    return jnp.stack([M[i, :, i, :] for i in range(M.shape[0])])


def test_every_registered_name_is_covered_by_a_reference():
    canonical = {losses.lookup(n).name for n in losses.names()}
    assert canonical == set(REFERENCE)
    assert losses.lookup("softmax_cross_entropy") is losses.lookup("cross_entropy")


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_value_and_gradient_match_independent_formulas(name):
    loss = losses.lookup(name)
    F, Y = _batch(name, jax.random.key(0))
    ref = jax.vmap(REFERENCE[name])(F, Y)
    np.testing.assert_allclose(loss.per_example(F, Y), ref, rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(loss(F, Y), jnp.mean(ref), rtol=RTOL, atol=RTOL)
    assert losses.get(name) is loss.mean
    grad_ref = jax.vmap(jax.grad(REFERENCE[name]))(F, Y)
    np.testing.assert_allclose(loss.gradient(F, Y), grad_ref, rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_output_hessian_product_equals_autodiff_hessian(name):
    loss = losses.lookup(name)
    wrapped = losses.resolve(loss.mean)  # a callable: derivatives by autodiff

    @jax.jit
    def matrices(F, Y):
        M = _dense_rows(lambda T: loss.hessian_product(F, Y, T), F)
        # jax.hessian of the registry's own summed per-example loss w.r.t. all outputs (block
        # diagonal across examples), and of the independent formula example by example
        H = jax.hessian(lambda G: jnp.sum(loss.per_example(G, Y)))(F)
        H_ref = jax.vmap(jax.hessian(REFERENCE[name]))(F, Y)  # (b, C, C)
        M_auto = _dense_rows(lambda T: wrapped.hessian_product(F, Y, T), F)
        return M, H, H_ref, M_auto, wrapped.gradient(F, Y), loss.gradient(F, Y)

    M, H, H_ref, M_auto, g_auto, g = matrices(*_batch(name, jax.random.key(1)))
    assert M.dtype == DTYPE
    np.testing.assert_allclose(M, H, rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(_blocks(M), H_ref, rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(M_auto, M, rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(g_auto, g, rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_exact_fisher_product_is_the_expected_outer_product_of_sampled_gradients(name):
    loss = losses.lookup(name)
    S = 40000

    @jax.jit
    def estimates(F, Y, key):
        keys = jax.random.split(key, B)
        Ys = jax.vmap(lambda k, f: loss.sample(k, f, S))(keys, F)  # (b, S, ...)
        R = jax.vmap(loss.gradient, in_axes=(None, 0))(F, jnp.moveaxis(Ys, 1, 0))  # (S, b, C)
        mc = jnp.einsum("sia,sic->iac", R, R) / S  # (b, C, C)
        exact = _blocks(_dense_rows(lambda T: loss.fisher_product(F, T), F))
        H = _blocks(_dense_rows(lambda T: loss.hessian_product(F, Y, T), F))
        return Ys, jnp.mean(R, axis=0), mc, exact, H

    F, Y = _batch(name, jax.random.key(2))
    Ys, score_mean, mc, exact, H = estimates(F, Y, jax.random.key(3))
    assert Ys.shape[:2] == (B, S) and Ys.shape[2:] == Y.shape[1:]
    # the score has mean zero under the model; both estimates carry O(1/sqrt(S)) error
    np.testing.assert_allclose(score_mean, 0.0, atol=0.03)
    np.testing.assert_allclose(mc, exact, atol=0.03)
    # and for these exponential-family losses the exact Fisher equals the output Hessian
    np.testing.assert_allclose(exact, H, rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("bad", ["hinge", None, 3])
def test_unknown_name_lists_the_known_ones(bad):
    known = losses.names()
    assert {"cross_entropy", "mse", "softmax_cross_entropy"} <= set(known)
    with pytest.raises(ValueError, match="output_loss must be one of") as info:
        losses.lookup(bad)
    for name in known:
        assert repr(name) in str(info.value)
    with pytest.raises(ValueError, match="one of"):
        losses.get(bad)
    with pytest.raises(ValueError, match="loss_name must be one of"):
        losses.resolve(bad, "loss_name")


def test_get_passes_callables_through():
    fn = lambda f, y: jnp.sum(f)
    assert losses.get(fn) is fn
    assert losses.resolve(fn).mean is fn


def test_cross_entropy_target_checks():
    loss = losses.lookup("cross_entropy")
    out = jax.ShapeDtypeStruct((B, C), DTYPE)
    loss.check_targets(out, jnp.array([0, C - 1]), "output_loss", "y")  # in range: fine
    with pytest.raises(ValueError, match=rf"^y holds labels outside \[0, {C}\): min 0, max {C}"):
        loss.check_targets(out, jnp.array([0, C]), "output_loss", "y")
    with pytest.raises(ValueError, match=r"^y holds labels outside \[0, 5\): min -1, max 2"):
        loss.check_targets(out, jnp.array([2, -1]), "output_loss", "y")
    with pytest.raises(TypeError, match="needs integer labels; y has dtype"):
        loss.check_targets(out, jnp.zeros(B), "output_loss", "y")
    # under tracing the values are unknown: only the static checks run
    jax.jit(lambda y: loss.check_targets(out, y, "output_loss", "y") or y)(jnp.array([C]))

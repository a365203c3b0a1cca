"""Bad inputs to the curvature operators fail fast with errors that name the argument."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_curvature_oracles import C, apply_fn, loss_fn_for, make_data, make_params

from landscape import curvature, losses


@pytest.fixture(scope="module")
def setup():
    params = make_params(jax.random.key(0))
    data = make_data(jax.random.key(1), "cross_entropy", n=10)
    return params, data, loss_fn_for("cross_entropy")


def test_non_scalar_loss(setup):
    params, data, _ = setup
    per_example = lambda p, b: losses.softmax_cross_entropy_per_example(apply_fn(p, b["x"]), b["y"])
    with pytest.raises(TypeError, match="loss_fn must return a scalar"):
        curvature.hessian(per_example, params, data)
    with pytest.raises(TypeError, match="loss_fn must return a scalar"):
        curvature.hvp(per_example, params, data, params)
    with pytest.raises(TypeError, match="output_loss must return a scalar"):
        curvature.ggn(apply_fn, losses.softmax_cross_entropy_per_example, params, data)


def test_vector_structure_and_shape_mismatch(setup):
    params, data, loss = setup
    wrong_structure = {"layer1": params["layer1"]}
    with pytest.raises(ValueError, match="params and v have different pytree structures"):
        curvature.hvp(loss, params, data, wrong_structure)
    wrong_shape = jax.tree.map(lambda x: x, params)
    wrong_shape["layer2"] = [jnp.zeros((4, 2)), params["layer2"][1]]
    with pytest.raises(ValueError, match="params and v differ at leaf"):
        curvature.hvp(loss, params, data, wrong_shape)
    op = curvature.hessian(loss, params, data)
    with pytest.raises(ValueError, match=r"v must be a flat vector of shape \(31,\)"):
        op.matvec(jnp.ones(30))
    with pytest.raises(ValueError, match="params and v_tree"):
        op.matvec_tree(wrong_structure)


def test_non_finite_params_vector_and_loss(setup):
    params, data, loss = setup
    bad = jax.tree.map(lambda x: x, params)
    bad["layer1"] = {"w": params["layer1"]["w"].at[0, 0].set(jnp.nan), "b": params["layer1"]["b"]}
    with pytest.raises(
        ValueError, match=r"params contains non-finite values at \['layer1'\]\['w'\]"
    ):
        curvature.hessian(loss, bad, data)
    with pytest.raises(ValueError, match="v contains non-finite"):
        curvature.hvp(loss, params, data, bad)
    log_loss = lambda p, b: jnp.mean(jnp.log(apply_fn(p, b["x"])))  # log of negative logits
    with pytest.raises(ValueError, match="the dataset loss is not finite"):
        curvature.hessian(log_loss, params, data)
    with pytest.raises(ValueError, match="the dataset loss is not finite"):
        curvature.ggn(apply_fn, lambda f, y: jnp.mean(jnp.log(f)), params, data)


@pytest.mark.parametrize("batch_size", [0, -3])
def test_batch_size_must_be_positive(setup, batch_size):
    params, data, loss = setup
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        curvature.hessian(loss, params, data, batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        curvature.ggn(apply_fn, "cross_entropy", params, data, batch_size=batch_size)


@pytest.mark.parametrize("batch_size", [2.5, True, "8"])
def test_batch_size_must_be_an_int(setup, batch_size):
    params, data, loss = setup
    with pytest.raises(TypeError, match="batch_size must be a positive int"):
        curvature.hessian(loss, params, data, batch_size=batch_size)


def test_empty_and_ragged_datasets(setup):
    params, data, loss = setup
    empty = {"x": data["x"][:0], "y": data["y"][:0]}
    with pytest.raises(ValueError, match="dataset is empty"):
        curvature.hessian(loss, params, empty)
    with pytest.raises(ValueError, match="dataset is empty"):
        curvature.empirical_fisher(apply_fn, "cross_entropy", params, empty)
    ragged = {"x": data["x"], "y": data["y"][:-1]}
    with pytest.raises(ValueError, match="dataset leaves must share a leading example axis"):
        curvature.hessian(loss, params, ragged)
    with pytest.raises(ValueError, match="dataset leaves must share a leading example axis"):
        curvature.ggn(apply_fn, "cross_entropy", params, ragged)
    with pytest.raises(TypeError, match="dataset must be a dict with keys 'x' and 'y'"):
        curvature.ggn(apply_fn, "cross_entropy", params, (data["x"], data["y"]))


def test_output_loss_mismatches(setup):
    params, data, _ = setup
    with pytest.raises(ValueError, match="output_loss must be one of"):
        curvature.ggn(apply_fn, "hinge", params, data)
    float_labels = {"x": data["x"], "y": data["y"].astype(jnp.float32)}
    with pytest.raises(TypeError, match="needs integer labels"):
        curvature.ggn(apply_fn, "cross_entropy", params, float_labels)
    with pytest.raises(ValueError, match="'mse' needs targets shaped like the outputs"):
        curvature.ggn(apply_fn, "mse", params, data)
    with pytest.raises(ValueError, match=r"needs outputs \(b, C\)"):
        curvature.ggn(lambda p, x: apply_fn(p, x)[:, 0], "cross_entropy", params, data)


def test_fisher_arguments(setup):
    params, data, _ = setup
    with pytest.raises(ValueError, match="fisher needs key="):
        curvature.fisher(apply_fn, "cross_entropy", params, data)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        curvature.fisher(
            apply_fn, "cross_entropy", params, data, key=jax.random.key(0), num_samples=0
        )
    with pytest.raises(ValueError, match="fisher needs output_loss 'cross_entropy' or 'mse'"):
        curvature.fisher(
            apply_fn, losses.softmax_cross_entropy, params, data, key=jax.random.key(0)
        )


@pytest.mark.parametrize("key", [0, np.uint32(7), jnp.zeros(3, jnp.uint32), "seed"])
def test_fisher_key_must_be_a_prng_key(setup, key):
    params, data, _ = setup
    with pytest.raises(TypeError, match=r"^key must be a jax.random key"):
        curvature.fisher(apply_fn, "cross_entropy", params, data, key=key)
    # both key kinds that jax.random accepts still work
    for good in (jax.random.key(0), jax.random.PRNGKey(0)):
        curvature.fisher(apply_fn, "cross_entropy", params, data, key=good)


def _with_label(data, label):
    return {"x": data["x"], "y": data["y"].at[1].set(label)}


_CLASSIFICATION_OPERATORS = {
    "fisher": lambda p, d: curvature.fisher(apply_fn, "cross_entropy", p, d, key=jax.random.key(0)),
    "fisher_exact": lambda p, d: curvature.fisher(apply_fn, "cross_entropy", p, d, exact=True),
    "empirical_fisher": lambda p, d: curvature.empirical_fisher(apply_fn, "cross_entropy", p, d),
    "ggn": lambda p, d: curvature.ggn(apply_fn, "cross_entropy", p, d),
    "ggn_alias": lambda p, d: curvature.ggn(apply_fn, "softmax_cross_entropy", p, d),
}


@pytest.mark.parametrize(
    "make", list(_CLASSIFICATION_OPERATORS.values()), ids=list(_CLASSIFICATION_OPERATORS)
)
@pytest.mark.parametrize("label", [C, -1])
def test_labels_outside_the_classes_are_named(setup, make, label):
    params, data, _ = setup
    bad = _with_label(data, label)
    y = np.asarray(bad["y"])
    lo, hi = int(y.min()), int(y.max())
    assert lo < 0 or hi >= C
    message = rf"^dataset\['y'\] holds labels outside \[0, {C}\): min {lo}, max {hi}"
    with pytest.raises(ValueError, match=message):
        make(params, bad)
    # the check does not depend on check=True (the loss evaluation) or on where the label sits
    with pytest.raises(ValueError, match=message):
        curvature.ggn(apply_fn, "cross_entropy", params, bad, batch_size=1, check=False)
    make(params, data)  # in-range labels build fine


def test_label_check_is_skipped_under_tracing(setup):
    params, data, _ = setup
    bad = _with_label(data, C)
    v = jnp.ones(curvature.ggn(apply_fn, "cross_entropy", params, data).dim)
    # labels are tracers here: only shape and dtype can be checked, so building must not raise
    out = jax.jit(lambda d: curvature.ggn(apply_fn, "cross_entropy", params, d).matvec(v))(bad)
    assert out.shape == v.shape


def test_integer_params_rejected(setup):
    _, data, _ = setup
    params = {"w": jnp.ones((3, 3), jnp.int32)}
    with pytest.raises(TypeError, match=r"params leaves must be floating arrays; \['w'\]"):
        curvature.hessian(lambda p, b: jnp.sum(p["w"]) * 1.0, params, data)


def test_restrict_errors(setup):
    params, data, loss = setup
    op = curvature.hessian(loss, params, data)
    with pytest.raises(ValueError, match="mask selects no parameters"):
        curvature.restrict(op, {"layer1": False, "layer2": False})
    with pytest.raises(ValueError, match="does not broadcast to the parameter shape"):
        curvature.restrict(op, {"layer1": {"w": np.ones(5, bool), "b": True}, "layer2": False})
    with pytest.raises(TypeError, match="mask leaves must be bool"):
        curvature.restrict(op, {"layer1": 1.0, "layer2": False})
    with pytest.raises(ValueError, match="mask indices must be non-empty and in"):
        curvature.restrict(op, jnp.array([0, 31]))
    with pytest.raises(TypeError, match="op must be a LinearOperator"):
        curvature.restrict(np.eye(3), {"layer1": True})
    with pytest.raises(ValueError, match="params is required"):
        curvature.restrict(curvature.from_matrix(jnp.eye(3)), {"a": True})

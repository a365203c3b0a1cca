"""Offline datasets: determinism, splits, shapes, and no side effects."""

import jax
import numpy as np
import pytest

from landscape import data


def test_digits_split_is_deterministic_and_disjoint():
    tr1, te1 = data.digits(jax.random.key(0))
    tr2, te2 = data.digits(jax.random.key(0))
    tr3, _ = data.digits(jax.random.key(1))
    np.testing.assert_array_equal(tr1["x"], tr2["x"])
    assert not np.array_equal(tr1["y"], tr3["y"])
    assert tr1["x"].shape[1:] == (8, 8, 1) and len(tr1["y"]) + len(te1["y"]) == 1797
    # Disjoint: no test image appears among the training images.
    train_rows = {r.tobytes() for r in np.asarray(tr1["x"]).reshape(len(tr1["y"]), -1)}
    dup = sum(r.tobytes() in train_rows for r in np.asarray(te1["x"]).reshape(len(te1["y"]), -1))
    from sklearn.datasets import load_digits

    raw = load_digits().images.reshape(1797, -1)
    n_unique = len({r.tobytes() for r in raw})
    assert dup <= 1797 - n_unique  # only exact duplicates already in the source data
    assert float(tr1["x"].max()) <= 1.0 and float(tr1["x"].min()) >= 0.0


def test_mnist1d_is_generated_offline_and_leaves_numpy_rng_alone(monkeypatch):
    import requests

    def no_network(*a, **k):
        raise AssertionError("mnist1d tried to download")

    monkeypatch.setattr(requests, "get", no_network)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    tr, te = data.mnist1d(jax.random.key(0), num_train=300, num_test=100)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    assert tr["x"].shape == (300, 40) and te["x"].shape == (100, 40)
    assert set(np.unique(np.asarray(tr["y"]))) == set(range(10))
    tr2, _ = data.mnist1d(jax.random.key(0), num_train=300, num_test=100)
    np.testing.assert_array_equal(tr["x"], tr2["x"])


def test_gaussian_mixture_is_balanced_and_deterministic():
    a = data.gaussian_mixture(jax.random.key(0), num_classes=4, num_per_class=25, dim=6)
    b = data.gaussian_mixture(jax.random.key(0), num_classes=4, num_per_class=25, dim=6)
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(np.bincount(np.asarray(a["y"])), [25] * 4)
    tr, te = data.gaussian_mixture(jax.random.key(0), num_classes=3, num_test_per_class=5)
    assert te["x"].shape == (15, 20)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: data.digits(jax.random.key(0), test_fraction=1.5), "test_fraction"),
        (lambda: data.mnist1d(jax.random.key(0), num_train=0), "num_train"),
        (lambda: data.gaussian_mixture(jax.random.key(0), num_classes=1), "num_classes"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()

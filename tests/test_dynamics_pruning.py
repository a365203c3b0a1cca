"""EL2N and GraNd scores and the pruning helpers (``landscape.dynamics.pruning``).

References: explicit Python loops over single examples and seeds with the scores written out in
float64 NumPy (softmax minus one-hot; ``jax.grad`` of one example's loss, ravelled), hand-worked
rankings with ties, and brute-force checks of the kept sets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from landscape import losses
from landscape.dynamics import pruning as pr
from landscape.tree import ravel

X64 = jax.config.jax_enable_x64
RTOL = 1e-10 if X64 else 2e-5
N, C = 7, 3


def _apply(params, x):
    """A small nonlinear classifier: logits ``tanh(x W + b) V + c``, shape ``(b, C)``."""
    return jnp.tanh(x @ params["w"] + params["b"]) @ params["v"] + params["c"]


def _loss(params, batch):
    return losses.softmax_cross_entropy(_apply(params, batch["x"]), batch["y"])


def _params(seed):
    k = jax.random.split(jax.random.key(seed), 4)
    return {"w": jax.random.normal(k[0], (4, 5)), "b": 0.3 * jax.random.normal(k[1], (5,)),
            "v": 2.0 * jax.random.normal(k[2], (5, C)), "c": 0.3 * jax.random.normal(k[3], (C,))}


def _data(n=N):
    k1, k2 = jax.random.split(jax.random.key(99))
    return {"x": jax.random.normal(k1, (n, 4)),
            "y": jax.random.randint(k2, (n,), 0, C).astype(jnp.int32)}


SEEDS = [_params(s) for s in range(3)]


def _softmax64(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def _loop_el2n(params_list, data):
    """``(S, n)`` by a loop over seeds and single examples, in float64 NumPy."""
    out = np.zeros((len(params_list), N))
    for s, p in enumerate(params_list):
        for i in range(N):
            p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
            x = np.asarray(data["x"][i], np.float64)
            logits = np.tanh(x @ p64["w"] + p64["b"]) @ p64["v"] + p64["c"]
            err = _softmax64(logits) - np.eye(C)[int(data["y"][i])]
            out[s, i] = np.sqrt(np.sum(err**2))
    return out


def _loop_grand(params_list, data):
    grad = jax.jit(jax.grad(_loss))
    out = np.zeros((len(params_list), N))
    for s, p in enumerate(params_list):
        for i in range(N):
            one = jax.tree.map(lambda a, i=i: a[i:i + 1], data)
            out[s, i] = np.linalg.norm(np.asarray(ravel(grad(p, one))[0], np.float64))
    return out


# ----------------------------------------------------------------------------- scores


@pytest.mark.parametrize("batch_size", [None, 3])
def test_el2n_matches_an_explicit_loop_over_seeds_and_examples(batch_size):
    data = _data()
    ref = _loop_el2n(SEEDS, data)
    per = pr.el2n_scores(_apply, SEEDS, data, batch_size=batch_size, per_seed=True)
    np.testing.assert_allclose(per, ref, rtol=RTOL, atol=RTOL)
    mean = pr.el2n_scores(_apply, SEEDS, data, batch_size=batch_size)
    np.testing.assert_allclose(mean, ref.mean(axis=0), rtol=RTOL, atol=RTOL)
    assert np.all((np.asarray(mean) >= 0) & (np.asarray(mean) <= np.sqrt(2) + 1e-6))
    # the same networks as one stacked pytree, and one-hot float targets for integer labels
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *SEEDS)
    np.testing.assert_allclose(pr.el2n_scores(_apply, stacked, data, stacked=True), mean,
                               rtol=RTOL, atol=RTOL)
    onehot = {"x": data["x"], "y": jax.nn.one_hot(data["y"], C)}
    np.testing.assert_allclose(pr.el2n_scores(_apply, tuple(SEEDS), onehot), mean,
                               rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_grand_matches_an_explicit_loop_of_per_example_gradients(chunk_size):
    data = _data()
    ref = _loop_grand(SEEDS, data)
    per = pr.grand_scores(_loss, SEEDS, data, chunk_size=chunk_size, per_seed=True)
    assert per.shape == (len(SEEDS), N)
    np.testing.assert_allclose(per, ref, rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(pr.grand_scores(_loss, SEEDS, data, chunk_size=chunk_size),
                               ref.mean(axis=0), rtol=RTOL, atol=RTOL)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *SEEDS)
    np.testing.assert_allclose(pr.grand_scores(_loss, stacked, data, stacked=True),
                               ref.mean(axis=0), rtol=RTOL, atol=RTOL)


def test_a_perfectly_fit_example_scores_zero_and_a_confidently_wrong_one_sqrt2():
    """EL2N's range: p = e_y gives 0; p = e_j for j != y gives ||e_j - e_y|| = sqrt(2)."""
    params = {"w": jnp.zeros((2, C))}
    apply = lambda p, x: 1e3 * x @ jnp.eye(2, C) + p["w"][0]  # noqa: E731
    data = {"x": jnp.array([[1.0, 0.0], [0.0, 1.0]]), "y": jnp.array([0, 0], jnp.int32)}
    np.testing.assert_allclose(pr.el2n_scores(apply, [params], data), [0.0, np.sqrt(2)],
                               atol=1e-6)


def test_score_inputs_are_checked_with_the_argument_named():
    data = _data()
    with pytest.raises(TypeError, match="params_list"):
        pr.el2n_scores(_apply, SEEDS[0], data)  # a dict, not a list of seeds
    with pytest.raises(TypeError, match="params_list"):
        pr.grand_scores(_loss, [], data)
    with pytest.raises(ValueError, match="params_list"):
        pr.el2n_scores(_apply, [SEEDS[0], {"w": SEEDS[0]["w"]}], data)
    bad = {"w": jnp.zeros((2, 4, 5)), "b": jnp.zeros((3, 5))}
    with pytest.raises(ValueError, match="seed axis"):
        pr.el2n_scores(_apply, bad, data, stacked=True)
    with pytest.raises(ValueError, match=r"data\['y'\] labels must lie in \[0, 3\)"):
        pr.el2n_scores(_apply, SEEDS, {"x": data["x"], "y": data["y"] + 3})
    with pytest.raises(ValueError, match=r"data\['y'\]"):
        pr.el2n_scores(_apply, SEEDS, {"x": data["x"], "y": jnp.zeros((N, C + 1))})
    with pytest.raises(ValueError, match="apply_fn must return"):
        pr.el2n_scores(lambda p, x: _apply(p, x)[:, 0], SEEDS, data)
    with pytest.raises(ValueError, match="non-finite logits for 1 of the 7"):
        pr.el2n_scores(_apply, SEEDS, {"x": data["x"].at[2, 1].set(jnp.nan), "y": data["y"]})
    with pytest.raises(TypeError, match="'x' and 'y'"):
        pr.el2n_scores(_apply, SEEDS, {"inputs": data["x"]})
    with pytest.raises(TypeError, match="batch_size"):
        pr.el2n_scores(_apply, SEEDS, data, batch_size=2.5)
    with pytest.raises(ValueError, match="chunk_size"):
        pr.grand_scores(_loss, SEEDS, data, chunk_size=0)


# ----------------------------------------------------------------------------- pruning


@pytest.mark.single_dtype
def test_ranking_with_ties_breaks_them_by_the_lower_index():
    scores = np.array([0.5, 0.9, 0.1, 0.9, 0.3, 0.5])
    # hardest first: 1, 3 (0.9), 0, 5 (0.5), 4, 2; easiest first: 2, 4, 0, 5, 1, 3
    np.testing.assert_array_equal(pr.prune_indices(scores, 0.5), [0, 1, 3])
    np.testing.assert_array_equal(pr.prune_indices(scores, 0.5, keep="easiest"), [0, 2, 4])
    np.testing.assert_array_equal(pr.prune_indices(scores, 0.5, offset=1 / 6), [0, 3, 5])
    np.testing.assert_array_equal(pr.prune_indices(scores, 0.5, keep="easiest", offset=0.5),
                                  [1, 3, 5])
    np.testing.assert_array_equal(pr.prune_indices(np.zeros(5), 0.4), [0, 1, 2])
    assert pr.prune_indices(scores, 0.5).dtype == jnp.int32


@pytest.mark.single_dtype
def test_kept_sets_separate_the_scores_and_have_the_right_size():
    scores = np.asarray(jax.random.normal(jax.random.key(3), (101,)))
    for f in (0.0, 0.1, 0.3, 0.5, 0.9):
        k = 101 - round(f * 101)
        assert pr.num_kept(101, f) == k
        for keep, sign in (("hardest", 1), ("easiest", -1)):
            kept = np.asarray(pr.prune_indices(scores, f, keep=keep))
            gone = np.setdiff1d(np.arange(101), kept)
            assert kept.size == k and np.all(np.diff(kept) > 0)
            if gone.size:
                assert np.min(sign * scores[kept]) > np.max(sign * scores[gone])
    jitted = jax.jit(lambda s: pr.prune_indices(s, 0.3))(jnp.asarray(scores))
    np.testing.assert_array_equal(jitted, pr.prune_indices(scores, 0.3))


@pytest.mark.single_dtype
def test_fraction_zero_keeps_every_example():
    scores = np.array([3.0, 1.0, 2.0, 2.0])
    for keep in ("hardest", "easiest"):
        np.testing.assert_array_equal(pr.prune_indices(scores, 0.0, keep=keep), np.arange(4))
    np.testing.assert_array_equal(pr.random_indices(jax.random.key(0), 4, 0), np.arange(4))
    assert pr.num_kept(4000, 0.7) == 1200 and pr.num_kept(5, 0.5) == 3  # round half to even


@pytest.mark.single_dtype
def test_random_pruning_is_a_uniform_subset_fixed_by_its_key():
    a = np.asarray(pr.random_indices(jax.random.key(1), 50, 0.4))
    b = np.asarray(pr.prune_indices(np.zeros(50), 0.4, keep="random", key=jax.random.key(1)))
    c = np.asarray(pr.random_indices(jax.random.key(2), 50, 0.4))
    np.testing.assert_array_equal(a, b)
    assert a.size == 30 and np.unique(a).size == 30 and np.all(np.diff(a) > 0)
    assert a.min() >= 0 and a.max() < 50 and not np.array_equal(a, c)
    # every example is kept with probability 30/50: the mean count over 200 keys
    counts = np.zeros(50)
    for s in range(200):
        counts[np.asarray(pr.random_indices(jax.random.key(s), 50, 0.4))] += 1
    assert abs(counts.mean() / 200 - 0.6) < 1e-12 and np.all(np.abs(counts / 200 - 0.6) < 0.15)


@pytest.mark.single_dtype
def test_subset_takes_the_rows_of_every_leaf():
    data = {"x": np.arange(12.0).reshape(6, 2), "y": np.arange(6)}
    out = pr.subset(data, jnp.array([4, 1]))
    np.testing.assert_array_equal(out["x"], [[8.0, 9.0], [2.0, 3.0]])
    np.testing.assert_array_equal(out["y"], [4, 1])
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 6\)"):
        pr.subset(data, np.array([0, 6]))
    with pytest.raises(TypeError, match="indices"):
        pr.subset(data, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="data"):
        pr.subset({"x": np.zeros((3, 2)), "y": np.zeros(4)}, np.array([0]))


@pytest.mark.single_dtype
def test_bad_pruning_arguments_are_named():
    s = np.linspace(0, 1, 10)
    for bad in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            pr.prune_indices(s, bad)
    for bad in ("0.5", True, None):
        with pytest.raises(TypeError, match="fraction"):
            pr.prune_indices(s, bad)
    with pytest.raises(ValueError, match="prunes all 10"):
        pr.prune_indices(s, 0.97)
    with pytest.raises(ValueError, match="keep"):
        pr.prune_indices(s, 0.5, keep="middle")
    with pytest.raises(TypeError, match="key"):
        pr.prune_indices(s, 0.5, keep="random")
    with pytest.raises(ValueError, match="offset"):
        pr.prune_indices(s, 0.5, keep="random", offset=0.1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="offset"):
        pr.prune_indices(s, 0.5, offset=0.6)
    with pytest.raises(ValueError, match="offset"):
        pr.prune_indices(s, 0.5, offset=-0.1)
    with pytest.raises(ValueError, match="scores"):
        pr.prune_indices(np.zeros((3, 2)), 0.5)
    with pytest.raises(ValueError, match="scores"):
        pr.prune_indices(np.array([0.1, np.nan]), 0.5)
    with pytest.raises(ValueError, match="num_examples"):
        pr.random_indices(jax.random.key(0), 0, 0.5)

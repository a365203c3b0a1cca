"""Attention training: normalised GD, stable gradients, convergence to the SVM, nonlinear heads."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from landscape import attention as att
from landscape import data


def test_normalize_per_leaf_normalises_each_leaf_and_handles_zero():
    tx = att.normalized_gd(0.1)
    g = {"K": jnp.array([[3.0, 4.0]]), "Q": jnp.array([1e-30, 0.0]), "Z": jnp.zeros(3)}
    upd, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(np.asarray(upd["K"]), [[-0.06, -0.08]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(upd["Q"]), [-0.1, 0.0], rtol=1e-6)  # no underflow
    np.testing.assert_array_equal(np.asarray(upd["Z"]), 0.0)  # zero gradient: zero step, no NaN
    assert isinstance(tx, optax.GradientTransformation)


def _plain_output(W, X, Z):
    s = jax.nn.softmax(jnp.einsum("ntd,de,ne->nt", X, W, Z), axis=-1)
    return jnp.einsum("nt,ntd->nd", s, X)


def test_stable_attention_output_equals_plain_form_and_its_gradient():
    with jax.enable_x64(True):
        tok = data.token_selection_data(jax.random.key(0), 3, 4, 5, dtype=jnp.float64)
        W = jax.random.normal(jax.random.key(1), (5, 5), jnp.float64)
        chex.assert_trees_all_close(att.attention_output(W, tok.X, tok.Z),
                                    _plain_output(W, tok.X, tok.Z), rtol=1e-12)
        f = lambda fn: jax.grad(lambda W: jnp.sum(fn(W, tok.X, tok.Z) @ tok.v))(W)  # noqa: E731
        chex.assert_trees_all_close(f(att.attention_output), f(_plain_output), rtol=1e-10,
                                    atol=1e-14)


def test_kq_parameterisation_gives_the_same_loss_as_W():
    tok = data.token_selection_data(jax.random.key(2), 3, 4, 5)
    K = jax.random.normal(jax.random.key(3), (5, 2))
    Q = jax.random.normal(jax.random.key(4), (5, 2))
    head = att.linear_head(tok.v)
    a = att.attention_loss({"K": K, "Q": Q}, tok.X, tok.Z, tok.Y, head)
    b = att.attention_loss({"W": K @ Q.T}, tok.X, tok.Z, tok.Y, head)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-5)
    r = att.attention_loss({"K": K, "Q": Q}, tok.X, tok.Z, tok.Y, head, ridge=0.5)
    np.testing.assert_allclose(float(r - a), 0.25 * float(jnp.sum(K**2) + jnp.sum(Q**2)),
                               rtol=1e-5)


@pytest.mark.parametrize("param", ["W", "KQ"])
def test_smoke_gd_reaches_correlation_099_with_its_own_svm(param):
    with jax.enable_x64(True):
        tok = data.token_selection_data(jax.random.key(0), 3, 4, 5, dtype=jnp.float64)
        k1, k2 = jax.random.split(jax.random.key(1))
        if param == "W":
            p, ridge, norm = {"W": 0.01 * jax.random.normal(k1, (5, 5), jnp.float64)}, 0.0, "fro"
        else:
            p = {"K": 0.1 * jax.random.normal(k1, (5, 5), jnp.float64),
                 "Q": 0.1 * jax.random.normal(k2, (5, 5), jnp.float64)}
            ridge, norm = 1e-16, "nuc"
        traj = att.train_attention(p, tok.X, tok.Z, tok.Y, att.linear_head(tok.v),
                                   num_steps=600, record_every=50, ridge=ridge)
        sel = att.selected_tokens(traj.W[-1], tok.X, tok.Z)
        verdict = att.is_locally_optimal(tok.X, tok.Z, tok.scores, sel, norm=norm)
        m = att.track_svm(traj.W, tok.X, tok.Z, verdict.solution.W, sel)
    assert verdict.kind in ("global", "local")
    assert float(m.corr[-1]) > 0.99
    assert float(m.mass[-1]) > 0.99
    assert np.all(np.diff(np.asarray(m.norm)[1:]) > 0)  # ||W_t|| keeps growing
    assert traj.W.shape == (13, 5, 5) and np.all(np.diff(np.asarray(traj.steps)) == 50)


def test_train_attention_rejects_bad_record_every():
    tok = data.token_selection_data(jax.random.key(0), 2, 3, 2)
    with pytest.raises(ValueError, match="multiple of record_every"):
        att.train_attention({"W": jnp.zeros((2, 2))}, tok.X, tok.Z, tok.Y,
                            att.linear_head(tok.v), num_steps=10, record_every=3)


def test_record_at_gives_the_same_iterates_as_record_every():
    with jax.enable_x64(True):
        tok = data.token_selection_data(jax.random.key(3), 3, 4, 4, dtype=jnp.float64)
        p = {"W": 0.1 * jax.random.normal(jax.random.key(5), (4, 4), jnp.float64)}
        head = att.linear_head(tok.v)
        every = att.train_attention(p, tok.X, tok.Z, tok.Y, head, num_steps=60, record_every=10,
                                    optimizer=optax.sgd(0.5))
        at = att.train_attention(p, tok.X, tok.Z, tok.Y, head, num_steps=60,
                                 optimizer=optax.sgd(0.5), record_at=[0, 10, 30, 60])
    np.testing.assert_array_equal(np.asarray(at.steps), [0, 10, 30, 60])
    np.testing.assert_allclose(np.asarray(at.W), np.asarray(every.W)[[0, 1, 3, 6]], rtol=1e-13)
    np.testing.assert_allclose(np.asarray(at.loss), np.asarray(every.loss)[[0, 1, 3, 6]],
                               rtol=1e-13)
    for bad, msg in (([0, 20, 10], "non-decreasing"), ([0, 10], "must equal num_steps"),
                     ([0.0, 60.0], "ints")):
        with pytest.raises(ValueError, match=msg):
            att.train_attention(p, tok.X, tok.Z, tok.Y, head, num_steps=60, record_at=bad)


@pytest.mark.parametrize("record_at", [None, [0, 3, 3, 7, 12]])
def test_train_attention_equals_a_hand_written_optax_loop(record_at):
    """Normalised GD on ``(K, Q)`` with a ridge, against a plain Python loop of optax steps: the
    ridge enters every step, the recorded loss leaves it out, and ``W`` is recorded after
    exactly the documented numbers of steps."""
    with jax.enable_x64(True):
        tok = data.token_selection_data(jax.random.key(6), 3, 4, 4, dtype=jnp.float64)
        k1, k2 = jax.random.split(jax.random.key(7))
        p = {"K": 0.3 * jax.random.normal(k1, (4, 3), jnp.float64),
             "Q": 0.3 * jax.random.normal(k2, (4, 3), jnp.float64)}
        head, ridge = att.linear_head(tok.v), 0.05
        traj = att.train_attention(p, tok.X, tok.Z, tok.Y, head, num_steps=12, record_every=4,
                                   learning_rate=0.2, ridge=ridge, record_at=record_at)
        opt = att.normalized_gd(0.2)
        q, state, Ws, losses = p, opt.init(p), {}, {}
        for t in range(13):
            Ws[t] = np.asarray(q["K"]) @ np.asarray(q["Q"]).T
            losses[t] = float(att.attention_loss(q, tok.X, tok.Z, tok.Y, head))
            g = jax.grad(lambda w: att.attention_loss(w, tok.X, tok.Z, tok.Y, head, ridge))(q)
            upd, state = opt.update(g, state, q)
            q = optax.apply_updates(q, upd)
    steps = [0, 4, 8, 12] if record_at is None else record_at
    np.testing.assert_array_equal(np.asarray(traj.steps), steps)
    np.testing.assert_allclose(np.asarray(traj.W), np.stack([Ws[t] for t in steps]),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(traj.loss), [losses[t] for t in steps], rtol=1e-12)
    # every step moves W, so a record taken one step early or late would fail the comparison
    assert min(np.abs(Ws[t + 1] - Ws[t]).max() for t in range(12)) > 1e-3


def test_general_svm_comparison_projects_out_the_tie_space():
    with jax.enable_x64(True):
        tok = data.token_selection_data(jax.random.key(4), 3, 4, 4, dtype=jnp.float64)
    mask = np.array(data.selection_mask(tok.opt_index, 4))
    mask[1, (int(tok.opt_index[1]) + 1) % 4] = True
    sol = att.att_svm(tok.X, tok.Z, mask, on_infeasible="flag")
    assert sol.feasible  # fixed key: this general selection is separable
    rng = np.random.default_rng(0)
    _, A_eq = att.constraint_rows(np.asarray(tok.X, float), np.asarray(tok.Z, float), mask)
    fin = (A_eq.T @ rng.normal(size=len(A_eq))).reshape(4, 4)  # lies in S_fin
    Ws = np.stack([fin + t * sol.W for t in (1.0, 10.0, 100.0)])
    cmp = att.compare_general_svm(Ws, tok.X, tok.Z, mask)
    np.testing.assert_allclose(cmp.corr_perp, 1.0, atol=1e-9)
    np.testing.assert_allclose(cmp.norm_fin, np.linalg.norm(fin), rtol=1e-9)
    assert cmp.corr_full[0] < cmp.corr_full[-1] < 1.0 and cmp.multi == 1
    # A bounded offset r in the orthogonal part spoils corr_perp but not the growth direction.
    r = rng.normal(size=(4, 4))
    logt = np.log([10.0, 100.0, 1000.0, 10_000.0])
    Ws = np.stack([fin + lt * sol.W + r for lt in logt])
    cmp = att.compare_general_svm(Ws, tok.X, tok.Z, mask, growth_lag=2)
    assert np.all(np.isnan(cmp.corr_growth[:2]))
    np.testing.assert_allclose(cmp.corr_growth[2:], 1.0, atol=1e-9)
    assert cmp.corr_perp[-1] < 1.0 - 1e-4
    # Softmax masses: outside the sets they vanish as W grows along W_mm; the two tied selected
    # tokens of example 1 keep weights set by the fixed S_fin part.
    # Every unselected margin is >= 1 and the logit gaps grow by log t: mass ~ 1/t or faster.
    assert np.all(np.diff(cmp.mass_out) < 0) and cmp.mass_out[-1] < 0.12 * cmp.mass_out[-2]
    assert 0.0 < cmp.mass_in_min[-1] < 0.5
    np.testing.assert_allclose(cmp.mass_in_min[-1], cmp.mass_in_min[-2], rtol=2e-3)
    with pytest.raises(ValueError, match="growth_lag"):
        att.compare_general_svm(Ws, tok.X, tok.Z, mask, growth_lag=0)
    with jax.enable_x64(True):
        sel = att.selected_set(100 * sol.W, tok.X, tok.Z, threshold=1e-3)
    assert np.all(sel[mask])  # tied selected tokens keep their mass
    with pytest.raises(ValueError, match="threshold"):
        att.selected_set(sol.W, tok.X, tok.Z, threshold=1.5)


def test_relu_head_matches_definition():
    U, a = att.random_relu_head(jax.random.key(0), 3, 4)
    u = jax.random.normal(jax.random.key(1), (5, 3))
    ref = np.maximum(np.asarray(u) @ np.asarray(U).T, 0) @ np.asarray(a)
    np.testing.assert_allclose(np.asarray(att.relu_head(U, a)(u)), ref, rtol=1e-5, atol=1e-6)


def test_detect_selection_requires_a_committed_softmax():
    with jax.enable_x64(True):
        tok = data.token_selection_data(jax.random.key(2), 3, 4, 5, dtype=jnp.float64)
        sol = att.att_svm(tok.X, tok.Z, tok.opt_index)
        far = att.detect_selection(50.0 * sol.W, tok.X, tok.Z, tok.scores)
        near = att.detect_selection(0.01 * sol.W, tok.X, tok.Z, tok.scores)
    assert far.converged and far.kind == "global" and far.mass > 0.99
    np.testing.assert_array_equal(far.selection, np.asarray(tok.opt_index))
    assert not near.converged and near.kind == "none" and near.verdict.kind == "global"
    with pytest.raises(ValueError, match="mass_threshold"):
        att.detect_selection(sol.W, tok.X, tok.Z, tok.scores, mass_threshold=0.0)

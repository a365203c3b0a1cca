"""Att-SVM solvers against cvxpy/Clarabel references, KKT and constraint checks, errors."""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from landscape import attention as att
from landscape import data


def _cvxpy_fro(A_ub, A_eq=None):
    """Independent reference: min ||w||^2 s.t. A_ub w >= 1 (and A_eq w = 0) with Clarabel."""
    w = cp.Variable(A_ub.shape[1])
    cons = [A_ub @ w >= 1] + ([A_eq @ w == 0] if A_eq is not None and len(A_eq) else [])
    cp.Problem(cp.Minimize(cp.sum_squares(w)), cons).solve(
        solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return w.value


def _instance(seed, n=4, T=5, d=6):
    tok = data.token_selection_data(jax.random.key(seed), n, T, d, dtype=jnp.float32)
    return np.asarray(tok.X, np.float64), np.asarray(tok.Z, np.float64), tok


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_fro_matches_cvxpy_and_satisfies_constraints(seed):
    X, Z, tok = _instance(seed)
    sol = att.att_svm(X, Z, tok.opt_index)
    A, _ = data.constraint_rows(X, Z, np.asarray(data.selection_mask(tok.opt_index, 5)))
    ref = _cvxpy_fro(A).reshape(6, 6)
    assert sol.feasible and sol.status == "optimal" and sol.solver == "jax-dual-qp"
    assert np.linalg.norm(sol.W - ref) <= 1e-6 * np.linalg.norm(ref)
    margins = A @ sol.W.ravel()
    assert margins.min() >= 1 - 1e-9 and sol.max_violation <= 1e-9
    # support tokens are exactly the tight constraints, and the margins report agrees
    np.testing.assert_allclose(sol.margins[~sol.selected], margins, rtol=1e-9)
    assert sol.support.any() and not (sol.support & sol.selected).any()


def test_dual_qp_kkt_and_vmap_batch():
    with jax.enable_x64(True):
        Xs, Zs, opts = [], [], []
        for s in range(3):
            tok = data.token_selection_data(jax.random.key(s), 3, 4, 5, dtype=jnp.float64)
            Xs.append(tok.X), Zs.append(tok.Z), opts.append(tok.opt_index)
        X, Z, opt = jnp.stack(Xs), jnp.stack(Zs), jnp.stack(opts)
        Wb, qp = jax.jit(jax.vmap(att.fro_svm_jax))(X, Z, opt)
        assert bool(jnp.all(qp.converged))
        for b in range(3):
            single = att.att_svm(X[b], Z[b], opt[b])
            np.testing.assert_allclose(np.asarray(Wb[b]), single.W, rtol=1e-9, atol=1e-10)
        # KKT of the dual: lam >= 0, G lam - 1 >= 0, complementary slackness
        sel = np.asarray(data.selection_mask(opt[0], 4))
        rows, _ = data.constraint_rows(np.asarray(X[0]), np.asarray(Z[0]), sel)
        w, res = att.svm_from_rows(jnp.asarray(rows))
        mask = np.ones(len(rows), bool)
        lam, slack = np.asarray(res.lam), rows @ np.asarray(w) - 1
        assert np.all(lam >= 0) and np.all(slack[mask] >= -1e-10)
        assert np.max(np.abs(lam * slack)[mask]) <= 1e-10


def test_nuclear_matches_an_independent_scs_solve_and_differs_from_fro():
    X, Z, tok = _instance(1, n=3, T=4, d=4)
    a = att.att_svm(X, Z, tok.opt_index, norm="nuc")  # Clarabel
    b = att.att_svm(X, Z, tok.opt_index, norm="nuc", solver="SCS")
    fro = att.att_svm(X, Z, tok.opt_index, norm="fro")
    assert a.solver == "cvxpy-CLARABEL" and b.solver == "cvxpy-SCS"
    assert abs(a.objective - b.objective) <= 1e-5 * a.objective
    assert a.max_violation <= 1e-6
    # each solution is optimal for its own norm: compare the nuclear norm of the fro solution
    nuc_of_fro = np.linalg.svd(fro.W, compute_uv=False).sum()
    assert a.objective <= nuc_of_fro + 1e-6
    assert fro.objective <= np.linalg.norm(a.W) + 1e-9
    assert np.linalg.norm(a.W / np.linalg.norm(a.W) - fro.W / fro.objective) > 1e-3


def test_general_index_set_matches_cvxpy_with_ties():
    X, Z, tok = _instance(5)
    mask = np.array(data.selection_mask(tok.opt_index, 5))
    mask[0, (int(tok.opt_index[0]) + 2) % 5] = True  # two selected tokens in example 0
    sol = att.att_svm(X, Z, mask, on_infeasible="flag")
    A_ub, A_eq = data.constraint_rows(X, Z, mask)
    if not sol.feasible:
        assert not data.selection_feasible(X, Z, mask)[0]
        return
    ref = _cvxpy_fro(A_ub, A_eq).reshape(6, 6)
    assert np.linalg.norm(sol.W - ref) <= 1e-6 * np.linalg.norm(ref)
    assert np.abs(A_eq @ sol.W.ravel()).max() <= 1e-9
    cv = att.att_svm(X, Z, mask, solver="cvxpy")
    assert abs(cv.objective - sol.objective) <= 1e-6 * sol.objective


def test_infeasible_problem_raises_or_flags():
    X = np.zeros((1, 3, 2))
    X[0, 0], X[0, 1], X[0, 2] = [1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]
    Z = np.array([[1.0, 0.0]])
    with pytest.raises(att.InfeasibleSVMError, match="infeasible"):
        att.att_svm(X, Z, np.array([2]))
    with pytest.raises(ValueError):  # it is a ValueError too
        att.att_svm(X, Z, np.array([2]), norm="nuc")
    sol = att.att_svm(X, Z, np.array([2]), on_infeasible="flag")
    assert not sol.feasible and sol.status == "infeasible" and np.all(np.isnan(sol.W))


def test_att_svm_argument_errors():
    X, Z, tok = _instance(0, n=2, T=3, d=2)
    with pytest.raises(ValueError, match="norm must be"):
        att.att_svm(X, Z, tok.opt_index, norm="l1")
    with pytest.raises(ValueError, match="solver must be"):
        att.att_svm(X, Z, tok.opt_index, norm="nuc", solver="jax")
    with pytest.raises(ValueError, match=r"opt_index entries must lie in \[0, T\)"):
        att.att_svm(X, Z, np.array([0, 3]))
    with pytest.raises(ValueError, match="Z must have shape"):
        att.att_svm(X, Z[:, :1], tok.opt_index)
    Xn = X.copy()
    Xn[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        att.att_svm(Xn, Z, tok.opt_index)


def test_locality_global_local_and_support_tokens():
    X, Z, tok = _instance(2)
    scores = np.asarray(tok.scores, np.float64)
    g = att.is_locally_optimal(X, Z, scores, tok.opt_index)
    assert g.kind == "global" and g.locally_optimal and g.globally_optimal
    np.testing.assert_array_equal(att.support_tokens(X, Z, tok.opt_index), g.solution.support)
    # Definition check by brute force over every selection of a tiny problem
    Xs, Zs, t2 = _instance(11, n=2, T=3, d=3)
    sc = np.asarray(t2.scores, np.float64)
    for a in range(3):
        for b in range(3):
            sel = np.array([a, b])
            v = att.is_locally_optimal(Xs, Zs, sc, sel)
            if not v.feasible:
                assert v.kind == "none"
                continue
            sup = v.solution.support
            beats = all(sc[i, sel[i]] > sc[i, t] for i in range(2) for t in np.flatnonzero(sup[i]))
            assert v.locally_optimal == beats
            assert v.globally_optimal == bool(np.all(sel == sc.argmax(1)))
    with pytest.raises(ValueError, match="scores must have shape"):
        att.is_locally_optimal(X, Z, scores[:, :2], tok.opt_index)

"""Att-SVM solvers against cvxpy/Clarabel references, KKT and constraint checks, errors; the
constraint algebra (rows, LP feasibility, input validation)."""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls

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
    A, _ = att.constraint_rows(X, Z, np.asarray(data.selection_mask(tok.opt_index, 5)))
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
        rows, _ = att.constraint_rows(np.asarray(X[0]), np.asarray(Z[0]), sel)
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
    A_ub, A_eq = att.constraint_rows(X, Z, mask)
    if not sol.feasible:
        assert not att.selection_feasible(X, Z, mask)[0]
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
    assert not sol.converged


def test_att_svm_argument_errors():
    X, Z, tok = _instance(0, n=2, T=3, d=2)
    with pytest.raises(ValueError, match="norm must be"):
        att.att_svm(X, Z, tok.opt_index, norm="l1")
    with pytest.raises(ValueError, match="solver must be"):
        att.att_svm(X, Z, tok.opt_index, norm="nuc", solver="jax")
    with pytest.raises(ValueError, match="on_unconverged must be"):
        att.att_svm(X, Z, tok.opt_index, on_unconverged="ignore")
    with pytest.raises(ValueError, match="violation_tol must be"):
        att.att_svm(X, Z, tok.opt_index, violation_tol=0.0)
    with pytest.raises(TypeError, match="fallback must be"):
        att.att_svm(X, Z, tok.opt_index, fallback="yes")
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


def test_feasibility_lp_matches_gordan_cases():
    tok = data.token_selection_data(jax.random.key(0), 4, 5, 8)
    ok, msg = att.selection_feasible(tok.X, tok.Z, tok.opt_index)
    assert ok and "feasible" in msg
    # two identical tokens in one example, one of them selected: no W separates them
    X = np.array(tok.X, dtype=np.float64)
    sel = np.asarray(tok.opt_index)
    X[0, (sel[0] + 1) % 5] = X[0, sel[0]]
    ok, msg = att.selection_feasible(X, tok.Z, sel)
    assert not ok and "infeasible" in msg
    # the interior point of a segment can never be selected (convex combination of the ends)
    X = np.zeros((1, 3, 2))
    X[0, 0], X[0, 1], X[0, 2] = [1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]
    assert not att.selection_feasible(X, np.array([[1.0, 0.0]]), np.array([2]))[0]
    assert att.selection_feasible(X, np.array([[1.0, 0.0]]), np.array([0]))[0]


@pytest.mark.parametrize(
    "X_shape, Z_shape, sel, match",
    [
        ((3, 4, 2), (3, 3), np.array([0, 1, 2]), "Z must have shape"),
        ((3, 4), (3, 2), np.array([0, 1, 2]), "X must have shape"),
        ((3, 4, 2), (3, 2), np.array([0, 1]), "opt_index must have shape"),
        ((3, 4, 2), (3, 2), np.array([0, 4, 1]), r"lie in \[0, T\)"),
        ((3, 4, 2), (3, 2), np.array([0, -1, 1]), r"lie in \[0, T\)"),
        ((3, 4, 2), (3, 2), np.ones((3, 4), bool), "not all tokens"),
    ],
)
def test_check_token_inputs_errors(X_shape, Z_shape, sel, match):
    with pytest.raises(ValueError, match=match):
        att.check_token_inputs(np.ones(X_shape), np.ones(Z_shape), sel)


def test_check_token_inputs_rejects_nonfinite_and_float_index():
    X = np.ones((2, 3, 2))
    X[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="X contains non-finite"):
        att.check_token_inputs(X, np.ones((2, 2)), np.array([0, 1]))
    with pytest.raises(TypeError, match="int array"):
        att.check_token_inputs(np.ones((2, 3, 2)), np.ones((2, 2)), np.array([0.0, 1.0]))


def test_onehot_constraint_rows_match_the_loop_rows():
    X, Z, tok = _instance(3, n=3, T=4, d=3)
    rows, mask = att.onehot_constraint_rows(jnp.asarray(X), jnp.asarray(Z), tok.opt_index)
    A, A_eq = att.constraint_rows(X, Z, np.asarray(data.selection_mask(tok.opt_index, 4)))
    assert A_eq.shape == (0, 9)
    np.testing.assert_allclose(np.asarray(rows)[np.asarray(mask)], A, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(rows)[~np.asarray(mask)], 0.0)
    # every row is (x_opt - x_t) z^T: its margin under W is the score difference
    W = np.random.default_rng(0).normal(size=(3, 3))
    s = np.einsum("ntd,de,ne->nt", X, W, Z)
    opt = np.asarray(tok.opt_index)
    ref = np.array([s[i, opt[i]] - s[i, t] for i in range(3) for t in range(4) if t != opt[i]])
    np.testing.assert_allclose(A @ W.ravel(), ref, rtol=1e-10, atol=1e-12)


def _degenerate_instance(eps=1e-8):
    """One unselected token ``eps`` from the selected one: feasible, but ``||W|| >~ 1 / eps``."""
    X, Z, tok = _instance(0)
    opt = np.asarray(tok.opt_index)
    u = np.random.default_rng(0).normal(size=6)
    X[0, (opt[0] + 1) % 5] = X[0, opt[0]] + eps * u / np.linalg.norm(u)
    return X, Z, opt


def _cvxpy_fro_rownormalised(A):
    """Reference in another formulation: rows scaled to unit norm, w = s v with s = max 1/|a_k|,
    so min ||v||^2 s.t. (a_k/|a_k|) v >= 1/(s |a_k|), solved with Clarabel."""
    r = np.linalg.norm(A, axis=1)
    s = 1.0 / r.min()
    v = cp.Variable(A.shape[1])
    cp.Problem(cp.Minimize(cp.sum_squares(v)), [(A / r[:, None]) @ v >= 1.0 / (s * r)]).solve(
        solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return s * v.value


def test_nearly_degenerate_instance_is_flagged_or_solved_by_the_fallback():
    X, Z, opt = _degenerate_instance()
    A, _ = att.constraint_rows(X, Z, np.asarray(data.selection_mask(opt, 5)))
    assert np.linalg.norm(A, axis=1).min() < 2e-8  # one margin row is tiny: ||W|| >= 5e7
    assert att.selection_feasible(X, Z, opt)[0]
    # The JAX dual QP alone does not reach its tolerance; it must not pass that W off as a
    # solution: it raises (whatever on_infeasible says) or flags it with the measured violation.
    for on_infeasible in ("raise", "flag"):
        with pytest.raises(att.UnconvergedSVMError, match="violation_tol"):
            att.att_svm(X, Z, opt, fallback=False, on_infeasible=on_infeasible)
    bad = att.att_svm(X, Z, opt, fallback=False, on_unconverged="flag")
    assert bad.feasible and not bad.converged and bad.solver == "jax-dual-qp"
    assert "not converged" in bad.status and np.all(np.isfinite(bad.W))
    measured = max(0.0, 1.0 - (A @ bad.W.ravel()).min())
    assert measured > 1e-6
    np.testing.assert_allclose(bad.max_violation, measured, rtol=1e-9)
    assert bad.kkt_residual > 1e-3  # the dual's natural residual sees the violated margin
    # Default: the Clarabel fallback solves it; check against an independent Clarabel solve in
    # another formulation, and certify optimality by the KKT conditions (NNLS on the tight rows).
    sol = att.att_svm(X, Z, opt)
    assert sol.feasible and sol.converged and sol.status == "optimal"
    assert "fallback" in sol.solver and sol.max_violation <= 1e-6
    assert sol.kkt_residual <= 1e-3  # margin units, with duals ~1e16: Clarabel's dual accuracy
    w = sol.W.ravel()
    margins = A @ w
    assert margins.min() >= 1 - 1e-6
    ref = _cvxpy_fro_rownormalised(A)
    assert np.linalg.norm(ref) > 5e7
    assert np.linalg.norm(w - ref) <= 1e-7 * np.linalg.norm(ref)
    assert abs(sol.objective - np.linalg.norm(ref)) <= 1e-7 * np.linalg.norm(ref)
    tight = margins <= 1 + 1e-6
    lam, res = nnls(A[tight].T, w)
    assert res <= 1e-9 * np.linalg.norm(w) and lam.max() > 0
    np.testing.assert_array_equal(sol.support[~sol.selected], tight)
    # solver="cvxpy" reaches the same W directly
    cv = att.att_svm(X, Z, opt, solver="cvxpy")
    assert cv.converged and cv.solver == "cvxpy-CLARABEL"
    assert np.linalg.norm(cv.W.ravel() - ref) <= 1e-7 * np.linalg.norm(ref)


def test_unconverged_policy_on_a_regular_instance_and_kkt_of_both_solvers():
    X, Z, tok = _instance(7)
    A, _ = att.constraint_rows(X, Z, np.asarray(data.selection_mask(tok.opt_index, 5)))
    with pytest.raises(att.UnconvergedSVMError):
        att.att_svm(X, Z, tok.opt_index, max_iter=1, fallback=False)
    early = att.att_svm(X, Z, tok.opt_index, max_iter=1, fallback=False, on_unconverged="flag")
    assert early.feasible and not early.converged and early.num_iterations == 1
    np.testing.assert_allclose(early.max_violation, max(0.0, 1 - (A @ early.W.ravel()).min()),
                               rtol=1e-9, atol=1e-15)
    # a solver's own verdict is not enough: with a loose dual tolerance the JAX QP stops early
    # and calls itself converged, but the measured margins break the constraints
    loose = att.att_svm(X, Z, tok.opt_index, tol=0.5, fallback=False, on_unconverged="flag")
    assert "jax-dual-qp: optimal" in loose.status and not loose.converged
    assert loose.max_violation > 1e-2
    np.testing.assert_allclose(loose.max_violation, max(0.0, 1 - (A @ loose.W.ravel()).min()),
                               rtol=1e-9)
    rescued = att.att_svm(X, Z, tok.opt_index, max_iter=1)
    ref = _cvxpy_fro(A)
    assert rescued.converged and "fallback" in rescued.solver
    assert np.linalg.norm(rescued.W.ravel() - ref) <= 1e-6 * np.linalg.norm(ref)
    # the KKT residual of the dual is small for the JAX and the Clarabel solutions alike
    for solver in ("jax", "cvxpy"):
        sol = att.att_svm(X, Z, tok.opt_index, solver=solver)
        assert sol.converged and sol.kkt_residual <= 1e-8
    assert np.isnan(att.att_svm(X, Z, tok.opt_index, norm="nuc").kkt_residual)

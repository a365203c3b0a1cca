"""Lanczos eigsh and the power-iteration baseline against planted spectra and dense oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.sparse.linalg as spla
from _planted import planted as haar_planted
from hypothesis import given, settings
from hypothesis import strategies as st

from landscape import spectral
from landscape.linop import MatrixOperator, as_operator
from landscape.spectral.lanczos import lanczos_init, lanczos_steps, tridiagonal

X64 = bool(jax.config.jax_enable_x64)
DTYPE = np.float64 if X64 else np.float32
# Relative accuracy (to max|lambda|) promised in the eigsh docstring for separated eigenvalues.
RTOL = 1e-8 if X64 else 1e-5
N = 240


def planted(eigenvalues, seed=0):
    """``Q diag(lam) Q^T`` with a Haar-random orthogonal ``Q`` (float64 numpy)."""
    rng = np.random.default_rng(seed)
    n = len(eigenvalues)
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    Q = Q * np.sign(np.diag(R))
    A = (Q * np.asarray(eigenvalues, float)) @ Q.T
    return (A + A.T) / 2


def spectrum(seed=0):
    """Separated top (100) and bottom (-20), a tight cluster, a repeated value, a bulk."""
    rng = np.random.default_rng(seed + 100)
    special = [100.0, 10.0, 9.99, 9.98, 5.0, 5.0, 5.0, -8.0, -20.0]
    bulk = rng.uniform(-1.0, 2.0, N - len(special))
    return np.concatenate([special, bulk])


@pytest.fixture(scope="module")
def problem():
    lam = spectrum()
    A = planted(lam)
    return lam, A, MatrixOperator(jnp.asarray(A, DTYPE))


def wanted(lam, k, which):
    if which == "LA":
        return np.sort(lam)[::-1][:k]
    if which == "SA":
        return np.sort(lam)[:k]
    return lam[np.argsort(-np.abs(lam))][:k]


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_planted_eigenvalues_match_truth_and_scipy(problem, which):
    lam, A, op = problem
    k = 4
    r = spectral.eigsh(op, k=k, which=which, key=jax.random.key(0))
    scale = np.max(np.abs(lam))
    np.testing.assert_allclose(np.asarray(r.eigenvalues), wanted(lam, k, which),
                               rtol=0, atol=RTOL * scale)
    ref = spla.eigsh(A, k=k, which=which, return_eigenvectors=False, tol=1e-12)
    key = {"LA": lambda x: -x, "SA": lambda x: x, "LM": lambda x: -np.abs(x)}[which]
    np.testing.assert_allclose(np.asarray(r.eigenvalues), sorted(ref, key=key),
                               rtol=0, atol=RTOL * scale)
    assert bool(np.all(r.converged))
    assert r.eigenvectors.shape == (N, k) and r.eigenvectors.dtype == DTYPE
    V = np.asarray(r.eigenvectors, float)
    np.testing.assert_allclose(V.T @ V, np.eye(k), atol=50 * np.finfo(DTYPE).eps ** 0.5)
    assert int(r.num_matvecs) == int(r.num_steps) + 1  # + the floor's one product


def test_residuals_are_explicit_and_certify_eigenvalues(problem):
    lam, A, op = problem
    # Too few steps to converge the bulk end: the certificate must hold all the same.
    r = spectral.eigsh(op, k=6, which="SA", key=jax.random.key(1), max_steps=12)
    theta, V = np.asarray(r.eigenvalues, float), np.asarray(r.eigenvectors, float)
    vnorm = np.linalg.norm(V, axis=0)
    explicit = np.linalg.norm(A @ V - V * theta, axis=0) / vnorm
    eps = np.finfo(DTYPE).eps
    # Documented floor: eps * sqrt(dim) * ||T||_2, with ||T||_2 <= ||A||_2 (Ritz values interlace).
    assert 0 < float(r.norm_estimate) <= np.max(np.abs(lam)) * (1 + 1e-6)
    np.testing.assert_allclose(float(r.rounding_floor), eps * np.sqrt(N) * float(r.norm_estimate),
                               rtol=1e-6)
    slack = 100 * eps * np.max(np.abs(lam))
    np.testing.assert_allclose(np.asarray(r.residuals),
                               explicit + float(r.rounding_floor) / vnorm, rtol=1e-2, atol=slack)
    dist = np.min(np.abs(theta[:, None] - lam[None, :]), axis=1)
    assert np.all(dist <= np.asarray(r.residuals))
    assert not bool(np.all(r.converged))  # 12 steps cannot resolve the bulk edge
    np.testing.assert_array_equal(np.asarray(r.converged),
                                  np.asarray(r.residuals) <= r.tol * float(r.norm_estimate))


# --- Certificates against exactly known spectra -------------------------------------------------
#
# ``exact_planted`` builds A = Q diag(lam) Q^T / n with Q a Hadamard matrix (entries +-1) whose
# columns are permuted and rows sign-flipped at random, and lam dyadic (integers / 2^p). Every
# entry of A is then a short dyadic sum, computed exactly and exactly representable in float32 and
# float64, so lam are the exact eigenvalues of the operator in both dtypes: the check below does
# not depend on the accuracy of a reference eigensolver (dense float64 eigvalsh, itself accurate
# to ~n eps ||A|| only, is compared to lam as a check of the construction).


def exact_planted(lam, seed):
    n = len(lam)
    rng = np.random.default_rng(seed)
    Q = scipy.linalg.hadamard(n)[:, rng.permutation(n)] * rng.choice([-1.0, 1.0], n)[:, None]
    A = (Q * lam) @ Q.T / n
    assert np.array_equal(A.astype(np.float32).astype(np.float64), A)  # exact in float32
    return A


def exact_spectrum(kind, n, seed):
    rng = np.random.default_rng(seed + 1000)
    if kind == "separated":  # outliers, a cluster 10, 10 - 1/256, 10 - 2/256, a bulk in [-1, 2]
        top = [100.0, 10.0, 10 - 1 / 256, 10 - 2 / 256, 5.0, -8.0, -20.0]
        return np.r_[top, rng.integers(-256, 513, n - len(top)) / 256]
    if kind == "clustered":  # six eigenvalues 1 - j/1024 at the top of a bulk in [-1, 0.9]
        return np.r_[1 - np.arange(6) / 1024, rng.integers(-1024, 922, n - 6) / 1024]
    return rng.integers(-1024, 1025, n) / 1024  # "flat": no gap anywhere, ||A||_F ~ sqrt(n) ||A||


def _certificate_check(A, lam, r):
    """Every returned eigenvalue has an exact eigenvalue within its certificate; the certificate
    is not below the true residual (float64, from the returned vectors) and exceeds it by at most
    the documented allowances (the floor, the products' own rounding and, for certificates from
    the recurrence, the rounding of its vector updates). Returns error / certificate."""
    theta, V = np.asarray(r.eigenvalues, np.float64), np.asarray(r.eigenvectors, np.float64)
    cert = np.asarray(r.residuals, np.float64)
    scale = np.max(np.abs(lam))
    n = len(lam)
    err = np.min(np.abs(theta[:, None] - lam[None, :]), axis=1)
    assert np.all(err <= cert), (err, cert)
    # The float64 residual of the float64 reference has its own rounding, ~eps64 sqrt(n) ||A||.
    ref_slack = 4 * np.finfo(np.float64).eps * np.sqrt(n) * scale
    true = np.linalg.norm(A @ V - V * theta, axis=0) / np.linalg.norm(V, axis=0)
    assert np.all(cert >= true - ref_slack), (cert, true)
    floor = float(r.rounding_floor)
    # the certificate from the recurrence adds 4 eps ||T|| for the rounding of its vector updates
    updates = 4 * np.finfo(np.dtype(r.eigenvectors.dtype)).eps * float(r.norm_estimate)
    assert np.all(cert <= true + (1.2 * floor + updates) / np.linalg.norm(V, axis=0) + ref_slack)
    ok = np.asarray(r.converged)
    assert np.all(err[ok] <= r.tol * float(r.norm_estimate))
    return err / cert


# One shape and three settings shared by the tests below (each setting compiles once): converged
# at both ends, and an unconverged run whose certificates are far above the rounding floor.
EXACT_N = 128
SETTINGS = [("LA", {}), ("SA", {}), ("SA", {"max_steps": 10})]


@pytest.mark.parametrize("kind", ["separated", "clustered", "flat"])
def test_certificates_bound_the_error_on_exact_spectra(kind):
    n, converged = EXACT_N, []
    for seed in range(2):
        lam = exact_spectrum(kind, n, seed)
        A = exact_planted(lam, seed)
        np.testing.assert_allclose(np.linalg.eigvalsh(A), np.sort(lam),
                                   atol=n * np.finfo(np.float64).eps * np.max(np.abs(lam)))
        op = MatrixOperator(jnp.asarray(A, DTYPE))
        for which, kwargs in SETTINGS:
            r = spectral.eigsh(op, k=4, which=which, key=jax.random.key(seed), **kwargs)
            _certificate_check(A, lam, r)
            converged.append(np.asarray(r.converged))
    converged = np.concatenate(converged)
    # Both outcomes occur, so both kinds of pairs were checked.
    assert converged.any() and not converged.all()


def test_certificates_on_haar_planted_against_eigvalsh():
    # A generic dense matrix (Haar eigenvectors, tests/_planted.py); the reference is dense
    # float64 eigvalsh of the same float64 matrix, accurate to ~n eps64 ||A|| (LAPACK backward
    # stability), which is the slack allowed; in float32 it is far below the certificates.
    n = EXACT_N
    rng = np.random.default_rng(5)
    lam = np.r_[50.0, 49.9, 49.8, 10.0, rng.uniform(-5, 5, n - 4)]
    A = haar_planted(lam, 5)
    truth = np.linalg.eigvalsh(A)
    ref_err = n * np.finfo(np.float64).eps * 50.0
    op = MatrixOperator(jnp.asarray(A, DTYPE))
    for which, kwargs in SETTINGS:
        r = spectral.eigsh(op, k=4, which=which, key=jax.random.key(5), **kwargs)
        theta, cert = np.asarray(r.eigenvalues, np.float64), np.asarray(r.residuals, np.float64)
        err = np.min(np.abs(theta[:, None] - truth[None, :]), axis=1)
        assert np.all(err <= cert + ref_err)
        V = np.asarray(r.eigenvectors, np.float64)
        true = np.linalg.norm(A @ V - V * theta, axis=0) / np.linalg.norm(V, axis=0)
        assert np.all(cert >= true - ref_err / 10)


# --- Certificates from the recurrence, without products -----------------------------------------


def _true_residuals(B, r):
    """``||B v - theta v|| / ||v||`` in float64 from the returned pairs."""
    theta, V = np.asarray(r.eigenvalues, np.float64), np.asarray(r.eigenvectors, np.float64)
    return np.linalg.norm(B @ V - V * theta, axis=0) / np.linalg.norm(V, axis=0)


def test_recurrence_and_product_certificates_agree():
    """The default certificate (from the recurrence's own products) and the explicit one
    (``k`` more products) certify the same pairs, both bound the error and the true residual,
    and differ by less than the rounding allowances the recurrence form adds."""
    lam = exact_spectrum("separated", EXACT_N, 3)
    A = exact_planted(lam, 3)
    op = MatrixOperator(jnp.asarray(A, DTYPE))
    eps = np.finfo(DTYPE).eps
    for which, kwargs in SETTINGS[::2]:  # converged, and stopped early (large residuals)
        rec = spectral.eigsh(op, k=4, which=which, key=jax.random.key(3), **kwargs)
        prod = spectral.eigsh(op, k=4, which=which, key=jax.random.key(3),
                              certificate="products", **kwargs)
        np.testing.assert_array_equal(np.asarray(rec.eigenvalues), np.asarray(prod.eigenvalues))
        assert int(prod.num_matvecs) == int(rec.num_matvecs) + 4
        for r in (rec, prod):
            _certificate_check(A, lam, r)
        allowance = (float(rec.rounding_floor)
                     + 4 * eps * np.sqrt(int(rec.num_steps)) * float(rec.norm_estimate))
        np.testing.assert_allclose(np.asarray(rec.residuals, np.float64),
                                   np.asarray(prod.residuals, np.float64), rtol=0,
                                   atol=allowance)


def test_the_recurrence_certificate_sees_what_the_lanczos_estimate_misses():
    """A product that is not symmetric (``A + c K``, ``K`` antisymmetric): Lanczos, which assumes
    symmetry, reports small estimates ``beta_m |s_m|``, but the residuals ``||B v - theta v||``
    are much larger; the Gram-Schmidt coefficients hold the difference, and the certificate
    from the recurrence is not below the true residual."""
    rng = np.random.default_rng(11)
    lam = np.r_[10.0, 8.0, 6.0, rng.uniform(-1, 1, 61)]
    A = planted(lam, 11)
    K = rng.standard_normal(A.shape)
    K = (K - K.T) / np.linalg.norm(K - K.T, 2)
    B = A + 1e-2 * K
    op = as_operator(lambda v: jnp.asarray(B, DTYPE) @ v, dim=64, dtype=DTYPE)
    with pytest.warns(spectral.EigshNotConverged):
        r = spectral.eigsh(op, k=3, key=jax.random.key(0), max_steps=30)
    true = _true_residuals(B, r)
    assert np.all(np.asarray(r.residual_estimates) < 0.1 * true), (r.residual_estimates, true)
    assert np.all(np.asarray(r.residuals, np.float64) >= true * (1 - 1e-3)), (r.residuals, true)
    assert not bool(np.any(r.converged))


def test_the_recurrence_certificate_through_breakdowns():
    """Three distinct eigenvalues in 64 dimensions: the Krylov space is invariant after three
    steps, the run continues from fresh vectors (recorded breakdowns), and the certificates,
    which then also carry the discarded vectors' norms, still bound error and residual."""
    lam = np.repeat([4.0, 1.0, -2.0], [8, 40, 16])
    A = planted(lam, 2)
    op = MatrixOperator(jnp.asarray(A, DTYPE))
    r = spectral.eigsh(op, k=5, key=jax.random.key(2))
    theta = np.asarray(r.eigenvalues, np.float64)
    cert = np.asarray(r.residuals, np.float64)
    assert np.all(np.min(np.abs(theta[:, None] - lam[None, :]), axis=1) <= cert)
    assert np.all(cert >= _true_residuals(A, r) - 1e-12)
    assert bool(np.all(r.converged)) and theta[0] == pytest.approx(4.0, abs=1e-4)


def test_scaling_the_operator_changes_only_the_scale():
    lam = exact_spectrum("separated", EXACT_N, 0)
    A = exact_planted(lam, 0)
    atol = (1e-10 if X64 else 1e-5) * np.max(np.abs(lam))
    for which, kwargs in SETTINGS[::2]:
        base = spectral.eigsh(MatrixOperator(jnp.asarray(A, DTYPE)), k=4, which=which,
                              key=jax.random.key(0), **kwargs)
        assert np.all(np.asarray(base.converged)) == (not kwargs)
        for c in (1e-18, 1e18):
            r = spectral.eigsh(MatrixOperator(jnp.asarray(c * A, DTYPE)), k=4, which=which,
                               key=jax.random.key(0), **kwargs)
            np.testing.assert_array_equal(np.asarray(r.converged), np.asarray(base.converged))
            assert int(r.num_steps) == int(base.num_steps)
            np.testing.assert_allclose(np.asarray(r.eigenvalues, np.float64) / c,
                                       np.asarray(base.eigenvalues, np.float64), rtol=0, atol=atol)
            np.testing.assert_allclose(np.asarray(r.residuals, np.float64) / c,
                                       np.asarray(base.residuals, np.float64), rtol=0.5)
            np.testing.assert_allclose(float(r.norm_estimate) / c, float(base.norm_estimate),
                                       rtol=1e-4)
            _certificate_check(c * A, c * lam, r)


# --- Operators or bare matvecs; the key is required ---------------------------------------------


def test_bare_matvec_equals_matrix_operator():
    lam = exact_spectrum("separated", EXACT_N, 1)
    M = jnp.asarray(exact_planted(lam, 1), DTYPE)
    key = jax.random.key(4)
    a = spectral.eigsh(MatrixOperator(M), k=4, key=key)
    matvec = lambda v: M @ v  # noqa: E731
    b = spectral.eigsh(matvec, k=4, key=key, dim=EXACT_N)
    assert b.eigenvectors.dtype == DTYPE
    tol = (1e-12 if X64 else 1e-5) * np.max(np.abs(lam))
    np.testing.assert_allclose(np.asarray(b.eigenvalues), np.asarray(a.eigenvalues),
                               rtol=0, atol=tol)
    overlap = np.abs(np.sum(np.asarray(a.eigenvectors, float) * np.asarray(b.eigenvectors, float),
                            axis=0))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-4 if not X64 else 1e-10)
    np.testing.assert_array_equal(np.asarray(b.converged), np.asarray(a.converged))
    c = spectral.eigsh(matvec, k=4, key=key, dim=EXACT_N, dtype=DTYPE)
    np.testing.assert_array_equal(np.asarray(c.eigenvalues), np.asarray(b.eigenvalues))
    p = spectral.power_iteration(MatrixOperator(M), k=1, key=key)
    q = spectral.power_iteration(matvec, k=1, key=key, dim=EXACT_N)
    np.testing.assert_allclose(np.asarray(q.eigenvalues), np.asarray(p.eigenvalues), rtol=1e-5)


def test_bare_matvec_needs_dim_and_key_is_required(problem):
    _, A, op = problem
    M = jnp.asarray(A, DTYPE)
    for fn in (spectral.eigsh, spectral.power_iteration):
        with pytest.raises(ValueError, match="dim"):
            fn(lambda v: M @ v, k=1, key=jax.random.key(0))
        with pytest.raises(ValueError, match="dim"):
            fn(op, k=1, key=jax.random.key(0), dim=N + 1)
        with pytest.raises(TypeError, match="key"):
            fn(op, k=1)
    with pytest.raises(TypeError):  # keyword-only: a positional key is refused
        spectral.power_iteration(op, 1, jax.random.key(0))
    with pytest.raises(TypeError):
        spectral.eigsh(op, 1, "LA", jax.random.key(0))


def _ritz_values(op, steps, full):
    state = lanczos_init(jax.random.normal(jax.random.key(3), (op.dim,), op.dtype), steps,
                         jax.random.key(4), full_reorthogonalization=full)
    state = lanczos_steps(op, state, 0, steps, full_reorthogonalization=full)
    T, _ = tridiagonal(state.alpha, state.beta)
    return np.linalg.eigvalsh(np.asarray(T, float))


def test_no_ghost_eigenvalues_after_200_steps(problem):
    lam, _, op = problem
    theta = _ritz_values(op, 200, full=True)
    window = 1e-3 * np.max(np.abs(lam))
    for value in (100.0, -20.0, -8.0, 5.0):
        copies = int(np.sum(np.abs(theta - value) < window))
        multiplicity = int(np.sum(np.abs(lam - value) < window))
        assert 1 <= copies <= multiplicity, (value, copies, multiplicity)
    # The check can fail: the plain three-term recurrence does produce ghosts here.
    plain = _ritz_values(op, 200, full=False)
    assert int(np.sum(np.abs(plain - 100.0) < window)) >= 2


def test_fixed_num_steps_runs_exactly(problem):
    _, _, op = problem
    r = spectral.eigsh(op, k=3, key=jax.random.key(0), num_steps=30)
    assert int(r.num_steps) == 30 and int(r.num_matvecs) == 31
    explicit = spectral.eigsh(op, k=3, key=jax.random.key(0), num_steps=30,
                              certificate="products")
    assert int(explicit.num_matvecs) == 34


def test_warm_start_reuses_previous_eigenvectors(problem):
    lam, A, _ = problem
    rng = np.random.default_rng(7)
    E = rng.standard_normal(A.shape)
    moved = A + 1e-6 * (E + E.T)
    op0, op1 = MatrixOperator(jnp.asarray(A, DTYPE)), MatrixOperator(jnp.asarray(moved, DTYPE))
    first = spectral.eigsh(op0, k=4, key=jax.random.key(0), chunk=2)
    cold = spectral.eigsh(op1, k=4, key=jax.random.key(1), chunk=2)
    warm = spectral.eigsh(op1, k=4, key=jax.random.key(1), chunk=2, v0=first.eigenvectors)
    truth = np.sort(np.linalg.eigvalsh(moved))[::-1][:4]
    for r in (cold, warm):
        np.testing.assert_allclose(np.asarray(r.eigenvalues), truth, atol=RTOL * 100)
    assert int(warm.num_steps) < int(cold.num_steps)


def test_a_reused_floor_saves_its_product(problem):
    """``measured_floor=`` from an earlier result skips the measurement: the same pairs, the
    same floor, one product fewer; bad values are rejected by name."""
    _, _, op = problem
    first = spectral.eigsh(op, k=3, key=jax.random.key(0))
    again = spectral.eigsh(op, k=3, key=jax.random.key(0), measured_floor=first.measured_floor)
    np.testing.assert_array_equal(np.asarray(again.eigenvalues), np.asarray(first.eigenvalues))
    assert float(again.measured_floor) == float(first.measured_floor)
    assert int(again.num_matvecs) == int(first.num_matvecs) - 1
    # the defect sees a product that is not linear (an error growing with ||v||); ||A|| = 100
    c = jnp.ones(op.dim, DTYPE) / op.dim ** 0.5
    bent = as_operator(lambda v: op.matvec(v) + 1e-3 * jnp.linalg.norm(v) * c, dim=op.dim,
                       dtype=op.dtype)
    exact = float(spectral.linearity_defect(op, jax.random.key(1)))
    skewed = float(spectral.linearity_defect(bent, jax.random.key(1)))
    assert exact < 1e-5 < 1e-4 < skewed, (exact, skewed)
    for bad in (-1.0, jnp.ones(2)):
        with pytest.raises(ValueError, match="measured_floor"):
            spectral.eigsh(op, k=1, key=jax.random.key(0), measured_floor=bad)


@pytest.mark.parametrize("size", [3, 8, 9, 16, 17, 33, 64, 65, 100, 101])
def test_ritz_on_the_smallest_block_equals_the_full_tridiagonal(size):
    """The Ritz check solves the smallest static block holding the active part of ``T``; it
    must give what the full ``m x m`` solve gives, for sizes inside and at every block edge."""
    from landscape.spectral.lanczos import _ritz_dense, ritz

    rng = np.random.default_rng(size)
    m = 101
    alpha = jnp.asarray(rng.standard_normal(m), DTYPE)
    beta = jnp.asarray(np.abs(rng.standard_normal(m)) + 0.1, DTYPE)
    got = jax.jit(lambda s: ritz(alpha, beta, s, 3, "LA", with_norm=True))(size)
    want = _ritz_dense(alpha, beta, size, 3, "LA", True)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=RTOL, atol=RTOL)


def test_eigsh_is_jittable_with_operator_argument(problem):
    lam, _, op = problem
    f = jax.jit(lambda o, key: spectral.eigsh(o, k=2, key=key).eigenvalues)
    np.testing.assert_allclose(np.asarray(f(op, jax.random.key(5))), np.sort(lam)[::-1][:2],
                               atol=RTOL * 100)


@settings(max_examples=10, deadline=None)
@given(dim=st.sampled_from([3, 6]), seed=st.integers(0, 2**31 - 1),
       repeated=st.booleans())
def test_k_equal_dim_is_exact(dim, seed, repeated):
    rng = np.random.default_rng(seed)
    lam = rng.integers(-2, 3, dim).astype(float) if repeated else rng.standard_normal(dim)
    A = planted(lam, seed)
    r = spectral.eigsh(MatrixOperator(jnp.asarray(A, DTYPE)), k=dim, which="SA",
                       key=jax.random.key(seed % 1000))
    scale = max(1.0, np.max(np.abs(lam)))
    np.testing.assert_allclose(np.asarray(r.eigenvalues), np.sort(lam),
                               atol=(1e-10 if X64 else 1e-4) * scale)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_invariant_under_orthogonal_similarity(seed):
    rng = np.random.default_rng(seed)
    lam = np.concatenate([[9.0, 6.0, 4.0], rng.uniform(-1, 1, 37)])
    A = planted(lam, seed)
    Q, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    B = Q @ A @ Q.T
    key = jax.random.key(seed % 997)
    ra = spectral.eigsh(MatrixOperator(jnp.asarray(A, DTYPE)), k=3, key=key)
    rb = spectral.eigsh(MatrixOperator(jnp.asarray(B, DTYPE)), k=3, key=key)
    np.testing.assert_allclose(np.asarray(ra.eigenvalues), np.asarray(rb.eigenvalues),
                               atol=(1e-9 if X64 else 1e-4) * 9)
    overlap = np.abs(np.sum((Q @ np.asarray(ra.eigenvectors, float))
                            * np.asarray(rb.eigenvectors, float), axis=0))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6 if X64 else 1e-3)


def test_power_iteration_baseline(problem):
    lam, _, op = problem
    p = spectral.power_iteration(op, k=2, key=jax.random.key(0))
    np.testing.assert_allclose(np.asarray(p.eigenvalues), [100.0, -20.0], rtol=1e-2)
    assert p.eigenvectors.shape == (N, 2)
    assert int(p.num_matvecs) == int(np.sum(np.asarray(p.num_iterations)))


def test_lanczos_beats_power_iteration_on_a_small_gap():
    lam = np.concatenate([[10.0, 9.5], np.random.default_rng(2).uniform(-1, 9, 78)])
    op = MatrixOperator(jnp.asarray(planted(lam, 3), DTYPE))
    r = spectral.eigsh(op, k=1, key=jax.random.key(0))
    err_lanczos = abs(float(r.eigenvalues[0]) - 10.0)
    assert err_lanczos <= float(r.residuals[0]) + 1e-5
    # PyHessian's rule (default tol) stops on a small change of theta, not on accuracy.
    p = spectral.power_iteration(op, k=1, key=jax.random.key(0))
    assert abs(float(p.eigenvalues[0]) - 10.0) > err_lanczos
    # Asked for Lanczos' accuracy, power iteration needs more products.
    p = spectral.power_iteration(op, k=1, key=jax.random.key(0), tol=1e-9, max_iter=400)
    assert int(p.num_matvecs) > int(r.num_matvecs)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"k": 241}, ValueError, "k must be in"),
        ({"k": 0}, ValueError, "k must be in"),
        ({"k": 2.5}, TypeError, "k must be an int"),
        ({"which": "BE"}, ValueError, "which must be one of"),
        ({"v0": np.ones(5)}, ValueError, "v0 must have shape"),
        ({"v0": np.zeros(N)}, ValueError, "v0 is identically zero"),
        ({"v0": np.full(N, np.nan)}, ValueError, "v0 contains non-finite"),
        ({"v0": np.zeros((N, 2))}, ValueError, "v0 is identically zero"),
        ({"key": None}, TypeError, "key is required"),
        ({"key": 3}, TypeError, "key must be a jax.random key"),
        ({"num_steps": 2, "k": 3}, ValueError, "num_steps must be in"),
        ({"max_steps": 500}, ValueError, "max_steps must be in"),
        ({"tol": -1.0}, ValueError, "tol must be a positive"),
    ],
)
def test_eigsh_bad_input(problem, kwargs, exc, match):
    _, _, op = problem
    args = {"k": 3, "key": jax.random.key(0)} | kwargs
    with pytest.raises(exc, match=match):
        spectral.eigsh(op, **args)


def test_bad_operator_and_power_iteration_input(problem):
    _, A, op = problem
    with pytest.raises(TypeError, match="op must be a linear operator"):
        spectral.eigsh(A, k=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="k must be in"):
        spectral.power_iteration(op, k=N + 1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="tol must be a positive"):
        spectral.power_iteration(op, k=1, key=jax.random.key(0), tol=0.0)


# ----------------------------------------------------------------------------- status and floor


def _noisy_operator(A, eta):
    """``A v`` plus a deterministic, nonlinear error of norm about ``eta ||A||`` per unit ``v``:
    a stand-in for a Hessian-vector product less accurate than ``eps sqrt(dim) ||A||``."""
    A = jnp.asarray(A, DTYPE)
    scale = eta * float(np.max(np.abs(np.linalg.eigvalsh(np.asarray(A, float)))))
    n = A.shape[0]

    def matvec(v):
        return A @ v + (scale / np.sqrt(n / 2)) * jnp.sin(1e3 * v + 0.3)

    return matvec


def test_inaccurate_products_raise_the_floor_and_keep_the_default_tol_reachable(problem):
    lam, A, _ = problem
    eps = np.finfo(DTYPE).eps
    eta = 1e3 * eps * np.sqrt(N)  # products 1000x less accurate than the a-priori floor
    matvec = _noisy_operator(A, eta)
    r = spectral.eigsh(matvec, k=3, dim=N, dtype=DTYPE, key=jax.random.key(0))
    norm = np.max(np.abs(lam))
    # The linearity defect of three products of roughly independent errors: ~sqrt(3) eta ||A||.
    assert 0.5 * eta * norm <= float(r.measured_floor) <= 4 * eta * norm
    assert float(r.rounding_floor) == pytest.approx(float(r.measured_floor), rel=1e-6)
    assert int(r.status) == 0 and bool(np.all(r.converged)), r.reason
    relative_floor = float(r.rounding_floor) / float(r.norm_estimate)
    assert float(r.tol) == pytest.approx(max(spectral.default_tol(DTYPE), 4 * relative_floor))
    # The certificate still bounds the distance to the exact eigenvalues of A. (At this
    # tolerance, 1.3 % of ||A||, the cluster 10, 9.99, 9.98 counts as one eigenvalue and the run
    # may stop before its second member appears, returning 5 as the third: what a certificate
    # promises is an eigenvalue of A within it, which holds either way.)
    theta = np.asarray(r.eigenvalues, float)
    err = np.min(np.abs(theta[:, None] - lam[None, :]), axis=1)
    assert np.all(err <= np.asarray(r.residuals, float)), (err, r.residuals)
    assert abs(theta[0] - 100.0) <= float(r.residuals[0])
    # A tolerance below the measured floor cannot be met: the floor is reached and said so.
    with pytest.warns(spectral.EigshNotConverged, match="rounding floor"):
        tight = spectral.eigsh(matvec, k=3, dim=N, dtype=DTYPE, key=jax.random.key(0),
                               tol=relative_floor / 2)
    assert int(tight.status) == 2 and not bool(np.any(tight.converged))
    assert "float64" in tight.reason and "more steps cannot help" in tight.reason


def test_a_float_hessian_asked_for_more_than_its_precision_says_floor_reached():
    from test_curvature_oracles import loss_fn_for, make_data, make_params

    from landscape import curvature

    params = make_params(jax.random.key(0))
    data = make_data(jax.random.key(1), "cross_entropy", n=40)
    op = curvature.hessian(loss_fn_for("cross_entropy"), params, data, batch_size=10)
    eps = float(np.finfo(np.dtype(op.dtype)).eps)
    with pytest.warns(spectral.EigshNotConverged, match="rounding floor"):
        r = spectral.eigsh(op, k=2, key=jax.random.key(2), tol=eps)
    assert int(r.status) == 2, r.reason
    assert float(r.rounding_floor) >= eps * np.sqrt(op.dim) * float(r.norm_estimate) * 0.999
    dense = np.linalg.eigvalsh(np.asarray(curvature.dense(op), np.float64))[::-1][:2]
    err = np.abs(dense - np.asarray(r.eigenvalues, np.float64))
    # (float32: the dense reference is itself a float32 computation; allow its rounding)
    slack = 0.0 if X64 else 1e-6 * abs(dense[0])
    assert np.all(err <= np.asarray(r.residuals, np.float64) + slack), (err, r.residuals)
    ok = spectral.eigsh(op, k=2, key=jax.random.key(2))  # the default tol is reachable
    assert int(ok.status) == 0 and ok.reason == "every pair converged"


def test_a_spent_step_budget_says_raise_max_steps(problem):
    _, _, op = problem
    with pytest.warns(spectral.EigshNotConverged, match="raise max_steps"):
        r = spectral.eigsh(op, k=4, which="SA", key=jax.random.key(0), max_steps=8)
    assert int(r.status) == 1 and "8 Lanczos steps" in r.reason
    assert int(jnp.sum(r.converged)) < 4


def test_status_is_computed_under_jit_without_a_warning(problem):
    import warnings

    _, _, op = problem
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = jax.jit(lambda o: spectral.eigsh(o, k=4, which="SA", key=jax.random.key(0),
                                             max_steps=8))(op)
    assert int(r.status) == 1

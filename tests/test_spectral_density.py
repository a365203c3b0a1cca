"""SLQ and KPM densities against exact moments of planted spectra; curvature diagnostics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _planted import planted

from landscape import spectral
from landscape.linop import MatrixOperator

X64 = bool(jax.config.jax_enable_x64)
DTYPE = np.float64 if X64 else np.float32
N = 150


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    # A Hessian-like spectrum: a bulk near zero (some negative), a few outliers.
    lam = np.concatenate([[40.0, 25.0, 18.0], rng.gamma(1.0, 0.5, 120),
                          -rng.gamma(1.0, 0.2, N - 123)])
    return lam, MatrixOperator(jnp.asarray(planted(lam, 1), DTYPE))


@pytest.fixture(scope="module")
def slq(problem):
    _, op = problem
    return spectral.density(op, key=jax.random.key(0), num_probes=20, num_steps=40)


def test_slq_shapes_weights_and_nodes(problem, slq):
    lam, _ = problem
    assert slq.nodes.shape == (20, 40) and slq.weights.shape == (20, 40)
    assert int(slq.num_matvecs) == 800
    np.testing.assert_allclose(np.asarray(slq.weights).sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(np.asarray(slq.weights) >= 0)
    nodes = np.asarray(slq.nodes)
    slack = 1e-4 * lam.max()
    assert nodes.max() <= lam.max() + slack and nodes.min() >= lam.min() - slack
    # Outliers are nodes of every probe (Ritz values converge to extreme eigenvalues).
    np.testing.assert_allclose(nodes.max(axis=1), lam.max(), rtol=1e-4)


@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_slq_moments_match_exact_within_stderr(problem, slq, p):
    lam, _ = problem
    est, se = slq.moment(p)
    exact = np.mean(lam**p)
    assert abs(float(est) - exact) < 4 * float(se), (float(est), exact, float(se))


def test_slq_without_reorthogonalization_keeps_moments(problem):
    lam, op = problem
    d = spectral.density(op, key=jax.random.key(1), num_probes=20, num_steps=40,
                         reorthogonalize=False)
    for p in (1, 2):
        est, se = d.moment(p)
        assert abs(float(est) - np.mean(lam**p)) < 4 * float(se)


def test_pdf_is_normalised(slq):
    grid = np.linspace(-10, 55, 6001)
    pdf = np.asarray(slq.pdf(grid, 0.3), float)
    assert np.all(pdf >= 0)
    np.testing.assert_allclose(np.trapezoid(pdf, grid), 1.0, rtol=1e-3)


def wasserstein1(grid, cdf_a, cdf_b):
    return np.trapezoid(np.abs(cdf_a - cdf_b), grid)


def test_kpm_agrees_with_slq_and_truth_in_w1(problem, slq):
    lam, op = problem
    kpm = spectral.kpm_density(op, key=jax.random.key(2), num_moments=120, num_probes=20)
    lo, hi = float(kpm.center - kpm.half_width), float(kpm.center + kpm.half_width)
    assert lo <= lam.min() and hi >= lam.max()
    grid = np.linspace(lo, hi, 20001)
    pdf = np.asarray(kpm.pdf(grid), float)
    cdf_kpm = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(grid))])
    cdf_true = np.searchsorted(np.sort(lam), grid, side="right") / len(lam)
    cdf_slq = np.asarray(slq.cdf(grid), float)
    width = lam.max() - lam.min()
    w_kpm, w_slq = wasserstein1(grid, cdf_kpm, cdf_true), wasserstein1(grid, cdf_slq, cdf_true)
    assert w_kpm < 0.02 * width and w_slq < 0.02 * width, (w_kpm, w_slq)
    assert wasserstein1(grid, cdf_kpm, cdf_slq) < 0.02 * width


def test_kpm_moments_match_exact_chebyshev_moments(problem):
    lam, op = problem
    lo, hi = lam.min() - 1.0, lam.max() + 1.0
    kpm = spectral.kpm_density(op, key=jax.random.key(3), num_moments=8, num_probes=30,
                               bounds=(lo, hi))
    t = (lam - float(kpm.center)) / float(kpm.half_width)
    exact = np.mean(np.cos(np.arange(8)[:, None] * np.arccos(t)[None]), axis=1)
    est, se = np.asarray(kpm.moments, float), np.asarray(kpm.moments_stderr, float)
    assert est[0] == pytest.approx(1.0)
    assert np.all(np.abs(est[1:] - exact[1:]) < 4 * se[1:] + 1e-6)


def test_directional_curvature_and_gradient_fraction(problem):
    lam, op = problem
    A = np.asarray(op.matrix, float)
    g = np.random.default_rng(5).standard_normal(N)
    dc = float(spectral.directional_curvature(op, jnp.asarray(g, DTYPE)))
    assert dc == pytest.approx(g @ A @ g / (g @ g), rel=1e-5)
    w, V = np.linalg.eigh(A)
    top = V[:, -3:]
    frac = float(spectral.gradient_fraction_in_topk(jnp.asarray(g), jnp.asarray(top)))
    assert frac == pytest.approx(np.sum((top.T @ g) ** 2) / (g @ g), rel=1e-5)
    assert float(spectral.gradient_fraction_in_topk(top[:, 0], top)) == pytest.approx(1.0)
    assert float(spectral.gradient_fraction_in_topk(V[:, 0], top)) == pytest.approx(0, abs=1e-6)


def test_negative_positive_ratio(problem, slq):
    lam, _ = problem
    exact = np.abs(lam[lam < 0]).sum() / lam[lam > 0].sum()
    assert float(spectral.negative_positive_ratio(jnp.asarray(lam))) == pytest.approx(exact)
    count = np.sum(lam < 0) / np.sum(lam > 0)
    assert float(spectral.negative_positive_ratio(lam, kind="count")) == pytest.approx(count)
    # From SLQ: a ratio of two quadrature estimates; loose agreement is what is promised.
    assert float(spectral.negative_positive_ratio(slq)) == pytest.approx(exact, rel=0.35)
    assert float(spectral.negative_positive_ratio(np.array([1.0, 2.0]))) == 0.0
    assert np.isinf(float(spectral.negative_positive_ratio(np.array([-1.0, 0.0]))))


def test_topk_condition_number():
    assert float(spectral.topk_condition_number(np.array([10.0, -2.0, 5.0]))) == 5.0
    assert np.isinf(float(spectral.topk_condition_number(np.array([1.0, 0.0]))))


def test_density_and_diagnostics_bad_input(problem):
    _, op = problem
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_steps must be in"):
        spectral.density(op, key=key, num_steps=N + 1)
    with pytest.raises(ValueError, match="num_probes must be >= 1"):
        spectral.density(op, key=key, num_probes=0)
    with pytest.raises(TypeError, match="required keyword-only argument: 'key'"):
        spectral.density(op)
    with pytest.raises(TypeError, match="key is required"):
        spectral.density(op, key=None)
    with pytest.raises(ValueError, match="bounds must be"):
        spectral.kpm_density(op, key=key, bounds=(1.0, -1.0))
    with pytest.raises(ValueError, match="num_moments must be >= 2"):
        spectral.kpm_density(op, key=key, num_moments=1)
    with pytest.raises(ValueError, match="g must have shape"):
        spectral.directional_curvature(op, jnp.ones(3))
    with pytest.raises(ValueError, match="g is identically zero"):
        spectral.directional_curvature(op, jnp.zeros(N))
    with pytest.raises(ValueError, match="eigenvectors must have shape"):
        spectral.gradient_fraction_in_topk(jnp.ones(N), jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="kind must be"):
        spectral.negative_positive_ratio(np.ones(3), kind="volume")
    with pytest.raises(ValueError, match="non-empty 1-D"):
        spectral.topk_condition_number(np.ones((2, 2)))


def test_bare_matvec_gives_the_same_results(problem, slq):
    """``lambda v: A @ v`` with ``dim`` is interchangeable with ``MatrixOperator(A)``. (The
    operator runs use the settings of the tests above, so their compilations are shared;
    ``spectrum_bounds`` converts its input by the same call and is checked for errors below.)"""
    lam, op = problem
    A = op.matrix
    mv = lambda v: A @ v  # noqa: E731
    rtol = 1e-10 if X64 else 1e-4

    def same(a, b):
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=rtol,
                                   atol=rtol * float(jnp.max(jnp.abs(A))))

    got = spectral.density(mv, dim=N, key=jax.random.key(0), num_probes=20, num_steps=40)
    same(got.nodes, slq.nodes)
    same(got.weights, slq.weights)
    key, bounds = jax.random.key(3), (lam.min() - 1.0, lam.max() + 1.0)
    ref = spectral.kpm_density(op, key=key, num_moments=8, num_probes=30, bounds=bounds)
    got = spectral.kpm_density(mv, dim=N, dtype=DTYPE, key=key, num_moments=8, num_probes=30,
                               bounds=bounds)
    same(got.moments, ref.moments)
    same(got.moments_stderr, ref.moments_stderr)
    g = jnp.asarray(np.random.default_rng(8).standard_normal(N), DTYPE)
    same(spectral.directional_curvature(mv, g, dim=N), spectral.directional_curvature(op, g))


def test_bare_matvec_needs_dim_and_key_is_keyword_only(problem):
    _, op = problem
    A = op.matrix
    mv = lambda v: A @ v  # noqa: E731
    key = jax.random.key(0)
    for fn in (spectral.density, spectral.kpm_density, spectral.spectrum_bounds):
        with pytest.raises(ValueError, match="dim"):
            fn(mv, key=key)
        with pytest.raises(TypeError, match="key"):
            fn(mv, dim=N)
    with pytest.raises(ValueError, match="dim"):
        spectral.directional_curvature(mv, jnp.ones(N, DTYPE))
    for fn in (spectral.density, spectral.kpm_density, spectral.spectrum_bounds):
        with pytest.raises(TypeError, match="positional"):
            fn(op, key)
    with pytest.raises(TypeError, match="key is required"):
        spectral.kpm_density(op, key=None)
    with pytest.raises(TypeError, match="linear operator"):
        spectral.density(np.asarray(A), key=key)

"""Trace and diagonal estimators: unbiasedness over seeds, exactness on low rank, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _planted import planted

from landscape import spectral
from landscape.linop import MatrixOperator

X64 = bool(jax.config.jax_enable_x64)
DTYPE = np.float64 if X64 else np.float32
N = 100


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    lam = np.concatenate([[30.0, 12.0, -6.0], rng.uniform(-1.0, 3.0, N - 3)])
    A = planted(lam, 1)
    return A, MatrixOperator(jnp.asarray(A, DTYPE))


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "xtrace"])
def test_unbiased_over_seeds_with_honest_stderr(problem, method):
    A, op = problem
    runs = [spectral.trace(op, key=jax.random.key(s), num_matvecs=24, method=method)
            for s in range(40)]
    est = np.array([float(r.estimate) for r in runs])
    reported = np.array([float(r.stderr) for r in runs])
    assert all(int(r.num_matvecs) <= 24 for r in runs)
    sem = est.std(ddof=1) / np.sqrt(len(est))
    assert abs(est.mean() - np.trace(A)) < 4 * sem
    # The reported per-run stderr matches the spread across independent runs.
    ratio = np.sqrt(np.mean(reported**2)) / est.std(ddof=1)
    assert 0.5 < ratio < 2.0, ratio


def test_hutchpp_and_xtrace_beat_hutchinson_on_decaying_spectrum():
    lam = 100.0 * 0.7 ** np.arange(N)
    A = planted(lam, 2)
    op = MatrixOperator(jnp.asarray(A, DTYPE))
    errs = {}
    for method in ("hutchinson", "hutch++", "xtrace"):
        est = [float(spectral.trace(op, key=jax.random.key(s), num_matvecs=30,
                                    method=method).estimate) for s in range(10)]
        errs[method] = np.sqrt(np.mean((np.array(est) - lam.sum()) ** 2))
    assert errs["hutch++"] < errs["hutchinson"] / 10
    assert errs["xtrace"] < errs["hutchinson"] / 10


@pytest.mark.parametrize("method, budget", [("hutch++", 18), ("xtrace", 14)])
def test_exact_on_low_rank(method, budget):
    B = np.random.default_rng(3).standard_normal((N, 5))
    L = B @ B.T
    r = spectral.trace(MatrixOperator(jnp.asarray(L, DTYPE)), key=jax.random.key(0),
                       num_matvecs=budget, method=method)
    np.testing.assert_allclose(float(r.estimate), np.trace(L), rtol=1e-10 if X64 else 1e-4)
    assert float(r.stderr) <= (1e-8 if X64 else 1e-2) * np.trace(L)


def test_sequential_stopping_on_relative_stderr(problem):
    A, op = problem
    r = spectral.trace(op, key=jax.random.key(0), num_matvecs=2000, rtol=0.05, min_samples=10)
    n = int(r.num_matvecs)
    assert 10 <= n < 2000
    assert float(r.stderr) <= 0.05 * abs(float(r.estimate))
    # Sequential estimate agrees with the truth within a few of its own stderrs.
    assert abs(float(r.estimate) - np.trace(A)) < 5 * float(r.stderr)
    capped = spectral.trace(op, key=jax.random.key(0), num_matvecs=12, rtol=1e-9)
    assert int(capped.num_matvecs) == 12
    # min_samples is honoured even when the rule is met immediately (a multiple of I).
    eye = MatrixOperator(jnp.eye(N, dtype=DTYPE))
    r = spectral.trace(eye, key=jax.random.key(0), num_matvecs=50, rtol=0.5, min_samples=7)
    assert int(r.num_matvecs) == 7 and float(r.estimate) == pytest.approx(N)


def test_diagonal_within_stderr(problem):
    A, op = problem
    d = spectral.diagonal(op, key=jax.random.key(1), num_matvecs=400)
    z = (np.asarray(d.estimate) - np.diag(A)) / np.asarray(d.stderr)
    assert np.all(np.abs(z) < 5.5)
    assert 0.6 < np.std(z) < 1.5
    assert int(d.num_matvecs) == 400


def test_trace_is_jittable(problem):
    A, op = problem
    f = jax.jit(lambda o, k: spectral.trace(o, key=k, num_matvecs=30, method="hutch++"))
    r = f(op, jax.random.key(0))
    assert abs(float(r.estimate) - np.trace(A)) < 6 * float(r.stderr)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"method": "girard"}, ValueError, "method must be one of"),
        ({"method": "hutch++", "num_matvecs": 2}, ValueError, "num_matvecs must be >= 3"),
        ({"method": "xtrace", "num_matvecs": 3}, ValueError, "num_matvecs must be >= 4"),
        ({"num_matvecs": 1.5}, TypeError, "num_matvecs must be an int"),
        ({"method": "xtrace", "rtol": 0.1}, ValueError, "only for method='hutchinson'"),
        ({"rtol": 0.1, "min_samples": 200}, ValueError, "min_samples must be in"),
        ({"rtol": -0.1}, ValueError, "rtol must be a positive"),
        ({"key": None}, TypeError, "key is required"),
    ],
)
def test_trace_bad_input(problem, kwargs, exc, match):
    _, op = problem
    args = {"key": jax.random.key(0), "num_matvecs": 30} | kwargs
    with pytest.raises(exc, match=match):
        spectral.trace(op, **args)


def test_diagonal_bad_input(problem):
    A, op = problem
    with pytest.raises(ValueError, match="num_matvecs must be >= 2"):
        spectral.diagonal(op, key=jax.random.key(0), num_matvecs=1)
    with pytest.raises(TypeError, match="op must be a linear operator"):
        spectral.diagonal(A, key=jax.random.key(0))

"""``eigsh(restarts=...)``: exactly repeated eigenvalues against a planted spectrum."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from landscape import spectral
from landscape.linop import MatrixOperator

X64 = bool(jax.config.jax_enable_x64)
DTYPE = np.float64 if X64 else np.float32


def _planted_triple(dim=200, seed=0):
    """``Q diag(5, 5, 5, 3, 2, bulk in [-0.5, 0.5]) Q^T`` with a random orthogonal ``Q``."""
    rng = np.random.default_rng(seed)
    Q, R = np.linalg.qr(rng.standard_normal((dim, dim)))
    Q = Q * np.sign(np.diag(R))
    lam = np.concatenate([[5.0, 5.0, 5.0, 3.0, 2.0], rng.uniform(-0.5, 0.5, dim - 5)])
    return MatrixOperator(jnp.asarray((Q * lam) @ Q.T, DTYPE)), lam


@pytest.mark.float64_only  # the restarts do not depend on the dtype; float64's tolerance does
def test_restarts_find_every_copy_of_a_triple_eigenvalue():
    k, want = 4, [5, 5, 5, 3]
    op, _ = _planted_triple()
    key = jax.random.key(0)
    r = spectral.eigsh(op, k=k, key=key, restarts=1, chunk=1)
    np.testing.assert_allclose(r.eigenvalues, want, rtol=1e-5 if not X64 else 1e-9)
    assert bool(jnp.all(r.converged)) and int(r.status) == 0
    # certificates: each value is within its residual of an eigenvalue (here the planted ones)
    assert np.all(np.abs(np.asarray(r.eigenvalues) - np.asarray(want)) <= np.asarray(r.residuals))
    V = np.asarray(r.eigenvectors, np.float64)
    np.testing.assert_allclose(V.T @ V, np.eye(k), atol=1e-5 if not X64 else 1e-12)
    # the three vectors for 5 span a 3-dimensional eigenspace: A V = 5 V on them
    AV = np.asarray(op.matrix, np.float64) @ V[:, :3]
    assert np.linalg.norm(AV - 5 * V[:, :3]) <= (1e-8 if X64 else 1e-4) * 5
    # the case restarts are for: one run stops before it sees the third copy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = spectral.eigsh(op, k=k, key=key, chunk=1)
    assert np.sum(np.isclose(np.asarray(plain.eigenvalues), 5.0, rtol=1e-4)) < 3


def test_restarts_bad_input():
    op, _ = _planted_triple(dim=20)
    with pytest.raises(ValueError, match="restarts"):
        spectral.eigsh(op, k=2, key=jax.random.key(0), restarts=-1)

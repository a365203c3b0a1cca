"""Shared test fixture: symmetric matrices with a planted spectrum."""

import numpy as np


def planted(lam, seed):
    """``Q diag(lam) Q^T`` (symmetrised, float64) with ``Q`` from the QR of a Gaussian matrix."""
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(lam), len(lam))))
    A = (Q * lam) @ Q.T
    return (A + A.T) / 2

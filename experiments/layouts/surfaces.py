"""Metric layout of ``surfaces``."""

from typing import TypedDict

import numpy as np


class Slices(TypedDict):
    """2D test-loss slices around one trained MLP; grids are indexed [x, y] over ``grid``."""

    grid: np.ndarray  #: [point] coordinates along each direction
    gauss_loss: np.ndarray  #: [point, point] filter-normalised Gaussian directions
    gauss_error: np.ndarray
    hess_loss: np.ndarray  #: [point, point] top-2 Hessian eigenvectors, same norm
    hess_error: np.ndarray
    eigenvalues: np.ndarray  #: [2] top Hessian eigenvalues, descending
    eig_residuals: np.ndarray  #: [2]
    direction_norm: float  #: norm of the filter-normalised direction


class Bezier(TypedDict):
    """Test loss and error along the line and the trained Bezier curve, at ``t``."""

    t: np.ndarray  #: [point]
    linear_loss: np.ndarray
    linear_error: np.ndarray
    bezier_loss: np.ndarray
    bezier_error: np.ndarray
    bezier_train_loss: np.ndarray  #: training loss of the bend's fit


class Metrics(TypedDict):
    none: Slices  #: MLP without normalisation
    batch: Slices  #: MLP with BatchNorm
    bezier: Bezier

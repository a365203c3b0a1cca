"""Harness for the PyTorch peers: PyHessian 0.1 and curvlinops 3.x.

Everything here is benchmark-only; the ``landscape`` library never imports torch.

* ``pyhessian_eig_patch``: PyHessian 0.1's ``hessian.density()`` calls ``torch.eig``, which was
  removed from PyTorch (2.0+). Inside this context manager ``torch.eig`` is a stand-in built on
  ``torch.linalg.eigh`` returning the old ``(eigenvalues (n, 2) real|imag, eigenvectors)``
  layout (the Lanczos tridiagonal matrix is symmetric, so the imaginary parts are zero). This is
  the only change made to a peer, and the benchmark output says so.
* ``PyHessianCounter``: counts PyHessian's Hessian-vector products by wrapping the module-level
  ``hessian_vector_product`` that ``pyhessian.hessian`` looks up at call time.
* ``curvlinops_hessian``: curvlinops' ``HessianLinearOperator`` over the full batch, and
  ``counting_scipy``: its SciPy view with a product counter (for ``scipy.sparse.linalg.eigsh``).
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import scipy.sparse.linalg as sla
import torch


def _eig_from_eigh(T, eigenvectors=False):
    evals, evecs = torch.linalg.eigh(T)
    pairs = torch.stack([evals, torch.zeros_like(evals)], dim=1)
    return pairs, (evecs if eigenvectors else torch.empty(0, dtype=T.dtype))


@contextlib.contextmanager
def pyhessian_eig_patch():
    """Provide ``torch.eig`` (removed in PyTorch 2) for PyHessian's ``density()``, temporarily."""
    had = hasattr(torch, "eig")
    old = getattr(torch, "eig", None)
    torch.eig = _eig_from_eigh
    try:
        yield
    finally:
        if had:
            torch.eig = old
        else:
            del torch.eig


class PyHessianCounter:
    """Context manager counting PyHessian's Hessian-vector products (``.count``)."""

    def __init__(self):
        self.count = 0
        self._module = None
        self._orig = None

    def __enter__(self):
        import pyhessian  # noqa: F401  (the package __init__ shadows the submodule name)

        self._module = sys.modules["pyhessian.hessian"]
        self._orig = self._module.hessian_vector_product

        def counted(gradsH, params, v):
            self.count += 1
            return self._orig(gradsH, params, v)

        self._module.hessian_vector_product = counted
        return self

    def __exit__(self, *exc):
        self._module.hessian_vector_product = self._orig
        return False


def pyhessian_hessian(model, x, y):
    """PyHessian's ``hessian`` object on one full batch (CPU): builds the gradient graph once."""
    from pyhessian import hessian

    return hessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False)


def pyhessian_dataloader(model, x, y):
    """PyHessian's ``hessian`` in dataloader mode (one batch): every product redoes the
    forward pass and the graph-building backward pass before the second backward pass."""
    from pyhessian import hessian

    return hessian(model, torch.nn.CrossEntropyLoss(), dataloader=[(x, y)], cuda=False)


def pyhessian_hvp(H, v):
    """One PyHessian product ``H v`` in single-batch mode (its cached gradient graph).

    ``v`` is a flat numpy vector in torch parameter order or a list of tensors."""
    from pyhessian.utils import hessian_vector_product

    if isinstance(v, np.ndarray):
        v = torch_split(H.model, v)
    return hessian_vector_product(H.gradsH, H.params, v)


def curvlinops_hessian(model, x, y):
    """curvlinops' ``HessianLinearOperator`` for the mean cross-entropy over the batch."""
    from curvlinops import HessianLinearOperator

    params = [p for p in model.parameters() if p.requires_grad]
    return HessianLinearOperator(
        model, torch.nn.CrossEntropyLoss(reduction="mean"), params, [(x, y)]
    )


class counting_scipy(sla.LinearOperator):
    """SciPy ``LinearOperator`` view of a curvlinops operator that counts products.

    A block product with ``m`` columns counts as ``m`` products.
    """

    def __init__(self, op, dtype=np.float32):
        self._scipy = op.to_scipy(np.dtype(dtype))
        self.count = 0
        super().__init__(np.dtype(dtype), self._scipy.shape)

    def _matvec(self, v):
        self.count += 1
        return self._scipy.matvec(v)

    def _matmat(self, V):
        self.count += V.shape[1]
        return self._scipy.matmat(V)

    def _rmatvec(self, v):
        return self._matvec(v)


def torch_grad_fn(model, x, y):
    """A function computing the full-batch gradient of the mean cross-entropy (forward+backward)."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss_fn = torch.nn.CrossEntropyLoss()

    def grad():
        return torch.autograd.grad(loss_fn(model(x), y), params)

    return grad


def torch_flat(tensors) -> np.ndarray:
    return np.concatenate([t.detach().cpu().numpy().ravel() for t in tensors])


def torch_split(model, v: np.ndarray, dtype=torch.float32) -> list[torch.Tensor]:
    """A flat vector (torch parameter order) -> list of tensors shaped like the parameters."""
    out, i = [], 0
    for p in model.parameters():
        out.append(torch.as_tensor(np.array(v[i : i + p.numel()]), dtype=dtype).reshape(p.shape))
        i += p.numel()
    if i != v.size:
        raise ValueError(f"vector of length {v.size} does not fit {i} parameters")
    return out

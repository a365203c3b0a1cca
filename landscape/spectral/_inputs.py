"""Input checks and dtype helpers shared by the spectral routines (private).

Checks run at the Python level on static information (shapes, ints) and, where the value is
concrete, on the values themselves; under an outer ``jax.jit`` the value checks are skipped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from landscape import linop

HIGHEST = jax.lax.Precision.HIGHEST


def as_operator(op, *, dim=None, dtype=None, name: str = "op"):
    """``op`` as a ``LinearOperator``: an operator, or a bare ``matvec`` callable with ``dim``
    (and optionally ``dtype``). See :func:`landscape.linop.as_operator`."""
    return linop.as_operator(op, dim=dim, dtype=dtype, name=name)


def check_operator(op, name: str = "op") -> None:
    """Raise unless ``op`` follows the LinearOperator protocol (``.dim``, ``.dtype``,
    ``.matvec``)."""
    if not (callable(getattr(op, "matvec", None)) and hasattr(op, "dim")):
        raise TypeError(f"{name} must be a linear operator with .dim and .matvec(v) "
                        f"(see landscape.linop); got {type(op).__name__}")
    linop.as_operator(op, name=name)


def accumulation_dtype(dtype) -> np.dtype:
    """The dtype used for inner products and tridiagonal coefficients.

    float64 whenever JAX x64 mode is on (so a float32 operator still gets float64 coefficients),
    otherwise the operator's own dtype.
    """
    if jax.config.jax_enable_x64:
        return np.dtype(np.float64)
    return np.dtype(dtype)


def dot(a, b, acc) -> jax.Array:
    """``<a, b>`` at the highest precision, accumulated in dtype ``acc``."""
    return jnp.dot(a, b, precision=HIGHEST, preferred_element_type=acc)


def sample_probes(key, dim: int, num: int, dtype, kind: str = "rademacher") -> jax.Array:
    """``num`` random probe vectors as the columns of a ``(dim, num)`` array."""
    if kind == "rademacher":
        return jax.random.rademacher(key, (dim, num), dtype=dtype)
    if kind == "gaussian":
        return jax.random.normal(key, (dim, num), dtype=dtype)
    raise ValueError(f"probes must be 'rademacher' or 'gaussian'; got {kind!r}")


def map_matvec(op, V: jax.Array) -> jax.Array:
    """``A @ V`` for ``V`` of shape ``(dim, m)``, one matvec at a time (memory of one product)."""
    return jax.lax.map(op.matvec, V.T).T

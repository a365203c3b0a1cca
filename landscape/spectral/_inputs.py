"""Input checks and dtype helpers shared by the spectral routines (private).

Checks run at the Python level on static information (shapes, ints) and, where the value is
concrete, on the values themselves; under an outer ``jax.jit`` the value checks are skipped.
"""

from __future__ import annotations

import operator as _operator

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


def check_int(value, name: str, *, low: int = 1, high: int | None = None) -> int:
    """Return ``value`` as an int in ``[low, high]`` or raise naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int; got bool {value!r}")
    try:
        ivalue = _operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}") from None
    if ivalue < low or (high is not None and ivalue > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bounds}; got {ivalue}")
    return ivalue


def check_positive(value, name: str) -> float:
    """Return ``value`` as a positive finite float or raise naming ``name``."""
    try:
        fvalue = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number; got {value!r}") from None
    if not np.isfinite(fvalue) or fvalue <= 0:
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return fvalue


def check_key(key, name: str = "key") -> None:
    """Raise ``TypeError`` unless ``key`` looks like a ``jax.random`` key."""
    if key is None:
        raise TypeError(f"{name} is required: pass a jax.random key, e.g. jax.random.key(0)")
    if jnp.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        return
    shape, dtype = np.shape(key), getattr(key, "dtype", None)
    if shape != (2,) or dtype is None or not jnp.issubdtype(dtype, jnp.unsignedinteger):
        raise TypeError(
            f"{name} must be a jax.random key (jax.random.key(seed) or PRNGKey); "
            f"got {type(key).__name__} with shape {shape}"
        )


def check_vector(v, dim: int, name: str) -> None:
    """Raise unless ``v`` is a ``(dim,)`` vector with finite, not-all-zero values."""
    if np.ndim(v) != 1 or np.shape(v)[0] != dim:
        raise ValueError(f"{name} must have shape ({dim},); got {np.shape(v)}")
    check_concrete_values(v, name)


def check_concrete_values(x, name: str) -> None:
    """Raise if concrete ``x`` is non-finite or identically zero (skipped under tracing)."""
    if isinstance(x, jax.core.Tracer):
        return
    arr = np.asarray(x)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    if not np.any(arr):
        raise ValueError(f"{name} is identically zero; a start vector needs a nonzero direction")


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

"""Spectral density by the kernel polynomial method (KPM): a cross-check for SLQ.

Map the spectrum into ``[-1, 1]`` with ``B = (A - c I) / h`` (``c``, ``h`` from ``bounds``,
widened by 1%). The Chebyshev moments ``mu_k = (1/n) tr T_k(B)`` are estimated with Rademacher
probes through the recurrence ``T_{k+1}(B) z = 2 B T_k(B) z - T_{k-1}(B) z`` (one product per
moment per probe). The truncated series is damped with the Jackson kernel ``g_k``, which makes
the approximation positive and removes Gibbs oscillations:

    phi(t) ~ [g_0 mu_0 + 2 sum_{k>=1} g_k mu_k T_k(t)] / (pi sqrt(1 - t^2)),
    g_k = [(N - k + 1) cos(pi k / (N + 1)) + sin(pi k / (N + 1)) cot(pi / (N + 1))] / (N + 1),

and ``phi_A(lambda) = phi((lambda - c) / h) / h``. Resolution is about ``pi h / N``.

References: Weisse, Wellein, Alvermann, Fehske (2006), "The kernel polynomial method", Rev.
Mod. Phys. 78; Lin, Saad, Yang (2016), sec. 3.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from landscape import reprs, validate
from landscape.spectral import _inputs, _loop_operator
from landscape.spectral.lanczos import lanczos_init, lanczos_steps, ritz

__all__ = ["KPMDensity", "kpm_density", "spectrum_bounds"]


class KPMDensity(NamedTuple):
    """KPM estimate of the spectral density.

    Attributes:
      moments: ``(num_moments,)`` estimated Chebyshev moments ``(1/n) tr T_k(B)``.
      moments_stderr: ``(num_moments,)`` their standard errors over probes.
      center, half_width: the map ``B = (A - center) / half_width``.
      num_matvecs: products with ``A`` (plus those used to find the bounds, if any).
    """

    moments: jax.Array
    moments_stderr: jax.Array
    center: jax.Array
    half_width: jax.Array
    num_matvecs: jax.Array

    @reprs.repr_method
    def __repr__(self) -> str:
        c, h = reprs.host(self.center), reprs.host(self.half_width)
        mom, err = reprs.host(self.moments), reprs.host(self.moments_stderr)
        # (1/n) tr T_1(B) = (mean eigenvalue - center) / half_width
        mean = (f"mean_eigenvalue={reprs.pm(c + h * mom[1], abs(h) * err[1])}"
                if mom.size > 1 else None)
        return reprs.line("KPMDensity", [
            f"num_moments={mom.size}", f"interval=[{reprs.num(c - h)}, {reprs.num(c + h)}]",
            mean, f"num_matvecs={reprs.num(self.num_matvecs)}"])

    def pdf(self, grid) -> jax.Array:
        """Jackson-damped density on ``grid`` (zero outside the mapped interval)."""
        grid = jnp.asarray(grid, self.moments.dtype)
        t = (grid - self.center) / self.half_width
        inside = jnp.abs(t) < 1
        t = jnp.where(inside, t, 0.0)
        n = self.moments.shape[0]
        g = jackson_kernel(n).astype(self.moments.dtype)
        coef = g * self.moments * jnp.where(jnp.arange(n) == 0, 1.0, 2.0)
        theta = jnp.arccos(t)
        series = jnp.cos(theta[:, None] * jnp.arange(n)[None]) @ coef
        dens = series / (jnp.pi * jnp.sqrt(1 - t**2)) / self.half_width
        return jnp.where(inside, dens, 0.0)


def jackson_kernel(n: int) -> jax.Array:
    """Jackson damping factors ``g_0 .. g_{n-1}`` for ``n`` moments."""
    k = np.arange(n)
    a = np.pi / (n + 1)
    g = ((n - k + 1) * np.cos(a * k) + np.sin(a * k) / np.tan(a)) / (n + 1)
    return jnp.asarray(g)


def kpm_density(op, *, key, num_moments: int = 100, num_probes: int = 10,
                bounds=None, dim: int | None = None, dtype=None,
                rewrite_convs: bool | None = None) -> KPMDensity:
    """KPM spectral density of ``op``.

    Args:
      op: a ``LinearOperator``, or a bare ``matvec`` callable together with ``dim``.
      key: ``jax.random`` key for the probes and for the bound-finding Lanczos run (required,
        keyword-only).
      num_moments: Chebyshev moments ``N`` (>= 2).
      num_probes: Rademacher probes (>= 2).
      bounds: ``(lo, hi)`` enclosing the spectrum; by default from ``spectrum_bounds``.
      dim: dimension of a bare ``matvec`` callable (required then).
      dtype: dtype of a bare callable's vectors (default: JAX's default float dtype).
      rewrite_convs: run the products with their convolutions in XLA:CPU's fast form
        (``landscape.conv_rewrite``); ``None`` (default): exactly when the backend is CPU and
        the product contains a ``lax.conv_general_dilated``, as in :func:`eigsh`.

    Returns:
      ``KPMDensity`` with ``(num_moments,)`` moments and their standard errors.
    """
    op = _inputs.as_operator(op, dim=dim, dtype=dtype)
    validate.check_key(key)
    num_moments = validate.check_int(num_moments, "num_moments", low=2)
    num_probes = validate.check_int(num_probes, "num_probes", low=2)
    k_bounds, k_probes = jax.random.split(key)
    extra = 0
    if bounds is None:
        bounds = spectrum_bounds(op, key=k_bounds, rewrite_convs=rewrite_convs)
        extra = min(op.dim, 40)
    lo, hi = bounds
    if not isinstance(lo, jax.core.Tracer) and not float(hi) > float(lo):
        raise ValueError(f"bounds must be (lo, hi) with hi > lo; got {bounds!r}")
    center = (hi + lo) / 2
    half = (hi - lo) / 2 * 1.01
    mom, se = _moments(op, k_probes, jnp.asarray(center, op.dtype), jnp.asarray(half, op.dtype),
                       num_moments=num_moments, num_probes=num_probes,
                       rewrite=_loop_operator.wants_rewrite(op, rewrite_convs))
    used = num_probes * (num_moments - 1) + extra
    return KPMDensity(mom, se, jnp.asarray(center), jnp.asarray(half), jnp.asarray(used))


def spectrum_bounds(op, *, key, num_steps: int = 40, dim: int | None = None, dtype=None,
                    rewrite_convs: bool | None = None):
    """``(lo, hi)`` enclosing the spectrum, from one Lanczos run: the extreme Ritz values
    widened by their residual estimates and by 1% of the width (Ritz values always lie inside
    the spectrum, so this errs outward).

    Args:
      op: a ``LinearOperator``, or a bare ``matvec`` callable together with ``dim``.
      key: ``jax.random`` key for the start vector (required, keyword-only).
      num_steps: Lanczos steps (>= 1; capped at the dimension).
      dim, dtype: dimension and vector dtype of a bare ``matvec`` callable.
      rewrite_convs: run the products with their convolutions in XLA:CPU's fast form
        (``landscape.conv_rewrite``); ``None`` (default): exactly when the backend is CPU and
        the product contains a ``lax.conv_general_dilated``, as in :func:`eigsh`.

    Returns:
      ``(lo, hi)``, scalars.
    """
    op = _inputs.as_operator(op, dim=dim, dtype=dtype)
    validate.check_key(key)
    num_steps = validate.check_int(num_steps, "num_steps", low=1)
    steps = min(op.dim, num_steps)
    return _bounds(op, key, steps=steps, rewrite=_loop_operator.wants_rewrite(op, rewrite_convs))


@partial(jax.jit, static_argnames=("steps", "rewrite"))
def _bounds(op, key, *, steps, rewrite=False):
    op = _loop_operator.loop_operator(op, rewrite)
    k1, k2 = jax.random.split(key)
    v = jax.random.normal(k1, (op.dim,), op.dtype)
    state = lanczos_steps(op, lanczos_init(v, steps, k2), 0, steps)
    top, _, r_top = ritz(state.alpha, state.beta, steps, 1, "LA")
    bot, _, r_bot = ritz(state.alpha, state.beta, steps, 1, "SA")
    hi, lo = top[0] + r_top[0], bot[0] - r_bot[0]
    pad = 0.01 * (hi - lo) + jnp.finfo(op.dtype).eps * jnp.maximum(jnp.abs(hi), jnp.abs(lo))
    return lo - pad, hi + pad


@partial(jax.jit, static_argnames=("num_moments", "num_probes", "rewrite"))
def _moments(op, key, center, half, *, num_moments, num_probes, rewrite=False):
    op = _loop_operator.loop_operator(op, rewrite)
    acc = _inputs.accumulation_dtype(op.dtype)
    B = lambda x: (op.matvec(x) - center * x) / half

    def one(k):
        z = jax.random.rademacher(k, (op.dim,), op.dtype)
        t1 = B(z)

        def body(carry, _):
            t_prev, t_cur = carry
            t_next = 2 * B(t_cur) - t_prev
            return (t_cur, t_next), _inputs.dot(z, t_next, acc)

        _, rest = jax.lax.scan(body, (z, t1), None, length=num_moments - 2)
        first = jnp.stack([_inputs.dot(z, z, acc), _inputs.dot(z, t1, acc)])
        return jnp.concatenate([first, rest]) / op.dim

    per_probe = jax.lax.map(one, jax.random.split(key, num_probes))
    mean = jnp.mean(per_probe, axis=0)
    return mean, jnp.std(per_probe, axis=0, ddof=1) / jnp.sqrt(num_probes)

"""Extreme eigenpairs of a symmetric operator by Lanczos with full reorthogonalisation.

``eigsh`` runs the Lanczos recurrence (``landscape.spectral.lanczos``) inside a
``lax.while_loop`` and checks after every step (every ``chunk`` steps) from step ``k`` on: it
computes the Ritz pairs of the tridiagonal ``T`` and their certificates below, formed from the
recurrence as computed at no product's cost, and stops once every certificate is under
``tol * ||T||`` (once the recurrence's residuals are under the rounding floor ``delta``, when
``tol`` is below two floors), or at ``max_steps``. A run that stops returns the pairs and
certificates its test passed on. With ``certificate="products"`` the test is on the Lanczos
estimates plus ``delta``, and every pair is then certified with one explicit product.

**The certificate.** For a symmetric ``A``, any vector ``v != 0`` and any number ``theta``, some
eigenvalue ``lambda`` of ``A`` satisfies ``|lambda - theta| <= ||A v - theta v|| / ||v||``
(the residual bound of Kahan and of Bauer-Fike for normal matrices; Parlett, *The Symmetric
Eigenvalue Problem*, thm 4.5.1). The product ``A v`` is only known through the computed
``matvec``. With ``certificate="products"`` the reported residual of the pair
``(theta_i, v_i)`` is

    residuals_i = (||fl(A v_i) - theta_i v_i|| + delta) / ||v_i||,
    delta       = eps * sqrt(dim) * ||A||_est,      ||A||_est = max_j |theta_j(T)| = ||T||_2,

where ``eps`` is the machine epsilon of the operator's dtype (1.19e-7 for float32, 2.22e-16 for
float64), ``theta_j(T)`` runs over all Ritz values of the final ``T`` (not only the wanted
ones), the difference ``fl(A v_i) - theta_i v_i`` and both norms are formed in the accumulation
dtype (float64 whenever x64 is on), the norms after an exact power-of-two rescaling (no
overflow or underflow at any operator scale), and ``||v_i||`` is the norm of the returned
vector as it is stored (1 up to rounding). ``delta`` stands for the rounding error of the
computed product, ``||fl(A v) - A v||``: the probabilistic rounding-error bound for inner
products of length ``dim`` is of order ``eps sqrt(dim) |A| |v|`` (Higham & Mary 2019, "A new
approach to probabilistic rounding error analysis"), and for dense float32 products we measure
``0.001-0.1 eps sqrt(dim) ||A||``. So ``residuals`` bounds the eigenvalue error
``min_lambda |lambda - theta_i|``

* in float64: with respect to the operator's matrix, as soon as its ``matvec`` is accurate to
  ``eps sqrt(dim) ||A||`` (true of dense products; for a Hessian-vector product it depends on
  how well-conditioned the loss's computation is); the floor is ~2e-16 sqrt(dim) ||A||, far
  below the default ``tol``;
* in float32: with respect to the exact matrix the float32 operator represents, e.g. the float64
  matrix it was rounded from (rounding a matrix moves its eigenvalues by at most
  ``||A - fl(A)||_2 <= ||A - fl(A)||_F <= (eps / 2) ||A||_F <= (eps / 2) sqrt(dim) ||A||_2``,
  Weyl's inequality, half of ``delta`` at worst), under the same condition on the ``matvec``.
  ``residuals`` is then never smaller than ``eps sqrt(dim) ||A||_est`` (1.8e-6 ||A|| at
  ``dim = 240``, 1.2e-4 ||A|| at ``dim = 10^6``).

**The same certificate without products** (``certificate="recurrence"``, the default). The
Ritz vector is ``v = Q s`` for the Lanczos basis ``Q`` and a unit eigenvector ``s`` of ``T``, and
by linearity ``A v = sum_j s_j A q_j``: the products the recurrence already computed. The
recurrence keeps every part of them (``landscape.spectral.lanczos``, "the recurrence as
computed"): ``fl(A q_j) = Q_{m+1} h_j + d_j`` with ``h_j`` the three-term coefficients plus both
Gram-Schmidt passes' coefficients, and ``d_j`` the vector discarded at a breakdown. Hence

    A v - theta v = Q_{m+1} (H s - theta s) + sum_j s_j d_j - sum_j s_j e_j + G s,

with ``e_j = fl(A q_j) - A q_j`` the rounding of the products and ``G s`` that of the vector
updates of the steps (``||g_j|| <=`` a few ``eps ||A||``: two axpys, two Gram-Schmidt passes whose
coefficients are of order ``eps``, one division), and the reported residual is

    residuals_i = (||Q_{m+1} (H s_i - theta_i s_i)|| + sum_j ||d_j|| |s_ij|
                   + 4 eps ||A||_est + delta) / ||fl(Q s_i)||,

where ``||Q_{m+1} x||`` and ``||fl(Q s_i)||`` are measured as vectors (the basis need not be
exactly orthonormal),
``delta`` stands for the products' rounding ``||sum_j s_j e_j||`` (the errors of ``m`` products
combined with ``||s|| = 1`` behave like the error of one product; the same rounding model as
above) and ``4 eps ||A||_est`` for ``G s``. The bound is exact for ``v = Q s``; the returned
vector is ``fl(Q s)``, whose rounding (inner products of length ``m <= dim``) is of the order
``delta`` covers, as for ``certificate="products"``, where ``delta`` covers the rounding of
``fl(A v)``. So it is the explicit residual up to rounding below one floor (tested against the
explicit one), measured at no product's cost, and it catches what the Lanczos estimate
``beta_m |s_m|`` misses: every loss of orthogonality and every non-symmetric part of the
products shows in the Gram-Schmidt coefficients. Pairs of deflation rounds (``restarts > 0``)
belong to the deflated operator's recurrence and are always certified with products.

**The measured floor.** A ``matvec`` can be less accurate than ``eps sqrt(dim) ||A||``
(cancellation in a float32 Hessian-vector product of a deep network summed over many batches).
``eigsh`` measures the accuracy of the products from their linearity defect: with unit vectors
``u, w``,

    measured_floor = ||fl(A(u + w)) - fl(A u) - fl(A w)||,

which in exact arithmetic is zero and otherwise is about twice the typical rounding error of
one product (the three errors add in quadrature, the one of ``u + w`` counting twice). It takes
``u = q_0, w = q_1``, the first two Lanczos vectors, whose products the recurrence already
holds (to a few ``eps ||A||``, see above), so the measurement costs one product, made after the
second step and before the first convergence check; :func:`linearity_defect` measures it with
three products on random vectors (used when fewer than two steps run). The
floor ``delta`` used everywhere is ``max(eps sqrt(dim) ||A||_est, measured_floor)``: the
certificate covers the operator's actual accuracy (as estimated; this part is a statistical
estimate, not a bound), and the default tolerance, ``4 delta / ||A||_est`` when that exceeds
the dtype's default, is always reachable in the working precision. An operator whose
``matvec`` has errors that do not show in its linearity (an error that is itself linear in
``v``, such as a wrong dataset) is outside the certificate; compare with a float64 run.

**When pairs do not converge**, ``status`` says why and ``reason`` what to do: ``1`` the step
budget was spent with the Lanczos estimates still above the limit (raise ``max_steps``, or
``num_steps``); ``2`` the estimates reached the rounding floor but the certificates stay above
``tol`` (an explicit ``tol`` below what the working precision allows: use float64 operators,
``jax.config.update("jax_enable_x64", True)``, or a larger ``tol``). ``eigsh`` called outside
``jax.jit`` also warns (``EigshNotConverged``) with that reason.

``||A||_est <= ||A||`` only approaches ``||A||`` once the extreme Ritz values have
converged, so ``delta`` is meaningful for converged runs. Once the pair is isolated from the
rest of the spectrum by a gap, the error is also ``<= residual^2 / gap`` (Parlett, thm 11.7.1).

Accuracy to expect on well-separated eigenvalues: relative error ~1e-12 in float64 and ~1e-6
in float32 (the measured residuals bottom out near ``eps * ||A|| * sqrt(steps)``, below the
floor ``delta`` that the certificates add).

Limitation shared by every single-vector Krylov method: an eigenvalue of multiplicity ``r > 1``
is seen once until the Krylov space is exhausted (breakdown); the extra copies are then found
only by the restart vectors (in floating point, rounding also seeds the other copies, which then
grow once the first has converged, so a run that continues long enough often finds them). For
exactly repeated eigenvalues inside the wanted set pass ``restarts=r - 1``: each restart runs
Lanczos on ``A`` deflated by the pairs found so far and adds the next copy. Near-repeated
(clustered) eigenvalues are resolved once ``tol`` is below their gaps; with a coarser ``tol`` a
cluster can pass as one eigenvalue, and the run may stop before the cluster's second member
appears and return the next eigenvalue in its place (certified all the same: an eigenvalue of
``A`` lies within each residual).

**Convolutions on CPU.** With ``rewrite_convs=None`` (default) a product that contains
``lax.conv_general_dilated`` is run with its convolutions in XLA:CPU's canonical form
(``landscape.conv_rewrite``), which XLA's own canonicalization applies only outside loops; the
values are unchanged (bit-identical for ungrouped float32 convolutions).

References: Lanczos (1950); Kahan (1967) and Parlett (1998) for the residual bound; Higham &
Mary (2019) for the rounding floor; Golub & Van Loan, *Matrix Computations* 10.1; Ghorbani,
Krishnan, Xiao (2019) for the use on neural-network Hessians.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from landscape import reprs, validate
from landscape.spectral import _inputs, _loop_operator
from landscape.spectral.lanczos import (
    dropped_term,
    lanczos_init,
    lanczos_steps,
    recurrence_coefficients,
    recurrence_matrix,
    recurrence_residuals,
    ritz,
    safe_norm,
)

__all__ = ["EigshResult", "EigshNotConverged", "eigsh", "default_tol", "linearity_defect"]

_WHICH = ("LA", "SA", "LM")
_CERTIFICATES = ("recurrence", "products")
# allowance, in units of eps ||T||, for the rounding of one step's vector updates (two axpys,
# two Gram-Schmidt passes with coefficients of order eps, one division): module docstring
_UPDATE_ROUNDING = 4


class EigshResult(NamedTuple):
    """Result of ``eigsh``.

    Attributes:
      eigenvalues: ``(k,)`` Ritz values; "LA" descending, "SA" ascending, "LM" by descending
        magnitude.
      eigenvectors: ``(dim, k)`` unit Ritz vectors (columns), orthonormal to working precision.
      residuals: ``(k,)`` certificates, ``(||fl(A v_i) - theta_i v_i|| + rounding_floor) /
        ||v_i||`` or its product-free form from the recurrence: some eigenvalue of ``A`` lies
        within ``residuals[i]`` of ``eigenvalues[i]`` (see the module docstring for what this
        means in float32 and float64).
      converged: ``(k,)`` bool, ``residuals <= tol * norm_estimate``.
      residual_estimates: ``(k,)`` the Lanczos estimates ``beta_m |s_{m,i}|`` used to stop.
      num_matvecs: products with ``A`` spent: Lanczos steps, plus 1 for the floor measurement
        (3 when fewer than two steps run; 0 when ``measured_floor`` was given), plus ``k`` with
        ``certificate="products"`` or ``restarts > 0``.
      num_steps: Lanczos steps taken.
      tol: the relative tolerance that was used.
      norm_estimate: ``()`` ``||T||_2 = max |Ritz value|`` over the whole final ``T``, the
        estimate of ``||A||_2`` that ``tol`` and the floor are relative to.
      rounding_floor: ``()`` ``delta = max(eps * sqrt(dim) * norm_estimate, measured_floor)``,
        ``eps`` of the operator's dtype: the allowance for the error of the computed products.
      measured_floor: ``()`` the linearity defect ``||fl(A(u+w)) - fl(Au) - fl(Aw)||`` of two
        random unit vectors, the measured accuracy of one product (module docstring).
      status: ``()`` int, ``0`` every pair converged, ``1`` step budget spent, ``2`` rounding
        floor reached; ``reason`` says what to do.
    """

    eigenvalues: jax.Array
    eigenvectors: jax.Array
    residuals: jax.Array
    converged: jax.Array
    residual_estimates: jax.Array
    num_matvecs: jax.Array
    num_steps: jax.Array
    tol: jax.Array
    norm_estimate: jax.Array
    rounding_floor: jax.Array
    measured_floor: jax.Array
    status: jax.Array

    __repr__ = reprs.eigsh_repr

    @property
    def reason(self) -> str:
        """Why the result is (or is not) converged and, if not, what to do (one sentence)."""
        status = int(self.status)
        if status == 0:
            return "every pair converged"
        ok = int(jnp.sum(self.converged))
        head = f"{ok} of {self.converged.shape[0]} pairs converged: "
        if status == 1:
            return head + (f"the step budget ({int(self.num_steps)} Lanczos steps) was spent "
                           "with the estimates still above tol; raise max_steps (or num_steps)")
        floor = float(self.rounding_floor) / max(float(self.norm_estimate), 1e-300)
        return head + (f"the residuals reached the rounding floor ({floor:.2g} relative) "
                       f"above tol={float(self.tol):.2g}; more steps cannot help: use float64 "
                       "(jax_enable_x64) or a tol above the floor")


class EigshNotConverged(UserWarning):
    """Warned by ``eigsh`` (outside ``jit``) when a pair did not converge; the text says why."""


# tol is never set below this many rounding floors (eps * sqrt(dim)) by default: the
# certificate cannot go below one floor, and the measured residual needs room under tol.
_FLOORS_IN_DEFAULT_TOL = 4


def default_tol(dtype, dim: int | None = None) -> float:
    """Default relative tolerance on the certificate, relative to ``||A||``.

    ``1e-5`` for float32 (and narrower), ``1e-9`` for float64; with ``dim`` given, at least
    ``4 * eps * sqrt(dim)`` (``eps`` of ``dtype``), because the certificate contains the
    rounding floor ``eps * sqrt(dim) * ||A||``: in float32 this raises the default above
    ``1e-5`` for ``dim >= 440`` (e.g. ``4.8e-4`` at ``dim = 10^6``); in float64 it never does
    below ``dim = 10^12``.
    """
    base = 1e-9 if jnp.finfo(dtype).bits >= 64 else 1e-5
    if dim is None:
        return base
    floor = float(jnp.finfo(dtype).eps) * float(dim) ** 0.5
    return max(base, _FLOORS_IN_DEFAULT_TOL * floor)


def eigsh(op, k: int = 5, which: str = "LA", *, key, num_steps: int | None = None,
          tol: float | None = None, max_steps: int | None = None, chunk: int = 1,
          v0=None, warm_noise: float = 1e-3, measured_floor=None, dim: int | None = None,
          dtype=None, rewrite_convs: bool | None = None, restarts: int = 0,
          certificate: str = "recurrence") -> EigshResult:
    """``k`` extreme eigenpairs of the symmetric operator ``op`` by Lanczos.

    Each returned pair comes with a certificate ``residuals[i]``: some eigenvalue ``lambda`` of
    ``A`` satisfies ``|lambda - eigenvalues[i]| <= residuals[i]``, where

        residuals[i] = (||fl(A v_i) - theta_i v_i|| + eps sqrt(dim) ||T||_2) / ||v_i||

    is measured in the accumulation dtype, from the products the recurrence computed (default)
    or with one explicit product per pair, and includes the rounding floor of the computed
    product (module docstring: in float64 the bound holds
    for the operator's matrix; in float32 for the exact matrix the float32 operator stands for,
    both as long as its ``matvec`` is accurate to ``eps sqrt(dim) ||A||``). "Certified" means
    exactly this bound; ``converged[i]`` means ``residuals[i] <= tol * ||T||_2``, with
    ``||T||_2 = max |Ritz value|``, the Lanczos estimate of ``||A||_2``. Every test is relative,
    so scaling ``op`` by any factor ``c`` (1e-18, 1e18, in float32 too) scales eigenvalues and
    residuals by ``|c|`` and leaves ``converged`` unchanged.

    Args:
      op: a ``LinearOperator`` (``op.dim``, ``op.dtype``, ``op.matvec``), e.g.
        ``curvature.hessian(...)`` or ``MatrixOperator(A)``; or a bare callable
        ``matvec(v) -> A v`` on ``(dim,)`` vectors, together with ``dim=``.
      k: number of eigenpairs, ``1 <= k <= dim``.
      which: "LA" largest algebraic, "SA" smallest algebraic, "LM" largest magnitude.
      key: ``jax.random`` key for the start vector and breakdown restarts (required,
        keyword-only).
      num_steps: if given, run exactly this many steps (``k <= num_steps <= dim``) and skip
        the early stop.
      tol: relative tolerance on the certificates, relative to ``||T||_2``; default
        ``default_tol(dtype, dim)`` (1e-5 in float32, 1e-9 in float64, and never below four
        rounding floors ``4 eps sqrt(dim)``). The certificate includes the floor, so a ``tol`` at
        or below ``eps sqrt(dim)`` is never met (``converged`` stays False); below
        ``2 eps sqrt(dim)`` the loop stops once the Lanczos estimates are under the floor.
      max_steps: cap on steps (default ``min(dim, max(10 k, 100))``); the basis buffer holds
        ``max_steps + 1`` vectors of length ``dim``.
      chunk: steps between convergence checks (default 1: after every step from step ``k``
        on; a check is one eigendecomposition of the small tridiagonal ``T``, negligible next
        to a product of a network's Hessian, and stopping at the first step that passes saves
        up to ``chunk - 1`` products).
      v0: warm start. A ``(dim,)`` start vector, or a ``(dim, b)`` block of previous
        eigenvectors: the start vector is then the sum of the unit columns. Either way a random
        component of relative size ``warm_noise`` is added, so that eigenvectors that are not
        in the warm start (a new outlier rising during training) still have a component to
        grow from. The span of a block that moved little is recovered in about ``b`` steps,
        plus the steps needed to damp the noise (tracking during training).
      warm_noise: relative size of that random component (default 1e-3, ``>= 0``).
      measured_floor: a linearity defect measured earlier on the same (or a nearby) operator
        (``linearity_defect(op, key)`` or a previous result's ``measured_floor``), reused in
        place of a new measurement, which saves its product. Meant for tracking an
        operator that changes slowly (sharpness during training); a scalar ``>= 0``.
      dim: the dimension when ``op`` is a bare callable (must agree with ``op.dim`` otherwise).
      dtype: the dtype of a bare callable's vectors (default: JAX's default float dtype).
      rewrite_convs: run the products with their convolutions rewritten into the form of
        XLA:CPU's fast kernel (``landscape.conv_rewrite``; XLA:CPU otherwise runs convolutions
        25-70x slower inside the Lanczos loop than at the top level). ``None`` (default):
        exactly when the backend is CPU and ``op``'s product contains a
        ``lax.conv_general_dilated`` (decided from shapes, so also under ``jax.jit``); products
        without convolutions are never touched. The products are equal to rounding (float32
        ungrouped convolutions: bit-identical values).
      restarts: deflation rounds after the first Lanczos run (default 0). Each round runs
        Lanczos again on ``A`` restricted to the orthogonal complement of the ``k`` pairs found
        so far and keeps the best ``k`` of old and new pairs, so an eigenvalue of multiplicity
        ``r`` in the wanted set is found with all its copies after ``r - 1`` rounds (a single
        run finds each eigenvalue once, module docstring). Each round costs another run's
        products; the kept pairs are then certified with one product each.
      certificate: ``"recurrence"`` (default): certify the pairs from the products the
        recurrence already computed, at no further product (module docstring);
        ``"products"``: with one explicit product ``fl(A v_i)`` per pair (``k`` more products).
        Both bound the same residual; they differ by less than one rounding floor.

    Returns:
      ``EigshResult`` with ``eigenvalues (k,)``, ``eigenvectors (dim, k)``, ``residuals (k,)``,
      ``converged (k,)``. Wrap in ``jax.jit`` freely; ``op`` is passed as a pytree argument.

    Raises:
      TypeError: ``key`` missing or not a PRNG key; ``op`` neither an operator nor callable.
      ValueError: ``dim`` missing for a callable; ``k``, ``num_steps``, ``max_steps``,
        ``tol``, ``chunk``, ``v0`` or ``warm_noise`` out of range (the message names it).
    """
    op = _inputs.as_operator(op, dim=dim, dtype=dtype)
    dim = op.dim
    k = validate.check_int(k, "k", low=1, high=dim)
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}; got {which!r}")
    validate.check_key(key)
    if num_steps is not None:
        steps = validate.check_int(num_steps, "num_steps", low=k, high=dim)
    else:
        default = min(dim, max(10 * k, 100))
        steps = default if max_steps is None else validate.check_int(
            max_steps, "max_steps", low=k, high=dim)
    auto = tol is None
    tol = default_tol(op.dtype, dim) if auto else validate.check_positive(tol, "tol")
    chunk = validate.check_int(chunk, "chunk", low=1)
    start = _start_vector(v0, dim, op.dtype)
    if not isinstance(warm_noise, int | float) or not warm_noise >= 0:
        raise ValueError(f"warm_noise must be a number >= 0; got {warm_noise!r}")
    if measured_floor is not None:
        measured_floor = jnp.asarray(measured_floor)
        if measured_floor.shape != () or not jnp.issubdtype(measured_floor.dtype, jnp.floating):
            raise ValueError(f"measured_floor must be a float scalar; got {measured_floor!r}")
        if validate.is_concrete(measured_floor) and not float(measured_floor) >= 0:
            raise ValueError(f"measured_floor must be >= 0; got {float(measured_floor)}")
    if certificate not in _CERTIFICATES:
        raise ValueError(f"certificate must be one of {_CERTIFICATES}; got {certificate!r}")
    rewrite = _loop_operator.wants_rewrite(op, rewrite_convs)
    result = _eigsh_kernel(op, start, key, measured_floor, k=k, which=which, steps=steps,
                           tol=tol, auto=auto, chunk=chunk, fixed=num_steps is not None,
                           noise=float(warm_noise), rewrite=rewrite,
                           rounds=validate.check_int(restarts, "restarts", low=0),
                           explicit=certificate == "products")
    if validate.is_concrete(result.status) and int(result.status) != 0:
        warnings.warn(f"eigsh: {result.reason}", EigshNotConverged, stacklevel=2)
    return result


def _start_vector(v0, dim, dtype):
    """Validate ``v0`` and turn it into a single start vector or ``None`` (random)."""
    if v0 is None:
        return None
    v0 = jnp.asarray(v0, dtype)
    if v0.ndim == 2:
        if v0.shape[0] != dim or v0.shape[1] < 1:
            raise ValueError(f"v0 must have shape ({dim},) or ({dim}, b); got {v0.shape}")
        validate.check_concrete_values(v0, "v0")
        norms = jnp.linalg.norm(v0, axis=0)
        if not isinstance(norms, jax.core.Tracer) and not bool(jnp.all(norms > 0)):
            raise ValueError("v0 has an all-zero column; warm-start vectors must be nonzero")
        return jnp.sum(v0 / norms, axis=1)
    validate.check_vector(v0, dim, "v0")
    return v0


def _floor(op, norm_estimate):
    """``eps * sqrt(dim) * ||A||_est``: the rounding allowance for one computed product."""
    eps = jnp.finfo(op.dtype).eps
    return (eps * op.dim ** 0.5) * norm_estimate


def linearity_defect(op, key) -> jax.Array:
    """``||fl(A(u + w)) - fl(A u) - fl(A w)||`` for random unit ``u, w`` (three products).

    Zero in exact arithmetic; about twice the rounding error of one computed product otherwise
    (the module docstring's "measured floor"). Pass it to :func:`eigsh` as ``measured_floor`` to
    reuse one measurement over many calls on a slowly changing operator.
    """
    op = _inputs.as_operator(op)
    validate.check_key(key)
    return _linearity_defect(op, key)


def _linearity_defect(op, key):
    acc = _inputs.accumulation_dtype(op.dtype)
    U = jax.random.normal(key, (2, op.dim), op.dtype)
    U = U / safe_norm(U, acc, axis=1)[:, None].astype(op.dtype)
    products = _inputs.map_matvec(op, jnp.stack([U[0], U[1], U[0] + U[1]], axis=1))
    P = products.astype(acc)
    return safe_norm(P[:, 2] - P[:, 0] - P[:, 1], acc)


def _limits(op, tnorm, defect, tol, auto):
    """``(floor, tol_eff, limit)`` at ``||T|| = tnorm``: the rounding floor, the tolerance in
    force, and the bound the Lanczos estimates must reach to stop. The stop comes when the
    certificate (~ estimate + floor) would pass ``tol_eff``; if ``tol_eff`` is below two floors
    it cannot, and the estimates need only get under the floor."""
    floor = jnp.maximum(_floor(op, tnorm), defect.astype(tnorm.dtype))
    tol_eff = jnp.asarray(tol, tnorm.dtype)
    if auto:
        rel = jnp.where(tnorm > 0, floor / jnp.where(tnorm > 0, tnorm, 1), 0)
        tol_eff = jnp.maximum(tol_eff, _FLOORS_IN_DEFAULT_TOL * rel)
    return floor, tol_eff, jnp.maximum(tol_eff * tnorm - floor, floor)


@partial(jax.jit,
         static_argnames=("k", "which", "steps", "tol", "auto", "chunk", "fixed", "noise",
                          "rewrite", "rounds", "explicit"))
def _eigsh_kernel(op, start, key, measured, *, k, which, steps, tol, auto, chunk, fixed, noise,
                  rewrite=False, rounds=0, explicit=False):
    op = _loop_operator.loop_operator(op, rewrite)
    dtype = op.dtype
    key_start, key_loop = jax.random.split(key)
    if measured is not None:
        defect, extra = measured.astype(_inputs.accumulation_dtype(dtype)), 0
    elif steps < 2:
        defect, extra = _linearity_defect(op, jax.random.fold_in(key, 0xF1)), 3
    else:  # measured inside the run, from its first two steps and one product
        defect, extra = None, 1
    rand = jax.random.normal(key_start, (op.dim,), dtype)
    if start is None:
        start = rand
    else:
        acc = _inputs.accumulation_dtype(dtype)
        scale = noise * safe_norm(start, acc) / safe_norm(rand, acc)
        start = start + scale.astype(dtype) * rand
    explicit = explicit or rounds > 0
    run = partial(_run, which=which, steps=steps, tol=tol, auto=auto, chunk=chunk, fixed=fixed,
                  explicit=explicit)
    pairs, size, defect = run(op, start, key_loop, k=k, defect=defect)
    # pairs of a deflated run satisfy the recurrence of the deflated operator, not of A, so
    # restarts certify with products (explicit above)
    for r in range(1, rounds + 1):
        pairs, size = _deflation_round(op, partial(run, defect=defect),
                                       jax.random.fold_in(key, r), pairs, size, k, which)
    return _finish(op, pairs, size, k, tol, auto, defect, extra)


def _run(op, start, key, *, k, which, steps, tol, auto, chunk, fixed, defect, explicit):
    """One Lanczos run from ``start`` until the pairs pass: ``(pairs, size, defect)`` with
    ``pairs = (theta, V, est, tnorm, measured, cert)``: the wanted Ritz pairs, the Lanczos
    estimates, ``||T||``, and, for certificates from the recurrence, the measured part of the
    residual (``rec + 4 eps ||T||``) and the certificate (``None`` with ``explicit``); then the
    number of steps and the measured floor. With ``defect=None`` the floor is measured after
    the first two steps with one more product (:func:`_recurrence_defect`).

    With certificates from the recurrence the stopping test is the certificate itself (formed,
    with one ``(dim, 2k)`` product with the basis, only once its cheap proxy
    ``||H s - theta s||`` passes): a run that stops has converged pairs, and keeps the pairs and
    certificates its test passed on, bit for bit. When ``tol`` is below two floors (never met)
    it stops once the measured part is under the floor. With ``explicit`` the test is on the
    Lanczos estimates ``beta_m |s_m|``."""
    state = lanczos_init(start, steps, key)
    j0 = 0
    if defect is None:
        state = lanczos_steps(op, state, 0, 2)
        defect, j0 = _recurrence_defect(op, state), 2
    eps = jnp.finfo(op.dtype).eps
    acc = state.alpha.dtype

    def certify(state, size, theta, S, tnorm, floor):
        rec, vnorm = recurrence_residuals(state, size, theta, S)
        measured = rec + _UPDATE_ROUNDING * eps * tnorm
        return measured, (measured + floor) / vnorm

    def check(state, size):
        theta, S, est, tnorm = ritz(state.alpha, state.beta, size, k, which, with_norm=True)
        floor, tol_eff, limit = _limits(op, tnorm, defect, tol, auto)
        if explicit:
            return jnp.all(est <= limit), (theta, S, est, tnorm)
        proxy = (safe_norm(recurrence_coefficients(state, size, theta, S), acc, axis=0)
                 + dropped_term(state, S) + _UPDATE_ROUNDING * eps * tnorm)
        inf = jnp.full_like(est, jnp.inf)
        measured, cert = jax.lax.cond(
            jnp.all(proxy <= limit), lambda: certify(state, size, theta, S, tnorm, floor),
            lambda: (inf, inf))
        # tol below two floors: cert <= tol is out of reach; stop once the recurrence's
        # residuals are under the floor (more steps cannot lower them)
        floor_limited = limit <= floor
        done = jnp.all(cert <= tol_eff * tnorm) | (
            floor_limited & jnp.all(measured <= limit + _UPDATE_ROUNDING * eps * tnorm))
        return done, (theta, S, est, tnorm, measured, cert)

    def cond(carry):
        _, j, done, _ = carry
        return jnp.logical_and(jnp.logical_not(done), j < steps)

    def body(carry):
        state, j, _, _ = carry
        # checks at the multiples of chunk (and not before k steps), wherever the loop began
        stop = jnp.minimum(jnp.maximum((j // chunk + 1) * chunk, k), steps)
        state = lanczos_steps(op, state, j, stop)
        done, pairs = check(state, stop)
        return state, stop, done & (not fixed), pairs

    m = state.alpha.shape[0]
    blank = (jnp.zeros((k,), acc), jnp.zeros((m, k), acc), jnp.zeros((k,), acc),
             jnp.zeros((), acc))
    if not explicit:
        blank += (jnp.zeros((k,), acc), jnp.zeros((k,), acc))
    state, size, done, carried = jax.lax.while_loop(
        cond, body, (state, jnp.asarray(j0), jnp.asarray(False), blank))
    # a run that stopped keeps what its test passed on; otherwise (steps spent, fixed
    # num_steps) the pairs and certificates are formed here
    final = ritz(state.alpha, state.beta, size, k, which, with_norm=True)
    if not explicit:
        floor = _limits(op, final[3], defect, tol, auto)[0]
        final = (*final, *certify(state, size, final[0], final[1], final[3], floor))
    pairs = jax.tree.map(lambda a, b: jnp.where(done, a, b), carried, final)
    theta, S = pairs[0], pairs[1]
    basis = state.basis[:-1]
    V = jnp.matmul(basis.T, S.astype(basis.dtype), precision=jax.lax.Precision.HIGHEST)
    V = V / safe_norm(V, acc, axis=0).astype(V.dtype)
    extra = (None, None) if explicit else pairs[4:]
    return (theta, V, pairs[2], pairs[3], *extra), size, defect


def _recurrence_defect(op, state):
    """The linearity defect of ``u = q_0, w = q_1`` with one product: after two Lanczos steps
    ``fl(A q_0) + fl(A q_1) = Q_3 (h_0 + h_1)`` (the columns of the recurrence matrix, exact to
    the rounding of the vector updates and the discarded breakdown vectors, whose norms are
    added), so ``||fl(A(q_0 + q_1)) - Q_3 (h_0 + h_1)||`` replaces the three-product measurement
    of :func:`linearity_defect` (an estimate larger by at most those few ``eps ||A||``)."""
    acc = state.alpha.dtype
    basis = state.basis
    H = recurrence_matrix(state, 2)
    h = (H[:, 0] + H[:, 1])
    _, e = jnp.frexp(jnp.max(jnp.abs(h)))
    recon = jnp.ldexp(jnp.matmul(jnp.ldexp(h, -e).astype(basis.dtype), basis,
                                 precision=jax.lax.Precision.HIGHEST).astype(acc), e)
    product = op.matvec(basis[0] + basis[1]).astype(acc)
    return safe_norm(product - recon, acc) + state.dropped[0] + state.dropped[1]


class _Deflated:
    """``P A P`` with ``P = I - U U^T`` (``U`` orthonormal columns): ``A`` on the orthogonal
    complement of ``U``, zero on ``span(U)``."""

    def __init__(self, op, U):
        self.op, self.U, self.dim, self.dtype = op, U, op.dim, op.dtype

    def _project(self, v):
        hi = jax.lax.Precision.HIGHEST
        for _ in range(2):  # twice is enough
            v = v - jnp.matmul(self.U, jnp.matmul(self.U.T, v, precision=hi), precision=hi)
        return v

    def matvec(self, v):
        return self._project(self.op.matvec(self._project(v)))


def _deflation_round(op, run, key, pairs, size, k, which):
    """A further Lanczos run on ``A`` deflated by the ``k`` pairs found so far, from a random
    start orthogonal to them, for its one extreme pair; that pair joins the candidates and the
    ``k`` wanted ones are kept.

    A single Krylov space holds one vector of each eigenspace, so an eigenvalue of multiplicity
    ``r`` is found once per run; on the complement of the found vectors its other copies are
    eigenvalues again and the new run finds the next one (Saad, *Numerical Methods for Large
    Eigenvalue Problems*, sec. 4.2, deflation by restriction). The new vectors are orthogonal to
    the old ones up to rounding, so the kept set stays orthonormal."""
    theta, V, est, tnorm = pairs[:4]
    deflated = _Deflated(op, V)
    start = deflated._project(jax.random.normal(key, (op.dim,), op.dtype))
    (theta2, V2, est2, tnorm2, _, _), size2, _ = run(deflated, start, jax.random.fold_in(key, 1),
                                                      k=1)
    # a pair of the deflated operator on span(V) (eigenvalue 0) is not a pair of A
    inside = safe_norm(jnp.matmul(V.T, V2, precision=jax.lax.Precision.HIGHEST), theta.dtype,
                       axis=0) > 0.5
    score = {"LA": lambda t: t, "SA": lambda t: -t, "LM": jnp.abs}[which]
    all_theta = jnp.concatenate([theta, theta2])
    keep = jnp.argsort(-jnp.concatenate([score(theta), jnp.where(inside, -jnp.inf,
                                                                 score(theta2))]))[:k]
    return ((all_theta[keep], jnp.concatenate([V, V2], axis=1)[:, keep],
             jnp.concatenate([est, est2])[keep], jnp.maximum(tnorm, tnorm2), None, None),
            size + size2)


def _finish(op, pairs, size, k, tol, auto, defect, extra):
    """Certificates of the pairs (from the recurrence, as the run formed them, or, when the run
    has none, with one explicit product per pair); then ``converged`` and ``status``."""
    theta, V, est, tnorm, measured, residuals = pairs
    acc = theta.dtype
    floor, tol_eff, limit = _limits(op, tnorm, defect, tol, auto)
    floor = floor.astype(acc)
    # the stopping test of the run: the recurrence's residuals (without the allowance for the
    # updates' rounding) under the limit, or, with explicit certificates, the Lanczos estimates
    allowance = _UPDATE_ROUNDING * jnp.finfo(op.dtype).eps * tnorm
    if residuals is None:
        AV = _inputs.map_matvec(op, V)
        # Residual of the returned (stored, nearly unit) vectors against the returned theta,
        # formed and measured in the accumulation dtype; the floor covers the rounding of fl(Av).
        R = AV.astype(acc) - V.astype(acc) * theta
        residuals = (safe_norm(R, acc, axis=0) + floor) / safe_norm(V, acc, axis=0)
        measured, allowance, extra = est, 0.0, extra + k
    converged = residuals <= tol_eff * tnorm
    stopped = jnp.all(measured <= limit + allowance)
    status = jnp.where(jnp.all(converged), 0, jnp.where(stopped, 2, 1))
    return EigshResult(theta, V, residuals, converged, est, size + extra, size, tol_eff, tnorm,
                       floor, defect.astype(acc), status)

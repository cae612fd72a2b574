"""Inexact Newton–CG with bounds: Steihaug–Toint CG on a Hessian (Gauss–Newton for the
inverse problems), Eisenstat–Walker forcing, projected Armijo backtracking.

One Newton step at ``x`` with gradient ``g``:

1. the *active set* ``A``: variables at a bound whose gradient pushes them out of
   the box (Bertsekas' ε-active set, ε shrinking with the projected gradient);
2. Steihaug–Toint CG on the reduced system ``H_FF p_F = -g_F`` of the free
   variables, stopped at the relative residual ``η_k`` (Eisenstat–Walker), when an
   iteration lowers the model by at most ``ftol`` (relative to ``f``), on negative
   curvature, or at the trust radius;
3. projected backtracking: ``x(α) = P(x + α p)`` until
   ``f(x(α)) <= f(x) + c₁ gᵀ(x(α) - x)``; a trial point that cannot be evaluated
   counts as ``+inf`` and is stepped back from.

References: Nocedal & Wright, *Numerical Optimization* (2006), Alg. 7.2 (Steihaug
CG) and Alg. 3.5 (backtracking); Eisenstat & Walker, *SIAM J. Sci. Comput.* 17
(1996), choice 2 with its safeguard; Bertsekas, *SIAM J. Control Optim.* 20 (1982)
(projected Newton with an ε-active set).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._optimize import (
    OptimizeResult,
    _evaluate_start,
    _Interrupted,
    _is_solver_failure,
    _normalize_bounds,
)


@dataclasses.dataclass(frozen=True)
class NewtonCG:
    """Inexact Newton–CG (Steihaug–Toint CG, Eisenstat–Walker forcing, projected Armijo).

    With :func:`pdeinv.inverse.fit` the Hessian is the Gauss–Newton Hessian of the
    problem (:meth:`~pdeinv.inverse.InverseProblem.gauss_newton_operator`); with
    :func:`~pdeinv.inverse.minimize` on a plain objective it is the exact Hessian
    (forward over reverse mode) unless ``linearize`` is given.

    Parameters
    ----------
    max_iter
        Maximum Newton steps.
    gtol
        Converged when the projected gradient max-norm is ``<= gtol`` (as L-BFGS-B).
    ftol
        Converged when ``(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol`` (as L-BFGS-B).
        The same test ends each CG run: once one CG iteration (one Hessian–vector
        product, the counterpart of one L-BFGS-B gradient) lowers the quadratic model by
        at most ``ftol * max(|f_k|, 1)``, the step is returned (``"small_decrease"``).
    max_cg
        Maximum CG iterations (Hessian–vector products) per Newton step.
    forcing_max
        ``η_max``: the largest relative CG residual accepted (first step uses it).
    forcing_gamma, forcing_exponent
        Eisenstat–Walker choice 2: ``η_k = γ (‖g_k‖ / ‖g_{k-1}‖)^α``, ``g`` the gradient
        on the free (not actively bounded) variables, the right-hand side of CG.
    armijo
        Sufficient-decrease constant ``c₁`` of the backtracking line search.
    max_backtracks
        Step reductions tried before the step is declared failed.
    trust_radius
        Initial radius of the CG step (Steihaug stops at it), then adapted: doubled
        after a full step to the boundary, shrunk to the accepted step after a
        backtrack.  ``None``: no radius (CG stops on its tolerance or negative curvature).
    bounds
        ``(lo, hi)`` for all variables, or one ``(lo, hi)`` per variable (``None``
        for no bound on that side); ``None``: unbounded.
    preconditioner
        ``preconditioner(x) -> (r -> M⁻¹ r)`` (numpy vectors), asked once per Newton
        step, for a symmetric positive definite ``M ≈ H(x)``; restricted to the free
        variables.  ``None`` (default): plain CG, or the ``memory`` preconditioner.
    memory
        Without a ``preconditioner``: precondition each CG run by the limited-memory
        inverse built from the last ``memory`` ``(d, H d)`` pairs of the previous
        runs (:class:`CurvaturePairs`; no extra products).  ``0``: plain CG.
    product_tol
        With :func:`pdeinv.inverse.fit`: the Hessian–vector products of Newton
        step ``k`` solve their tangent and adjoint PDEs at tol ``product_tol * η_k``
        (never tighter than the solver's ``tol``), from one more linearisation
        at that tol (a forward and an adjoint solve, counted as
        ``linearize``); the objective, the gradient and the line search keep
        the solver's ``tol``.  A product then has a relative error of about
        ``product_tol * η_k``, well inside the CG residual ``η_k`` it serves,
        and costs less (docs/newton_cg.md).  ``None``: every product at the
        solver's ``tol``.  Ignored with a plain objective or a ``linearize`` of
        your own.
    """

    max_iter: int = 50
    gtol: float = 1e-6
    ftol: float = 1e-10
    max_cg: int = 50
    forcing_max: float = 0.5
    forcing_gamma: float = 0.9
    forcing_exponent: float = 2.0
    armijo: float = 1e-4
    max_backtracks: int = 20
    trust_radius: float | None = None
    bounds: tuple | None = None
    preconditioner: Callable | None = None
    memory: int = 50
    product_tol: float | None = 1e-3

    def __post_init__(self):
        checks = {
            "max_iter": self.max_iter >= 1,
            "max_cg": self.max_cg >= 1,
            "gtol": self.gtol >= 0,
            "ftol": self.ftol >= 0,
            "forcing_max": 0 < self.forcing_max < 1,
            "forcing_gamma": 0 < self.forcing_gamma <= 1,
            "forcing_exponent": 1 < self.forcing_exponent <= 2,
            "armijo": 0 < self.armijo < 0.5,
            "max_backtracks": self.max_backtracks >= 1,
            "trust_radius": self.trust_radius is None or self.trust_radius > 0,
            "memory": self.memory >= 0,
            "product_tol": self.product_tol is None
            or (_is_real(self.product_tol) and 0 < self.product_tol <= 1),
        }
        ranges = {
            "max_iter": ">= 1",
            "max_cg": ">= 1",
            "gtol": ">= 0",
            "ftol": ">= 0",
            "forcing_max": "in (0, 1)",
            "forcing_gamma": "in (0, 1]",
            "forcing_exponent": "in (1, 2]",
            "armijo": "in (0, 0.5)",
            "max_backtracks": ">= 1",
            "trust_radius": "> 0 or None",
            "memory": ">= 0",
            "product_tol": "in (0, 1] or None",
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"NewtonCG.{name} must be {ranges[name]}, got {getattr(self, name)!r}"
                )


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


class SteihaugResult(NamedTuple):
    """Outcome of :func:`steihaug_cg`.

    ``reason``: ``"converged"`` (relative residual reached), ``"small_decrease"`` (an
    iteration lowered the model by at most ``min_decrease``), ``"negative_curvature"``,
    ``"boundary"`` (the step reached the trust radius), ``"max_iter"`` (and, inside
    Newton–CG, ``"failed"``: a product's solve gave up, the step is ``-g``).
    """

    step: np.ndarray
    iterations: int  # Hessian-vector products made
    reason: str
    residual_norm: float  # ||H p + g|| of the returned step (as CG tracks it)


def steihaug_cg(
    hvp,
    gradient,
    *,
    rtol: float,
    max_iter: int,
    radius: float | None = None,
    precondition=None,
    pairs: list | None = None,
    min_decrease: float = 0.0,
):
    r"""Approximately minimise ``q(p) = gᵀp + ½ pᵀHp`` by Steihaug–Toint CG.

    CG on ``H p = -g`` from ``p = 0``, stopped when

    - ``‖H p + g‖ <= rtol ‖g‖`` (``"converged"``),
    - a direction of non-positive curvature ``dᵀHd <= 0`` appears
      (``"negative_curvature"``): with a ``radius`` the step follows that direction to
      the boundary; without, the current step is returned, or ``-g`` when it is
      the first direction,
    - the next iterate would leave ``‖p‖ <= radius`` (``"boundary"``): the step
      stops on the boundary along the current direction,
    - an iteration decreased ``q`` by at most ``min_decrease`` (``"small_decrease"``;
      the step includes that iteration),
    - after ``max_iter`` products (``"max_iter"``).

    Parameters
    ----------
    hvp
        ``v -> H v`` (numpy in, array-like out).
    gradient
        ``g``, 1-D.
    rtol
        Relative residual tolerance (the forcing term ``η``).
    max_iter
        Maximum Hessian–vector products.
    radius
        Trust radius (Euclidean), or ``None``.
    precondition
        ``r -> M⁻¹ r`` for a symmetric positive definite ``M ≈ H`` (preconditioned
        CG; the residual test stays on ``‖H p + g‖``), or ``None``.  With a
        preconditioner the iterates grow monotonically in the ``M``-norm, not
        necessarily in the Euclidean norm the radius is measured in: the step
        stops at the first iterate outside the radius.
    pairs
        A list the products are appended to as ``(d, H d)`` (directions of positive
        curvature), e.g. to precondition the next system (:class:`CurvaturePairs`).
    min_decrease
        Stop once one iteration lowers the model ``q`` by at most this much (its
        decrease ``½ α rᵀM⁻¹r`` is known without a product); ``0``: never.

    Returns
    -------
    SteihaugResult
    """
    g = np.asarray(gradient, dtype=float)
    p = np.zeros_like(g)
    r = g.copy()  # residual H p + g
    g_norm = float(np.linalg.norm(g))
    if g_norm == 0.0:
        return SteihaugResult(p, 0, "converged", 0.0)

    def apply_m(v):
        return v if precondition is None else np.asarray(precondition(v), dtype=float)

    z = apply_m(r)
    d = -z
    rz = float(r @ z)
    rr = float(r @ r)
    for j in range(max_iter):
        hd = np.asarray(hvp(d), dtype=float)
        curvature = float(d @ hd)
        if curvature <= 0.0:
            if radius is not None:
                return SteihaugResult(_to_boundary(p, d, radius), j + 1, "negative_curvature",
                                      float(np.sqrt(rr)))  # fmt: skip
            step = d if j == 0 else p  # d = -M⁻¹g at j = 0
            return SteihaugResult(step, j + 1, "negative_curvature", float(np.sqrt(rr)))
        if pairs is not None:
            pairs.append((d, hd))
        alpha = rz / curvature
        p_next = p + alpha * d
        if radius is not None and np.linalg.norm(p_next) >= radius:
            return SteihaugResult(_to_boundary(p, d, radius), j + 1, "boundary",
                                  float(np.sqrt(rr)))  # fmt: skip
        p = p_next
        r = r + alpha * hd
        rr_next = float(r @ r)
        if np.sqrt(rr_next) <= rtol * g_norm:
            return SteihaugResult(p, j + 1, "converged", float(np.sqrt(rr_next)))
        if 0.5 * alpha * rz <= min_decrease:
            return SteihaugResult(p, j + 1, "small_decrease", float(np.sqrt(rr_next)))
        z = apply_m(r)
        rz_next = float(r @ z)
        d = -z + (rz_next / rz) * d
        rr, rz = rr_next, rz_next
    return SteihaugResult(p, max_iter, "max_iter", float(np.sqrt(rr)))


class CurvaturePairs:
    """Limited-memory inverse-Hessian from the ``(d, H d)`` pairs of earlier CG runs.

    The L-BFGS two-loop recursion over the last ``memory`` pairs (``H₀ = γ I`` with
    ``γ = sᵀy / yᵀy`` of the newest pair): the automatic preconditioner of Morales &
    Nocedal (*SIAM J. Optim.* 10, 2000) for a sequence of Newton–CG systems whose
    Hessians change little from one step to the next.  Costs no Hessian products.
    """

    def __init__(self, memory: int):
        self.memory = int(memory)
        self.pairs: list = []

    def extend(self, pairs) -> None:
        for s, y in pairs:
            if float(s @ y) > 1e-12 * float(np.linalg.norm(s) * np.linalg.norm(y)):
                self.pairs.append((np.asarray(s, float), np.asarray(y, float)))
        del self.pairs[: max(len(self.pairs) - self.memory, 0)]

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def __call__(self, r):
        q = np.array(r, dtype=float)
        alphas = []
        for s, y in reversed(self.pairs):
            a = float(s @ q) / float(s @ y)
            alphas.append(a)
            q -= a * y
        s, y = self.pairs[-1]
        q *= float(s @ y) / float(y @ y)
        for (s, y), a in zip(self.pairs, reversed(alphas), strict=True):
            b = float(y @ q) / float(s @ y)
            q += (a - b) * s
        return q


def _to_boundary(p, d, radius):
    """``p + τ d`` with ``τ >= 0`` and ``‖p + τ d‖ = radius`` (``‖p‖ <= radius``)."""
    a, b, c = float(d @ d), 2.0 * float(p @ d), float(p @ p) - radius**2
    if c >= 0.0:  # already outside (preconditioned CG is not monotone in this norm)
        return p * (radius / np.sqrt(float(p @ p)))
    tau = (-b + np.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)
    return p + tau * d


class Linearization(NamedTuple):
    """Objective, misfit, gradient and Hessian–vector product at one point (a pytree)."""

    objective: jnp.ndarray
    misfit: jnp.ndarray
    gradient: jnp.ndarray
    hvp: jax.tree_util.Partial


@functools.lru_cache(maxsize=16)
def exact_linearization(objective):
    """``(x, *args) -> Linearization`` with the exact Hessian (forward over reverse), jitted."""

    def linearize(x, *args):
        def gradient(x):
            (value, misfit), grad = jax.value_and_grad(objective, has_aux=True)(x, *args)
            return grad, (value, misfit)

        grad, hvp, (value, misfit) = jax.linearize(gradient, x, has_aux=True)
        return Linearization(value, misfit, grad, hvp)

    return jax.jit(linearize)


@jax.jit
def apply_operator(operator, v):
    """``operator(v)`` for a pytree ``operator`` (a linearisation's ``hvp``), compiled once.

    The one home of this call: Newton–CG's products and
    :meth:`~pdeinv.inverse.GaussNewtonOperator.apply` share its compilation.
    """
    return operator(v)


def _newton_cg(linearize, x0, dtype, options: NewtonCG, history, counter, stop, linearize_at=None):
    """The Newton–CG iteration of :func:`pdeinv.inverse.minimize`.

    ``linearize_at(x, tol)``: the linearisation at ``x`` with its solves at
    ``tol``, or ``None`` where that adds nothing (see ``NewtonCG.product_tol``).
    """
    n = x0.size
    lo, hi = _bound_arrays(_normalize_bounds(options.bounds, n), n)
    x = np.clip(x0, lo, hi)

    def evaluate(x):
        """``(value, misfit, grad, hvp)``; raises only for non-solver errors."""
        if stop is not None and stop():
            raise _Interrupted
        try:
            lin = linearize(jnp.asarray(x, dtype))
            value, misfit = float(lin.objective), float(lin.misfit)
        finally:  # counted after the first call traced (its costs may depend on it)
            counter.add("linearize")
        return value, misfit, np.asarray(lin.gradient, dtype=float), lin.hvp

    def trial(x):
        try:
            value, misfit, grad, hvp = evaluate(x)
        except _Interrupted:
            raise
        except Exception as err:  # noqa: BLE001 - filtered just below
            if not _is_solver_failure(err):
                raise
            return None
        if not (np.isfinite(value) and np.all(np.isfinite(grad))):
            return None
        return value, misfit, grad, hvp

    value, misfit, grad, hvp = _evaluate_start(evaluate, x)
    history.record(0, value, grad, misfit, 0.0, x)

    def product(v):
        if stop is not None and stop():
            raise _Interrupted
        counter.add("hvp")
        return np.asarray(apply_operator(products, jnp.asarray(v, dtype)), dtype=float)

    def looser_products(x, eta):
        """The Hessian at ``x`` with solves at ``product_tol * eta``; ``hvp`` if none."""
        if linearize_at is None or options.product_tol is None:
            return hvp
        if stop is not None and stop():
            raise _Interrupted
        try:
            lin = linearize_at(jnp.asarray(x, dtype), options.product_tol * eta)
        except Exception as err:  # noqa: BLE001 - filtered just below
            if not _is_solver_failure(err):
                raise
            counter.add("linearize")  # its solves were made, as evaluate counts them
            return hvp  # the loose solve gave up: products at the solver's tol
        if lin is None:  # nothing looser to do: no solve made
            return hvp
        counter.add("linearize")
        return lin.hvp

    eta = options.forcing_max
    radius = options.trust_radius
    recycled = CurvaturePairs(options.memory)
    previous_norm = None
    status, message = 1, f"reached max_iter = {options.max_iter}"
    iteration = 0
    for iteration in range(1, options.max_iter + 1):
        projected = x - np.clip(x - grad, lo, hi)
        pg_norm = float(np.linalg.norm(projected))
        if np.max(np.abs(projected), initial=0.0) <= options.gtol:
            status, message, iteration = 0, "projected gradient max-norm <= gtol", iteration - 1
            break
        # Bertsekas' epsilon-active set: at (or within eps of) a bound, pushed outwards.
        eps = min(1e-3, pg_norm)
        active = ((x <= lo + eps) & (grad > 0)) | ((x >= hi - eps) & (grad < 0))
        free = (~active).astype(float)
        # The forcing term follows the residual of the system CG solves, the gradient
        # on the free variables (the projected gradient saturates at the box width
        # where the gradient is large, which would freeze the forcing at its maximum).
        norm = float(np.linalg.norm(free * grad))
        if previous_norm is not None:
            eta = _forcing(eta, norm, previous_norm, options)
        previous_norm = norm
        products = looser_products(x, eta)

        def reduced(v, free=free):
            return free * product(free * v)

        precondition = None
        inverse = options.preconditioner(x) if options.preconditioner is not None else None
        if inverse is None and recycled:
            inverse = recycled
        if inverse is not None:

            def precondition(r, free=free, inverse=inverse):
                return free * np.asarray(inverse(free * r), dtype=float)

        pairs = [] if options.memory else None
        products_before = counter.calls["hvp"]
        try:
            cg = steihaug_cg(
                reduced, free * grad, rtol=eta, max_iter=options.max_cg, radius=radius,
                precondition=precondition, pairs=pairs,
                min_decrease=options.ftol * max(abs(value), 1.0),
            )  # fmt: skip
        except _Interrupted:
            raise
        except Exception as err:  # noqa: BLE001 - filtered just below
            if not _is_solver_failure(err):
                raise
            # A tangent or adjoint solve of a product gave up: a gradient step instead
            # (the products made, the failed one included, are this step's CG work).
            made = counter.calls["hvp"] - products_before
            cg = SteihaugResult(-free * grad, made, "failed", float("nan"))
            pairs = None
        if pairs:
            recycled.extend(pairs)
        step = cg.step * free
        if not float(grad @ step) < 0.0:  # not a descent direction: projected gradient
            step = -free * grad
        # Projected backtracking line search (Armijo along the projection arc).
        alpha, accepted = 1.0, None
        for _ in range(options.max_backtracks):
            x_trial = np.clip(x + alpha * step, lo, hi)
            decrease = min(float(grad @ (x_trial - x)), 0.0)
            new = trial(x_trial)
            if new is not None and new[0] <= value + options.armijo * decrease:
                accepted = (x_trial, new)
                break
            if new is None:
                alpha *= 0.25
            else:  # safeguarded quadratic interpolation of f along the step
                slope = float(grad @ step)
                curvature = new[0] - value - alpha * slope
                guess = -slope * alpha**2 / (2.0 * curvature) if curvature > 0 else 0.5 * alpha
                alpha = float(np.clip(guess, 0.1 * alpha, 0.5 * alpha))
        if accepted is None:
            status = 2
            message = (
                f"line search found no sufficient decrease in {options.max_backtracks} backtracks"
            )
            iteration -= 1
            break
        x_new, (value_new, misfit_new, grad_new, hvp_new) = accepted
        step_norm = float(np.linalg.norm(x_new - x))
        if radius is not None:
            if alpha == 1.0 and cg.reason in ("boundary", "negative_curvature"):
                radius = 2.0 * radius
            elif alpha < 1.0:
                radius = max(step_norm, 1e-12)
        relative = (value - value_new) / max(abs(value), abs(value_new), 1.0)
        x, value, misfit, grad, hvp = x_new, value_new, misfit_new, grad_new, hvp_new
        history.record(iteration, value, grad, misfit, step_norm, x, cg_iterations=cg.iterations)
        if relative <= options.ftol:
            status, message = 0, "relative objective decrease <= ftol"
            break
    return OptimizeResult(
        x=np.asarray(x).astype(dtype),
        fun=float(value),
        misfit=float(misfit),
        iterations=iteration,
        num_evaluations=counter.calls["linearize"],
        status=status,
        success=status == 0,
        message=message,
        history=history.arrays(),
        pde_solves=counter.totals(),
    )


def _forcing(eta, norm, previous_norm, options):
    """Eisenstat–Walker choice 2 with its safeguard, capped at ``forcing_max``."""
    gamma, power = options.forcing_gamma, options.forcing_exponent
    new = gamma * (norm / previous_norm) ** power
    floor = gamma * eta**power
    if floor > 0.1:
        new = max(new, floor)
    # No need to solve more accurately than the stopping test asks for.
    new = max(new, 0.5 * options.gtol / max(norm, 1e-300))
    return float(min(new, options.forcing_max))


def _bound_arrays(bounds, n):
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    if bounds is None:
        return lo, hi
    for i, (a, b) in enumerate(bounds):
        lo[i] = -np.inf if a is None else float(a)
        hi[i] = np.inf if b is None else float(b)
    if np.any(lo > hi):
        raise ValueError("bounds: every lower bound must be <= its upper bound")
    return lo, hi

"""The inverse problem: forward model + observations + data + regulariser -> fit."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from ..expm import check_times, check_tol
from ..models._model import Model
from ._newton import apply_operator
from ._optimize import IterationInfo, OptimizeResult, minimize
from ._parameterization import ParameterMap


def _default_forward(model, params, times, **solver):
    # simulate_sources is simulate, restarted where sources switch on or off
    from ..models import simulate_sources

    return simulate_sources(model, params, times, **solver)


def _value_grad_hvp(function, m):
    """``function(m)``, its gradient, and its Hessian as a linearised map (forward over reverse)."""
    value = function(m)
    grad, hvp = jax.linearize(jax.grad(function), m)
    return value, grad, hvp


def _misfit_gauss_newton(jvp, vjp, dm):
    return vjp(jvp(dm))[0]


def _misfit_gauss_newton_transposed(jvp, dm):
    # J^T by transposing the linearised map: no forward solve of its own.
    tangent = jvp(dm)
    return jax.linear_transpose(jvp, dm)(tangent)[0]


def _check_tol(tol, dtype):
    """``tol`` in (0, 1) as a 0-d array of ``dtype`` (:func:`pdeinv.expm.check_tol`, below 1)."""
    array = check_tol(tol, dtype)
    if not isinstance(array, jax.core.Tracer) and not array < 1:
        raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
    return array


def _regularized_hvp(misfit_hvp, reg_hvp, weight, dm):
    return misfit_hvp(dm) + weight * reg_hvp(dm)


@jax.jit
def _apply_batch(operator, dms):
    return jax.vmap(operator)(dms)


def _apply_to(operator, dm):
    dm = jnp.asarray(dm)
    if dm.ndim == 1:
        return apply_operator(operator, dm)
    if dm.ndim == 2:
        return _apply_batch(operator, dm)
    raise ValueError(
        f"dm must be one direction (num_params,) or a batch (k, num_params), got shape {dm.shape}"
    )


class GaussNewtonOperator(NamedTuple):
    r"""A problem linearised at ``m`` (from :meth:`InverseProblem.gauss_newton_operator`).

    A pytree: it can be passed to and returned from :func:`jax.jit`.

    Attributes
    ----------
    objective, misfit
        ``J(m)`` and the data misfit at ``m``.
    gradient
        ``∇J(m)``.
    hvp
        ``dm -> (JᵀΓ⁻¹J + w ∇²R(m)) dm`` (a :class:`jax.tree_util.Partial`).
    misfit_hvp
        ``dm -> JᵀΓ⁻¹J dm``.
    """

    objective: jnp.ndarray
    misfit: jnp.ndarray
    gradient: jnp.ndarray
    hvp: Partial
    misfit_hvp: Partial

    def apply(self, dm):
        """``H dm`` for ``dm`` of shape ``(num_params,)`` or ``(k, num_params)``."""
        return _apply_to(self.hvp, dm)

    def apply_misfit(self, dm):
        """``JᵀΓ⁻¹J dm`` for ``dm`` of shape ``(num_params,)`` or ``(k, num_params)``."""
        return _apply_to(self.misfit_hvp, dm)


class RegularizedObjective:
    """``J(m) = misfit(m) + weight * R(field(m))`` for problems that define ``misfit``.

    Shared by :class:`InverseProblem` and the multi-experiment problem; the
    subclass provides ``misfit``, ``regularizer``, ``parameters`` and ``weight``.
    """

    def regularization(self, m):
        return self.regularizer(self.parameters.field(m))

    @functools.cached_property
    def _objective_with_weight(self):
        # One function of (m, weight): Morozov's weight sweep reuses its compilation.
        def objective(m, weight):
            misfit = self.misfit(m)
            return misfit + weight * self.regularization(m), misfit

        return objective

    def objective(self, m):
        """``(J(m), misfit(m))`` at this problem's weight."""
        m = jnp.asarray(m)
        return self._objective_with_weight(m, jnp.asarray(self.weight, m.dtype))

    # -- Gauss-Newton curvature -------------------------------------------------------

    @property
    def num_solves(self) -> int:
        """PDE solves of one forward evaluation (one per experiment, padding included)."""
        return 1

    def pde_solve_costs(self) -> dict:
        """PDE solves of one call of each kind the optimisers make (see :func:`minimize`).

        ``value_and_grad``: a forward and an adjoint solve per experiment;
        ``linearize`` (:meth:`gauss_newton_operator`): the forward solve that
        :func:`jax.linearize` keeps and the adjoint solve of the gradient (``Jᵀ``
        is the transpose of the linearised map), plus a second forward solve
        when the solver has no transpose rule for its tangent and ``Jᵀ`` comes
        from :func:`jax.vjp`; ``hvp``: a tangent solve (``J dm``) and an adjoint
        solve (``Jᵀ(...)``).
        """
        e = self.num_solves
        # jax.linear_transpose of the linearisation when the forward solver allows it
        # (then no separate jax.vjp forward solve); known once the first one traced.
        transposed = self.__dict__.get("_transposes", False)
        return {
            "value_and_grad": {"forward": e, "adjoint": e},
            "linearize": {"forward": e if transposed else 2 * e, "adjoint": e},
            "hvp": {"tangent": e, "adjoint": e},
        }

    def _with_solver_tol(self, tol):
        """This problem with its PDE solves at ``tol`` (a traced scalar is fine)."""
        copy = dataclasses.replace(self, solver={**self.solver, "tol": tol})
        for name in ("_batched_arrays",):  # caches that do not depend on the solver
            if name in self.__dict__:
                copy.__dict__[name] = self.__dict__[name]
        return copy

    @property
    def _own_tol(self):
        """``solver["tol"]`` where pdeinv's own forward takes it traced, else ``None``.

        A ``forward`` of the user's own gets ``solver`` as given (no traced tol,
        no looser products).
        """
        if getattr(self, "forward", _default_forward) is not _default_forward:
            return None
        return self.solver.get("tol")

    def _linearize(self, m, weight):
        """:meth:`gauss_newton_operator` at the solver's tol (the optimisers' ``linearize``)."""
        own = self._own_tol
        return self._linearize_jit(m, weight, None if own is None else jnp.asarray(own, m.dtype))

    def _linearize_at(self, m, tol, weight):
        """The linearisation at ``m`` with its solves at ``tol``.

        ``None`` when ``tol`` is not looser than the solver's own (then
        :meth:`_linearize` has it) or when that cannot be loosened (see ``_own_tol``).
        """
        own = self._own_tol
        if own is None or not tol > own:
            return None
        return self._linearize_jit(m, weight, jnp.asarray(tol, m.dtype))

    @functools.cached_property
    def _linearize_jit(self):
        # One compilation per problem: the weight and the tol are traced, so
        # Morozov's sweep and Newton-CG's looser products reuse it.
        def linearize(m, weight, tol):
            problem = self if tol is None else self._with_solver_tol(tol)
            residual, jvp = jax.linearize(problem.weighted_residual, m)
            try:
                misfit_grad = jax.linear_transpose(jvp, m)(residual)[0]
                misfit_hvp = Partial(_misfit_gauss_newton_transposed, jvp)
                self.__dict__["_transposes"] = True
            except Exception:  # noqa: BLE001 - any failure to transpose: use jax.vjp
                # No transpose rule for the tangent solve: Jᵀ by reverse mode.
                _, vjp = jax.vjp(problem.weighted_residual, m)
                misfit_grad = vjp(residual)[0]
                misfit_hvp = Partial(_misfit_gauss_newton, jvp, vjp)
                self.__dict__["_transposes"] = False
            misfit = 0.5 * jnp.sum(residual**2)
            reg, reg_grad, reg_hvp = _value_grad_hvp(self.regularization, m)
            grad = misfit_grad + weight * reg_grad
            return GaussNewtonOperator(
                objective=misfit + weight * reg,
                misfit=misfit,
                gradient=grad,
                misfit_hvp=misfit_hvp,
                hvp=Partial(_regularized_hvp, misfit_hvp, reg_hvp, weight),
            )

        return jax.jit(linearize)

    def gauss_newton_operator(self, m, *, weight=None, tol=None) -> GaussNewtonOperator:
        r"""Linearise the problem at ``m`` once; the result applies the Gauss–Newton Hessian.

        .. math::
            H(m) = J^\top \Gamma^{-1} J + w\,\nabla^2 R(m),

        with ``J = d predict / d m`` (through :func:`pdeinv.expm_multiply` in
        forward mode) and ``Γ = diag(σ²)``.  ``H`` is the Hessian of the objective
        wherever the residual vanishes or the predictions are linear in ``m``, and
        positive semi-definite everywhere (for a convex regulariser).

        Parameters
        ----------
        m
            Parameter vector, ``(num_params,)``.
        weight
            Regularisation weight; ``None``: the problem's ``weight``.
        tol
            Tolerance of every PDE solve of this linearisation (the forward
            solve, the adjoint solve of the gradient, and the tangent and
            adjoint solves of each product), passed to
            :func:`pdeinv.expm_multiply`; ``None``: the problem's
            ``solver["tol"]``.  A looser ``tol`` gives cheaper, less accurate
            products (relative error about ``tol``), e.g. for the inner CG
            iterations of an inexact Newton method, which need a few digits
            only (:class:`~pdeinv.inverse.NewtonCG`'s ``product_tol``).  The
            tol is traced: every value reuses one compilation (a ``forward``
            of your own receives it as a traced scalar).

        Returns
        -------
        GaussNewtonOperator
            ``objective``, ``misfit`` and ``gradient`` at ``m``, and ``hvp`` /
            ``misfit_hvp`` applying ``H`` / ``JᵀΓ⁻¹J`` without re-solving the
            forward problem (one tangent and one adjoint solve per vector).
        """
        m = jnp.asarray(m)
        weight = self.weight if weight is None else float(weight)
        if weight < 0:
            raise ValueError(f"regularization weight must be >= 0, got {weight}")
        weight = jnp.asarray(weight, m.dtype)
        if tol is None:
            return self._linearize(m, weight)
        return self._linearize_jit(m, weight, _check_tol(tol, m.dtype))

    def gauss_newton_hvp(self, m, dm, *, weight=None):
        """``(JᵀΓ⁻¹J + w ∇²R(m)) dm``, see :meth:`gauss_newton_operator`.

        ``dm`` is one direction ``(num_params,)`` or a batch ``(k, num_params)``
        (``vmap``-ed: one linearisation at ``m`` for all of them).  To apply the
        Hessian at the same ``m`` many times, keep :meth:`gauss_newton_operator`.
        """
        return self.gauss_newton_operator(m, weight=weight).apply(dm)

    def misfit_gauss_newton_hvp(self, m, dm):
        """``JᵀΓ⁻¹J dm``: the Gauss–Newton Hessian of the data misfit alone.

        The data-misfit part of :meth:`gauss_newton_hvp` (no regulariser), e.g.
        for a low-rank Laplace approximation of the posterior.  ``dm``:
        ``(num_params,)`` or a batch ``(k, num_params)``.
        """
        return self.gauss_newton_operator(m, weight=0.0).apply_misfit(dm)


@dataclasses.dataclass(frozen=True, eq=False)
class InverseProblem(RegularizedObjective):
    r"""Recover parameters ``m`` from ``data`` at ``times``.

    The objective is

    .. math::
        J(m) = \tfrac12 \| (B\,\mathrm{obs}(u(t_i; m)) - d_i) / \sigma \|^2
               + w\,R(\mathrm{field}(m)),

    with ``u(t; m) = exp(t A(params(m))) u0`` computed by :func:`pdeinv.models.simulate`.

    Parameters
    ----------
    model
        The semi-discrete PDE (its ``params`` supply values that are not fitted).
    times
        Observation times, shape ``(num_times,)``, increasing, ``> 0``.
    parameters
        Map from the optimisation vector to the model parameters.
    observation
        ``observation(fields) -> values`` on the model's physical nodal field.
    data
        Measured values, shape ``(num_times, num_observations)``.
    sigma
        Noise standard deviation (scalar or broadcastable to ``data``).
    regularizer
        ``regularizer(field) -> scalar`` on the nodal log-coefficient field.
    weight
        Regularisation weight ``w >= 0``.
    solver
        Keyword arguments for :func:`pdeinv.expm_multiply` (``tol``, ``krylov_dim``, ...).
    forward
        ``forward(model, params, times, **solver) -> states``; defaults to
        :func:`pdeinv.models.simulate` (tests may pass a dense reference).
    """

    model: Model
    times: np.ndarray
    parameters: ParameterMap
    observation: Callable
    data: np.ndarray
    sigma: float | np.ndarray
    regularizer: Callable
    weight: float = 0.0
    solver: dict = dataclasses.field(default_factory=dict)
    forward: Callable = _default_forward

    def __post_init__(self):
        times = check_times(
            self.times, name="observation times", positive=True, strictly_increasing=True
        )
        object.__setattr__(self, "times", times)
        data = np.asarray(self.data)
        expected = (len(times), self.observation.num_observations)
        if data.shape != expected:
            raise ValueError(
                f"data must have shape {expected} (times, observations), got {data.shape}"
            )
        if self.weight < 0:
            raise ValueError(f"regularization weight must be >= 0, got {self.weight}")
        if np.any(np.asarray(self.sigma) <= 0):
            raise ValueError("noise standard deviation sigma must be > 0")

    def states(self, m):
        """Model states at the observation times, ``(num_times, n_state)``."""
        params = self.parameters.to_params(m)
        return self.forward(self.model, params, self.times.astype(m.dtype), **self.solver)

    def predict(self, m):
        """Predicted observations ``(num_times, num_observations)``."""
        return self.observation(self.model.observe(self.states(m)))

    def weighted_residual(self, m):
        """``(predict(m) - data) / sigma``, ``(num_times, num_observations)``.

        ``misfit(m) = 0.5 * ||weighted_residual(m)||^2``; its Jacobian is
        ``Γ^{-1/2} J`` of :meth:`gauss_newton_operator`.
        """
        m = jnp.asarray(m)
        return (self.predict(m) - jnp.asarray(self.data, m.dtype)) / jnp.asarray(
            self.sigma, m.dtype
        )

    def misfit(self, m):
        """``0.5 * ||(predict(m) - data) / sigma||^2``."""
        return 0.5 * jnp.sum(self.weighted_residual(m) ** 2)

    @property
    def num_observations(self) -> int:
        return int(np.asarray(self.data).size)


def fit(
    problem: InverseProblem,
    x0,
    optimizer=None,
    *,
    weight: float | None = None,
    callback: Callable[[IterationInfo], None] | None = None,
    stop: Callable[[], bool] | None = None,
    checkpoint: Callable | None = None,
) -> OptimizeResult:
    """Minimise the problem's objective from ``x0`` (see :func:`minimize`, also for
    ``stop`` and ``checkpoint``).

    :class:`~pdeinv.inverse.NewtonCG` uses the problem's Gauss–Newton Hessian
    (:meth:`InverseProblem.gauss_newton_operator`); every method counts its PDE
    solves (``result.pde_solves``, see :meth:`InverseProblem.pde_solve_costs`).
    """
    weight = problem.weight if weight is None else float(weight)
    x0 = jnp.asarray(x0)
    return minimize(
        problem._objective_with_weight,
        x0,
        optimizer,
        args=(jnp.asarray(weight, x0.dtype),),
        callback=callback,
        stop=stop,
        checkpoint=checkpoint,
        linearize=problem._linearize,
        linearize_at=problem._linearize_at,
        solve_costs=problem.pde_solve_costs,
    )


class MorozovResult(NamedTuple):
    """Fit at the weight chosen by the discrepancy principle, and the path to it."""

    result: OptimizeResult
    weight: float
    weights: np.ndarray  # tried, largest first
    misfits: np.ndarray  # data misfit reached at each tried weight
    target: float  # misfit the principle aims at: tau * num_observations / 2
    results: tuple = ()


class WarmStartedFits:
    """Fits at each weight in turn, each warm-started from the last, and their record.

    Iterating yields ``(weight, result)``; ``tried``, ``misfits`` and ``results``
    hold every fit so far.  The regularisation-weight sweeps (Morozov's principle
    here, the Laplace evidence in :mod:`._laplace`) decide when to stop by leaving
    the loop.  ``options`` go to :func:`fit` (``callback``, ``stop``,
    ``checkpoint``); ``on_weight(w)`` is called before each fit.
    """

    def __init__(self, problem, x0, weights, optimizer=None, *, on_weight=None, **options):
        self.problem, self.x0, self.weights, self.optimizer = problem, x0, weights, optimizer
        self.on_weight, self.options = on_weight, options
        self.tried, self.misfits, self.results = [], [], []

    def __iter__(self):
        x = self.x0
        for w in self.weights:
            if self.on_weight is not None:
                self.on_weight(float(w))
            result = fit(self.problem, x, self.optimizer, weight=float(w), **self.options)
            x = result.x
            self.tried.append(float(w))
            self.misfits.append(result.misfit)
            self.results.append(result)
            yield float(w), result


def fit_morozov(
    problem: InverseProblem,
    x0,
    weights,
    optimizer=None,
    *,
    tau: float = 1.0,
    callback: Callable[[IterationInfo], None] | None = None,
    on_weight: Callable[[float], None] | None = None,
    stop: Callable[[], bool] | None = None,
    checkpoint: Callable | None = None,
) -> MorozovResult:
    """Choose the regularisation weight by Morozov's discrepancy principle.

    Fits for each weight of the decreasing sequence ``weights`` (warm-started from
    the previous one) and stops at the first, i.e. largest, weight whose data
    misfit is at most ``tau * num_observations / 2`` — the expected value of
    ``0.5 * ||noise / sigma||^2``.  If no weight reaches it, the last one is taken.
    A fit that ends interrupted (``stop``, see :func:`minimize`) ends the sweep.
    """
    weights = np.sort(np.asarray(weights, dtype=float))[::-1]
    if weights.size == 0 or np.any(weights < 0):
        raise ValueError("regularization.morozov_weights must be a non-empty list of weights >= 0")
    if tau <= 0:
        raise ValueError(f"regularization.morozov_tau must be > 0, got {tau}")
    target = tau * problem.num_observations / 2.0
    sweep = WarmStartedFits(
        problem, x0, weights, optimizer,
        callback=callback, on_weight=on_weight, stop=stop, checkpoint=checkpoint,
    )  # fmt: skip
    for _, result in sweep:
        if result.misfit <= target or result.status == 3:
            break
    tried, results = sweep.tried, sweep.results
    return MorozovResult(
        results[-1], tried[-1], np.asarray(tried), np.asarray(sweep.misfits), target, tuple(results)
    )


def relative_error(recovered, true) -> float:
    """``||recovered - true|| / ||true||`` (Euclidean over nodes)."""
    recovered, true = np.asarray(recovered, dtype=float), np.asarray(true, dtype=float)
    return float(np.linalg.norm(recovered - true) / np.linalg.norm(true))


def diffrax_check(model: Model, params, times, states, **reference_options) -> float:
    """Relative difference between ``states`` and an independent diffrax solve.

    Re-simulates ``model`` at ``params`` with :func:`pdeinv.reference.solve`
    (tight tolerances by default) and returns
    ``||u_diffrax - states|| / ||u_diffrax||`` over all ``times``.
    """
    from ..reference import solve

    reference = np.asarray(solve(model, params, jnp.asarray(times), **reference_options).states)
    states = np.asarray(states)
    return float(np.linalg.norm(reference - states) / np.linalg.norm(reference))

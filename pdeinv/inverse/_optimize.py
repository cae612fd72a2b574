"""Optimisers over a flat parameter vector, with per-iteration history and callbacks.

The library prints nothing: after every iteration the optional ``callback``
receives an :class:`IterationInfo`, and the CLI decides how to show it.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize


class IterationInfo(NamedTuple):
    """What an optimiser reports after one iteration."""

    iteration: int
    objective: float
    grad_norm: float
    misfit: float
    step: float  # ||x_k - x_{k-1}||
    elapsed: float  # seconds since the optimiser started
    cg_iterations: int = 0  # Hessian-vector products of this step (Newton-CG)
    pde_solves: int = 0  # forward + adjoint + tangent solves so far (0: not counted)


class OptimizeResult(NamedTuple):
    """Outcome of :func:`minimize`.

    ``status``: 0 converged, 1 iteration limit, 2 other stop (line search, NaN,
    no trial point that can be evaluated), 3 interrupted (``stop`` returned true;
    ``x`` is then the best iterate so far).  :data:`STATUS_NAMES` maps them to
    the words ``metrics.json`` uses.
    ``history``: arrays ``objective, grad_norm, misfit, step, elapsed,
    cg_iterations, pde_solves`` per iteration, entry 0 being the starting point.
    ``pde_solves``: ``{"forward", "adjoint", "tangent", "total"}`` PDE solves made,
    when :func:`minimize` was given ``solve_costs`` (else ``None``).
    """

    x: np.ndarray
    fun: float
    misfit: float
    iterations: int
    num_evaluations: int
    status: int
    success: bool
    message: str
    history: dict
    pde_solves: dict | None = None


STATUS_NAMES = {0: "converged", 1: "max_iter", 2: "failed", 3: "interrupted"}
# Objective L-BFGS-B is shown at a trial point that cannot be evaluated, relative
# to the largest finite one seen (see _lbfgsb).
_FAILED_FACTOR = 1e3
# Step halvings Adam tries when a trial point cannot be evaluated.
_ADAM_BACKTRACKS = 12


class _Interrupted(Exception):
    """Raised inside an evaluation when ``stop()`` asks the optimiser to end."""


SOLVE_KINDS = ("forward", "adjoint", "tangent")


class _SolveCounter:
    """Counts the calls of each kind and, given their costs, the PDE solves they made.

    ``costs``: ``{call kind: {solve kind: solves per call}}`` with call kinds
    ``value_and_grad`` (objective and gradient), ``linearize`` (objective,
    gradient and a Hessian linearisation) and ``hvp`` (one Hessian-vector
    product); see :meth:`pdeinv.inverse.InverseProblem.pde_solve_costs`.
    """

    def __init__(self, costs=None):
        self.costs = costs
        self.calls = {"value_and_grad": 0, "linearize": 0, "hvp": 0}
        self.solves = dict.fromkeys(SOLVE_KINDS, 0)

    def add(self, kind: str) -> None:
        self.calls[kind] += 1
        if self.costs is not None:
            costs = self.costs() if callable(self.costs) else self.costs
            for solve, count in costs.get(kind, {}).items():
                self.solves[solve] += int(count)

    @property
    def total(self) -> int:
        return int(sum(self.solves.values()))

    def totals(self) -> dict | None:
        if self.costs is None:
            return None
        return {**self.solves, "total": self.total}


@dataclasses.dataclass(frozen=True)
class LBFGSB:
    """scipy's L-BFGS-B on ``jax.value_and_grad`` of the objective.

    Stops when the projected gradient max-norm is below ``gtol``, the relative
    objective decrease is below ``ftol``, or after ``max_iter`` iterations.
    """

    max_iter: int = 200
    gtol: float = 1e-6
    ftol: float = 1e-10
    memory: int = 20
    bounds: tuple | None = None  # (lo, hi) for all, or one (lo, hi) per parameter


@dataclasses.dataclass(frozen=True)
class Adam:
    """optax Adam; stops at ``max_iter``, when ``||grad|| <= gtol``, or when the
    objective changed relatively less than ``ftol`` over ``patience`` iterations."""

    learning_rate: float = 0.05
    max_iter: int = 500
    gtol: float = 1e-6
    ftol: float = 1e-10
    patience: int = 20


@functools.lru_cache(maxsize=16)
def _value_and_grad(objective):
    # Cached per objective function, so fits that only change ``args`` (e.g. the
    # regularisation weight in a Morozov sweep) reuse one compilation.
    return jax.jit(jax.value_and_grad(objective, has_aux=True))


def _compile(objective, args, stop=None, counter=None):
    value_and_grad = _value_and_grad(objective)

    def evaluate(x):
        if stop is not None and stop():
            raise _Interrupted
        if counter is not None:
            counter.add("value_and_grad")
        (value, misfit), grad = value_and_grad(x, *args)
        value, misfit = float(value), float(misfit)
        grad = np.asarray(grad, dtype=float)
        return value, misfit, grad

    return evaluate


def _evaluate_trial(evaluate, x, like):
    """``evaluate(x)``, with a failed solve or a non-finite result as ``(+inf, inf, 0)``.

    A trial point of a line search or an optimiser step can lie where the
    forward solve gives up (step budget exhausted, non-finite state, no step
    size meeting the tolerance: equinox runtime errors) or where the objective
    or its gradient overflows.  Reporting ``+inf`` makes L-BFGS-B's line search
    and Adam's step control step back instead of ending the fit.
    """
    try:
        value, misfit, grad = evaluate(x)
    except Exception as err:  # noqa: BLE001 - filtered just below
        if not _is_solver_failure(err):
            raise
        return np.inf, np.inf, np.zeros(np.shape(like)), False
    if not (np.isfinite(value) and np.all(np.isfinite(grad))):
        return np.inf, misfit, np.zeros_like(grad), False
    return value, misfit, grad, True


def _evaluate_start(evaluate, x):
    """``evaluate(x)``, ``(value, misfit, grad, ...)``, which must succeed at the starting point.

    There is nothing to step back to: a failed solve or a non-finite value or
    gradient raises a ``RuntimeError``.
    """
    try:
        out = evaluate(x)
    except Exception as err:
        if not _is_solver_failure(err):
            raise
        raise RuntimeError(
            "the forward solve fails at the starting point: " + _first_message(err)
        ) from err
    value, grad = out[0], out[2]
    if not np.isfinite(value) or not np.all(np.isfinite(grad)):
        raise RuntimeError(
            f"the objective or its gradient is not finite at the starting point (objective {value})"
        )
    return out


def _is_solver_failure(err: Exception) -> bool:
    """A runtime check inside the compiled objective fired (solver gave up, bad value).

    Such checks (``equinox.error_if``) surface as ``JaxRuntimeError`` or, for
    some call paths of jaxlib, as a ``ValueError`` carrying the XLA callback
    text; both name ``EquinoxRuntimeError``.
    """
    return isinstance(err, jax.errors.JaxRuntimeError) or "EquinoxRuntimeError" in str(err)


def _first_message(err) -> str:
    """The solver's own sentence inside a JAX runtime error (equinox check)."""
    for line in str(err).splitlines():
        if "EquinoxRuntimeError:" in line:
            return line.split("EquinoxRuntimeError:", 1)[1].strip()
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class _History:
    def __init__(self, callback, checkpoint=None, counter=None):
        self.rows = []
        self.callback = callback
        self.checkpoint = checkpoint
        self.counter = counter
        self.start = time.perf_counter()
        self.best = None  # (objective, x, misfit) of the lowest finite objective

    def record(self, iteration, value, grad, misfit, step, x=None, *, cg_iterations=0):
        info = IterationInfo(
            iteration,
            value,
            float(np.linalg.norm(grad)),
            misfit,
            float(step),
            time.perf_counter() - self.start,
            int(cg_iterations),
            self.counter.total if self.counter is not None else 0,
        )
        self.rows.append(info)
        if x is not None and np.isfinite(value) and (self.best is None or value < self.best[0]):
            self.best = (float(value), np.array(x, copy=True), float(misfit))
        if self.callback is not None:
            self.callback(info)
        if self.checkpoint is not None and self.best is not None:
            self.checkpoint(self.best[1], self.arrays())

    def arrays(self):
        return {
            name: np.asarray([getattr(row, name) for row in self.rows], dtype=float)
            for name in IterationInfo._fields
        }


def minimize(
    objective: Callable,
    x0,
    optimizer=None,
    *,
    args: tuple = (),
    callback: Callable[[IterationInfo], None] | None = None,
    stop: Callable[[], bool] | None = None,
    checkpoint: Callable[[np.ndarray, dict], None] | None = None,
    linearize: Callable | None = None,
    linearize_at: Callable | None = None,
    solve_costs: dict | Callable[[], dict] | None = None,
) -> OptimizeResult:
    """Minimise ``objective(x, *args) -> (value, misfit)`` starting from ``x0``.

    A trial point where the objective cannot be evaluated (the forward solve
    fails, or the value or gradient is not finite) counts as ``+inf``: the
    optimiser steps back (L-BFGS-B's line search backtracks, Adam halves its
    step) instead of ending.  Only a failure at ``x0`` raises.

    Parameters
    ----------
    objective
        JAX-traceable, returns the scalar objective and (as auxiliary output) the
        data misfit, which is recorded in the history.
    x0
        Starting vector, shape ``(num_params,)``; its dtype is kept.
    optimizer
        :class:`LBFGSB` (default), :class:`Adam` or :class:`~pdeinv.inverse.NewtonCG`.
    args
        Extra (array) arguments of ``objective``; they are traced, not baked in.
    callback
        Called with an :class:`IterationInfo` after the start and every iteration.
    stop
        Polled before every evaluation; when it returns true the optimiser ends
        (within one evaluation) with ``status`` 3 and the best iterate so far.
        The CLI sets it from SIGINT/SIGTERM.
    checkpoint
        Called after the start and every iteration with the best iterate so far
        and the history arrays (the CLI writes them to disk, rate-limited).
    linearize
        Newton–CG only: ``linearize(x, *args)`` returning an object with
        ``objective, misfit, gradient`` and ``hvp`` (a :class:`jax.tree_util.Partial`
        applying the Hessian, e.g. the Gauss–Newton one of
        :meth:`~pdeinv.inverse.InverseProblem.gauss_newton_operator`), jitted.
        ``None``: the exact Hessian of ``objective`` (forward over reverse mode).
    linearize_at
        Newton–CG only, with ``linearize``: ``linearize_at(x, tol, *args)``, the
        same linearisation with its PDE solves at ``tol``, or ``None`` where it
        would be the same as ``linearize``'s; used for the Hessian–vector
        products when :class:`~pdeinv.inverse.NewtonCG`'s ``product_tol`` asks
        for looser ones.  :func:`~pdeinv.inverse.fit` passes the problem's.
    solve_costs
        PDE solves made by one call of each kind (``value_and_grad``,
        ``linearize``, ``hvp``), or a function returning them (asked at every
        call), e.g. :meth:`~pdeinv.inverse.InverseProblem.pde_solve_costs`; the result's
        ``pde_solves`` and the history's ``pde_solves`` count them.  ``None``: not counted.
    """
    from ._newton import NewtonCG, _newton_cg, exact_linearization

    optimizer = LBFGSB() if optimizer is None else optimizer
    x0 = jnp.asarray(x0)
    dtype = x0.dtype
    counter = _SolveCounter(solve_costs)
    evaluate = _compile(objective, tuple(args), stop, counter)
    history = _History(callback, checkpoint, counter)
    try:
        if isinstance(optimizer, LBFGSB):
            result = _lbfgsb(evaluate, np.asarray(x0, dtype=float), dtype, optimizer, history)
        elif isinstance(optimizer, Adam):
            result = _adam(evaluate, x0, optimizer, history)
        elif isinstance(optimizer, NewtonCG):
            base = exact_linearization(objective) if linearize is None else linearize
            args = tuple(args)
            at = None
            if linearize is not None and linearize_at is not None:

                def at(x, tol):
                    return linearize_at(x, tol, *args)

            return _newton_cg(
                lambda x: base(x, *args), np.asarray(x0, dtype=float), dtype, optimizer,
                history, counter, stop, linearize_at=at,
            )  # fmt: skip
        else:
            raise TypeError(
                f"optimizer must be NewtonCG, LBFGSB or Adam, got {type(optimizer).__name__}"
            )
    except _Interrupted:
        return _interrupted(history, x0, counter)
    return result._replace(pde_solves=counter.totals())


def _interrupted(history, x0, counter=None) -> OptimizeResult:
    if history.best is None:  # stopped before the start point was evaluated
        value, x, misfit = np.nan, np.asarray(x0), np.nan
    else:
        value, x, misfit = history.best
    iterations = max(len(history.rows) - 1, 0)
    # Every evaluation made, line-search trials and Newton-CG's looser
    # linearisations included, as a finished run counts them.
    if counter is None:
        made = len(history.rows)
    else:
        made = counter.calls["value_and_grad"] + counter.calls["linearize"]
    return OptimizeResult(
        x=np.asarray(x).astype(x0.dtype),
        fun=float(value),
        misfit=float(misfit),
        iterations=iterations,
        num_evaluations=made,
        status=3,
        success=False,
        message="interrupted; best iterate so far",
        history=history.arrays(),
        pde_solves=None if counter is None else counter.totals(),
    )


def _lbfgsb(evaluate, x0, dtype, options, history):
    cache = {}
    num_evaluations = 0
    largest = [0.0]  # largest finite objective seen

    def fun(x):
        nonlocal num_evaluations
        key = x.tobytes()
        if key not in cache:
            num_evaluations += 1
            cache.clear()
            ok = True
            if num_evaluations == 1:
                value, misfit, grad = _evaluate_start(evaluate, jnp.asarray(x, dtype))
            else:
                value, misfit, grad, ok = _evaluate_trial(evaluate, jnp.asarray(x, dtype), x)
                if not ok:
                    # An infinite objective to the user, but scipy's L-BFGS-B (1.17)
                    # reports false convergence after a +inf trial; a large finite
                    # value with zero slope makes its line search interpolate back.
                    value = _FAILED_FACTOR * (1.0 + largest[0])
            if ok:
                largest[0] = max(largest[0], abs(value))
            else:
                misfit = np.inf  # marks the point as failed (see the end of the fit)
            cache[key] = (value, misfit, grad)
        value, _, grad = cache[key]
        return value, grad

    value, grad = fun(x0)
    history.record(0, value, grad, cache[x0.tobytes()][1], 0.0, x0)
    previous = {"x": x0.copy()}

    def on_iteration(intermediate_result):
        x = np.asarray(intermediate_result.x)
        value, grad = fun(x)
        misfit = cache[x.tobytes()][1]
        step = np.linalg.norm(x - previous["x"])
        previous["x"] = x.copy()
        history.record(len(history.rows), value, grad, misfit, step, x)

    bounds = _normalize_bounds(options.bounds, len(x0))
    result = scipy.optimize.minimize(
        fun,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        callback=on_iteration,
        options={
            "maxiter": options.max_iter,
            "gtol": options.gtol,
            "ftol": options.ftol,
            "maxcor": options.memory,
        },
    )
    x = np.asarray(result.x)
    value, grad = fun(x)
    if not np.isfinite(cache[x.tobytes()][1]) and history.best is not None:
        # scipy ended on a point that cannot be evaluated: keep the best one.
        value, x, _ = history.best
        cache[x.tobytes()] = (value, history.best[2], np.zeros_like(x))
    if result.success:
        status = 0
    elif result.nit >= options.max_iter:
        status = 1
    else:
        status = 2
    message = result.message if isinstance(result.message, str) else str(result.message)
    return OptimizeResult(
        x=x.astype(dtype),
        fun=float(value),
        misfit=float(cache[x.tobytes()][1]),
        iterations=int(result.nit),
        num_evaluations=num_evaluations,
        status=status,
        success=bool(result.success),
        message=message,
        history=history.arrays(),
    )


def _normalize_bounds(bounds, n):
    """``None`` or ``n`` pairs ``(lo, hi)`` from one pair for all or one pair per variable."""
    if bounds is not None and len(bounds) == 2 and not isinstance(bounds[0], (tuple, list)):
        bounds = [tuple(bounds)] * n
    if bounds is not None and len(bounds) != n:
        raise ValueError(f"bounds must be one (lo, hi) pair or {n} pairs")
    return bounds


def _adam(evaluate, x0, options, history):
    import optax

    solver = optax.adam(options.learning_rate)
    x = x0
    state = solver.init(x)
    value, misfit, grad = _evaluate_start(evaluate, x)
    history.record(0, value, grad, misfit, 0.0, x)
    values = [value]
    status, message = 1, f"reached max_iter = {options.max_iter}"
    iteration = 0
    num_evaluations = 1
    for iteration in range(1, options.max_iter + 1):
        updates, new_state = solver.update(jnp.asarray(grad, x.dtype), state, x)
        # A trial point that cannot be evaluated (+inf) is stepped back from by
        # halving the update; the moment estimates advance only on success.
        for _ in range(_ADAM_BACKTRACKS):
            x_new = optax.apply_updates(x, updates)
            new = _evaluate_trial(evaluate, x_new, x)
            num_evaluations += 1
            if new[3]:
                break
            updates = jax.tree_util.tree_map(lambda u: 0.5 * u, updates)
        else:
            status = 2
            message = (
                f"no evaluable point along the Adam step after {_ADAM_BACKTRACKS} halvings; "
                "lower optimizer.learning_rate"
            )
            iteration -= 1
            break
        step = float(jnp.linalg.norm(x_new - x))
        x, state = x_new, new_state
        value, misfit, grad, _ = new
        history.record(iteration, value, grad, misfit, step, x)
        values.append(value)
        if np.linalg.norm(grad) <= options.gtol:
            status, message = 0, "gradient norm <= gtol"
            break
        if len(values) > options.patience:
            old = values[-1 - options.patience]
            if abs(old - value) <= options.ftol * max(abs(old), 1.0):
                status, message = 0, f"relative decrease <= ftol over {options.patience} iterations"
                break
    return OptimizeResult(
        x=np.asarray(x),
        fun=float(value),
        misfit=float(misfit),
        iterations=iteration,
        num_evaluations=num_evaluations,
        status=status,
        success=status == 0,
        message=message,
        history=history.arrays(),
    )

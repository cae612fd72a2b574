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


class OptimizeResult(NamedTuple):
    """Outcome of :func:`minimize`.

    ``status``: 0 converged, 1 iteration limit, 2 other stop (line search, NaN).
    ``history``: arrays ``objective, grad_norm, misfit, step, elapsed`` per
    iteration, entry 0 being the starting point.
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


def _compile(objective, args):
    value_and_grad = _value_and_grad(objective)

    def evaluate(x):
        (value, misfit), grad = value_and_grad(x, *args)
        value, misfit = float(value), float(misfit)
        grad = np.asarray(grad, dtype=float)
        return value, misfit, grad

    return evaluate


class _History:
    def __init__(self, callback):
        self.rows = []
        self.callback = callback
        self.start = time.perf_counter()

    def record(self, iteration, value, grad, misfit, step):
        info = IterationInfo(
            iteration,
            value,
            float(np.linalg.norm(grad)),
            misfit,
            float(step),
            time.perf_counter() - self.start,
        )
        self.rows.append(info)
        if self.callback is not None:
            self.callback(info)

    def arrays(self):
        return {
            name: np.asarray([getattr(row, name) for row in self.rows], dtype=float)
            for name in IterationInfo._fields
        }


def minimize(
    objective: Callable,
    x0,
    optimizer: LBFGSB | Adam | None = None,
    *,
    args: tuple = (),
    callback: Callable[[IterationInfo], None] | None = None,
) -> OptimizeResult:
    """Minimise ``objective(x, *args) -> (value, misfit)`` starting from ``x0``.

    Parameters
    ----------
    objective
        JAX-traceable, returns the scalar objective and (as auxiliary output) the
        data misfit, which is recorded in the history.
    x0
        Starting vector, shape ``(num_params,)``; its dtype is kept.
    optimizer
        :class:`LBFGSB` (default) or :class:`Adam`.
    args
        Extra (array) arguments of ``objective``; they are traced, not baked in.
    callback
        Called with an :class:`IterationInfo` after the start and every iteration.
    """
    optimizer = LBFGSB() if optimizer is None else optimizer
    x0 = jnp.asarray(x0)
    dtype = x0.dtype
    evaluate = _compile(objective, tuple(args))
    history = _History(callback)
    if isinstance(optimizer, LBFGSB):
        return _lbfgsb(evaluate, np.asarray(x0, dtype=float), dtype, optimizer, history)
    if isinstance(optimizer, Adam):
        return _adam(evaluate, x0, optimizer, history)
    raise TypeError(f"optimizer must be LBFGSB or Adam, got {type(optimizer).__name__}")


def _lbfgsb(evaluate, x0, dtype, options, history):
    cache = {}
    num_evaluations = 0

    def fun(x):
        nonlocal num_evaluations
        key = x.tobytes()
        if key not in cache:
            num_evaluations += 1
            cache.clear()
            try:
                value, misfit, grad = evaluate(jnp.asarray(x, dtype))
            except jax.errors.JaxRuntimeError:
                if num_evaluations == 1:
                    raise  # the starting point itself fails: nothing to backtrack to
                # A trial point of the line search where the forward solve gives up
                # (e.g. step budget for an extreme coefficient): treat as +inf.
                value, misfit, grad = np.inf, np.inf, np.zeros_like(x)
            if not np.isfinite(value):
                # L-BFGS-B backtracks on +inf; NaN would poison its line search.
                value, grad = np.inf, np.zeros_like(grad)
            cache[key] = (value, misfit, grad)
        value, _, grad = cache[key]
        return value, grad

    value, grad = fun(x0)
    history.record(0, value, grad, cache[x0.tobytes()][1], 0.0)
    previous = {"x": x0.copy()}

    def on_iteration(intermediate_result):
        x = np.asarray(intermediate_result.x)
        value, grad = fun(x)
        misfit = cache[x.tobytes()][1]
        step = np.linalg.norm(x - previous["x"])
        previous["x"] = x.copy()
        history.record(len(history.rows), value, grad, misfit, step)

    bounds = options.bounds
    if bounds is not None and len(bounds) == 2 and not isinstance(bounds[0], (tuple, list)):
        bounds = [tuple(bounds)] * len(x0)
    if bounds is not None and len(bounds) != len(x0):
        raise ValueError(f"bounds must be one (lo, hi) pair or {len(x0)} pairs")
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


def _adam(evaluate, x0, options, history):
    import optax

    solver = optax.adam(options.learning_rate)
    x = x0
    state = solver.init(x)
    value, misfit, grad = evaluate(x)
    history.record(0, value, grad, misfit, 0.0)
    values = [value]
    status, message = 1, f"reached max_iter = {options.max_iter}"
    iteration = 0
    for iteration in range(1, options.max_iter + 1):
        updates, state = solver.update(jnp.asarray(grad, x.dtype), state, x)
        x_new = optax.apply_updates(x, updates)
        step = float(jnp.linalg.norm(x_new - x))
        x = x_new
        value, misfit, grad = evaluate(x)
        history.record(iteration, value, grad, misfit, step)
        values.append(value)
        if not np.isfinite(value):
            status, message = 2, "objective is not finite; lower optimizer.learning_rate"
            break
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
        num_evaluations=iteration + 1,
        status=status,
        success=status == 0,
        message=message,
        history=history.arrays(),
    )

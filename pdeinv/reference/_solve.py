"""Reference solves of a :class:`pdeinv.models.Model` with diffrax.

The semi-discrete system ``u' = A(params) u + b(params)`` is integrated as an
ODE, independently of the Krylov exponential integrator, so that the two can be
cross-checked and compared.  Everything is matrix-free: explicit Runge--Kutta
methods only call ``model.rhs``; the implicit method solves its stage equations
with a Krylov linear solver from lineax acting on a linearisation of the right
hand side (Jacobian-vector products), never on an assembled Jacobian.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

from ..expm import check_times

SOLVERS = ("tsit5", "dopri5", "dopri8", "kvaerno5")
EXPLICIT_SOLVERS = ("tsit5", "dopri5", "dopri8")
ADJOINTS = ("recursive_checkpoint", "backsolve", "direct")
LINEAR_SOLVERS = ("gmres", "bicgstab")

_SOLVER_CLASSES = {
    "tsit5": dfx.Tsit5,
    "dopri5": dfx.Dopri5,
    "dopri8": dfx.Dopri8,
    "kvaerno5": dfx.Kvaerno5,
}

# Stability constants of the explicit methods, computed from diffrax's Butcher
# tableaux (``tests/reference`` recomputes them).  ``real``: length of the
# stability interval on the negative real axis, the limit for symmetric
# (diffusion) operators whose spectrum is real and <= 0.  ``half_disc``: radius
# of the largest closed left half-disc on which the amplification factor is at
# most 1 + 1e-6 per step, the limit used for nonsymmetric operators whose
# spectrum lies anywhere in the left half-plane within ||A||_2 (advection, waves;
# these methods are slightly unstable on the imaginary axis itself, hence the
# tolerance).
STABILITY_CONSTANTS = {
    "tsit5": {"real": 3.5076, "half_disc": 0.5949},
    "dopri5": {"real": 3.3066, "half_disc": 0.9999},
    "dopri8": {"real": 5.1674, "half_disc": 3.7026},
}
STABILITY_SAFETY = 0.9

# RHS evaluations per attempted step (stages not shared with the previous
# step).  Checked against a counting matvec in tests/reference.
_NEW_STAGES_PER_STEP = {"tsit5": 6, "dopri5": 6, "dopri8": 13}


class ReferenceSolution(NamedTuple):
    """Result of :func:`solve`: the states and how the solve went.

    Attributes
    ----------
    states
        ``(len(times), n_state)`` states; undefined (may be non-finite) when
        ``result != 0``, which only a call with ``throw=False`` returns.
    result
        Result code (``0`` = success); :func:`describe_result` explains it.
    num_steps
        Steps attempted (accepted + rejected).
    num_accepted_steps, num_rejected_steps
        Step counts from diffrax's statistics.
    num_rhs_evaluations
        RHS evaluations of the forward solve for the explicit methods
        (:func:`num_rhs_evaluations`); ``-1`` for the implicit method, whose
        cost depends on the Krylov iterations (count them with
        :func:`count_matvecs`).
    """

    states: Any
    result: Any
    num_steps: Any
    num_accepted_steps: Any
    num_rejected_steps: Any
    num_rhs_evaluations: Any


class ReferenceSolveError(RuntimeError):
    """A diffrax reference solve failed (step budget exhausted, non-finite state, ...)."""


def result_message(code) -> str:
    """Human-readable message of a diffrax result code (``0`` -> ``"successful"``)."""
    code = int(np.asarray(code))
    if code == 0:
        return "successful"
    try:
        message = dfx.RESULTS._index_to_message[code]
    except (AttributeError, IndexError):
        message = ""
    return message or f"diffrax result code {code}"


def stability_step(model, params, solver: str = "tsit5"):
    """Largest stable fixed step ``safety * c / rho`` of an explicit method.

    ``c`` is :data:`STABILITY_CONSTANTS` ``[solver]["real"]`` for symmetric
    models and ``["half_disc"]`` otherwise; ``safety`` is
    :data:`STABILITY_SAFETY`; ``rho`` bounds the spectrum's radius
    (``model.spectral_radius_estimate``: ``||A||_2`` unless the model knows
    better, as the wave does).
    """
    _check_choice("solver", solver, EXPLICIT_SOLVERS)
    shape = "real" if model.symmetric else "half_disc"
    norm = jax.lax.stop_gradient(jnp.asarray(model.spectral_radius_estimate(params)))
    return STABILITY_SAFETY * STABILITY_CONSTANTS[solver][shape] / norm


def num_rhs_evaluations(solver: str, num_steps, num_rejected_steps=0):
    """Right-hand-side evaluations of an explicit diffrax solve.

    One evaluation at the start, the method's new stages for every attempted
    step (Tsit5, Dopri5: 6; Dopri8: 13) and one more after each rejected step,
    whose first-same-as-last stage cannot be reused (counted against an
    instrumented matvec in the tests).  Each RHS evaluation is one ``matvec``.
    """
    _check_choice("solver", solver, EXPLICIT_SOLVERS)
    return 1 + _NEW_STAGES_PER_STEP[solver] * num_steps + num_rejected_steps


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


class _MatrixFreeChord(dfx.VeryChord):
    """diffrax's ``VeryChord`` with an iterative (matrix-free) linear solver.

    ``VeryChord.step`` applies ``lax.stop_gradient`` leaf by leaf to the linear
    solver's state.  For lineax's iterative solvers that state is the
    linearised operator, which holds a jaxpr, and the call fails (diffrax 0.7.2
    with lineax 0.1.1).  Here the stop-gradient is applied to the array leaves
    only; the iteration is otherwise the same chord step.
    """

    def step(self, fn, y, args, options, state, tags):
        del options, tags
        residual, fn_aux = fn(y, args)
        jac, linear_state = state.linear_state
        dynamic, static = eqx.partition(linear_state, eqx.is_array)
        linear_state = eqx.combine(jax.lax.stop_gradient(dynamic), static)
        sol = lx.linear_solve(jac, residual, self.linear_solver, state=linear_state, throw=False)
        # Chord update y <- y - J^{-1} f(y), with the size of the update measured
        # in the mixed absolute/relative scale of the new iterate.
        new_y = jax.tree.map(lambda a, d: a - d, y, sol.value)
        scaled = jax.tree.map(
            lambda d, a: d / (self.atol + self.rtol * jnp.abs(a)), sol.value, new_y
        )
        new_state = eqx.tree_at(
            lambda s: (s.diff, s.diffsize, s.diffsize_prev, s.result, s.step),
            state,
            (
                sol.value,
                self.norm(scaled),
                state.diffsize,
                optx.RESULTS.promote(sol.result),
                state.step + 1,
            ),
        )
        return new_y, new_state, fn_aux


# Iteration cap of the unpreconditioned Krylov stage solves.  lineax's default
# (10 n) lets one stiff stage system run for minutes; when the cap is hit the
# chord iteration fails and diffrax rejects the step and retries a shorter one,
# whose stage system is better conditioned.
_LINEAR_MAX_STEPS = 600


def _make_solver(solver, linear_solver, linear_rtol, linear_atol, linear_restart):
    cls = _SOLVER_CLASSES[solver]
    if solver in EXPLICIT_SOLVERS:
        return cls()
    _check_choice("linear_solver", linear_solver, LINEAR_SOLVERS)
    if linear_solver == "gmres":
        krylov = lx.GMRES(
            rtol=linear_rtol,
            atol=linear_atol,
            restart=linear_restart,
            max_steps=_LINEAR_MAX_STEPS,
        )
    else:
        krylov = lx.BiCGStab(rtol=linear_rtol, atol=linear_atol, max_steps=_LINEAR_MAX_STEPS)
    # VeryChord linearises the stage relation once per step with
    # `lx.linearise(lx.JacobianLinearOperator(...))` (a jax.linearize closure,
    # i.e. Jacobian-vector products).  Only a solver that asks the operator
    # for `as_matrix()` (the default LU) assembles it; GMRES/BiCGStab only call
    # `mv`, so the Jacobian is never materialised.
    root_finder = dfx.with_stepsize_controller_tols(_MatrixFreeChord)(linear_solver=krylov)
    return cls(root_finder=root_finder)


def _resolve_adjoint(adjoint, solver):
    if adjoint is None:
        return "recursive_checkpoint" if solver in EXPLICIT_SOLVERS else "backsolve"
    _check_choice("adjoint", adjoint, ADJOINTS)
    if adjoint != "backsolve" and solver not in EXPLICIT_SOLVERS:
        # Differentiating through the implicit stages goes through optimistix's
        # implicit-function adjoint of the root find, which diffrax does not let
        # us configure: its default linear solver assembles the n x n Jacobian.
        raise ValueError(
            f"adjoint={adjoint!r} with the implicit solver {solver!r} would assemble a dense "
            "n x n Jacobian in the backward pass; use adjoint='backsolve' (matrix-free) "
            "or leave adjoint=None"
        )
    return adjoint


def _make_adjoint(adjoint, solver_obj):
    if adjoint == "recursive_checkpoint":
        return dfx.RecursiveCheckpointAdjoint()
    if adjoint == "backsolve":
        return dfx.BacksolveAdjoint(solver=solver_obj)
    return dfx.DirectAdjoint()


def _diffeqsolve(
    model,
    params,
    times,
    *,
    solver,
    rtol,
    atol,
    adjoint,
    fixed_step,
    max_steps,
    u0,
    pid,
    linear_solver,
):
    _check_choice("solver", solver, SOLVERS)
    adjoint = _resolve_adjoint(adjoint, solver)
    if not (rtol > 0 and atol >= 0):
        raise ValueError(f"rtol must be > 0 and atol >= 0, got rtol={rtol}, atol={atol}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
    if fixed_step and solver not in EXPLICIT_SOLVERS:
        raise ValueError(
            f"fixed_step=True is for the explicit solvers {EXPLICIT_SOLVERS} (steps at the "
            f"stability limit); solver {solver!r} is implicit and needs adaptive steps"
        )
    times_np = check_times(times)
    u0 = model.u0 if u0 is None else jnp.asarray(u0)
    t1 = float(times_np[-1])
    dtype = u0.dtype
    ts = jnp.asarray(times_np, dtype=dtype)

    if t1 == 0.0:
        # Nothing to integrate; diffrax needs t0 < t1.
        states = jnp.broadcast_to(u0, (times_np.size,) + u0.shape)
        zero = jnp.zeros((), jnp.int32)
        return ReferenceSolution(states, zero, zero, zero, zero, zero)

    solver_obj = _make_solver(
        solver,
        linear_solver,
        linear_rtol=min(1e-2 * rtol, 1e-6),
        linear_atol=1e-2 * atol,
        linear_restart=30,
    )
    term = dfx.ODETerm(lambda t, y, args: model.rhs(t, y, args))
    if fixed_step:
        dt_stable = stability_step(model, params, solver)
        num_fixed = jnp.ceil(t1 / dt_stable)
        dt0 = (t1 / num_fixed).astype(dtype)
        controller = dfx.ConstantStepSize()
    else:
        dt0 = None
        if solver in EXPLICIT_SOLVERS:
            pcoeff, icoeff = pid
        else:
            pcoeff, icoeff = 0.0, 1.0
        controller = dfx.PIDController(rtol=rtol, atol=atol, pcoeff=pcoeff, icoeff=icoeff)
    sol = dfx.diffeqsolve(
        term,
        solver_obj,
        t0=0.0,
        t1=t1,
        dt0=dt0,
        y0=u0,
        args=params,
        saveat=dfx.SaveAt(ts=ts),
        stepsize_controller=controller,
        adjoint=_make_adjoint(adjoint, solver_obj),
        max_steps=max_steps,
        throw=False,  # failures are reported (solve's throw), not raised by diffrax
    )
    states = sol.ys
    result = sol.result._value
    # A solve that "succeeds" with a non-finite state is a failure too.
    nonfinite = jnp.logical_not(jnp.all(jnp.isfinite(jax.lax.stop_gradient(states))))
    result = jnp.where((result == 0) & nonfinite, _NONFINITE_CODE, result)
    num_steps = sol.stats["num_steps"]
    if solver in EXPLICIT_SOLVERS:
        rhs = num_rhs_evaluations(solver, num_steps, sol.stats["num_rejected_steps"])
    else:
        rhs = -jnp.ones_like(num_steps)
    return ReferenceSolution(
        states,
        result,
        num_steps,
        sol.stats["num_accepted_steps"],
        sol.stats["num_rejected_steps"],
        rhs,
    )


# Our own code for "the solve finished but produced inf/NaN" (not a diffrax code).
_NONFINITE_CODE = 1000


def _message(code):
    code = int(np.asarray(code))
    if code == _NONFINITE_CODE:
        return "non-finite state (inf/NaN): the step size is beyond the stability limit"
    return result_message(code)


def solve(
    model,
    params,
    times,
    *,
    solver: str = "tsit5",
    rtol: float = 1e-10,
    atol: float = 1e-12,
    adjoint: str | None = None,
    fixed_step: bool = False,
    max_steps: int = 16384,
    u0=None,
    pid: tuple[float, float] = (0.3, 0.4),
    linear_solver: str = "gmres",
    throw: bool = True,
) -> ReferenceSolution:
    """States of ``model`` at ``times`` from a diffrax ODE solve, with its statistics.

    Solves ``u'(t) = A(params) u(t) (+ b(params))``, ``u(0) = u0`` on
    ``[0, max(times)]``.  The states are differentiable with respect to
    ``params`` and ``u0`` (reverse mode through the chosen adjoint).

    Parameters
    ----------
    model
        A :class:`pdeinv.models.Model`; ``model.rhs`` is the vector field.
    params
        Parameter pytree (same structure as ``model.params``).
    times
        Concrete 1-D non-decreasing array of output times ``>= 0``.
    solver
        ``"tsit5"``, ``"dopri5"``, ``"dopri8"`` (explicit) or ``"kvaerno5"``
        (implicit ESDIRK; stage equations solved by chord iterations with a
        matrix-free Krylov solver, see ``linear_solver``).
    rtol, atol
        Tolerances of the adaptive PID step-size controller (and, scaled by
        1e-2, of the Krylov linear solver).
    adjoint
        ``"recursive_checkpoint"`` (differentiate the discrete solve with
        checkpointing), ``"backsolve"`` (continuous adjoint solved backwards in
        time) or ``"direct"``.  ``None`` (default) means
        ``"recursive_checkpoint"`` for the explicit solvers and ``"backsolve"``
        for the implicit one, whose other adjoints would assemble a dense
        Jacobian (refused with ``ValueError``).
    fixed_step
        Explicit solvers only: take constant steps at the stability limit
        :func:`stability_step` instead of adaptive ones (``rtol``/``atol`` unused).
    max_steps
        Step budget; running out is a failure (see ``throw``), never a silent
        truncation.
    u0
        Initial state; defaults to ``model.u0``.
    pid
        ``(pcoeff, icoeff)`` of the PID controller for the explicit methods; the
        default PI controller (0.3, 0.4) suits the mildly stiff regime explicit
        methods work in on PDEs.  The implicit method uses an I controller.
    linear_solver
        ``"gmres"`` (restart 30) or ``"bicgstab"`` for the implicit method, at most
        600 iterations per stage solve (a failed stage solve rejects the step).
    throw
        ``True`` (default): a failed solve (step budget, minimum step, non-finite
        state) raises.  ``False``: it returns, with the reason in
        :attr:`ReferenceSolution.result` (for comparisons that report failures).

    Returns
    -------
    ReferenceSolution
        ``states`` of shape ``(len(times), n_state)``, the result code and the
        step statistics.

    Raises
    ------
    ReferenceSolveError
        With ``throw=True``, when diffrax stops early or the state is not finite;
        the message gives the reason.  Under ``jit`` the failure is an equinox
        runtime error instead.
    ValueError
        For bad arguments (unknown solver, bad times, ...), whatever ``throw``.
    """
    solution = _diffeqsolve(
        model,
        params,
        times,
        solver=solver,
        rtol=rtol,
        atol=atol,
        adjoint=adjoint,
        fixed_step=fixed_step,
        max_steps=max_steps,
        u0=u0,
        pid=pid,
        linear_solver=linear_solver,
    )
    if not throw:
        return solution
    label = f"diffrax {solver} ({'fixed step' if fixed_step else f'rtol={rtol:g}'})"
    if isinstance(solution.result, jax.core.Tracer):
        # Under jit the code is not known here: equinox raises at run time.
        states = eqx.error_if(
            solution.states,
            solution.result != 0,
            f"{label} failed (max_steps reached or non-finite state); "
            "pdeinv.reference.solve(..., throw=False) returns the reason",
        )
        return solution._replace(states=states)
    code = int(np.asarray(solution.result))
    if code != 0:
        raise ReferenceSolveError(f"{label} failed: {_message(code)}")
    return solution


def describe_result(code) -> str:
    """Message for a :attr:`ReferenceSolution.result` code (``"successful"`` for 0)."""
    return _message(code)


def count_matvecs(fn, model, *args):
    """Number of ``model.matvec`` applications made by one call ``fn(model, *args)``.

    ``fn`` receives a copy of ``model`` whose matvec increments a host counter
    (through ``jax.debug.callback``) on every application, including the
    Jacobian-vector products the implicit solver feeds its Krylov solver.  A
    diagnostic for the forward solve: slow, and not for use inside ``grad``.
    """
    import dataclasses

    counter = [0]

    def bump(_):
        counter[0] += 1

    @jax.custom_jvp
    def counted(v, params):
        jax.debug.callback(bump, v[0])
        return model.matvec(v, params)

    @counted.defjvp
    def counted_jvp(primals, tangents):
        v, params = primals
        dv, dparams = tangents
        out = counted(v, params)
        # Linear in v: the v-tangent is one more (counted) matvec.
        d_out = counted(dv, params)
        d_out = d_out + jax.jvp(lambda p: model.matvec(v, p), (params,), (dparams,))[1]
        return out, d_out

    counting_model = dataclasses.replace(model, matvec=counted)
    out = fn(counting_model, *args)
    jax.block_until_ready(out)
    jax.effects_barrier()
    return counter[0]

"""pdeinv vs diffrax on one problem: time, matvecs, memory and accuracy of value and gradient.

The core behind ``python -m pdeinv compare``.  A :class:`CompareProblem` is a model,
its true parameters, output times and a scalar loss of the states; every
:class:`SolverConfig` solves it forward and computes ``value_and_grad`` of the
loss, both jitted and timed warm (median of repeats), and is scored against a
tight-tolerance reference.  Nothing here prints: progress goes through a
callback and the results come back as a plain dict (JSON-ready).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..expm import check_times
from ._solve import count_matvecs, describe_result, solve

PyTree = Any

DIFFRAX_FAMILIES = {
    # name: (label, solver, adjoint, fixed_step)
    "tsit5": (
        "diffrax Tsit5 adaptive + RecursiveCheckpoint",
        "tsit5",
        "recursive_checkpoint",
        False,
    ),
    "tsit5-fixed": (
        "diffrax Tsit5 fixed step (stability limit)",
        "tsit5",
        "recursive_checkpoint",
        True,
    ),
    "dopri5-backsolve": ("diffrax Dopri5 adaptive + Backsolve", "dopri5", "backsolve", False),
    "dopri8": (
        "diffrax Dopri8 adaptive + RecursiveCheckpoint",
        "dopri8",
        "recursive_checkpoint",
        False,
    ),
    "kvaerno5": ("diffrax Kvaerno5 + GMRES + Backsolve", "kvaerno5", "backsolve", False),
}
PDEINV_FAMILIES = {
    "pdeinv": "pdeinv expm_multiply (two-sided adjoint)",
    "pdeinv-discrete": "pdeinv expm_multiply (discrete adjoint)",
}
SOLVER_CHOICES = tuple(PDEINV_FAMILIES) + tuple(DIFFRAX_FAMILIES)
# Kvaerno5 is opt-in (``--solvers ... kvaerno5``): with unpreconditioned GMRES
# stage solves and the backsolve adjoint (the only matrix-free adjoint for it)
# one value+gradient on a stiff 32x32 heat problem takes many minutes, which no
# time budget can interrupt once the jitted call has started.
DEFAULT_SOLVERS = ("pdeinv", "tsit5", "tsit5-fixed", "dopri5-backsolve", "dopri8")
DEFAULT_TOLS = (1e-4, 1e-6, 1e-8)


@dataclasses.dataclass(frozen=True, eq=False)
class CompareProblem:
    """What to compare on.

    Parameters
    ----------
    model
        The semi-discrete PDE (:class:`pdeinv.models.Model`).
    params
        Parameters at which to compare (the true ones), same pytree as ``model.params``.
    times
        Output times, 1-D, non-decreasing, ``> 0``.
    loss
        ``loss(states) -> scalar`` on the ``(len(times), n_state)`` states; the
        gradient compared is that of ``params -> loss(states(params))``.
    name
        Short name for tables and titles.
    pdeinv_options
        Further keyword arguments of :func:`pdeinv.expm_multiply` for the pdeinv
        rows (``krylov_dim``, ``max_steps``); ``tol`` and ``gradient`` are set per row.
    """

    model: Any
    params: PyTree
    times: np.ndarray
    loss: Callable[[Any], Any]
    name: str = "problem"
    pdeinv_options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        times = check_times(self.times, positive=True)
        object.__setattr__(self, "times", times)
        bad = {"tol", "gradient", "method"} & set(self.pdeinv_options)
        if bad:
            raise ValueError(f"pdeinv_options must not set {sorted(bad)} (chosen per row)")


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """One row of the comparison: a solver family at one tolerance."""

    family: str  # key of PDEINV_FAMILIES or DIFFRAX_FAMILIES
    tol: float | None  # pdeinv tol / diffrax rtol; None for fixed steps

    @property
    def kind(self) -> str:
        return "pdeinv" if self.family in PDEINV_FAMILIES else "diffrax"

    @property
    def family_label(self) -> str:
        return PDEINV_FAMILIES.get(self.family) or DIFFRAX_FAMILIES[self.family][0]

    @property
    def label(self) -> str:
        name = self.family_label
        if self.tol is None:
            return name
        return f"{name}, {'tol' if self.family in PDEINV_FAMILIES else 'rtol'}={self.tol:g}"


@dataclasses.dataclass(frozen=True, eq=False)
class ExternalSolver:
    """A row computed by code outside pdeinv/diffrax (a peer library, scipy).

    ``forward(params) -> states`` (``(len(times), n_state)``) and optionally
    ``value_and_grad(params) -> (loss, grad pytree)``; jitted when ``jittable``
    (else timed as plain Python, e.g. scipy).  ``num_matvecs`` is reported as given.
    """

    label: str
    family: str
    forward: Callable
    value_and_grad: Callable | None = None
    jittable: bool = True
    num_matvecs: int | None = None
    tol: float | None = None
    kind: str = "other"
    family_label: str | None = None


def solver_configs(
    solvers: Sequence[str] = DEFAULT_SOLVERS, tols: Sequence[float] = DEFAULT_TOLS
) -> list[SolverConfig]:
    """Rows for ``solvers`` x ``tols``, loosest tolerance first across families.

    The ordering matters under a time budget: every family gets its cheap rows
    before any family gets its expensive ones.  Kvaerno5 (whose unpreconditioned
    Krylov stage solves are slow on stiff problems) runs at the loosest
    tolerance only unless it is the only diffrax family asked for.
    """
    for name in solvers:
        if name not in SOLVER_CHOICES:
            raise ValueError(f"solvers: unknown solver {name!r}; allowed: {SOLVER_CHOICES}")
    tols = sorted({float(t) for t in tols}, reverse=True)
    if not tols or any(not (0 < t < 1) for t in tols):
        raise ValueError(f"tols must be numbers in (0, 1), got {tols}")
    diffrax_asked = [s for s in solvers if s in DIFFRAX_FAMILIES]
    configs = []
    for i, tol in enumerate(tols):
        for name in solvers:
            if name == "tsit5-fixed":
                if i == 0:
                    configs.append(SolverConfig(name, None))
                continue
            if name == "kvaerno5" and i > 0 and diffrax_asked != ["kvaerno5"]:
                continue
            configs.append(SolverConfig(name, tol))
    return configs


# --------------------------------------------------------------------------- solves


def _state_scale(problem):
    return float(jnp.max(jnp.abs(problem.model.u0))) or 1.0


def _pdeinv_states(problem, params, tol, gradient):
    from ..models import simulate

    options = {**problem.pdeinv_options, "tol": tol, "gradient": gradient}
    times = jnp.asarray(problem.times, problem.model.u0.dtype)
    return simulate(problem.model, params, times, **options)


def _pdeinv_forward_info(problem, params, tol, gradient):
    """Forward states and solver statistics, the way :func:`pdeinv.models.simulate` solves."""
    from ..models import simulate_info

    options = {**problem.pdeinv_options, "tol": tol, "gradient": gradient}
    times = jnp.asarray(problem.times, problem.model.u0.dtype)
    states, stats = simulate_info(problem.model, params, times, **options)
    counts = {
        "num_matvecs": stats.num_matvecs,
        "num_steps": stats.num_steps,
        "num_rejected_steps": stats.num_rejected,
    }
    return states, jnp.zeros((), jnp.int32), counts


def _diffrax_options(problem, config):
    _, solver, adjoint, fixed = DIFFRAX_FAMILIES[config.family]
    rtol = config.tol if config.tol is not None else 1e-6
    return dict(
        solver=solver,
        adjoint=adjoint,
        fixed_step=fixed,
        rtol=rtol,
        atol=1e-2 * rtol * _state_scale(problem),
        max_steps=16384,
    )


def _functions(problem, config):
    """Jittable ``forward(params) -> (states, status, counts)`` and ``value_and_grad``."""
    if config.family in PDEINV_FAMILIES:
        gradient = "discrete" if config.family == "pdeinv-discrete" else "two-sided"

        def forward(params):
            return _pdeinv_forward_info(problem, params, config.tol, gradient)

        def states_and_status(params):
            return _pdeinv_states(problem, params, config.tol, gradient), jnp.zeros((), jnp.int32)

    else:
        options = _diffrax_options(problem, config)

        def forward(params):
            solution = solve(problem.model, params, problem.times, throw=False, **options)
            counts = {
                "num_matvecs": solution.num_rhs_evaluations,
                "num_steps": solution.num_steps,
                "num_rejected_steps": solution.num_rejected_steps,
            }
            return solution.states, solution.result, counts

        def states_and_status(params):
            solution = solve(problem.model, params, problem.times, throw=False, **options)
            return solution.states, solution.result

    def objective(params):
        states, status = states_and_status(params)
        return problem.loss(states), status

    value_and_grad = jax.value_and_grad(objective, has_aux=True)
    return forward, value_and_grad


# --------------------------------------------------------------------------- measuring


class _Budget:
    def __init__(self, seconds):
        self.start = time.perf_counter()
        self.seconds = seconds

    def elapsed(self):
        return time.perf_counter() - self.start

    def left(self):
        return math.inf if self.seconds is None else self.seconds - self.elapsed()


def _peak_bytes(compiled):
    """Peak memory of a compiled XLA program from its buffer assignment.

    ``temp + argument + output - alias`` bytes as reported by
    ``Compiled.memory_analysis()``: the static allocation XLA plans for the
    program (while-loop buffers are static, so this is the real peak of
    device buffers, excluding the XLA runtime and host copies).
    """
    try:
        mem = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None
    if mem is None:
        return None
    total = (
        mem.temp_size_in_bytes
        + mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        - getattr(mem, "alias_size_in_bytes", 0)
    )
    return int(total)


def _timed(compiled, params, repeats, deadline):
    """Median wall time of warm runs (the first, warming, run is not counted)."""
    out = jax.block_until_ready(compiled(params))
    samples = []
    while len(samples) < repeats:
        start = time.perf_counter()
        jax.block_until_ready(compiled(params))
        samples.append(time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return out, statistics.median(samples), len(samples)


def _flatten(tree):
    return np.concatenate([np.ravel(np.asarray(x, dtype=float)) for x in jax.tree.leaves(tree)])


def _rel_error(value, reference):
    value, reference = np.ravel(value), np.ravel(reference)
    denom = np.linalg.norm(reference)
    with np.errstate(over="ignore", invalid="ignore"):
        diff = np.linalg.norm(value - reference)
    return float(diff / (denom if denom > 0 else 1.0))


def _first_line(err):
    text = str(err).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {line}" if line else type(err).__name__


def _measure(problem, config, reference, repeats, budget, share):
    """One row: timings, counts, memory, errors, or a failure reason."""
    row = _row_head(config)
    params = problem.params
    deadline = time.perf_counter() + share
    if isinstance(config, ExternalSolver):
        return _measure_external(problem, config, reference, repeats, deadline, row)
    forward, value_and_grad = _functions(problem, config)
    try:
        start = time.perf_counter()
        compiled_forward = jax.jit(forward).lower(params).compile()
        row["compile_forward_s"] = time.perf_counter() - start
        (states, status, counts), row["forward_s"], row["forward_repeats"] = _timed(
            compiled_forward, params, repeats, deadline
        )
        status = int(status)
        if status != 0:
            row.update(status="failed", reason=f"forward solve: {describe_result(status)}")
            return row
        states = np.asarray(states)
        if not np.all(np.isfinite(states)):
            row.update(status="failed", reason="forward solve: non-finite state")
            return row
        row["value_error"] = _rel_error(states, reference["states"])
        counts = {k: int(v) for k, v in counts.items()}
        if counts["num_matvecs"] < 0:
            # Implicit solver: its Krylov iterations are not in diffrax's
            # statistics, so count matvecs with an instrumented one (slow, once).
            counts["num_matvecs"] = _count_implicit_matvecs(problem, config)
        row.update(counts)
        if time.perf_counter() > deadline and budget.left() < 0:
            row.update(status="partial", reason="time budget exhausted before the gradient")
            return row

        start = time.perf_counter()
        compiled_grad = jax.jit(value_and_grad).lower(params).compile()
        row["compile_value_and_grad_s"] = time.perf_counter() - start
        row["peak_memory_bytes"] = _peak_bytes(compiled_grad)
        row["peak_memory_forward_bytes"] = _peak_bytes(compiled_forward)
        ((value, status), grad), row["value_and_grad_s"], row["value_and_grad_repeats"] = (
            _timed(compiled_grad, params, repeats, deadline)
        )  # fmt: skip
        status = int(status)
        if status != 0:
            row.update(status="failed", reason=f"gradient solve: {describe_result(status)}")
            return row
        grad = _flatten(grad)
        if not (np.isfinite(float(value)) and np.all(np.isfinite(grad))):
            row.update(status="failed", reason="non-finite value or gradient")
            return row
        row["loss"] = float(value)
        row["loss_error"] = abs(float(value) - reference["loss"]) / max(
            abs(reference["loss"]), 1e-300
        )
        row["gradient_error"] = _rel_error(grad, reference["gradient"])
        row["gradient_over_forward"] = row["value_and_grad_s"] / row["forward_s"]
        _judge_gradient(row)
    except Exception as err:  # noqa: BLE001 - a failing solver is a result, not a crash
        row.update(status="failed", reason=_first_line(err))
    return row


def _count_implicit_matvecs(problem, config):
    options = _diffrax_options(problem, config)

    def run(model):
        return solve(model, problem.params, problem.times, throw=False, **options).states

    try:
        return count_matvecs(run, problem.model)
    except Exception:  # noqa: BLE001 - a count is a nicety; the row stands without it
        return None


def _row_head(config):
    return {
        "label": config.label,
        "family": config.family,
        "family_label": config.family_label or config.family,
        "kind": config.kind,
        "tol": config.tol,
        "status": "ok",
        "reason": None,
    }


def _measure_external(problem, config, reference, repeats, deadline, row):
    params = problem.params

    def prepare(fn):
        if not config.jittable:
            return fn, None
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(params).compile()
        return compiled, time.perf_counter() - start

    try:
        forward, row["compile_forward_s"] = prepare(config.forward)
        states, row["forward_s"], row["forward_repeats"] = _timed(
            forward, params, repeats, deadline
        )
        states = np.asarray(states)
        if not np.all(np.isfinite(states)):
            row.update(status="failed", reason="forward solve: non-finite state")
            return row
        row["value_error"] = _rel_error(states, reference["states"])
        row["num_matvecs"] = config.num_matvecs
        if config.jittable:
            row["peak_memory_forward_bytes"] = _peak_bytes(forward)
        if config.value_and_grad is None:
            row["reason"] = "forward only (no gradient)"
            return row
        value_and_grad, row["compile_value_and_grad_s"] = prepare(config.value_and_grad)
        if config.jittable:
            row["peak_memory_bytes"] = _peak_bytes(value_and_grad)
        (value, grad), row["value_and_grad_s"], row["value_and_grad_repeats"] = _timed(
            value_and_grad, params, repeats, deadline
        )
        grad = _flatten(grad)
        if not (np.isfinite(float(value)) and np.all(np.isfinite(grad))):
            row.update(status="failed", reason="non-finite value or gradient")
            return row
        row["loss"] = float(value)
        row["gradient_error"] = _rel_error(grad, reference["gradient"])
        row["gradient_over_forward"] = row["value_and_grad_s"] / row["forward_s"]
        _judge_gradient(row)
    except Exception as err:  # noqa: BLE001 - a failing solver is a result, not a crash
        row.update(status="failed", reason=_first_line(err))
    return row


def _judge_gradient(row):
    """A gradient that overflows is a failure; one off by 100 % or more is flagged."""
    err = row["gradient_error"]
    if not math.isfinite(err):
        row.update(status="failed", reason="gradient overflows (relative error is inf)")
    elif err >= 1.0:
        row["reason"] = f"gradient unusable: relative error {err:.1e}"


def _reference(problem, reference, cross_check_max_states, budget):
    """Tight-tolerance states, loss and gradient, with an independent cross-check."""
    params = problem.params
    scale = _state_scale(problem)

    def by_pdeinv(p):
        return _pdeinv_states(problem, p, 1e-12, "two-sided")

    def by_dopri8(p):
        solution = solve(
            problem.model,
            p,
            problem.times,
            solver="dopri8",
            rtol=1e-12,
            atol=1e-14 * scale,
            max_steps=65536,
            throw=False,
        )
        return jnp.where(solution.result == 0, solution.states, jnp.nan)

    def evaluate(forward):
        states = np.asarray(jax.jit(forward)(params))
        value, grad = jax.jit(jax.value_and_grad(lambda p: problem.loss(forward(p))))(params)
        return {"states": states, "loss": float(value), "gradient": _flatten(grad)}

    methods = {"pdeinv": (by_pdeinv, "pdeinv expm_multiply tol=1e-12"),
               "dopri8": (by_dopri8, "diffrax Dopri8 rtol=1e-12")}  # fmt: skip
    order = ["pdeinv", "dopri8"] if reference in ("auto", "pdeinv") else ["dopri8", "pdeinv"]
    out, notes = None, []
    for name in order:
        try:
            start = time.perf_counter()
            candidate = evaluate(methods[name][0])
            seconds = time.perf_counter() - start
            if not (
                np.all(np.isfinite(candidate["states"]))
                and np.all(np.isfinite(candidate["gradient"]))
            ):
                raise FloatingPointError("non-finite reference")
        except Exception as err:  # noqa: BLE001
            notes.append(f"{methods[name][1]} failed: {_first_line(err)}")
            if reference != "auto":
                break
            continue
        if out is None:
            out = {**candidate, "source": methods[name][1], "time_s": seconds}
            n_states = problem.model.num_states * len(problem.times)
            if reference != "auto" or n_states > cross_check_max_states or budget.left() < 0:
                break
            continue
        out["cross_check"] = {
            "source": methods[name][1],
            "value_difference": _rel_error(candidate["states"], out["states"]),
            "gradient_difference": _rel_error(candidate["gradient"], out["gradient"]),
            "time_s": seconds,
        }
        break
    if out is None:
        raise RuntimeError("no reference solution could be computed: " + "; ".join(notes))
    out["notes"] = notes
    # How well the reference itself is known: the disagreement of the two
    # independent tight solves (or their nominal tolerance without a cross-check).
    cc = out.get("cross_check")
    out["uncertainty"] = (
        max(cc["value_difference"], cc["gradient_difference"], 1e-14) if cc else 1e-12
    )
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> dict:
    """Where the comparison ran (for the table caption)."""
    import os

    import diffrax

    device = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "jax": jax.__version__,
        "diffrax": diffrax.__version__,
        "python": platform.python_version(),
    }


def compare(
    problem: CompareProblem,
    configs: Sequence[SolverConfig] | None = None,
    *,
    repeats: int = 5,
    budget: float | None = None,
    reference: str = "auto",
    cross_check_max_states: int = 200_000,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Measure every configuration on ``problem``; return a JSON-ready dict.

    Parameters
    ----------
    problem
        The problem (model, true parameters, times, loss).
    configs
        Rows to measure; default :func:`solver_configs` ``()``.
    repeats
        Warm timed runs per measurement (median reported); fewer when the row's
        share of the budget runs out.
    budget
        Seconds for the whole comparison (reference included), or ``None``.
        Each row gets an equal share of what is left for its repeats; rows
        reached after the budget is spent are reported as ``"skipped"``.
    reference
        ``"auto"`` (pdeinv at tol 1e-12, cross-checked with diffrax Dopri8 at
        rtol 1e-12 when the problem has at most ``cross_check_max_states``
        state entries over all times; Dopri8 alone when pdeinv fails),
        ``"pdeinv"`` or ``"dopri8"``.
    progress
        Called with one line of text per finished step (the CLI prints it).

    Returns
    -------
    dict
        ``problem``, ``machine``, ``reference``, ``rows`` (one dict per
        configuration, with ``status`` ``"ok"``/``"failed"``/``"partial"``/
        ``"skipped"`` and ``reason``), ``speedups`` and ``summary`` (sentences).
    """
    if reference not in ("auto", "pdeinv", "dopri8"):
        raise ValueError(f"reference must be 'auto', 'pdeinv' or 'dopri8', got {reference!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if budget is not None and budget <= 0:
        raise ValueError(f"budget must be > 0 seconds, got {budget}")
    configs = list(solver_configs() if configs is None else configs)
    say = progress or (lambda line: None)
    clock = _Budget(budget)

    say(f"reference solution ({reference}) ...")
    ref = _reference(problem, reference, cross_check_max_states, clock)
    line = f"reference: {ref['source']} in {ref['time_s']:.1f} s"
    if "cross_check" in ref:
        cc = ref["cross_check"]
        line += (f"; {cc['source']} differs by {cc['value_difference']:.1e} (states), "
                 f"{cc['gradient_difference']:.1e} (gradient)")  # fmt: skip
    say(line)

    rows = []
    for i, config in enumerate(configs):
        left = clock.left()
        if left <= 0:
            row = _row_head(config)
            row.update(status="skipped", reason=f"time budget of {budget:g} s exhausted")
            rows.append(row)
            say(f"skipped  {config.label}: time budget exhausted")
            continue
        share = left / (len(configs) - i) if math.isfinite(left) else math.inf
        row = _measure(problem, config, ref, repeats, clock, share)
        rows.append(row)
        say(_progress_line(row))

    result = {
        "problem": {
            "name": problem.name,
            "model": getattr(problem.model, "name", "?"),
            "num_states": problem.model.num_states,
            "times": [float(t) for t in problem.times],
            "norm_estimate_times_t": _stiffness(problem),
        },
        "machine": machine_description(),
        "memory_note": (
            "peak memory = XLA buffer assignment of the jitted program "
            "(Compiled.memory_analysis: temp + arguments + outputs - aliased)"
        ),
        "timing_note": f"jitted, warm, median of up to {repeats} runs; compile time separate",
        "reference": {k: v for k, v in ref.items() if k not in ("states", "gradient")},
        "rows": rows,
        "budget_s": budget,
        "elapsed_s": clock.elapsed(),
    }
    result["speedups"] = speedups(rows, result["reference"]["uncertainty"])
    result["summary"] = summary_lines(result)
    return result


def _stiffness(problem):
    try:
        norm = float(problem.model.norm_estimate(problem.params))
    except (NotImplementedError, TypeError):
        return None
    return norm * float(np.max(problem.times))


def _progress_line(row):
    if row["status"] != "ok":
        return f"{row['status']:<8} {row['label']}: {row['reason']}"
    if row.get("gradient_error") is None:
        return f"ok       {row['label']}: forward {_ms(row['forward_s'])} ({row['reason']})"
    return (f"ok       {row['label']}: value+grad {_ms(row['value_and_grad_s'])}, "
            f"gradient error {row['gradient_error']:.1e}")  # fmt: skip


# --------------------------------------------------------------------------- verdicts


def speedups(rows, uncertainty: float = 0.0) -> list[dict]:
    """pdeinv vs the fastest diffrax row reaching at least the same gradient accuracy.

    For each successful pdeinv row with gradient error ``e``: among successful
    diffrax rows with gradient error ``<= e``, the one with the smallest
    value+gradient time.  ``speedup`` > 1 means pdeinv is faster.  Errors below
    ``uncertainty`` (how well the reference itself is known) count as equal to it.
    """
    ok = [r for r in rows if r["status"] == "ok"]

    def err(r):
        return max(r["gradient_error"], uncertainty)

    out = []
    # A pdeinv row whose gradient is off by 100 % or more has nothing to match.
    for p in (r for r in ok if r["kind"] == "pdeinv" and r["gradient_error"] < 1.0):
        rivals = [d for d in ok if d["kind"] == "diffrax" and err(d) <= err(p)]
        entry = {"pdeinv": p["label"], "gradient_error": err(p),
                 "pdeinv_s": p["value_and_grad_s"]}  # fmt: skip
        if rivals:
            best = min(rivals, key=lambda d: d["value_and_grad_s"])
            entry.update(diffrax=best["label"], diffrax_s=best["value_and_grad_s"],
                         diffrax_gradient_error=best["gradient_error"],
                         speedup=best["value_and_grad_s"] / p["value_and_grad_s"])  # fmt: skip
        else:
            entry.update(diffrax=None, diffrax_s=None, speedup=None)
        out.append(entry)
    return out


def summary_lines(result) -> list[str]:
    """Plain sentences: speed-up at matched gradient accuracy, diffrax wins, failures."""
    lines = []
    for s in result["speedups"]:
        e = s["gradient_error"]
        head = f"{s['pdeinv']}: gradient error {e:.1e}"
        if s["speedup"] is None:
            lines.append(f"{head}; no diffrax configuration reached this accuracy.")
        elif s["speedup"] >= 1:
            lines.append(
                f"{head} in {_ms(s['pdeinv_s'])}; the fastest diffrax configuration as "
                f"accurate ({s['diffrax']}) takes {_ms(s['diffrax_s'])}: "
                f"pdeinv is {s['speedup']:.1f}x faster."
            )
        else:
            lines.append(
                f"{head} in {_ms(s['pdeinv_s'])}; diffrax wins here: {s['diffrax']} is as "
                f"accurate in {_ms(s['diffrax_s'])}, {1 / s['speedup']:.1f}x faster than pdeinv."
            )
    for row in result["rows"]:
        if row["status"] in ("failed", "skipped", "partial") or row.get("reason"):
            lines.append(f"{row['label']}: {row['status']} ({row['reason']}).")
    return lines


def _ms(seconds):
    return f"{1e3 * seconds:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


# --------------------------------------------------------------------------- outputs


def _fmt(value, kind):
    if value is None:
        return "–"
    if kind == "ms":
        return f"{1e3 * value:.1f}"
    if kind == "err":
        return f"{value:.1e}"
    if kind == "mib":
        return f"{value / 2**20:.1f}"
    if kind == "x":
        return f"{value:.1f}"
    return str(value)


def _backward_over_forward(row: dict):
    forward, both = row.get("forward_s"), row.get("value_and_grad_s")
    if forward is None or both is None or forward <= 0:
        return None
    return (both - forward) / forward


def to_markdown(result: dict) -> str:
    """The comparison as a markdown table plus the verdict sentences."""
    p, m, ref = result["problem"], result["machine"], result["reference"]
    head = (
        f"**{p['name']}** ({p['model']}, {p['num_states']} states, "
        f"times {', '.join(f'{t:.3g}' for t in p['times'])}"
        + (f", t·‖A‖ ≈ {p['norm_estimate_times_t']:.3g}" if p["norm_estimate_times_t"] else "")
        + f"). Machine: {m['processor']}, {m['cpu_count']} CPUs, {m['device']}, "
        f"jax {m['jax']}, diffrax {m['diffrax']}. Reference: {ref['source']}"
    )
    if "cross_check" in ref:
        cc = ref["cross_check"]
        head += (f" (cross-check {cc['source']}: states differ by {cc['value_difference']:.1e}, "
                 f"gradient by {cc['gradient_difference']:.1e})")  # fmt: skip
    head += (
        f". Errors below {ref['uncertainty']:.0e} are within the reference's own uncertainty. "
        f"Times: {result['timing_note']}; memory: {result['memory_note']}."
    )
    # "bwd/fwd": the gradient's own cost, (value+grad - forward) / forward.
    cols = ["solver", "status", "forward [ms]", "value+grad [ms]", "(v+g)/fwd", "bwd/fwd",
            "matvecs (fwd)", "peak mem [MiB]", "value err", "grad err"]  # fmt: skip
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in result["rows"]:
        if r["status"] == "ok":
            status = f"ok ({r['reason']})" if r["reason"] else "ok"
        else:
            status = f"{r['status']}: {r['reason']}"
        status = status.replace("|", "/")
        cells = [
            r["label"],
            status,
            _fmt(r.get("forward_s"), "ms"),
            _fmt(r.get("value_and_grad_s"), "ms"),
            _fmt(r.get("gradient_over_forward"), "x"),
            _fmt(_backward_over_forward(r), "x"),
            _fmt(r.get("num_matvecs"), "int"),
            _fmt(r.get("peak_memory_bytes"), "mib"),
            _fmt(r.get("value_error"), "err"),
            _fmt(r.get("gradient_error"), "err"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.extend(f"- {s}" for s in result["summary"])
    return "\n".join(lines) + "\n"


_ERROR_CEILING = 10.0  # gradient errors above this are drawn at the top edge, as "off scale"


def draw_work_precision(ax, result: dict, *, title: str | None = None) -> None:
    """Draw gradient error vs value+gradient time of ``result`` on a matplotlib axis.

    One curve per solver family (pdeinv solid, others dashed), points labelled by
    tolerance; errors below the reference's uncertainty are drawn at it, errors
    above 10 (unusable gradients) as open triangles on the top edge.
    """
    from matplotlib.ticker import NullFormatter

    families = []
    for r in result["rows"]:
        if r["family"] not in families:
            families.append(r["family"])
    markers = "os^vD<>ph*"
    floor = max(result["reference"].get("uncertainty", 0.0), 1e-16)
    off_scale = []
    for i, family in enumerate(families):
        pts = [r for r in result["rows"] if r["family"] == family and r["status"] == "ok"
               and r.get("gradient_error") is not None]  # fmt: skip
        if not pts:
            continue
        pts.sort(key=lambda r: -(r["tol"] or 1.0))  # connect loose -> tight
        is_pdeinv = pts[0]["kind"] == "pdeinv"
        style = {"linestyle": "-" if is_pdeinv else "--", "linewidth": 2.2 if is_pdeinv else 1.4}
        x = [r["value_and_grad_s"] for r in pts]
        y = [min(max(r["gradient_error"], floor), _ERROR_CEILING) for r in pts]
        (line,) = ax.loglog(x, y, marker=markers[i % len(markers)], label=pts[0]["family_label"],
                            **style)  # fmt: skip
        for r, xi, yi in zip(pts, x, y, strict=True):
            if r["gradient_error"] > _ERROR_CEILING:
                if r["family_label"] not in off_scale:
                    off_scale.append(r["family_label"])
                ax.plot([xi], [yi], marker="^", markersize=11, markerfacecolor="none",
                        color=line.get_color())  # fmt: skip
            if r["tol"] is not None:
                ax.annotate(f"{r['tol']:.0e}", (xi, yi), textcoords="offset points",
                            xytext=(4, 3), fontsize=7)  # fmt: skip
    ax.axhspan(_ERROR_CEILING / 3, _ERROR_CEILING * 3, color="0.9", zorder=0)
    ax.set_ylim(top=_ERROR_CEILING * 3)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("value + gradient wall time [s] (jitted, warm, median)")
    ax.set_ylabel("gradient relative error (2-norm)")
    p = result["problem"]
    stiff = p.get("norm_estimate_times_t")
    default_title = f"{p['name']} ({p['num_states']} states" + (
        f", t·‖A‖ ≈ {stiff:.0f})" if stiff else ")"
    )
    ax.set_title(title or default_title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    notes = [f"{name}: gradient error > 10 (open triangles, top edge)" for name in off_scale]
    notes += [f"{r['label']}: {r['status']} (no gradient point; see table)"
              for r in result["rows"]
              if r["status"] != "ok" or r.get("gradient_error") is None]  # fmt: skip
    if notes:
        import textwrap

        text = "\n".join(textwrap.fill(n, 60) for n in notes[:8])
        ax.text(1.02, 0.0, text, transform=ax.transAxes, fontsize=6.5, va="bottom", ha="left")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def plot_work_precision(result: dict, path) -> None:
    """Write the work-precision figure of ``result`` (see :func:`draw_work_precision`)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.8), constrained_layout=True)
    draw_work_precision(ax, result, title=f"Work-precision: {result['problem']['name']} "
                        f"({result['problem']['num_states']} states)")  # fmt: skip
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def write_outputs(result: dict, folder) -> dict:
    """Write ``compare.json``, ``compare.md`` and ``work_precision.png`` into ``folder``."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": folder / "compare.json",
        "markdown": folder / "compare.md",
        "figure": folder / "work_precision.png",
    }
    paths["json"].write_text(json.dumps(_jsonable(result), indent=2, allow_nan=False) + "\n")
    paths["markdown"].write_text(to_markdown(result))
    plot_work_precision(result, paths["figure"])
    return paths

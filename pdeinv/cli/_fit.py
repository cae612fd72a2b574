"""``python -m pdeinv fit CONFIG.yaml``: recover the coefficient and write a run folder.

Also ``fit --resume RUN_DIR [dotted.key=value ...]``: continue a stopped run.
SIGINT/SIGTERM end the fit after the current evaluation; the run folder is then
written with the best iterate so far and ``status: interrupted`` (exit 130).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ._common import add_config_arguments, configure_jax, prepare, run_folder
from ._config import ConfigError, dump_config, load_config
from ._progress import Progress
from ._sections import RunConfig


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="recover the coefficient from data and write a run folder",
        description=(
            "Build the model of CONFIG.yaml, make synthetic data (or read data.file), fit the "
            "coefficient by minimising misfit + regularisation with reverse-mode gradients of "
            "pdeinv.expm_multiply, check the result with diffrax, and write config.yaml, "
            "metrics.json, result.npz, fields.vtu and figures to the run folder.  Ctrl-C "
            "(SIGINT) or SIGTERM stops after the current evaluation and writes the folder "
            "with the best iterate (status interrupted, exit status 130); "
            "`fit --resume RUN_DIR` continues it."
        ),
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="split the experiments over the first N JAX devices (default: all); "
        "the layout is recorded in metrics.json",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the fit of RUN_DIR from its last iterate and its config.yaml "
        "(overrides allowed, e.g. optimizer.max_iter=50: that many further iterations); "
        "the history is appended and the folder updated in place",
    )
    # With --resume there is no CONFIG.yaml: the positional may then be an override.
    for action in parser._actions:
        if action.dest == "config":
            action.nargs = "?"
    parser.set_defaults(func=run)


def _resume_arguments(args):
    """``(config, arrays, metrics)`` for ``--resume`` (the positional may be an override)."""
    from ._robust import previous_run

    overrides = list(args.overrides or [])
    if args.out is not None or args.force:
        raise ConfigError("--out/--force do not go with --resume: RUN_DIR is updated in place")
    if args.config is not None:
        if "=" not in args.config:
            raise ConfigError(
                "give either CONFIG.yaml or --resume RUN_DIR, not both "
                "(overrides after --resume look like dotted.key=value)"
            )
        overrides.insert(0, args.config)
    path, arrays, metrics = previous_run(args.resume)
    config = RunConfig.from_dict(load_config(path, overrides))
    configure_jax(config.precision)
    return config, arrays, metrics


def run(args) -> int:
    from .. import inverse, report
    from ._experiment import (
        build_experiment,
        check_with_diffrax,
        expm_statistics,
        fit_experiment,
        fit_metrics,
        solve_model_and_params,
        write_fit_folder,
    )
    from ._robust import (
        EXIT_INTERRUPTED,
        Checkpointer,
        StopOnSignal,
        available_memory_bytes,
        check_memory,
        history_of,
        planned_gradient_memory,
    )
    from ._uncertainty import evidence_metrics

    start = time.perf_counter()
    progress = Progress(quiet=args.quiet)
    previous = None
    if args.resume is not None:
        config, previous_arrays, previous_metrics = _resume_arguments(args)
        folder = Path(args.resume)
        previous = {
            "x": previous_arrays["x"],
            "history": history_of(previous_arrays),
            "metrics": previous_metrics,
        }
    else:
        if args.config is None:
            raise ConfigError("fit needs CONFIG.yaml (or --resume RUN_DIR)")
        config = prepare(args)
        folder = run_folder(config.name, args.out, args.force)
    # The resolved config first: a run killed at any point can be resumed.
    report.write_config(folder, dump_config(config.to_dict()))

    with StopOnSignal(progress.message) as stop:
        try:
            experiment = build_experiment(config, devices=args.devices)
            problem = experiment.problem
            progress.message(
                f"{config.name}: {config.model.pde} on {experiment.space.num_nodes} "
                f"nodes, {problem.parameters.size} unknowns, {problem.num_observations} data, "
                f"{config.optimizer.method} (setup {experiment.build_time_s:.1f} s)"
                + _experiments_note(experiment.device_layout)
            )
            plan = planned_gradient_memory(
                config.solver,
                config.precision,
                experiment.model.num_states,
                len(problem.times),
                _batch(experiment),
            )
            progress.message(check_memory(config.solver, plan, available_memory_bytes()))
            x0 = None
            if previous is not None:
                x0 = _resume_point(previous["x"], experiment)
                progress.message(
                    f"resuming {folder} from iteration "
                    f"{_last_iteration(previous['history'])} "
                    f"(previous status: {previous['metrics'].get('status', 'unknown')})"
                )
            checkpointer = Checkpointer(
                folder,
                config.output.checkpoint_every_s,
                previous_history=previous["history"] if previous else None,
                base_metrics={"name": config.name, "planned_gradient_memory": plan},
            )

            def on_weight(weight):
                progress.message(f"regularisation weight {weight:.3g}")

            outcome = fit_experiment(
                experiment,
                callback=progress,
                on_weight=on_weight,
                stop=stop,
                checkpoint=checkpointer,
                x0=x0,
                previous_history=previous["history"] if previous else None,
            )
        except Exception as err:
            _write_failed(folder, config.name, err, previous)
            raise
        progress.end_line()
        status = inverse.STATUS_NAMES[outcome.result.status]
        progress.message(
            f"optimiser: {outcome.result.message} after {outcome.result.iterations} it."
        )
        interrupted = status == "interrupted"
        diffrax_check, check_time, statistics = None, 0.0, None
        if not interrupted:
            if config.check.enabled:
                diffrax_check, check_time = check_with_diffrax(experiment, outcome)
            statistics = expm_statistics(
                *solve_model_and_params(experiment, outcome.recovered_params),
                problem.times, problem.solver,
            )  # fmt: skip
        uncertainty = None
        if not interrupted and config.uncertainty.enabled:
            uncertainty = _uncertainty(experiment, outcome, progress, folder, config, previous)
        metrics = fit_metrics(
            experiment,
            outcome,
            diffrax_check=diffrax_check,
            check_time_s=check_time,
            statistics=statistics,
            wall_time_s=time.perf_counter() - start,
        )
        metrics["status"] = status
        metrics.update(evidence_metrics(outcome))
        if uncertainty is not None:
            metrics.update(uncertainty.metrics)
        metrics.update(_pde_solves(outcome, previous))
        metrics["planned_gradient_memory"] = plan
        metrics["checkpoints_written"] = checkpointer.count
        if interrupted:
            metrics["interrupted_by"] = stop.requested
        if previous is not None:
            resumes = list(previous["metrics"].get("resumed_from_status", []) or [])
            metrics["resumed_from_status"] = [
                *resumes,
                previous["metrics"].get("status", "unknown"),
            ]
            metrics["iterations_this_run"] = outcome.result.iterations
            metrics["iterations"] = _last_iteration(outcome.history)
        write_fit_folder(folder, experiment, outcome, metrics, uncertainty)
    summary = [f"run folder: {folder}", f"status: {status}"]
    for key in (f"{experiment.coefficient}_relative_error", "velocity_relative_error",
                "data_misfit_per_datum", "iterations", "diffrax_check", "log_evidence",
                "effective_parameters", "coverage_2sigma", "wall_time_s"):  # fmt: skip
        if metrics.get(key) is not None:
            value = metrics[key]
            summary.append(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    print("\n".join(summary), file=sys.stdout)
    if interrupted:
        progress.message(f"interrupted; resume with: python -m pdeinv fit --resume {folder}")
        return EXIT_INTERRUPTED
    return 0


def _uncertainty(experiment, outcome, progress, folder, config, previous):
    """The Laplace posterior of the fit (``uncertainty.enabled``); a failure fails the run."""
    from ._uncertainty import compute_uncertainty

    progress.message(f"uncertainty: Laplace posterior, {config.uncertainty.method} eigensolver")
    try:
        uncertainty = compute_uncertainty(experiment, outcome)
    except ValueError as err:
        _write_failed(folder, config.name, err, previous)
        raise ConfigError(str(err)) from None
    except Exception as err:
        _write_failed(folder, config.name, err, previous)
        raise
    info = uncertainty.metrics["uncertainty"]
    cost = (
        f"{info['residual_evaluations']} forward evaluations"
        if info["residual_evaluations"]
        else f"{info['hessian_products']} Hessian-vector products"
    )
    progress.message(
        f"uncertainty: {info['method']}, {cost} ({info['hessian_kind']}), "
        f"{info['eigenvalues_above_1']} eigenvalues above 1, {info['time_s']:.1f} s"
    )
    return uncertainty


def _pde_solves(outcome, previous) -> dict:
    """``pde_solves`` (forward + adjoint + tangent) and its parts, all stages of the fit.

    Counted by the optimiser where it evaluates the objective, gradient and
    Hessian–vector products (one solve per experiment each); a resumed run adds
    the solves of the runs before it.
    """
    results = [outcome.result] if outcome.morozov is None else list(outcome.morozov.results)
    if outcome.evidence is not None:
        results = list(outcome.evidence.results)
    kinds = {"forward": 0, "adjoint": 0, "tangent": 0}
    for result in results:
        for kind in kinds:
            kinds[kind] += int((result.pde_solves or {}).get(kind, 0))
    if previous is not None:
        before = previous["metrics"].get("pde_solves_by_kind") or {}
        for kind in kinds:
            kinds[kind] += int(before.get(kind, 0))
    return {"pde_solves": sum(kinds.values()), "pde_solves_by_kind": kinds}


def _batch(experiment) -> int:
    """Solves at once in one gradient (experiments per vmap batch)."""
    from ..inverse._experiments import default_batch_size

    layout = experiment.device_layout or {}
    num = int(layout.get("num_experiments", 1) or 1)
    if num <= 1:
        return 1
    size = experiment.config.experiments.batch_size
    per_device = max(layout.get("experiments_per_device", [num]) or [num])
    size = default_batch_size(num) if size is None else size
    return int(min(size, per_device))


def _resume_point(x, experiment):
    import numpy as np

    x = np.asarray(x)
    expected = experiment.problem.parameters.size
    if x.shape != (expected,):
        raise ConfigError(
            f"--resume: the run folder's iterate has {x.size} entries but this config "
            f"has {expected} unknowns (parameterization changed?)"
        )
    if not np.all(np.isfinite(x)):
        raise ConfigError("--resume: the run folder's iterate is not finite")
    return x.astype(experiment.x0.dtype)


def _last_iteration(history) -> int:
    iterations = history.get("iteration") if history else None
    return int(iterations[-1]) if iterations is not None and len(iterations) else 0


def _write_failed(folder, name, err, previous) -> None:
    """metrics.json with ``status: failed`` and the one-line reason (result.npz kept)."""
    from .. import report
    from ._main import _one_line

    metrics = {"name": name, "status": "failed", "error": _one_line(err)}
    if previous is not None:
        metrics["resumed_from_status"] = [previous["metrics"].get("status", "unknown")]
    try:
        report.write_metrics(folder, metrics)
    except OSError:
        pass


def _experiments_note(layout) -> str:
    if layout is None or layout["num_experiments"] == 1:
        return ""
    return (
        f"; {layout['num_experiments']} experiments on {layout['count']} "
        f"{layout['platform']} device(s)"
    )

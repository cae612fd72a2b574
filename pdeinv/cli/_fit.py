"""``python -m pdeinv fit CONFIG.yaml``: recover the coefficient and write a run folder."""

from __future__ import annotations

import sys
import time

from ._common import add_config_arguments, prepare, run_folder
from ._progress import Progress


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="recover the coefficient from data and write a run folder",
        description=(
            "Build the model of CONFIG.yaml, make synthetic data (or read data.file), fit the "
            "coefficient by minimising misfit + regularisation with reverse-mode gradients of "
            "pdeinv.expm_multiply, check the result with diffrax, and write config.yaml, "
            "metrics.json, result.npz, fields.vtu and figures to the run folder."
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
    parser.set_defaults(func=run)


def run(args) -> int:
    from ._experiment import (
        build_experiment,
        check_with_diffrax,
        expm_statistics,
        fit_experiment,
        fit_metrics,
        write_fit_folder,
    )

    start = time.perf_counter()
    config = prepare(args)
    folder = run_folder(config, args.out, args.force)
    progress = Progress(quiet=args.quiet)
    experiment = build_experiment(config, devices=args.devices)
    problem = experiment.problem
    progress.message(
        f"{config['name']}: {config['model']['pde']} on {experiment.space.num_nodes} nodes, "
        f"{problem.parameters.size} unknowns, {problem.num_observations} data, "
        f"{config['optimizer']['method']} (setup {experiment.build_time_s:.1f} s)"
        + _experiments_note(experiment.device_layout)
    )

    def on_weight(weight):
        progress.message(f"regularisation weight {weight:.3g}")

    outcome = fit_experiment(experiment, callback=progress, on_weight=on_weight)
    progress.end_line()
    progress.message(f"optimiser: {outcome.result.message} after {outcome.result.iterations} it.")
    diffrax_check, check_time = (None, 0.0)
    if config["check"]["enabled"]:
        diffrax_check, check_time = check_with_diffrax(experiment, outcome)
    statistics = expm_statistics(
        experiment.model, outcome.recovered_params, problem.times, problem.solver
    )
    metrics = fit_metrics(
        experiment,
        outcome,
        diffrax_check=diffrax_check,
        check_time_s=check_time,
        statistics=statistics,
        wall_time_s=time.perf_counter() - start,
    )
    write_fit_folder(folder, experiment, outcome, metrics)
    summary = [f"run folder: {folder}"]
    for key in (f"{experiment.coefficient}_relative_error", "velocity_relative_error",
                "data_misfit_per_datum", "iterations", "diffrax_check", "wall_time_s"):  # fmt: skip
        if metrics.get(key) is not None:
            value = metrics[key]
            summary.append(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    print("\n".join(summary), file=sys.stdout)
    return 0


def _experiments_note(layout) -> str:
    if layout is None or layout["num_experiments"] == 1:
        return ""
    return (
        f"; {layout['num_experiments']} experiments on {layout['count']} "
        f"{layout['platform']} device(s)"
    )

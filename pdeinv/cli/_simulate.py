"""``python -m pdeinv simulate CONFIG.yaml``: forward solve + synthetic data only."""

from __future__ import annotations

import time

import numpy as np

from ._common import add_config_arguments, prepare, run_folder


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="forward solve of the true coefficient and synthetic data (no fit)",
        description=(
            "Simulate the model of CONFIG.yaml with the true coefficient, add the configured "
            "noise, and write config.yaml, metrics.json, result.npz (with data.npz-style keys "
            "times/observations), fields.vtu and figures to the run folder."
        ),
    )
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from .. import report
    from ._config import ConfigError, dump_config
    from ._experiment import _space_arrays, build_experiment, expm_statistics, run_title

    start = time.perf_counter()
    config = prepare(args)
    if config["data"]["source"] != "synthetic":
        raise ConfigError("simulate needs data.source = synthetic (it makes the data)")
    folder = run_folder(config, args.out, args.force)
    experiment = build_experiment(config)
    problem = experiment.problem
    statistics = expm_statistics(
        experiment.model, experiment.true_params, problem.times, problem.solver
    )
    report.write_config(folder, dump_config(config))
    arrays = {
        **_space_arrays(experiment.space),
        "coefficient": np.asarray(experiment.coefficient),
        "title": np.asarray(run_title(config, experiment)),
        "true_field": experiment.true_field,
        "times": problem.times,
        "observations": problem.data,
        "clean_observations": experiment.clean_data,
        "predictions": experiment.clean_data,
        "prediction_label": np.asarray("noise-free data"),
        "observation_kind": np.asarray(experiment.observation_kind),
        "noise_sigma": np.asarray(np.mean(problem.sigma)),
        "sigma": np.asarray(np.mean(problem.sigma)),
        "truth": experiment.true_field,
    }
    if experiment.observation_kind == "sensors":
        arrays["sensors"] = problem.observation.locations
        arrays["sensor_locations"] = problem.observation.locations
    from ._scale import split_experiment_arrays

    report.write_result(folder, split_experiment_arrays(arrays))
    metrics = {
        "coefficient": experiment.coefficient,
        "num_nodes": experiment.space.num_nodes,
        "num_states": experiment.model.num_states,
        "num_data": int(np.asarray(problem.data).size),
        "noise_sigma": float(np.mean(problem.sigma)),
        "solver_statistics": statistics,
        "wall_time_s": time.perf_counter() - start,
    }
    report.write_metrics(folder, metrics)
    if config["output"]["vtu"]:
        report.write_vtu(
            folder,
            experiment.space.points,
            experiment.space.cells,
            experiment.space.cell_type,
            {f"{experiment.coefficient}_true": experiment.true_field},
        )
    if config["output"]["figures"]:
        report.draw_figures(folder)
    print(f"run folder: {folder}")
    return 0

"""``python -m pdeinv simulate CONFIG.yaml``: forward solve + synthetic data only.

Its ``metrics.json`` has a ``status`` like every run folder's: ``converged`` when
the forward solve reached every output time within ``solver.tol`` (the only way
it finishes: a solve that gives up raises), ``failed`` with the one-line
``error`` when the run ends with an error, ``interrupted`` after Ctrl-C or
SIGTERM (exit status 130).  It never writes ``max_iter``: there is no iteration
budget.
"""

from __future__ import annotations

import sys
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
    from ._fit import _write_failed
    from ._robust import EXIT_INTERRUPTED, StopOnSignal

    start = time.perf_counter()
    config = prepare(args)
    if config.data.source != "synthetic":
        raise ConfigError("simulate needs data.source = synthetic (it makes the data)")

    def message(text):
        if not args.quiet:
            print(text, file=sys.stderr)

    # The first SIGINT/SIGTERM ends the run after the current solve, a second at once;
    # either way metrics.json says "interrupted".
    with StopOnSignal(message) as stop:
        folder = run_folder(config.name, args.out, args.force)
        try:
            report.write_config(folder, dump_config(config.to_dict()))
            metrics = _simulate(config, folder, stop)
        except KeyboardInterrupt:  # a second signal: stop now
            metrics = {"name": config.name}
        except Exception as err:
            _write_failed(folder, config.name, err, None)
            raise
    interrupted = "status" not in metrics  # a signal after the last step changes nothing
    if interrupted:
        metrics["status"] = "interrupted"
        metrics["interrupted_by"] = stop.requested or "SIGINT"
    metrics["wall_time_s"] = time.perf_counter() - start
    report.write_metrics(folder, metrics)
    print(f"run folder: {folder}")
    if interrupted:
        message("interrupted (status interrupted)")
        return EXIT_INTERRUPTED
    return 0


def _simulate(config, folder, stop) -> dict:
    """Solve and write result.npz, fields.vtu, figures; the metrics (``status`` once done).

    ``stop()`` is polled between the steps; when it asks, the metrics so far
    come back without ``status``.
    """
    from .. import report
    from ._experiment import _space_arrays, build_experiment, expm_statistics, run_title
    from ._scale import split_experiment_arrays

    if stop():
        return {"name": config.name}
    experiment = build_experiment(config)
    if stop():
        return {"name": config.name}
    problem = experiment.problem
    statistics = expm_statistics(
        experiment.model, experiment.true_params, problem.times, problem.solver
    )
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
    report.write_result(folder, split_experiment_arrays(arrays))
    metrics = {
        "name": config.name,
        "coefficient": experiment.coefficient,
        "num_nodes": experiment.space.num_nodes,
        "num_states": experiment.model.num_states,
        "num_data": int(np.asarray(problem.data).size),
        "noise_sigma": float(np.mean(problem.sigma)),
        "solver_statistics": statistics,
    }
    if stop():  # the data are written; the fields and figures are not
        return metrics
    if config.output.vtu:
        report.write_vtu(
            folder,
            experiment.space.points,
            experiment.space.cells,
            experiment.space.cell_type,
            {f"{experiment.coefficient}_true": experiment.true_field},
        )
    if config.output.figures:
        report.draw_figures(folder)
    # Every solve reached its output times within solver.tol (one that gives up raises).
    return {**metrics, "status": "converged"}

"""``python -m pdeinv compare CONFIG.yaml``: pdeinv vs diffrax on the config's problem."""

from __future__ import annotations

import datetime
from pathlib import Path

from ._common import add_config_arguments, prepare, run_folder
from ._sections import RunConfig

_DEFAULT_BUDGET_S = 240.0


def register(subparsers) -> None:
    from ..reference._compare import DEFAULT_SOLVERS, DEFAULT_TOLS, SOLVER_CHOICES

    parser = subparsers.add_parser(
        "compare",
        help="time and accuracy of value+gradient: pdeinv vs diffrax on the config's problem",
        description=(
            "At the true parameters of CONFIG.yaml, measure forward and value+gradient wall "
            "time (jitted, warm, median), matvecs, peak memory and the relative error of the "
            "states and of the gradient of the data misfit against a tight reference, for "
            "pdeinv at several tolerances and for diffrax solvers. Writes compare.json, "
            "compare.md and work_precision.png to the output folder and prints the table."
        ),
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--tols",
        nargs="+",
        type=float,
        default=list(DEFAULT_TOLS),
        metavar="TOL",
        help="pdeinv tol / diffrax rtol values (default: %(default)s)",
    )
    parser.add_argument(
        "--solvers",
        nargs="+",
        default=list(DEFAULT_SOLVERS),
        choices=SOLVER_CHOICES,
        metavar="SOLVER",
        help=f"solver families, from {', '.join(SOLVER_CHOICES)} (default: %(default)s)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=_DEFAULT_BUDGET_S,
        metavar="SECONDS",
        help="time budget of the whole comparison; rows past it are reported as skipped "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed warm runs per measurement (median)"
    )
    parser.add_argument(
        "--reference",
        choices=("auto", "pdeinv", "dopri8"),
        default="auto",
        help="tight reference: pdeinv tol 1e-12 cross-checked by diffrax Dopri8 rtol 1e-12 "
        "(auto), or one of them",
    )
    parser.set_defaults(func=run)


def problem_from_config(config: RunConfig):
    """The config's problem at its true parameters, with the data misfit as the loss."""
    import jax.numpy as jnp

    from ..reference._compare import CompareProblem
    from ._config import ConfigError
    from ._experiment import build_experiment

    if config.data.source != "synthetic":
        raise ConfigError("compare needs data.source = synthetic (it runs at the true parameters)")
    experiment = build_experiment(config)
    problem = experiment.problem
    model = experiment.model
    dtype = model.u0.dtype
    data = jnp.asarray(problem.data, dtype)
    sigma = jnp.asarray(problem.sigma, dtype)

    def misfit(states):
        residual = (problem.observation(model.observe(states)) - data) / sigma
        return 0.5 * jnp.sum(residual**2)

    options = {k: v for k, v in problem.solver.items() if k not in ("tol", "gradient", "method")}
    return CompareProblem(
        model=model,
        params=experiment.true_params,
        times=problem.times,
        loss=misfit,
        name=config.name,
        pdeinv_options=options,
    )


def run(args) -> int:
    from ..reference._compare import compare, solver_configs, to_markdown, write_outputs

    config = prepare(args)
    out = args.out
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = str(Path("runs") / f"{config.name}-compare-{stamp}")
    configs = solver_configs(args.solvers, args.tols)  # validates before any work
    folder = run_folder(config.name, out, args.force)
    problem = problem_from_config(config)
    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    result = compare(
        problem,
        configs,
        repeats=args.repeats,
        budget=args.budget,
        reference=args.reference,
        progress=say,
    )
    paths = write_outputs(result, folder)
    print()
    print(to_markdown(result))
    print(f"wrote {paths['json']}, {paths['markdown']}, {paths['figure']}")
    return 0

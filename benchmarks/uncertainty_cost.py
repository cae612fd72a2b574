"""Cost of the Laplace posterior (``uncertainty.enabled``) against the cost of the fit.

For each config: build the run as ``python -m pdeinv fit`` does, fit (timed: the
optimiser's wall time, compilation included, as ``fit_time_s`` of metrics.json),
then compute :func:`pdeinv.inverse.laplace_posterior` at the fitted point: once at
rank 1 (the ``first call`` column: compiling the Hessian-vector products, which a run
pays once), then for each rank (timed: prior, eigensolver with its products, the
pointwise std of the nodal field; compiled programs reused).  A run with
``uncertainty.enabled`` costs ``first call + uncertainty`` of its rank.  The ``std change``
column is ``max |std_r - std_R| / max std_R`` of the nodal field against the
largest rank ``R`` run: what truncating the spectrum costs in accuracy.

Usage::

    python benchmarks/uncertainty_cost.py                              # both configs
    python benchmarks/uncertainty_cost.py --configs examples/heat.yaml --ranks 20 50 200
    python benchmarks/uncertainty_cost.py --configs examples/heat_large.yaml --ranks 5 10 \\
        --override optimizer.max_iter=15

Prints a markdown table and the machine; ``--markdown PATH`` also writes it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _machine import machine_line  # noqa: E402  (benchmarks/ is the script's path)

from pdeinv import inverse
from pdeinv.cli._common import configure_jax
from pdeinv.cli._config import load_config
from pdeinv.cli._experiment import build_experiment, fit_experiment
from pdeinv.cli._sections import RunConfig
from pdeinv.cli._uncertainty import posterior_options


def run(config_path: str, ranks, method: str, overrides) -> list[dict]:
    config = RunConfig.from_dict(load_config(config_path, overrides))
    configure_jax(config.precision)
    experiment = build_experiment(config)
    outcome = fit_experiment(experiment)
    field = experiment.problem.parameters.field
    x = np.asarray(outcome.result.x, dtype=float)
    rows, stds = [], []
    options = posterior_options(experiment)
    start = time.perf_counter()
    inverse.laplace_posterior(experiment.problem, x, weight=outcome.weight,
                              **{**options, "rank": 1, "oversampling": 0})  # fmt: skip
    first_call = time.perf_counter() - start
    for rank in sorted(ranks):
        options = posterior_options(experiment)
        options.update(rank=rank, method=method)
        start = time.perf_counter()
        posterior = inverse.laplace_posterior(
            experiment.problem, x, weight=outcome.weight, **options
        )
        std = posterior.field_std(field)
        elapsed = time.perf_counter() - start
        stds.append(std)
        rows.append(
            {
                "config": config_path,
                "unknowns": experiment.problem.parameters.size,
                "fit_s": outcome.fit_time_s,
                "evaluations": outcome.result.num_evaluations,
                "iterations": outcome.result.iterations,
                "rank": posterior.eigenvalues.size,
                "products": posterior.num_hessian_products,
                "kind": posterior.hessian_kind,
                "above_1": int(np.sum(posterior.eigenvalues > 1)),
                "uncertainty_s": elapsed,
                "first_call_s": first_call,
                "log_evidence": posterior.log_evidence,
            }
        )
    reference = stds[-1]
    for row, std in zip(rows, stds, strict=True):
        row["std_change"] = float(np.max(np.abs(std - reference)) / np.max(reference))
    return rows


def table(rows) -> str:
    lines = [
        "| config | unknowns | fit [s] (evaluations) | rank | Hessian-vector products | "
        "eigenvalues > 1 | first call [s] | uncertainty [s] | (first call + uncertainty) / fit "
        "| std change vs largest rank |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['config']}` | {r['unknowns']} | {r['fit_s']:.1f} ({r['evaluations']}) | "
            f"{r['rank']} | {r['products']} ({r['kind']}) | {r['above_1']} | "
            f"{r['first_call_s']:.1f} | {r['uncertainty_s']:.1f} | "
            f"{(r['first_call_s'] + r['uncertainty_s']) / r['fit_s']:.2f} | "
            f"{r['std_change']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", nargs="+", default=["examples/heat.yaml", "examples/heat_large.yaml"]
    )
    parser.add_argument("--ranks", nargs="+", type=int, default=[10, 25, 50])
    parser.add_argument("--method", default="randomized", choices=("randomized", "lanczos"))
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--markdown", metavar="PATH")
    args = parser.parse_args()
    rows = []
    for path in args.configs:
        rows += run(path, args.ranks, args.method, args.override)
        print(table(rows), flush=True)
    text = f"{table(rows)}\n\nMachine: {machine_line()}.\n"
    print(f"\nMachine: {machine_line()}.")
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()

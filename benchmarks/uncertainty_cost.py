"""Cost of the Laplace posterior (``uncertainty.enabled``) against the cost of the fit.

For each config: build the run as ``python -m pdeinv fit`` does, fit (timed: the
optimiser's wall time, compilation included, as ``fit_time_s`` of metrics.json),
then, for each Hessian (``--hessians``: ``uncertainty.hessian``) and eigensolver
(``--methods``: ``uncertainty.method``), compute
:func:`pdeinv.inverse.laplace_posterior` at the fitted point: once at rank 1 (the
``first call`` column: compiling the Hessian-vector products, which a run pays once;
the compiled products are forgotten before each pair, so that each pays its own),
then for each rank (timed: prior, eigensolver with its products, the pointwise std
of the nodal field; compiled programs reused).  A run with ``uncertainty.enabled``
costs ``first call + uncertainty`` of its rank.  The ``std change`` column is
``max |std_r - std_R| / max std_R`` of the nodal field against the largest rank
``R`` of the first pair: what truncating the spectrum (and the other pairs' own
errors) cost in accuracy.  A pair that fails is reported and skipped.

Usage::

    python benchmarks/uncertainty_cost.py --configs ../examples/heat.yaml \
        --ranks 25 100 200 --methods randomized nystrom lanczos \
        --hessians gauss-newton gradient-difference
    python benchmarks/uncertainty_cost.py --configs ../examples/heat_large.yaml \
        --ranks 4 8 --methods lanczos --hessians gradient-difference gauss-newton \
        --override uncertainty.oversampling=4

Prints a markdown table and the machine; ``--markdown PATH`` also writes it.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
from _machine import machine_line  # noqa: E402  (benchmarks/ is the script's path)

from pdeinv import inverse
from pdeinv.cli._common import configure_jax
from pdeinv.cli._config import load_config
from pdeinv.cli._experiment import build_experiment, fit_experiment
from pdeinv.cli._sections import RunConfig
from pdeinv.cli._uncertainty import posterior_options
from pdeinv.inverse import _laplace


def run(config_path: str, ranks, methods, hessians, overrides) -> list[dict]:
    config = RunConfig.from_dict(load_config(config_path, overrides))
    configure_jax(config.precision)
    experiment = build_experiment(config)
    outcome = fit_experiment(experiment)
    problem = experiment.problem
    field = problem.parameters.field
    x = np.asarray(outcome.result.x, dtype=float)
    rows = []
    for hessian, method in itertools.product(hessians, methods):
        # Each method pays its own compilation, as a run would (the products' programs
        # are cached per problem and block width: forget them).
        _laplace._GN_PROGRAMS.pop(problem, None)
        _laplace._FD_PROGRAMS.pop(problem, None)
        options = {**posterior_options(experiment), "method": method, "hessian": hessian}
        start = time.perf_counter()
        try:
            inverse.laplace_posterior(problem, x, weight=outcome.weight,
                                      **{**options, "rank": 1, "oversampling": 0})  # fmt: skip
        except Exception as err:  # noqa: BLE001 - reported in the table, the others go on
            print(f"{config_path} {hessian} {method}: FAILED: {str(err)[:300]}", flush=True)
            continue
        first_call = time.perf_counter() - start
        method_rows, stds = [], []
        for rank in sorted(ranks):
            options.update(rank=rank)
            start = time.perf_counter()
            posterior = inverse.laplace_posterior(problem, x, weight=outcome.weight, **options)
            std = posterior.field_std(field)
            elapsed = time.perf_counter() - start
            stds.append(std)
            method_rows.append(
                {
                    "config": config_path,
                    "unknowns": problem.parameters.size,
                    "fit_s": outcome.fit_time_s,
                    "evaluations": outcome.result.num_evaluations,
                    "method": method,
                    "hessian": hessian,
                    "rank": posterior.eigenvalues.size,
                    "products": posterior.num_hessian_products,
                    "kind": posterior.hessian_kind,
                    "above_1": int(np.sum(posterior.eigenvalues > 1)),
                    "uncertainty_s": elapsed,
                    "first_call_s": first_call,
                    "log_evidence": posterior.log_evidence,
                    "std": std,
                }
            )
        rows += method_rows
        print(table(method_rows, with_change=False), flush=True)
    # Truncation error: against the largest rank of the first method and Hessian.
    reference = rows[len(ranks) - 1]["std"]
    for row in rows:
        row["std_change"] = float(np.max(np.abs(row["std"] - reference)) / np.max(reference))
    return rows


def table(rows, with_change=True) -> str:
    lines = [
        "| config | unknowns | fit [s] (evaluations) | method | rank | Hessian-vector products | "
        "eigenvalues > 1 | first call [s] | uncertainty [s] | (first call + uncertainty) / fit "
        "| std change vs largest rank |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['config']}` | {r['unknowns']} | {r['fit_s']:.1f} ({r['evaluations']}) | "
            f"{r['method']} | {r['rank']} | {r['products']} ({r['kind']}) | {r['above_1']} | "
            f"{r['first_call_s']:.1f} | {r['uncertainty_s']:.1f} | "
            f"{(r['first_call_s'] + r['uncertainty_s']) / r['fit_s']:.2f} | "
            + (f"{r['std_change']:.1e} |" if with_change else " |")
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", nargs="+", default=["examples/heat.yaml", "examples/heat_large.yaml"]
    )
    parser.add_argument("--ranks", nargs="+", type=int, default=[10, 25, 50])
    parser.add_argument(
        "--methods", nargs="+", default=["randomized"], choices=inverse._laplace.METHODS
    )
    parser.add_argument(
        "--hessians", nargs="+", default=["gauss-newton"], choices=_laplace.HESSIANS
    )
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--markdown", metavar="PATH")
    args = parser.parse_args()
    rows = []
    for path in args.configs:
        rows += run(path, args.ranks, args.methods, args.hessians, args.override)
        print(table(rows), flush=True)
    text = f"{table(rows)}\n\nMachine: {machine_line()}.\n"
    print(f"\nMachine: {machine_line()}.")
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()

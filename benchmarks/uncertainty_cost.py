"""Cost of the Laplace posterior (``uncertainty.enabled``) against the cost of the fit.

For each config: build the run as ``python -m pdeinv fit`` does, fit (timed: the
optimiser's wall time, compilation included, as ``fit_time_s`` of metrics.json),
then, for each Hessian (``--hessians``: ``uncertainty.hessian``), eigensolver
(``--methods``: ``uncertainty.method``, ``auto`` the default) and rank (``--ranks``;
``default`` is ``uncertainty.rank: null``), compute
:func:`pdeinv.inverse.laplace_posterior` at the fitted point and the pointwise std of
the nodal field, timed from cold: every compiled program of the posterior is
forgotten first, so the time is what a run with ``uncertainty.enabled`` adds to the
fit (compilation, prior, products or Jacobian, eigensolver, std).  ``std change`` is
``max |std - std_ref| / max std_ref`` of the nodal field and ``Δ log evidence``
``log_evidence - log_evidence_ref``, against the largest rank of the first
(Hessian, method) pair (with ``--methods jacobian --ranks N`` for ``N`` unknowns: the
exact Gauss–Newton posterior).  A pair that fails is reported and skipped.

Usage (from ``benchmarks/``)::

    python uncertainty_cost.py --configs ../examples/heat.yaml \
        --methods jacobian auto randomized nystrom --ranks 1024 default
    python uncertainty_cost.py --configs ../examples/heat_large.yaml \
        --methods auto --ranks default --products 8

``--products K`` (product-based methods): time only the first ``K`` products' worth
(compilation included) and extrapolate the rank's count linearly (marked ``~``), for
configs where the full count would take hours.

Prints a markdown table and the machine; ``--markdown PATH`` also writes it.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from _machine import machine_line  # noqa: E402  (benchmarks/ is the script's path)

from pdeinv import inverse
from pdeinv.cli._common import configure_jax
from pdeinv.cli._config import load_config
from pdeinv.cli._experiment import build_experiment, fit_experiment
from pdeinv.cli._sections import RunConfig
from pdeinv.cli._uncertainty import posterior_options
from pdeinv.inverse import _laplace


def _forget_programs(problem) -> None:
    # A run compiles the posterior's programs once: forget them before each row.
    for cache in (_laplace._GN_PROGRAMS, _laplace._FD_PROGRAMS, _laplace._JACOBIAN_PROGRAMS):
        cache.pop(problem, None)


def run(config_path: str, ranks, methods, hessians, overrides, products=None) -> list[dict]:
    config = RunConfig.from_dict(load_config(config_path, overrides))
    configure_jax(config.precision)
    experiment = build_experiment(config)
    outcome = fit_experiment(experiment)
    problem = experiment.problem
    field = problem.parameters.field
    x = np.asarray(outcome.result.x, dtype=float)
    n = problem.parameters.size
    print(f"{config_path}: fit {outcome.fit_time_s:.1f} s, {outcome.result.num_evaluations} "
          f"evaluations; load {load_average()}", flush=True)  # fmt: skip
    rows = []
    for hessian, method in itertools.product(hessians, methods):
        for rank in ranks:
            rank_value = None if rank == "default" else int(rank)
            _forget_programs(problem)
            options = {**posterior_options(experiment), "method": method, "hessian": hessian,
                       "rank": rank_value}  # fmt: skip
            resolved = method
            if method == "auto":
                resolved = inverse._laplace.choose_method(
                    problem, _laplace.default_rank(n) if rank_value is None else rank_value,
                    options["oversampling"], hessian,
                )  # fmt: skip
            estimate = products is not None
            start = time.perf_counter()
            try:
                if estimate:
                    row = _extrapolated(problem, x, outcome, options, resolved, products)
                else:
                    posterior = inverse.laplace_posterior(
                        problem, x, weight=outcome.weight, **options
                    )
                    std = posterior.field_std(field)
                    row = {
                        "rank": posterior.eigenvalues.size,
                        "products": posterior.num_hessian_products,
                        "evaluations": posterior.num_residual_evaluations,
                        "kind": posterior.hessian_kind,
                        "above_1": int(np.sum(posterior.eigenvalues > 1)),
                        "log_evidence": posterior.log_evidence,
                        "std": std,
                        "uncertainty_s": time.perf_counter() - start,
                        "approx": "",
                    }
            except Exception as err:  # noqa: BLE001 - reported in the table, the others go on
                print(f"{config_path} {hessian} {method} {rank}: FAILED: {str(err)[:300]}",
                      flush=True)  # fmt: skip
                continue
            row.update(
                config=config_path, unknowns=n, fit_s=outcome.fit_time_s,
                fit_evaluations=outcome.result.num_evaluations, hessian=hessian,
                method=method if method == resolved else f"{method} ({resolved})",
                load=load_average(),
            )  # fmt: skip
            rows.append(row)
            print(table([row], with_change=False), flush=True)
    # Accuracy: against the largest rank of the first method and Hessian.
    exact_rows = [r for r in rows if r["std"] is not None]
    if exact_rows:
        reference = max(
            (r for r in exact_rows if (r["hessian"], r["method"]) == (
                exact_rows[0]["hessian"], exact_rows[0]["method"])),
            key=lambda r: r["rank"],
        )  # fmt: skip
        for row in exact_rows:
            row["std_change"] = float(
                np.max(np.abs(row["std"] - reference["std"])) / np.max(reference["std"])
            )
            if row["log_evidence"] is not None and reference["log_evidence"] is not None:
                row["evidence_change"] = row["log_evidence"] - reference["log_evidence"]
    return rows


def _extrapolated(problem, x, outcome, options, method, count) -> dict:
    """Time the first ``count`` products (or Jacobian columns; compilation included) and
    scale to the rank's count: compile + first block, then the later blocks' mean."""
    n = problem.parameters.size
    rank = _laplace.default_rank(n) if options["rank"] is None else options["rank"]
    rank = min(rank, n, int(problem.num_observations))
    width = 1 if method == "lanczos" else options["batch_size"]
    block = np.random.default_rng(0).standard_normal((n, width))
    if method == "jacobian":
        full, evaluations, kind = n, 2 * n + 1, "gauss-newton-jacobian"

        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        program = _laplace._hessian._residual_program(problem, dtype, 2 * width)
        points = jnp.asarray(x[None, :] + 1e-3 * np.concatenate([block.T, -block.T]), dtype)

        def apply(_):  # 2 width residual evaluations: width columns
            jax.block_until_ready(program(points))

    else:
        full = {"randomized": 2, "nystrom": 1, "lanczos": 1}[method] * min(
            rank + options["oversampling"], n
        )
        evaluations = 0
        start = time.perf_counter()
        hessian = inverse.misfit_hessian(problem, x, batch_size=width, hessian=options["hessian"])
        apply, kind = hessian.apply, hessian.kind
    start = time.perf_counter()
    apply(block)  # compiles, then the first block
    first = time.perf_counter() - start
    timed, start = width, time.perf_counter()
    while timed < count:
        apply(block)
        timed += width
    later = (time.perf_counter() - start) / (timed - width) if timed > width else first / width
    print(f"  {method}: compile + first {width} columns/products {first:.1f} s, then "
          f"{later:.2f} s each", flush=True)  # fmt: skip
    return {
        "rank": rank, "products": 0 if method == "jacobian" else full, "evaluations": evaluations,
        "kind": kind, "above_1": None, "log_evidence": None, "std": None,
        "uncertainty_s": first + later * (full - width), "approx": "~",
    }  # fmt: skip


def load_average() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def table(rows, with_change=True) -> str:
    lines = [
        "| config | unknowns | fit [s] (evaluations) | Hessian | method | rank | "
        "Hessian-vector products | forward evaluations | eigenvalues > 1 | uncertainty [s] | "
        "uncertainty / fit | std change | Δ log evidence | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        change = r.get("std_change") if with_change else None
        evidence = r.get("evidence_change") if with_change else None
        lines.append(
            f"| `{r['config']}` | {r['unknowns']} | {r['fit_s']:.1f} ({r['fit_evaluations']}) | "
            f"{r['hessian']} ({r['kind']}) | {r['method']} | {r['rank']} | {r['products']} | "
            f"{r['evaluations']} | {'—' if r['above_1'] is None else r['above_1']} | "
            f"{r['approx']}{r['uncertainty_s']:.1f} | "
            f"{r['approx']}{r['uncertainty_s'] / r['fit_s']:.2f} | "
            f"{'—' if change is None else f'{change:.1e}'} | "
            f"{'—' if evidence is None else f'{evidence:+.2e}'} | {r['load']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", nargs="+", default=["examples/heat.yaml", "examples/heat_large.yaml"]
    )
    parser.add_argument("--ranks", nargs="+", default=["default"], help="ints or 'default'")
    parser.add_argument("--methods", nargs="+", default=["auto"], choices=_laplace.METHODS)
    parser.add_argument("--products", type=int, metavar="K")
    parser.add_argument(
        "--hessians", nargs="+", default=["gauss-newton"], choices=_laplace.HESSIANS
    )
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--markdown", metavar="PATH")
    args = parser.parse_args()
    rows = []
    for path in args.configs:
        rows += run(path, args.ranks, args.methods, args.hessians, args.override, args.products)
        print(table(rows), flush=True)
    text = f"{table(rows)}\n\nMachine: {machine_line()}.\n"
    print(f"\nMachine: {machine_line()}.")
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()

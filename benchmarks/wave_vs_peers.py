"""pdeinv vs diffrax on the seed paper's wave case study (issue 13 benchmark).

Problem: ``examples/wave_paper.yaml`` (u_tt = c^2 lap u, Neumann by edge padding,
unit square, T = 1, smooth random speed field and initial condition, 8 full-field
snapshots, loss = data misfit at the true parameters) on n x n grids.  Rows: pdeinv
(skew Lanczos in velocity-stress form, two-sided adjoint) at tol 1e-4/1e-6/1e-8, and
diffrax Tsit5 and Dopri8 with RecursiveCheckpointAdjoint, Dopri5 with
BacksolveAdjoint (rtol 1e-4/1e-6/1e-8) and Tsit5 at fixed steps at the stability
limit, all on the same semi-discrete system, and Dopri8 at rtol 1e-10 (``--extra``),
the one diffrax row as accurate as pdeinv at tol 1e-8.  Reference: pdeinv at tol 1e-12,
cross-checked against diffrax Dopri8 at rtol 1e-12 on every grid (the table
header says how far the two disagree).

    python benchmarks/wave_vs_peers.py                  # 64^2 and 128^2 (~15 minutes)
    python benchmarks/wave_vs_peers.py --grids 32       # smoke run

Prints a markdown table per grid with the machine and writes
benchmarks/wave_vs_peers.{json,md} and the work-precision figures
benchmarks/wave_vs_peers_<n>.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "examples" / "wave_paper.yaml"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--tols", nargs="+", type=float, default=[1e-4, 1e-6, 1e-8])
    parser.add_argument(
        "--extra",
        nargs="*",
        default=["dopri8:1e-10"],
        metavar="SOLVER:RTOL",
        help="further rows beyond solvers x tols (default: Dopri8 at rtol 1e-10, so that "
        "pdeinv's tol-1e-8 gradient has an as-accurate diffrax rival)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=900.0, help="seconds per grid")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the outputs")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import pdeinv

    pdeinv.limit_blas_threads()  # see pdeinv/_threads.py
    from pdeinv.cli._compare import problem_from_config
    from pdeinv.cli._config import load_config
    from pdeinv.cli._sections import RunConfig
    from pdeinv.reference._compare import (
        DEFAULT_SOLVERS,
        SOLVER_CHOICES,
        SolverConfig,
        compare,
        solver_configs,
        to_markdown,
        write_outputs,
    )

    extra = []
    for item in args.extra:
        name, colon, rtol = item.partition(":")
        if not colon:
            parser.error(f"--extra: expected SOLVER:RTOL, got {item!r}")
        try:
            extra.append(SolverConfig(name, float(rtol)))
        except ValueError:
            parser.error(f"--extra: RTOL of {item!r} is not a number")
        fixed = name == "tsit5-fixed"  # fixed steps: no tolerance
        if fixed or name not in SOLVER_CHOICES or not 0 < extra[-1].tol < 1:
            parser.error(
                f"--extra: expected SOLVER:RTOL, SOLVER an adaptive one of {SOLVER_CHOICES}, "
                f"0 < RTOL < 1; got {item!r}"
            )
    results, tables = {}, []
    for n in args.grids:
        config = RunConfig.from_dict(load_config(str(CONFIG), [f"model.grid=[{n}, {n}]"]))
        problem = problem_from_config(config)
        result = compare(
            problem,
            solver_configs(DEFAULT_SOLVERS, args.tols) + extra,
            repeats=args.repeats,
            budget=args.budget,
            cross_check_max_states=10**8,  # cross-check the reference on every grid
            progress=lambda line: print(line, flush=True),
        )
        table = f"### {n}x{n}\n\n" + to_markdown(result)
        print("\n" + table, flush=True)
        tables.append(table)
        results[str(n)] = result
        paths = write_outputs(result, args.out / f"wave_vs_peers_{n}")
        paths["figure"].replace(args.out / f"wave_vs_peers_{n}.png")
    command = "python benchmarks/wave_vs_peers.py " + " ".join(
        [f"--grids {' '.join(map(str, args.grids))}", f"--repeats {args.repeats}"]
        + ([f"--extra {' '.join(args.extra)}"] if args.extra != ["dopri8:1e-10"] else [])
    )
    for n in args.grids:  # per-grid compare.json/md live on in the combined files
        folder = args.out / f"wave_vs_peers_{n}"
        for name in ("compare.json", "compare.md"):
            (folder / name).unlink()
        folder.rmdir()
    (args.out / "wave_vs_peers.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "wave_vs_peers.md").write_text(
        f"Produced by `{command}`.\n\n" + "\n\n".join(tables) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

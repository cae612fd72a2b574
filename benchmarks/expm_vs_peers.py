"""pdeinv.expm_multiply vs its peers on 2-D variable-coefficient heat (issue 4 benchmark).

Problem: u_t = div(kappa grad u) on the unit square, Neumann, cell-centred n x n
grid (pdeinv.models.heat_fd), kappa = exp(0.5 sin(2 pi x) cos(pi y)), a Gaussian
bump as u0, final time T with T * ||A||_2-bound = 600 (stiff), loss
0.5 ||u(T) - y||^2 with y the solution for kappa = 1, gradient w.r.t. the nodal
log kappa.  For each configuration: forward and value+gradient wall time (jitted,
warm, median), matvecs, peak memory (XLA buffer assignment) and the relative
error of u(T) and of the gradient against pdeinv at tol 1e-12 (cross-checked
with diffrax Dopri8 at rtol 1e-12).

Rows: pdeinv tol 1e-4/1e-6/1e-8 (two-sided adjoint) and with the paper's
discrete adjoint; matfree ``funm_arnoldi`` (the paper's library: one Arnoldi
projection, or several substeps) with the same Krylov size 30; diffrax Tsit5
adaptive + RecursiveCheckpointAdjoint, Tsit5 fixed steps at the stability
limit, Dopri5 + BacksolveAdjoint; scipy ``expm_multiply`` (forward only).

    python benchmarks/expm_vs_peers.py            # 64^2 and 128^2 (several minutes)
    python benchmarks/expm_vs_peers.py --quick    # 24^2 smoke run

Prints a markdown table per grid and the machine, writes
benchmarks/expm_vs_peers.png (work-precision) and benchmarks/expm_vs_peers.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

import pdeinv

jax.config.update("jax_enable_x64", True)
pdeinv.limit_blas_threads()  # see pdeinv/_threads.py

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from pdeinv.reference import _compare  # noqa: E402
from pdeinv.reference._compare import (  # noqa: E402
    CompareProblem,
    ExternalSolver,
    SolverConfig,
)

STIFFNESS = 600.0  # T * ||A||_2 bound
KRYLOV_DIM = 30


def heat_problem(n: int):
    """The benchmark problem on an n x n grid and its parameters."""
    from pdeinv.discretize import grid
    from pdeinv.models import heat_fd, simulate

    space = grid((n, n))
    x, y = space.points[:, 0], space.points[:, 1]
    log_kappa = 0.5 * np.sin(2 * np.pi * x) * np.cos(np.pi * y)
    u0 = np.exp(-30.0 * ((x - 0.35) ** 2 + (y - 0.6) ** 2))
    model = heat_fd(space, log_kappa, u0)
    params = {"log_kappa": jnp.asarray(log_kappa)}
    T = STIFFNESS / float(model.norm_estimate(params))
    times = np.array([T])
    target = simulate(model, {"log_kappa": jnp.zeros_like(params["log_kappa"])}, times, tol=1e-10)

    def loss(states):
        return 0.5 * jnp.sum((states - target) ** 2)

    problem = CompareProblem(model, params, times, loss, name=f"heat {n}x{n}",
                             pdeinv_options={"krylov_dim": KRYLOV_DIM})  # fmt: skip
    return problem, space


def matfree_rows(problem, substeps=(1, 8)):
    """matfree funm_arnoldi (Krämer et al.'s library) at Krylov size 30, if installed."""
    try:
        from matfree import decomp, funm
    except ImportError:
        return [], "matfree not installed (pip install matfree): rows skipped"
    model, T = problem.model, float(problem.times[-1])
    hessenberg = decomp.hessenberg(KRYLOV_DIM, reortho="full")
    expm_action = funm.funm_arnoldi(funm.dense_funm_pade_exp(), hessenberg)
    rows = []
    for s in substeps:
        tau = T / s

        def scaled(v, log_kappa, tau=tau):
            return tau * model.matvec(v, {"log_kappa": log_kappa})

        def forward(params, s=s, scaled=scaled):
            u = model.u0
            for _ in range(s):
                u = expm_action(scaled, u, params["log_kappa"])
            return u[None, :]

        def value_and_grad(params, forward=forward):
            return jax.value_and_grad(lambda p: problem.loss(forward(p)))(params)

        rows.append(
            ExternalSolver(
                label=f"matfree funm_arnoldi k={KRYLOV_DIM}, {s} substep(s)",
                family=f"matfree-{s}",
                family_label=f"matfree funm_arnoldi (k={KRYLOV_DIM} x {s})",
                forward=forward,
                value_and_grad=value_and_grad,
                num_matvecs=KRYLOV_DIM * s,
            )
        )
    return rows, None


def scipy_row(problem, space):
    """scipy.sparse.linalg.expm_multiply on the assembled sparse matrix (forward only)."""
    import scipy.sparse.linalg as spla

    from pdeinv.discretize import stencil_to_sparse

    model, T = problem.model, float(problem.times[-1])
    A = stencil_to_sparse(space, model.matvec, problem.params).tocsr()
    u0 = np.asarray(model.u0)

    def forward(params):
        return spla.expm_multiply(T * A, u0)[None, :]

    return ExternalSolver(
        label="scipy expm_multiply (forward only)",
        family="scipy",
        family_label="scipy expm_multiply",
        forward=forward,
        jittable=False,
    )


def configs(quick: bool):
    tols = (1e-4, 1e-6, 1e-8)
    rows = [SolverConfig("pdeinv", t) for t in tols]
    rows += [SolverConfig("pdeinv-discrete", t) for t in (1e-6, 1e-8)]
    rows += [SolverConfig("tsit5-fixed", None)]
    rows += [SolverConfig("tsit5", t) for t in tols]
    rows += [SolverConfig("dopri5-backsolve", t) for t in tols]
    if quick:
        rows = [r for r in rows if r.tol in (None, 1e-4, 1e-8)]
    return rows


def run(n, args):
    problem, space = heat_problem(n)
    extra, note = matfree_rows(problem)
    rows = configs(args.quick) + extra + [scipy_row(problem, space)]
    lines = []

    def say(line):
        lines.append(line)
        print(f"  [{n}x{n}] {line}", flush=True)

    result = _compare.compare(problem, rows, repeats=args.repeats, budget=args.budget,
                              progress=say)  # fmt: skip
    if note:
        result["summary"].append(note)
    return result


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(10.0, 4.6 * len(results)),
                             squeeze=False, constrained_layout=True)  # fmt: skip
    for ax, result in zip(axes[:, 0], results, strict=True):
        _compare.draw_work_precision(ax, result)
        ax.axhline(1e-6, color="grey", linewidth=0.8, linestyle=":")
    m = results[0]["machine"]
    fig.suptitle(f"pdeinv vs peers, 2-D variable-coefficient heat ({m['processor']}, "
                 f"{m['cpu_count']} CPUs, {m['device']})", fontsize=10)  # fmt: skip
    fig.savefig(path, dpi=130)
    plt.close(fig)


def replot(json_path, out):
    """Redraw the figure and table from a saved JSON (no solves; verdicts recomputed)."""
    results = json.loads(Path(json_path).read_text())
    for result in results:
        uncertainty = result["reference"].get("uncertainty", 0.0)
        result["speedups"] = _compare.speedups(result["rows"], uncertainty)
        result["summary"] = _compare.summary_lines(result)
    text = "\n".join(_compare.to_markdown(r) for r in results)
    out.with_suffix(".md").write_text(text)
    plot(results, out.with_suffix(".png"))
    print(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="24x24 smoke run")
    parser.add_argument("--replot", metavar="JSON",
                        help="only redraw the figure and table from a saved JSON")  # fmt: skip
    parser.add_argument("--grids", type=int, nargs="+", default=None, help="grid sizes n (n x n)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=None, help="seconds per grid")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix("")),
                        help="output prefix (.png, .json, .md)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.replot:
        replot(args.replot, Path(args.out))
        return 0
    grids = args.grids or ([24] if args.quick else [64, 128])
    start = time.perf_counter()
    results = []
    for n in grids:
        print(f"grid {n}x{n} ...", flush=True)
        results.append(run(n, args))
    md = []
    for result in results:
        md.append(_compare.to_markdown(result))
    text = "\n".join(md)
    print()
    print(text)
    out = Path(args.out)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(
        json.dumps([_compare._jsonable(r) for r in results], indent=2, allow_nan=False) + "\n"
    )
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.png')}, {out.with_suffix('.json')}, {out.with_suffix('.md')}"
          f" in {time.perf_counter() - start:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

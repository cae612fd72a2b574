"""Cost of a source term: symmetric heat with boundary data vs the same homogeneous solve.

Issue 13, item 4: an affine symmetric model ``u' = A u + b`` must keep the symmetric
path, at most 1.5x the cost of the homogeneous solve at equal tol.  Problem: 2-D heat
(pdeinv.models.heat_fd), n x n grid, kappa = exp(0.5 sin(2 pi x) cos(pi y)), a Gaussian
bump as u0, T with T * ||A|| = 600; the affine case holds u = 1 on the left side
(Dirichlet data: a source term b(kappa)), the homogeneous case u = 0 there.  Loss
0.5 ||u(T)||^2, gradient w.r.t. the nodal log kappa.  Rows: homogeneous Lanczos,
affine with the bordered Lanczos process (``affine-lanczos``, what
``pdeinv.models.simulate`` picks) and affine with Arnoldi on the augmented state
(what it used before).

    python benchmarks/affine_cost.py                 # 64^2 and 128^2
    python benchmarks/affine_cost.py --grids 32      # smoke run

Prints a markdown table (best of --repeats warm runs, the rows timed in turn) and the machine.
"""

from __future__ import annotations

import argparse
import time

import jax

import pdeinv

jax.config.update("jax_enable_x64", True)
pdeinv.limit_blas_threads()  # see pdeinv/_threads.py

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _machine import best_times_interleaved, cpu_name  # noqa: E402

from pdeinv import discretize, models  # noqa: E402

STIFFNESS = 600.0


def problems(n):
    g = discretize.grid((n, n))
    x, y = g.points[:, 0], g.points[:, 1]
    log_kappa = 0.5 * np.sin(2 * np.pi * x) * np.cos(np.pi * y)
    u0 = np.exp(-30.0 * ((x - 0.35) ** 2 + (y - 0.6) ** 2))
    homogeneous = models.heat_fd(g, log_kappa, u0, bc={"xmin": "dirichlet", "default": "neumann"})
    affine = models.heat_fd(
        g, log_kappa, u0, bc={"xmin": discretize.Dirichlet(1.0), "default": "neumann"}
    )
    t_final = STIFFNESS / float(homogeneous.norm_estimate(homogeneous.params))
    return homogeneous, affine, t_final


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--tols", nargs="+", type=float, default=[1e-6, 1e-8])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"Machine: {cpu_name()}, jax {jax.__version__}, {time.strftime('%Y-%m-%d')}")
    print()
    print(
        "| grid | tol | solve | forward [ms] | value+grad [ms] | matvecs (fwd) "
        "| fwd / homogeneous | v+g / homogeneous |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.grids:
        homogeneous, affine, t_final = problems(n)
        for tol in args.tols:
            rows = [
                ("homogeneous, lanczos", homogeneous, {}),
                ("affine, affine-lanczos", affine, {}),
                ("affine, arnoldi (augmented)", affine, {"method": "arnoldi"}),
            ]
            timed = []
            for label, model, extra in rows:
                options = dict(tol=tol, **extra)
                params = model.params

                def forward(p, model=model, options=options, t_final=t_final):
                    return models.simulate_info(model, p, t_final, **options)

                def loss(p, model=model, options=options, t_final=t_final):
                    return 0.5 * jnp.sum(models.simulate(model, p, t_final, **options) ** 2)

                fwd = jax.jit(forward)
                vg = jax.jit(jax.value_and_grad(loss))
                matvecs = int(fwd(params)[1].num_matvecs)
                timed.append((label, matvecs, lambda f=fwd, p=params: f(p)))
                timed.append((label, matvecs, lambda f=vg, p=params: f(p)))
            seconds = best_times_interleaved([fn for _, _, fn in timed], args.repeats)
            base = (seconds[0], seconds[1])
            for r in range(0, len(timed), 2):
                label, matvecs, _ = timed[r]
                t_fwd, t_vg = seconds[r], seconds[r + 1]
                print(
                    f"| {n}x{n} | {tol:g} | {label} | {1e3 * t_fwd:.1f} | {1e3 * t_vg:.1f} | "
                    f"{matvecs} | {t_fwd / base[0]:.2f} | {t_vg / base[1]:.2f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

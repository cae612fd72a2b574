"""Cost and accuracy of forward mode: one JVP against one forward solve.

Issue 14, item 3: one Jacobian-vector product of ``pdeinv.models.simulate`` (``jax.jvp``
with respect to the model's parameters, a random direction) must cost at most 3x one
forward solve at the same tol.  Problems (n x n grids, float64): 2-D heat (Lanczos),
advection-diffusion (Arnoldi) and the wave in its skew form (skew Lanczos), each with a
smooth coefficient field and a Gaussian bump as initial state.  Rows also give
value+gradient (reverse mode) and the tangent's relative error against a JVP at
tol 1e-12.

    python benchmarks/forward_mode.py                 # 64^2
    python benchmarks/forward_mode.py --grids 32      # smoke run

Prints a markdown table (best of --repeats warm runs, the three functions of a row timed
in turn) and the machine.
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


def problems(n):
    g = discretize.grid((n, n))
    x, y = g.points[:, 0], g.points[:, 1]
    field = 0.5 * np.sin(2 * np.pi * x) * np.cos(np.pi * y)
    u0 = np.exp(-30.0 * ((x - 0.35) ** 2 + (y - 0.6) ** 2))
    heat = models.heat_fd(g, field, u0)
    adv = models.advection_diffusion_fd(g, field - 3.0, (1.0, 0.5), u0)
    wave = models.wave_fd(g, field, u0)
    return [("heat", heat, 0.05), ("advection-diffusion", adv, 0.2), ("wave (skew)", wave, 0.5)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", nargs="+", type=int, default=[64])
    parser.add_argument("--tols", nargs="+", type=float, default=[1e-6, 1e-8])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"Machine: {cpu_name()}, jax {jax.__version__}, {time.strftime('%Y-%m-%d')}")
    print()
    print(
        "| problem | grid | tol | forward [ms] | JVP [ms] | value+grad [ms] "
        "| JVP / forward | v+g / forward | tangent error |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.grids:
        for label, model, t_final in problems(n):
            params = model.params
            leaves, treedef = jax.tree_util.tree_flatten(params)
            rng = np.random.default_rng(0)
            direction = jax.tree_util.tree_unflatten(
                treedef, [jnp.asarray(rng.standard_normal(np.shape(x))) for x in leaves]
            )
            ref_tangent = None
            for tol in sorted(args.tols + [1e-12]):

                def forward(p, model=model, tol=tol, t_final=t_final):
                    return models.simulate(model, p, t_final, tol=tol)

                def loss(p, forward=forward):
                    return 0.5 * jnp.sum(forward(p) ** 2)

                fwd = jax.jit(forward)
                jvp = jax.jit(lambda p, forward=forward, d=direction: jax.jvp(forward, (p,), (d,)))
                vg = jax.jit(jax.value_and_grad(loss))
                tangent = np.asarray(jvp(params)[1])
                if tol == 1e-12:
                    ref_tangent = tangent
                    continue
                error = np.linalg.norm(tangent - ref_tangent) / np.linalg.norm(ref_tangent)
                # Timed in turn, so that a burst of load cannot favour one of them.
                t_fwd, t_jvp, t_vg = best_times_interleaved(
                    [lambda f=f, p=params: f(p) for f in (fwd, jvp, vg)], args.repeats
                )
                print(
                    f"| {label} | {n}x{n} | {tol:g} | {1e3 * t_fwd:.1f} | {1e3 * t_jvp:.1f} | "
                    f"{1e3 * t_vg:.1f} | {t_jvp / t_fwd:.2f} | {t_vg / t_fwd:.2f} | {error:.1e} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

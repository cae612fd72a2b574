"""float32 vs float64: speed and accuracy of value + gradient of a 2-D heat misfit.

Problem: u_t = div(kappa grad u) on an N x N cell-centred grid (Neumann), nodal
log kappa (a 3x inclusion), smooth initial condition, loss
0.5 sum_i ||u(t_i) - d_i||^2 at t = 0.001, 0.002, 0.004 with d from the true kappa,
evaluated at kappa = 1 (a first optimiser iterate).  Gradients by the two-sided
adjoint of ``pdeinv.expm_multiply`` (Lanczos, Krylov dimension 30).  Errors are
relative to float64 at tol 1e-10.  Times are the best of ``--repeats`` runs after
a warm-up (compile excluded); the device is whatever JAX picks (CPU here; a GPU
runs the same script unchanged).

Usage::

    python benchmarks/precision.py                 # 128^2 and 256^2
    python benchmarks/precision.py --grids 64 128
"""

from __future__ import annotations

import argparse

import jax

import pdeinv

jax.config.update("jax_enable_x64", True)  # a script may; the library never does
pdeinv.limit_blas_threads()  # see pdeinv/_threads.py

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _machine import best_time, machine_line  # noqa: E402  (benchmarks/ is the script's path)

from pdeinv import models  # noqa: E402
from pdeinv.discretize import grid  # noqa: E402
from pdeinv.expm import expm_multiply_info  # noqa: E402

TIMES = (0.001, 0.002, 0.004)


def problem(n):
    space = grid((n, n))
    x, y = space.points.T
    true_log_kappa = np.log(1.0 + 2.0 * ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.15**2))
    u0 = np.cos(3 * np.pi * x) + np.cos(3 * np.pi * y + 0.3) + np.sin(np.pi * x) * np.sin(np.pi * y)
    model = models.heat_fd(space, true_log_kappa, u0)
    data = models.simulate(model, model.params, jnp.asarray(TIMES), tol=1e-10)
    return model, np.asarray(data)


def evaluators(model, data, dtype, tol):
    u0 = model.u0.astype(dtype)
    times = jnp.asarray(TIMES, dtype)
    d = jnp.asarray(data, dtype)

    def loss(m):
        u, stats = expm_multiply_info(
            model.matvec, u0, {"log_kappa": m}, times, tol=tol, method="lanczos"
        )
        return 0.5 * jnp.sum((u - d) ** 2), stats

    value = jax.jit(lambda m: loss(m)[0])
    value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    return value, value_and_grad


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for n in args.grids:
        model, data = problem(n)
        m64 = jnp.zeros(n * n)
        _, reference = evaluators(model, data, jnp.float64, 1e-10)
        (ref_value, _), ref_grad = reference(m64)
        for dtype, tol in ((jnp.float64, 1e-8), (jnp.float64, 1e-5), (jnp.float32, 1e-5)):
            m = m64.astype(dtype)
            value, value_and_grad = evaluators(model, data, dtype, tol)
            t_value = best_time(lambda f=value, m=m: f(m), args.repeats)
            t_grad = best_time(lambda f=value_and_grad, m=m: f(m), args.repeats)
            (v, stats), g = value_and_grad(m)
            value_error = abs(float(v) - float(ref_value)) / abs(float(ref_value))
            grad_error = float(
                jnp.linalg.norm(g.astype(jnp.float64) - ref_grad) / jnp.linalg.norm(ref_grad)
            )
            rows.append(
                (n, jnp.dtype(dtype).name, tol, t_value, t_grad, int(stats.num_steps),
                 value_error, grad_error)
            )  # fmt: skip
    print("### float32 vs float64: value + gradient of a 2-D heat misfit\n")
    print(f"Machine: {machine_line()}.\n")
    print(
        "| grid | dtype | tol | steps | value | value + grad | speed-up vs float64 (same tol) "
        "| value error | gradient error |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n, dtype, tol, t_value, t_grad, steps, value_error, grad_error in rows:
        same_tol64 = next(r for r in rows if r[0] == n and r[1] == "float64" and r[2] == tol)
        speedup = same_tol64[4] / t_grad
        print(
            f"| {n}² | {dtype} | {tol:g} | {steps} | {t_value * 1e3:.0f} ms | "
            f"{t_grad * 1e3:.0f} ms | {speedup:.2f}x | {value_error:.1e} | {grad_error:.1e} |"
        )


if __name__ == "__main__":
    main()

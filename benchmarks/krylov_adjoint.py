"""Custom Krylov adjoint vs backprop through the unrolled loop.

Problem: 2-D variable-coefficient diffusion A(theta) u = div(exp(theta) grad u)
(5-point stencil, zero Dirichlet boundary, matvec by array slicing) on an
N x N grid (N = 316, n = 99,856 ~ 1e5), float32. Loss
J(theta) = 0.5 ||V exp(t H) e1 ||v|| ||^2 from krylov_dim Arnoldi or Lanczos
steps; we time value + gradient with respect to the nodal theta (jitted, warm,
median of repeats) and report the compiled executable's temporary-buffer size
(XLA ``memory_analysis().temp_size_in_bytes``: the peak scratch memory of the
computation, excluding inputs and outputs), for

* adjoint: ``pdeinv.krylov.arnoldi`` / ``lanczos`` (custom VJP, Krämer et al.);
* backprop: ``jax.grad`` through the raw ``fori_loop`` iteration.

Usage::

    python benchmarks/krylov_adjoint.py            # full table (n = 1e5)
    python benchmarks/krylov_adjoint.py --quick    # smoke run (small grid)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from _machine import cpu_name  # noqa: E402  (benchmarks/ is the script's path)

from pdeinv.krylov import arnoldi, expm_small, expm_sym_tridiag_e1, lanczos
from pdeinv.krylov._arnoldi import arnoldi_iteration
from pdeinv.krylov._lanczos import lanczos_iteration

MIB = 2.0**20


def make_matvec(grid_size: int):
    inv_h2 = float((grid_size + 1) ** 2)

    def matvec(u, log_kappa):
        shape = (grid_size, grid_size)
        u = u.reshape(shape)
        kappa = jnp.exp(log_kappa).reshape(shape)
        u_pad = jnp.pad(u, 1)  # zero Dirichlet ghost values
        k_pad = jnp.pad(kappa, 1, mode="edge")
        # Face coefficients are arithmetic means, shared by both neighbours: A symmetric.
        east = 0.5 * (kappa + k_pad[1:-1, 2:])
        west = 0.5 * (kappa + k_pad[1:-1, :-2])
        north = 0.5 * (kappa + k_pad[2:, 1:-1])
        south = 0.5 * (kappa + k_pad[:-2, 1:-1])
        flux = (
            east * (u_pad[1:-1, 2:] - u)
            + west * (u_pad[1:-1, :-2] - u)
            + north * (u_pad[2:, 1:-1] - u)
            + south * (u_pad[:-2, 1:-1] - u)
        )
        return (inv_h2 * flux).reshape(-1)

    return matvec


def make_losses(matvec, method: str, krylov_dim: int, t: float):
    def small_exp_e1(h):
        if method == "lanczos":
            return expm_sym_tridiag_e1(jnp.diagonal(h), jnp.diagonal(h, 1), t)
        return expm_small(t * h)[:, 0]

    def loss_from(decomposition):
        q, h, _, beta, _ = decomposition
        y = beta * (q @ small_exp_e1(h))
        return 0.5 * jnp.sum(y**2)

    if method == "lanczos":
        public, raw = lanczos, lanczos_iteration
        reorth = False
    else:
        public, raw = arnoldi, arnoldi_iteration
        reorth = True

    def adjoint(theta, v):
        return loss_from(public(matvec, v, theta, krylov_dim, reorthogonalize=reorth))

    def backprop(theta, v):
        apply = lambda x: matvec(x, theta)  # noqa: E731
        dec = raw(apply, v, krylov_dim, reorthogonalize=reorth)
        return loss_from(dec._replace(basis=dec.basis.T))  # raw: (k, n) rows

    return adjoint, backprop


def measure(loss, theta, v, repeats: int, max_temp_mib: float):
    compiled = jax.jit(jax.value_and_grad(loss)).lower(theta, v).compile()
    analysis = compiled.memory_analysis()
    temp_mib = analysis.temp_size_in_bytes / MIB if analysis is not None else float("nan")
    if temp_mib > max_temp_mib:
        return float("nan"), temp_mib, None
    out = compiled(theta, v)
    jax.block_until_ready(out)  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = compiled(theta, v)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, temp_mib, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid, two sizes (smoke run)")
    parser.add_argument("--grid", type=int, default=None, help="grid side N (n = N^2)")
    parser.add_argument("--dims", type=int, nargs="+", default=None, help="krylov_dim values")
    parser.add_argument("--methods", nargs="+", default=["lanczos", "arnoldi"])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--max-temp-mib",
        type=float,
        default=12 * 1024,
        help="do not run configurations whose compiled temp memory exceeds this",
    )
    args = parser.parse_args(argv)
    grid = args.grid or (48 if args.quick else 316)
    dims = args.dims or ([5, 10] if args.quick else [10, 20, 40, 80])
    repeats = args.repeats or (2 if args.quick else 5)

    n = grid * grid
    rng = np.random.default_rng(0)
    xs = np.linspace(0, 1, grid)
    theta = jnp.asarray(
        (0.5 * np.sin(2 * np.pi * xs)[:, None] * np.cos(np.pi * xs)[None, :]).reshape(-1),
        dtype=jnp.float32,
    )
    v = jnp.asarray(rng.standard_normal(n), dtype=jnp.float32)
    matvec = make_matvec(grid)
    t = 2.0 / (grid + 1) ** 2  # t ||A|| ~ 16: a moderately stiff step

    print(
        f"Machine: {cpu_name()}, {os.cpu_count()} cores visible, "
        f"jax {jax.__version__} on {jax.default_backend()}, dtype float32, "
        f"n = {grid}^2 = {n}, repeats = {repeats} (median)."
    )
    print(
        "Memory: XLA compiled temp buffer size (memory_analysis().temp_size_in_bytes) "
        "of jit(value_and_grad)."
    )
    print()
    print(
        "| method | krylov_dim | adjoint [ms] | backprop [ms] | speed-up "
        "| adjoint temp [MiB] | backprop temp [MiB] | memory ratio | grad rel. diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for method in args.methods:
        for k in dims:
            adjoint, backprop = make_losses(matvec, method, k, t)
            t_adj, m_adj, out_adj = measure(adjoint, theta, v, repeats, args.max_temp_mib)
            t_bp, m_bp, out_bp = measure(backprop, theta, v, repeats, args.max_temp_mib)
            if out_adj is not None and out_bp is not None:
                g_adj, g_bp = np.asarray(out_adj[1]), np.asarray(out_bp[1])
                diff = f"{np.linalg.norm(g_adj - g_bp) / np.linalg.norm(g_bp):.1e}"
            else:
                diff = "n/a"
            bp_time = f"{t_bp:.0f}" if np.isfinite(t_bp) else "not run (memory)"
            print(
                f"| {method} | {k} | {t_adj:.0f} | {bp_time} | {t_bp / t_adj:.1f}x "
                f"| {m_adj:.0f} | {m_bp:.0f} | {m_bp / m_adj:.1f}x | {diff} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

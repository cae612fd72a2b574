"""Cost of one Arnoldi (CGS2) iteration: full-basis products vs the blocked prefix.

``arnoldi_iteration`` orthogonalises step ``j`` against the leading blocks of the
``(k, n)`` basis that hold ``q_0..q_j`` (a ``lax.switch`` over static prefix
lengths) instead of all ``k`` rows.  This script times ``k`` steps of the raw
iteration on a 2-D 5-point Laplacian (Neumann boundary) both ways in the same
run, alternately -- "before" forces the full products by raising the size threshold of the
blocking -- and reports milliseconds per iteration, their ratio, and the time of
one stencil matvec for reference.  Times are the best of ``--repeats`` warm runs.

Usage::

    python benchmarks/arnoldi_cost.py             # n = 16384, 32768, 65536; k = 10, 30, 60
    python benchmarks/arnoldi_cost.py --quick     # n = 16384 only, fewer repeats
"""

from __future__ import annotations

import argparse
import os
import time

import jax

import pdeinv

jax.config.update("jax_enable_x64", True)  # a script may; the library never does
pdeinv.limit_blas_threads()  # see pdeinv/_threads.py

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _machine import best_time, cpu_name  # noqa: E402  (benchmarks/ is the script's path)

from pdeinv.krylov import _engine  # noqa: E402
from pdeinv.krylov._arnoldi import arnoldi_iteration  # noqa: E402

N_OF = {}
GRIDS = {16384: (128, 128), 32768: (128, 256), 65536: (256, 256)}
DIMS = (10, 30, 60)


def laplacian(shape):
    """``x -> -L x`` for the 5-point Laplacian with homogeneous Neumann boundary."""
    nx, ny = shape

    def apply(x):
        u = x.reshape(nx, ny)
        p = jnp.pad(u, 1, mode="edge")
        lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * u
        return lap.ravel()

    N_OF[apply] = nx * ny
    return apply


def compiled(apply, k, blocked):
    """Jitted ``k`` steps of the raw iteration, blocked or with full-basis products."""
    saved = _engine._BLOCK_MIN_N
    _engine._BLOCK_MIN_N = saved if blocked else np.iinfo(np.int64).max
    try:
        fn = jax.jit(lambda v: arnoldi_iteration(apply, v, k))
        fn = fn.lower(jax.ShapeDtypeStruct((N_OF[apply],), jnp.float64)).compile()
    finally:
        _engine._BLOCK_MIN_N = saved
    return fn


def interleaved_ms(fns, v, k, repeats):
    """Best ms per iteration of each function, timed alternately (fair under load)."""
    for fn in fns:
        jax.block_until_ready(fn(v))
    best = [np.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            jax.block_until_ready(fn(v))
            best[i] = min(best[i], time.perf_counter() - start)
    return [1e3 * b / k for b in best]


def matvec_ms(apply, v, repeats, count=50):
    fn = jax.jit(lambda v: jax.lax.fori_loop(0, count, lambda _, x: 0.1 * apply(x), v))
    return 1e3 * best_time(lambda: fn(v), repeats) / count


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    sizes = (16384,) if args.quick else tuple(GRIDS)
    repeats = args.repeats or (3 if args.quick else 7)

    print(f"# Arnoldi (CGS2) cost per iteration, float64, {jax.default_backend()}")
    print(f"# {cpu_name()}, {os.cpu_count()} logical CPUs, jax {jax.__version__}")
    print("# best of", repeats, "runs; the machine may be shared: compare ratios within one run")
    print()
    print(
        "| n | grid | k | matvec ms | before ms/iter | after ms/iter | before/after | "
        "after/matvec | max abs dH | orth after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n in sizes:
        shape = GRIDS[n]
        apply = laplacian(shape)
        v = jnp.asarray(rng.standard_normal(n))
        mv = matvec_ms(apply, v, repeats)
        for k in DIMS:
            before, after = compiled(apply, k, False), compiled(apply, k, True)
            t_before, t_after = interleaved_ms([before, after], v, k, repeats)
            h_before = np.asarray(before(v).small)
            dec = after(v)
            q = np.asarray(dec.basis)
            orth = np.abs(q @ q.T - np.eye(k)).max()
            dh = np.abs(np.asarray(dec.small) - h_before).max()
            print(
                f"| {n} | {shape[0]}x{shape[1]} | {k} | {mv:.3f} | {t_before:.3f} | "
                f"{t_after:.3f} | {t_before / t_after:.2f} | {t_after / mv:.1f} | {dh:.1e} | "
                f"{orth:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Matrix-free matvec speed vs a scipy.sparse CSR matvec of the same operator.

Operators: 2-D finite-difference diffusion div(kappa grad u) on a 1024^2 cell-centred
grid (homogeneous Neumann, harmonic face means), and the P1 stiffness K(kappa) u on a
structured triangulation with ~1e6 nodes (generated here, not read from a file).
Both are run in float32 and float64; the JAX versions are jitted and never form a
matrix.  The P1 operator is also timed with kappa fixed inside a ``fori_loop`` of 20
matvecs (as in a Krylov iteration), where XLA hoists the kappa-only work (the
per-slot weights K_ij) out of the loop: the "kappa fixed" rows are the time per
matvec.  The CSR matrix is assembled from the same matrix-free operator (stencil
probing for FD, the FEM module's assembly for P1) and checked to agree.

Effective bandwidth = bytes that must at least be moved / time:
  FD  matrix-free: u, kappa read, result written            -> 3 n s
  P1  matrix-free: u, nodal kappa read, result written; per
      neighbour slot (D per node) two node indices (int32),
      Q other-vertex indices (int32) and 1 + Q weights      -> 3 n s + D n (8 + 4 Q + (1 + Q) s)
      (D = max node degree, Q = other vertices of the cells sharing an edge, 2 in 2-D);
      with kappa fixed in a loop only one index and one weight per slot remain.
  CSR: values, column indices, row pointers, x read, y written
                                                            -> nnz (s + 4) + 4 (n + 1) + 2 n s
with s the float size and n the number of nodes.

Usage::

    python benchmarks/matvec.py            # 1024^2 grid, 1e6-node mesh
    python benchmarks/matvec.py --quick    # 256^2 grid, 6.5e4-node mesh, fewer repeats
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
from _machine import cpu_name  # noqa: E402  (benchmarks/ is the script's path)

from pdeinv.discretize import (  # noqa: E402
    diffusion_matvec,
    grid,
    p1_stiffness_matrix,
    p1_stiffness_matvec,
    stencil_to_sparse,
    structured_triangle_mesh,
)


def _time(fn, repeats):
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    # Best of `repeats`: the machines this runs on are often shared, and the minimum is
    # the least disturbed measurement of the same deterministic work.
    return float(np.min(times))


def _rows(label, n, matvec_jax, args, csr64, extra_bytes, repeats):
    rows = []
    for dtype in (np.float32, np.float64):
        s = np.dtype(dtype).itemsize
        jargs = [jnp.asarray(a, dtype) for a in args]
        jitted = jax.jit(matvec_jax)
        t_jax = _time(lambda: jitted(*jargs).block_until_ready(), repeats)  # noqa: B023
        csr = csr64.astype(dtype)
        x = np.asarray(args[0], dtype)
        y_csr = csr @ x
        y_jax = np.asarray(jitted(*jargs))
        err = np.linalg.norm(y_jax - y_csr) / np.linalg.norm(y_csr)
        assert err < (1e-4 if dtype == np.float32 else 1e-10), (label, dtype, err)
        t_csr = _time(lambda: csr @ x, repeats)  # noqa: B023
        bytes_jax = 3 * n * s + extra_bytes(s)
        bytes_csr = csr.nnz * (s + 4) + 4 * (n + 1) + 2 * n * s
        rows.append(
            (
                label,
                np.dtype(dtype).name,
                n,
                csr.nnz,
                t_jax,
                bytes_jax / t_jax,
                t_csr,
                bytes_csr / t_csr,
                t_csr / t_jax,
                err,
            )  # fmt: skip
        )
    return rows


def fd_rows(n_side, repeats):
    g = grid((n_side, n_side))
    rng = np.random.default_rng(0)
    kappa = np.exp(0.5 * rng.standard_normal(g.num_nodes))
    u = rng.standard_normal(g.num_nodes)
    matvec = diffusion_matvec(g, "neumann")
    csr = stencil_to_sparse(g, matvec, jnp.asarray(kappa), bc="neumann")
    return _rows(f"FD 2-D {n_side}²", g.num_nodes, matvec, (u, kappa), csr, lambda s: 0, repeats)


def p1_rows(n_side, repeats):
    from pdeinv.discretize._fem import _free_numbering, _slot_structure

    mesh = structured_triangle_mesh(n_side, n_side)
    rng = np.random.default_rng(1)
    kappa = np.exp(0.5 * rng.standard_normal(mesh.num_nodes))
    u = rng.standard_normal(mesh.num_nodes)
    matvec = p1_stiffness_matvec(mesh, kappa_location="node")
    csr = p1_stiffness_matrix(mesh, kappa, kappa_location="node").tocsr()
    structure = _slot_structure(mesh, *_free_numbering(mesh, None))
    degree = structure.nodes.shape[0]
    others = structure.others.shape[0]

    def extra(s):
        return degree * mesh.num_nodes * (8 + 4 * others + (1 + others) * s)

    label = f"P1 tri, {mesh.num_nodes:.2g} nodes"
    rows = _rows(label, mesh.num_nodes, matvec, (u, kappa), csr, extra, repeats)
    loop = 20

    def repeated(u, kappa):
        # kappa is loop-invariant, as in a Krylov iteration; scaled to stay finite
        return jax.lax.fori_loop(0, loop, lambda i, v: 1e-1 * matvec(v, kappa), u)

    for dtype, row in zip((np.float32, np.float64), rows[-2:], strict=True):
        jargs = [jnp.asarray(a, dtype) for a in (u, kappa)]
        jitted = jax.jit(repeated)
        run = lambda: jitted(*jargs).block_until_ready()  # noqa: B023, E731
        t_jax = _time(run, max(3, repeats // 4)) / loop
        s = np.dtype(dtype).itemsize
        t_csr, bw_csr = row[6], row[7]
        # per slot one node index and the hoisted weight K_ij
        bytes_jax = 3 * mesh.num_nodes * s + degree * mesh.num_nodes * (4 + s)
        rows.append(
            (
                f"{label}, kappa fixed ({loop} in a loop)",
                np.dtype(dtype).name,
                mesh.num_nodes,
                csr.nnz,
                t_jax,
                bytes_jax / t_jax,
                t_csr,
                bw_csr,
                t_csr / t_jax,
                float("nan"),
            )  # fmt: skip
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--no-p1", action="store_true", help="skip the P1 mesh operator")
    args = parser.parse_args(argv)
    n_fd, n_p1, repeats = (256, 255, 5) if args.quick else (1024, 999, 20)

    rows = fd_rows(n_fd, repeats)
    if not args.no_p1:
        rows += p1_rows(n_p1, repeats)

    device = jax.devices()[0]
    print(
        f"Machine: {cpu_name()}, {os.cpu_count()} cores visible; JAX {jax.__version__} on "
        f"{device.platform} ({device.device_kind}); scipy CSR on the CPU, single thread; "
        f"times are the best of {repeats} runs.\n"
    )
    print(
        "| operator | dtype | nodes | nnz | JAX matvec | JAX GB/s | CSR matvec | CSR GB/s "
        "| CSR time / JAX time | rel. diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, dtype, n, nnz, t_jax, bw_jax, t_csr, bw_csr, ratio, err in rows:
        print(
            f"| {label} | {dtype} | {n:,} | {nnz:,} | {t_jax * 1e3:.2f} ms | {bw_jax / 1e9:.1f} "
            f"| {t_csr * 1e3:.2f} ms | {bw_csr / 1e9:.1f} | {ratio:.2f} | {err:.1e} |"
        )


if __name__ == "__main__":
    main()

"""BLAS threads next to XLA on CPU.

The integrator's small dense kernels (``k x k`` eigendecompositions and SVDs of
the projected matrices) run through LAPACK inside XLA programs.  On CPU, jaxlib
takes those LAPACK routines from SciPy's OpenBLAS, whose own worker threads then
compete with XLA's for the same cores.  Above a size threshold (LAPACK switches
to blocked, threaded BLAS-3 code) the oversubscription costs about 100x:
measured on a 2-core VM, ``eigh`` of a ``72 x 72`` tridiagonal matrix 102 ms
against 0.8 ms with one BLAS thread, ``svd`` of a ``60 x 60`` matrix 96 ms
against 0.8 ms; below ``k = 48`` the two agree.  These matrices are far too
small for BLAS threads to help, so one thread is the right setting for any
process that runs the integrator on CPU with ``krylov_dim`` above ~40.

The library never changes this on import (it would also change the user's NumPy).
The CLI, the test suite and the benchmarks call :func:`limit_blas_threads`;
:func:`pdeinv.expm_multiply` warns when a call is exposed.
"""

from __future__ import annotations

__all__ = ["blas_threads", "limit_blas_threads"]

# Krylov dimensions from which the small LAPACK kernels slow down under
# oversubscribed BLAS threads (measured: svd 2.9 ms vs 0.4 ms at k = 50,
# 0.2 ms either way at k = 40).
SLOW_KRYLOV_DIM = 48


def limit_blas_threads(limit: int = 1):
    """Limit the threads of the BLAS/LAPACK libraries loaded in this process.

    Parameters
    ----------
    limit
        Threads per BLAS library (OpenBLAS, MKL, BLIS), default 1.

    Returns
    -------
    threadpoolctl.threadpool_limits
        The limit is in force from the call on.  Used as a context manager
        (``with pdeinv.limit_blas_threads(): ...``) it restores the previous
        settings on exit.

    Notes
    -----
    On CPU, XLA runs the integrator's small LAPACK calls from its own threads;
    BLAS threads on top oversubscribe the cores and make ``k x k`` kernels with
    ``k`` of about 50 or more ~100x slower (see docs/integrator.md#blas-threads).
    One thread costs nothing measurable at these sizes.  Call it once at the
    start of a script that uses ``krylov_dim`` above ~40 on CPU, or set
    ``OPENBLAS_NUM_THREADS=1`` before Python starts.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit_blas_threads: limit must be an integer >= 1, got {limit!r}")
    # threadpoolctl acts on the libraries loaded so far; jaxlib's LAPACK comes from
    # SciPy's OpenBLAS, loaded lazily on the first LAPACK call: load it now.
    import scipy.linalg.cython_lapack  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=limit, user_api="blas")


def blas_threads() -> int:
    """Largest thread count among the loaded BLAS libraries (1 when none is loaded)."""
    from threadpoolctl import threadpool_info

    blas = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return max([int(lib.get("num_threads") or 1) for lib in blas] + [1])

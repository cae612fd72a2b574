"""One Krylov engine: the decomposition type, the iteration drivers and the
custom-VJP wrapper shared by Arnoldi, Lanczos and skew Lanczos.

A Krylov *process* is three functions (:class:`Process`): ``init`` (first
basis vector and loop state), ``step`` (one iteration as a ``lax.scan`` body
over the step index ``j``, emitting per-step outputs) and ``finish`` (the
decomposition of dimension ``size`` from the final state and the stacked
outputs).  :func:`iterate` runs ``krylov_dim`` steps in one scan;
:func:`iterate_until` runs chunks of steps in a ``while_loop`` and asks a stop
rule after each (Krylov-size control of the integrator).  Processes differ only
in their step: Arnoldi (Gram--Schmidt against the whole basis), Lanczos (three-term
recurrence, optionally reorthogonalised) and skew Lanczos (two-term recurrence).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from ._common import check_krylov_dim, prepare, transpose_matvec

__all__ = [
    "KrylovDecomposition",
    "Process",
    "gram_schmidt",
    "iterate",
    "iterate_until",
    "windowed_gram_schmidt",
]


class KrylovDecomposition(NamedTuple):
    """Result of ``k`` steps of a Krylov process: ``A Q = Q H + r e_k^T``.

    Attributes
    ----------
    basis
        ``Q``, ``Q[:, 0] = v / ||v||``: shape ``(n, k)`` (columns) from the
        public :func:`~pdeinv.krylov.arnoldi` / :func:`~pdeinv.krylov.lanczos`,
        ``(k, n)`` (rows) from the raw iterations the integrator calls.
        Columns past a happy breakdown are zero.  Orthonormal for Arnoldi and
        reorthogonalised Lanczos; the plain recurrences keep only local
        orthogonality (``q_j^T q_{j+1} = 0``, unit norms) in floating point.
    small
        ``H = Q^T A Q``, shape ``(k, k)``, the projected matrix: upper
        Hessenberg (Arnoldi), symmetric tridiagonal (Lanczos) or skew-symmetric
        tridiagonal with a zero diagonal (skew Lanczos).
    residual
        ``r = h_{k+1,k} q_{k+1}``, shape ``(n,)``; zero after a breakdown.
    norm
        ``||v||``, shape ``()``.
    num_steps
        Number of valid basis vectors: ``k`` unless the Krylov space became
        invariant earlier (happy breakdown); ``0`` for ``v = 0``.
    """

    basis: Float[Array, "n k"]
    small: Float[Array, "k k"]
    residual: Float[Array, " n"]
    norm: Float[Array, ""]
    num_steps: Int[Array, ""]


class Process(NamedTuple):
    """A Krylov process on a fixed ``apply(x) = A x``, for the drivers.

    ``init(v, k) -> (norm, state)``; ``step(state, j) -> (state, outputs)``, a
    ``lax.scan`` body (``outputs`` a pytree of per-step arrays, possibly
    empty); ``finish(norm, state, outputs, size) -> (decomposition with (k, n)
    basis rows, residual norm, skewness)`` with ``outputs`` stacked over the
    ``k`` steps (rows past ``size`` unwritten zeros) and ``size`` the Python int
    ``k`` after a full run, a traced int after an early stop (entries past
    ``size`` must then come out zero).  ``skewness`` is what the skew process
    measures (see :func:`~pdeinv.krylov._skew.skewness_tolerance`), zero for
    the others.
    """

    init: Callable
    step: Callable
    finish: Callable
    # The step hands its vector on as the next step's predecessor (the short
    # recurrences): the drivers then run two steps per loop body (scan_unroll).
    hands_over: bool = False


def scan_unroll(process: Process, n: int) -> int:
    """Steps per loop body of the drivers' scans: 2 for a process that hands its
    vector on (``process.hands_over``) from ``n = _UNROLL_MIN_N`` on, else 1.

    A short recurrence hands ``q`` on as the next step's ``q_prev``.  In a loop
    body of one step that moves a value between two slots of the loop state,
    which XLA can only do by copying it (three ``n``-vector copies per step in
    the optimised HLO of the Lanczos recurrences); a body of two steps writes
    every slot with a freshly computed value and needs at most one copy per two
    steps.  Measured on XLA:CPU, one core, CPU time per step over 31 runs
    (min / median): skew Lanczos on the 128^2 wave (n = 49923) 163 / 208 us
    with one step per body, 157 / 170 us with two; Lanczos on 128^2 heat 73 / 114
    against 74 / 98 us.  Arnoldi, which writes into a carried basis, got slower
    with two steps per body (the tangent's block solve on 64^2 heat: 91 against
    68 ms), and small problems compile faster with one.
    """
    return 2 if process.hands_over and n >= _UNROLL_MIN_N else 1


_UNROLL_MIN_N = 4096


def iterate(process: Process, v: Array, krylov_dim: int):
    """``krylov_dim`` steps of ``process`` from ``v`` in one ``lax.scan``.

    Returns ``(decomposition with (k, n) basis rows, skewness)``.  ``v`` is
    not validated (callers do); ``krylov_dim`` is, as everywhere
    (:func:`~pdeinv.krylov._common.check_krylov_dim`).  Not custom-differentiated:
    plain JAX autodiff through the scan works.
    """
    k = check_krylov_dim(krylov_dim, v.shape[0], "iterate")
    norm, state = process.init(v, k)
    state, outputs = lax.scan(
        process.step, state, jnp.arange(k, dtype=jnp.int32), unroll=scan_unroll(process, v.shape[0])
    )
    dec, _, skewness = process.finish(norm, state, outputs, k)
    return dec, skewness


def iterate_until(process: Process, v: Array, krylov_dim: int, chunk: int, stop: Callable):
    """Steps of ``process`` in chunks of ``chunk`` until ``stop`` or ``krylov_dim``.

    After every chunk, ``stop(small, size, residual_norm) -> bool`` decides
    whether the ``size``-dimensional decomposition is enough.  The result is
    zero-padded to ``krylov_dim`` (basis rows and entries of ``H`` past
    ``size`` are zero, so small-matrix functions of the padded matrix act on the
    leading block unchanged).  Returns ``((decomposition with (k, n) basis
    rows, skewness), size)``.  ``chunk`` must divide ``krylov_dim``.  A
    ``while_loop``: not reverse-differentiable.

    (A single scan with a ``lax.cond`` around each step's matvec was measured
    10x slower on XLA:CPU; the while loop over chunks costs ~15 % over the plain
    scan.)
    """
    k = check_krylov_dim(krylov_dim, v.shape[0], "iterate_until")
    if k % chunk:
        raise ValueError(f"iterate_until: chunk={chunk} must divide krylov_dim={k}")
    norm, state0 = process.init(v, k)
    one = jax.eval_shape(process.step, state0, jnp.zeros((), jnp.int32))[1]
    outputs0 = jax.tree.map(lambda s: jnp.zeros((k, *s.shape), s.dtype), one)
    steps = jnp.arange(chunk, dtype=jnp.int32)
    unroll = scan_unroll(process, v.shape[0])

    def body(c):
        state, outputs, size, _ = c
        state, new = lax.scan(process.step, state, size + steps, unroll=unroll)
        outputs = jax.tree.map(
            lambda o, x: lax.dynamic_update_slice_in_dim(o, x, size, 0), outputs, new
        )
        size = size + chunk
        dec, residual_norm, _ = process.finish(norm, state, outputs, size)
        done = (size >= k) | stop(dec.small, size, residual_norm)
        return state, outputs, size, done

    init = (state0, outputs0, jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    state, outputs, size, _ = lax.while_loop(lambda c: ~c[3], body, init)
    dec, _, skewness = process.finish(norm, state, outputs, size)
    return (dec, skewness), size


def leading(x: Array, size) -> Array:
    """``x`` with rows ``>= size`` zeroed; unchanged for the static full size."""
    if isinstance(size, int) and size >= x.shape[0]:
        return x
    return jnp.where((jnp.arange(x.shape[0]) < size)[:, None], x, 0)


# --- orthogonalisation ------------------------------------------------------------------


def block_size(n: int, k: int) -> int | None:
    """Rows per block of the basis for the orthogonalisation, ``None`` for no blocking.

    Step ``j`` projects onto the ``ceil((j + 1) / b)`` leading blocks only, so
    its cost is ``O(n (j + b))`` instead of ``O(n k)``.  At most
    ``_MAX_BLOCKS`` blocks (one ``lax.switch`` branch each: compile time grows
    with their number).  Small problems and ``k < 2 b``, where the full
    products cost about as much as the switch, are not blocked.
    """
    if n < _BLOCK_MIN_N:
        return None
    b = max(_BLOCK_MIN_ROWS, -(-k // _MAX_BLOCKS))
    return None if 2 * b > k else b


# Measured on XLA:CPU (benchmarks/arnoldi_cost.py, 2-core EPYC): at n = 16k - 64k,
# k = 30 - 60 the blocked step is 1.0-1.5x faster (the switch copies its (k, n)
# operand once per step, which eats part of the saving); at n = 1k - 4k it is even
# or slower; the values are bitwise those of the full products.
_BLOCK_MIN_N = 8192
_BLOCK_MIN_ROWS = 8
_MAX_BLOCKS = 8


def gram_schmidt(basis, w, j, reorthogonalize, block):
    """Classical Gram--Schmidt of ``w`` against rows ``0..j`` of ``basis`` (twice if
    ``reorthogonalize``); returns ``(coefficients (k,), orthogonalised w)``.

    Rows past ``j`` are zero, so any leading block of rows that contains row
    ``j`` gives the same result as the whole basis: with ``block`` the products
    use the ``(j // block + 1) * block`` leading rows (a ``lax.switch`` over the
    static prefix lengths), else all ``k``.
    """
    k = basis.shape[0]

    def sweeps(m):
        def project(basis, w):
            h, w = _project_out(basis[:m], w, reorthogonalize)
            return (h if m == k else jnp.zeros((k,), w.dtype).at[:m].set(h)), w

        return project

    if block is None:
        return sweeps(k)(basis, w)
    branches = [sweeps(min(m, k)) for m in range(block, k + block, block)]
    return lax.switch(j // block, branches, basis, w)


def windowed_gram_schmidt(basis, w, j, reorthogonalize, window):
    """Classical Gram--Schmidt of ``w`` against the last ``window`` rows up to row ``j``.

    One ``(window, n)`` slice of ``basis`` starting at ``max(0, j - window + 1)``,
    clamped into the basis (rows past ``j`` are zero and contribute nothing),
    and no ``lax.switch``: the cost is ``O(n window)`` whatever ``j`` is.
    Returns ``(coefficients (k,), orthogonalised w)`` like :func:`gram_schmidt`,
    zero outside the window.
    """
    k = basis.shape[0]
    start = jnp.clip(j - window + 1, 0, k - window)
    h, w = _project_out(lax.dynamic_slice_in_dim(basis, start, window, 0), w, reorthogonalize)
    return lax.dynamic_update_slice_in_dim(jnp.zeros((k,), w.dtype), h, start, 0), w


def _project_out(q, w, reorthogonalize):
    """``(q w, w - q^T q w)``: one classical Gram--Schmidt sweep against the rows of
    ``q``, two when ``reorthogonalize`` (coefficients summed)."""
    h = q @ w
    # vector @ matrix, not matrix.T @ vector: XLA:CPU runs the latter ~3x slower.
    w = w - h @ q
    if reorthogonalize:
        h2 = q @ w
        w = w - h2 @ q
        h = h + h2
    return h, w


# --- reverse mode -----------------------------------------------------------------------


class AdjointInputs(NamedTuple):
    """What every adjoint sweep starts from (see :func:`adjoint_inputs`)."""

    basis_bar: Array  # (k, n) cotangent rows, zero past num_steps
    valid: Array  # (k,) bool, rows < num_steps
    residual_bar: Array  # (n,) zero unless r is a function of (v, params)
    transpose: Callable[[Array], Array]  # y -> A^T y


def adjoint_inputs(matvec, params, decomposition, cotangents) -> AdjointInputs:
    """Breakdown masks and the transpose matvec shared by the adjoint sweeps.

    After a happy breakdown with ``m = num_steps < k`` only the first ``m`` rows
    are functions of ``(v, params)``: cotangents of the zero tail are dropped.
    ``r`` is a function of ``(v, params)`` only if no breakdown zeroed it (a
    breakdown at the last step leaves ``m == k`` but ``r == 0`` exactly).
    """
    basis, _, r, _, m = decomposition
    basis_bar, _, r_bar, _, _ = cotangents
    k = basis.shape[0]
    valid = jnp.arange(k) < m
    basis_bar = jnp.where(valid[:, None], basis_bar, 0)
    r_bar = jnp.where((m == k) & jnp.any(r != 0), r_bar, 0)
    return AdjointInputs(basis_bar, valid, r_bar, transpose_matvec(matvec, params, r))


def start_cotangent(z0: Array, beta: Array, m: Array) -> Array:
    """``v_bar`` from column 0: ``||v|| lam_{-1} = z_0`` (already projected), 0 for ``v = 0``."""
    has_v = m >= 1
    return jnp.where(has_v, z0 / jnp.where(has_v, beta, 1), 0)


def differentiable(name: str, process: Callable[..., Process], adjoint: Callable):
    """Public ``name(matvec, v, params, krylov_dim, *, reorthogonalize)`` from a process.

    ``process(apply, reorthogonalize=...) -> Process``; ``adjoint(matvec, params,
    reorthogonalize, decomposition, cotangents) -> (v_bar, params_bar)`` with
    the decomposition's basis as ``(k, n)`` rows.  The wrapper validates the
    arguments (:func:`~pdeinv.krylov._common.prepare`: shapes, dtypes, finite
    ``v``, ``krylov_dim`` by ``check_krylov_dim``), hoists arrays closed over by
    ``matvec`` so they get cotangents, and returns the basis as ``(n, k)``
    columns.
    """

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
    def run(matvec, krylov_dim, reorthogonalize, v, params):
        apply = lambda x: matvec(x, params)  # noqa: E731
        dec, _ = iterate(process(apply, reorthogonalize=reorthogonalize), v, krylov_dim)
        return dec

    def fwd(matvec, krylov_dim, reorthogonalize, v, params):
        dec = run(matvec, krylov_dim, reorthogonalize, v, params)
        return dec, (dec, params)

    def bwd(matvec, krylov_dim, reorthogonalize, residuals, cotangents):
        dec, params = residuals
        return adjoint(matvec, params, reorthogonalize, dec, cotangents)

    run.defvjp(fwd, bwd)

    def public(matvec: Callable[[Array, Any], Array], v, params, krylov_dim, *, reorthogonalize):
        matvec_all, v, params_all, k = prepare(matvec, v, params, krylov_dim, name)
        dec = run(matvec_all, k, bool(reorthogonalize), v, params_all)
        return dec._replace(basis=dec.basis.T)

    return public

"""Arnoldi decomposition A Q = Q H + r e_k^T and its reverse-mode adjoint."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from ._common import (
    breakdown_tolerance,
    params_cotangent,
    prepare,
    safe_norm,
    safe_normalize,
    transpose_matvec,
)

__all__ = ["ArnoldiDecomposition", "arnoldi", "arnoldi_iteration", "arnoldi_until"]


class ArnoldiDecomposition(NamedTuple):
    """Result of ``krylov_dim`` Arnoldi steps: ``A Q = Q H + r e_k^T``.

    Attributes
    ----------
    basis
        ``Q``, shape ``(n, k)``, orthonormal columns, ``Q[:, 0] = v / ||v||``;
        columns past a happy breakdown are zero.
    hessenberg
        ``H = Q^T A Q``, shape ``(k, k)``, upper Hessenberg.
    residual
        ``r = h_{k+1,k} q_{k+1}``, shape ``(n,)``; zero after a breakdown.
    norm
        ``||v||``, shape ``()``.
    num_steps
        Number of valid basis columns, ``k`` unless the Krylov space became
        invariant earlier (happy breakdown); ``0`` for ``v = 0``.
    """

    basis: Float[Array, "n k"]
    hessenberg: Float[Array, "k k"]
    residual: Float[Array, " n"]
    norm: Float[Array, ""]
    num_steps: Int[Array, ""]


def arnoldi_iteration(
    apply: Callable[[Array], Array],
    v: Float[Array, " n"],
    krylov_dim: int,
    *,
    reorthogonalize: bool = True,
    length=None,
    basis_rows: bool = False,
) -> ArnoldiDecomposition:
    """Raw (not custom-differentiated) Arnoldi iteration on a closure ``apply(v) = A v``.

    Orthogonalisation is classical Gram--Schmidt written as two matrix-vector
    products with the basis (BLAS-2, fast on accelerators), done twice when
    ``reorthogonalize`` (CGS2, orthogonal to working precision) and once
    otherwise.  Step ``j`` multiplies only with the leading blocks of rows that
    hold ``q_0..q_j`` (for ``n >= 8192``), so it costs ``O(n (j + b))`` with
    ``b`` about ``max(8, k / 8)`` rather than ``O(n k)``.  No input
    validation: callers (``pdeinv.expm``, :func:`arnoldi`) validate.  Plain JAX
    autodiff through this function works and is the
    reference the custom adjoint is tested against.

    A happy breakdown (new direction below ``100 eps max_j ||A q_j||``) stops the
    process exactly: later columns, entries of ``H`` and the residual are zero
    and ``num_steps`` counts the valid columns. A zero ``v`` gives all zeros.

    ``length`` (a traced int ``<= krylov_dim``, default ``krylov_dim``) stops after
    that many matvecs: the decomposition is the one of dimension ``length``,
    zero-padded to ``krylov_dim`` (the adaptive integrator chooses it per step).
    With ``length`` given the loop is a ``while_loop``: not reverse-differentiable.
    ``basis_rows=True`` returns the basis as ``(k, n)`` rows (no transpose).
    """
    k = int(krylov_dim)
    stop = k if length is None else jnp.minimum(length, k)
    beta, init = _arnoldi_init(v, k)
    step = _arnoldi_step(apply, k, v.dtype, reorthogonalize, stop, _block_size(v.shape[0], k))
    basis, hessenberg, residual, _, num_steps, _ = lax.fori_loop(0, stop, step, init)
    return ArnoldiDecomposition(
        basis if basis_rows else basis.T, hessenberg, residual, beta, num_steps
    )


def _arnoldi_init(v, k):
    n = v.shape[0]
    dtype = v.dtype
    beta = safe_norm(v)
    active0 = beta > 0
    q0 = safe_normalize(v, beta, ~active0)
    # Basis stored as rows (k, n) so each step writes one contiguous row.
    basis = jnp.zeros((k, n), dtype=dtype).at[0].set(q0)
    init = (
        basis,
        jnp.zeros((k, k), dtype=dtype),
        jnp.zeros((n,), dtype=dtype),
        active0,
        jnp.zeros((), dtype=jnp.int32),
        jnp.zeros((), dtype=dtype),
    )
    return beta, init


def _block_size(n: int, k: int) -> int | None:
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


# Measured on XLA:CPU (benchmarks/arnoldi_cost.py): blocking pays from n ~ 8k on;
# at n = 1k - 4k it is even or slower.
_BLOCK_MIN_N = 8192
_BLOCK_MIN_ROWS = 8
_MAX_BLOCKS = 8


def _gram_schmidt(basis, w, j, reorthogonalize, block):
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
            q = basis[:m]
            h = q @ w
            # vector @ matrix, not matrix.T @ vector: XLA:CPU runs the latter ~3x slower.
            w = w - h @ q
            if reorthogonalize:
                h2 = q @ w
                w = w - h2 @ q
                h = h + h2
            return (h if m == k else jnp.zeros((k,), w.dtype).at[:m].set(h)), w

        return project

    if block is None:
        return sweeps(k)(basis, w)
    branches = [sweeps(min(m, k)) for m in range(block, k + block, block)]
    return lax.switch(j // block, branches, basis, w)


def _arnoldi_step(apply, k, dtype, reorthogonalize, stop, block=None):
    """Step ``j`` of Arnoldi as a ``fori_loop`` body; ``stop`` is the last step + 1."""

    def step(j, state):
        basis, hessenberg, _, active, num_steps, scale = state
        q = basis[j]
        w = apply(q)
        scale = jnp.maximum(scale, safe_norm(w))
        h, w = _gram_schmidt(basis, w, j, reorthogonalize, block)
        norm_w = safe_norm(w)
        broke = norm_w <= breakdown_tolerance(scale, dtype)
        num_steps = num_steps + active.astype(num_steps.dtype)
        active = active & ~broke
        hessenberg = hessenberg.at[:, j].set(h)
        sub = jnp.where(broke, jnp.zeros_like(norm_w), norm_w)
        q_next = safe_normalize(w, norm_w, broke)
        # At the last step w/||w|| has no row to go to: it becomes the residual.
        not_last = j + 1 < stop
        idx = jnp.minimum(j + 1, k - 1)
        hessenberg = hessenberg.at[idx, j].set(jnp.where(not_last, sub, hessenberg[idx, j]))
        basis = basis.at[idx].set(jnp.where(not_last, q_next, basis[idx]))
        residual = jnp.where(broke, jnp.zeros_like(w), w)
        return basis, hessenberg, residual, active, num_steps, scale

    return step


def arnoldi_until(apply, v, krylov_dim: int, chunk: int, stop, *, reorthogonalize: bool = True):
    """Arnoldi that may stop before ``krylov_dim`` steps (Krylov-size control).

    After every ``chunk`` steps, ``stop(hessenberg, size, residual_norm)`` decides
    whether the ``size``-dimensional decomposition is enough.  The result is
    zero-padded to ``krylov_dim`` (basis rows, Hessenberg entries past ``size``
    are zero).  Returns ``(decomposition with basis as (k, n) rows, size)``.
    ``chunk`` must divide ``krylov_dim``.
    """
    k = int(krylov_dim)
    if k % chunk:
        raise ValueError(f"chunk={chunk} must divide krylov_dim={k}")
    beta, state0 = _arnoldi_init(v, k)
    step = _arnoldi_step(apply, k, v.dtype, reorthogonalize, k, _block_size(v.shape[0], k))
    index = jnp.arange(k)

    def trimmed(state, size):
        # Row `size` already holds the next direction and H[size, size-1] its
        # norm; a decomposition of dimension `size` leaves both out.
        basis, hessenberg, residual = state[0], state[1], state[2]
        basis = jnp.where((index < size)[:, None], basis, 0)
        hessenberg = jnp.where((index < size)[:, None], hessenberg, 0)
        return basis, hessenberg, residual

    def body(c):
        state, size, _ = c
        state = lax.fori_loop(size, size + chunk, step, state)
        size = size + chunk
        _, hessenberg, residual = trimmed(state, size)
        done = (size >= k) | stop(hessenberg, size, safe_norm(residual))
        return state, size, done

    init = (state0, jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    state, size, _ = lax.while_loop(lambda c: ~c[2], body, init)
    basis, hessenberg, residual = trimmed(state, size)
    return ArnoldiDecomposition(basis, hessenberg, residual, beta, state[4]), size


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _arnoldi(matvec, krylov_dim, reorthogonalize, v, params):
    return arnoldi_iteration(
        lambda x: matvec(x, params), v, krylov_dim, reorthogonalize=reorthogonalize
    )


def _arnoldi_fwd(matvec, krylov_dim, reorthogonalize, v, params):
    decomposition = _arnoldi(matvec, krylov_dim, reorthogonalize, v, params)
    return decomposition, (decomposition, params)


def _arnoldi_bwd(matvec, krylov_dim, reorthogonalize, residuals, cotangents):
    (q, h, r, beta, m), params = residuals
    q_bar, h_bar, r_bar, beta_bar, _ = cotangents
    return arnoldi_adjoint(matvec, params, (q, h, r, beta, m), (q_bar, h_bar, r_bar, beta_bar))


def arnoldi_adjoint(matvec, params, decomposition, cotangents):
    """Adjoint of A Q = Q H + r e_k^T, Q e_1 ||v|| = v, Q^T Q = I, Q^T r = 0.

    Lagrange multipliers Lam (one column lam_j per column of Q), Gam (symmetric,
    for Q^T Q = I), mu (for Q^T r = 0). Stationarity in r, H (on the Hessenberg
    pattern), Q and ||v|| gives, with 0-based columns,

        lam_{k-1} = (I - Q Q^T) r_bar + Q H_bar[:, k-1],   mu = H_bar[:, k-1] - Q^T r_bar,
        z_j = Q_bar[:, j] + A^T lam_j - sum_{i>=j} H[j, i] lam_i + mu_j r,
        H[j, j-1] lam_{j-1} = z_j + Q gam_j,

    where gam_j (column j of Gam) is fixed by Q^T lam_{j-1} = H_bar[:, j-1] on the
    pattern rows i <= j, and by symmetry with the columns already done for i > j.
    Column 0 instead yields ||v|| lam = -(z_0 + Q gam_0) with gam_0[0] from the
    norm cotangent; v_bar = -lam and params_bar = sum_j d<lam_j, A q_j>/dparams.
    A backward sweep of k - 1 steps with one transpose matvec each: the memory is
    that of Q, not of the k stored iterations backprop would keep.

    After a happy breakdown with m = num_steps < k, only the first m columns are
    functions of (v, params): the sweep runs over them, starting from
    lam_{m-1} = Q H_bar[:, m-1], and the cotangents of the zero tail are ignored.
    For v = 0 the iteration is not differentiable; zero cotangents are returned.

    Also the adjoint of fully reorthogonalised Lanczos (with ``h`` the
    tridiagonal matrix): for symmetric perturbations of a symmetric ``A`` both
    processes are the same function.

    Returns ``(v_bar, params_bar)``.
    """
    q, h, r, beta, m = decomposition
    q_bar, h_bar, r_bar, beta_bar = cotangents
    k = q.shape[1]
    dtype = q.dtype
    basis = q.T  # rows q_j
    rows = jnp.arange(k)
    valid = rows < m
    basis_bar = jnp.where(valid[:, None], q_bar.T, 0)
    pattern = (rows[:, None] <= rows[None, :] + 1) & valid[:, None] & valid[None, :]
    h_bar = jnp.where(pattern, h_bar, 0)
    # r is a function of (v, params) only if no breakdown zeroed it (a
    # breakdown at the last step leaves m == k but r == 0 exactly).
    r_bar = jnp.where((m == k) & jnp.any(r != 0), r_bar, 0)
    transpose = transpose_matvec(matvec, params, r)

    mu = h_bar[:, k - 1] - basis @ r_bar
    last = jnp.maximum(m - 1, 0)
    lam_last = r_bar - (basis @ r_bar) @ basis + h_bar[:, last] @ basis
    lam = jnp.zeros((k, r.shape[0]), dtype=dtype)
    lam = lam.at[last].set(jnp.where(m >= 1, lam_last, 0))
    gam = jnp.zeros((k, k), dtype=dtype)

    def column(j, lam):
        return basis_bar[j] + transpose(lam[j]) - h[j] @ lam + mu[j] * r

    def sweep(i, state):
        lam, gam = state
        j = k - 1 - i
        active = j < m
        z = column(j, lam)
        sub = h[j, j - 1]
        gam_j = jnp.where(rows <= j, sub * h_bar[:, j - 1] - basis @ z, gam[:, j])
        lam_prev = (z + gam_j @ basis) / jnp.where(active, sub, 1)
        lam = lam.at[j - 1].set(jnp.where(active, lam_prev, lam[j - 1]))
        gam_j = jnp.where(active, gam_j, 0)
        gam = gam.at[:, j].set(gam_j).at[j, :].set(gam_j)
        return lam, gam

    lam, gam = lax.fori_loop(0, k - 1, sweep, (lam, gam))

    z0 = column(0, lam)
    gam_0 = gam[:, 0].at[0].set(beta * beta_bar - basis[0] @ z0)
    has_v = m >= 1
    v_bar = jnp.where(has_v, (z0 + gam_0 @ basis) / jnp.where(has_v, beta, 1), 0)
    params_bar = params_cotangent(matvec, params, basis, lam)
    return v_bar, params_bar


_arnoldi.defvjp(_arnoldi_fwd, _arnoldi_bwd)


def arnoldi(
    matvec: Callable[[Array, Any], Array],
    v: Float[Array, " n"],
    params: Any,
    krylov_dim: int,
    *,
    reorthogonalize: bool = True,
) -> ArnoldiDecomposition:
    """Arnoldi decomposition ``A Q = Q H + r e_k^T`` of ``A = A(params)`` from ``v``.

    Parameters
    ----------
    matvec
        ``matvec(x, params) -> A(params) @ x``, linear in ``x``, JAX-traceable,
        same shape and dtype out as in. Arrays it closes over are differentiated
        too (hoisted with ``jax.closure_convert``).
    v
        Start vector, shape ``(n,)``, real floating dtype, finite.
    params
        Any pytree of arrays ``A`` depends on.
    krylov_dim
        Number of Arnoldi steps ``k``, ``1 <= k <= n``.
    reorthogonalize
        Classical Gram--Schmidt twice (CGS2, default) or once per step.

    Returns
    -------
    ArnoldiDecomposition
        ``basis`` ``Q`` (n, k), ``hessenberg`` ``H`` (k, k), ``residual`` ``r``
        (n,), ``norm`` ``||v||`` and ``num_steps`` (valid columns; fewer than
        ``k`` after a happy breakdown, whose tail is exactly zero).

    Notes
    -----
    Reverse-mode differentiable in ``v`` and every leaf of ``params`` through
    the adjoint recursion of Krämer, Moreno-Muñoz, Roy and Hauberg, "Gradients
    of Functions of Large Matrices" (NeurIPS 2024): one transpose matvec per
    step and one batched VJP of ``matvec`` over the basis, memory O(n k), equal
    to autodiff through the loop up to rounding while ``Q`` is orthonormal to
    working precision. After a happy breakdown the gradient is that of the
    first ``num_steps`` columns (the truncation itself is not differentiated);
    for ``v = 0`` zero cotangents are returned.

    Raises
    ------
    ValueError
        ``krylov_dim`` out of range, ``v`` not 1-D or not finite, ``matvec``
        output of another shape.
    TypeError
        ``krylov_dim`` not an int, ``v`` not real floating, ``matvec`` output of
        another dtype.
    """
    matvec_all, v, params_all, k = prepare(matvec, v, params, krylov_dim, "arnoldi")
    return _arnoldi(matvec_all, k, bool(reorthogonalize), v, params_all)

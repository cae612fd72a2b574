"""Arnoldi process A Q = Q H + r e_k^T (CGS2) and its reverse-mode adjoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from ._common import breakdown_tolerance, params_cotangent, safe_norm, safe_normalize
from ._engine import (
    KrylovDecomposition,
    Process,
    adjoint_inputs,
    block_size,
    differentiable,
    gram_schmidt,
    iterate,
    leading,
    start_cotangent,
    windowed_gram_schmidt,
)

__all__ = ["arnoldi", "arnoldi_adjoint", "arnoldi_iteration", "arnoldi_process"]


def arnoldi_process(
    apply: Callable[[Array], Array], *, reorthogonalize: bool = True, window: int = 0
) -> Process:
    """Arnoldi on a closure ``apply(v) = A v``, for :func:`~pdeinv.krylov._engine.iterate`.

    Orthogonalisation is classical Gram--Schmidt written as two matrix-vector
    products with the basis (BLAS-2, fast on accelerators), done twice when
    ``reorthogonalize`` (CGS2, orthogonal to working precision) and once
    otherwise.  Step ``j`` multiplies only with the leading blocks of rows that
    hold ``q_0..q_j`` (for ``n >= 8192``), so it costs ``O(n (j + b))`` with
    ``b`` about ``max(8, k / 8)`` rather than ``O(n k)``
    (:func:`~pdeinv.krylov._engine.gram_schmidt`).

    ``window > 0`` gives the *incomplete* process: each new direction is
    orthogonalised against the last ``window`` basis vectors only, ``H`` is
    banded (``window - 1`` entries above the diagonal) and a step costs
    ``O(n window)`` like a short recurrence.  ``A Q = Q H + r e_k^T`` still
    holds to rounding, so the integrator's residual error estimate stays
    valid; the basis is orthonormal only locally.  The integrator uses
    ``window = 2`` for the tangent's block operator of a symmetric, skew or
    bordered operator (``pdeinv.expm._rules._sensitivity_config``); for a
    general nonnormal operator the basis can lose rank and convergence slows.

    A happy breakdown (new direction below ``100 eps max_j ||A q_j||``) stops the
    process exactly: later rows of the basis, entries of ``H`` and the residual
    are zero and ``num_steps`` counts the valid rows.  A zero ``v`` gives all
    zeros.
    """

    def init(v, k):
        n = v.shape[0]
        dtype = v.dtype
        beta = safe_norm(v)
        active0 = beta > 0
        q0 = safe_normalize(v, beta, ~active0)
        # Basis stored as rows (k, n) so each step writes one contiguous row.
        basis = jnp.zeros((k, n), dtype=dtype).at[0].set(q0)
        state = (
            basis,
            jnp.zeros((k, k), dtype=dtype),
            jnp.zeros((n,), dtype=dtype),
            active0,
            jnp.zeros((), dtype=jnp.int32),
            jnp.zeros((), dtype=dtype),
        )
        return beta, state

    def step(state, j):
        basis, hessenberg, _, active, num_steps, scale = state
        k, n = basis.shape
        dtype = basis.dtype
        q = basis[j]
        w = apply(q)
        scale = jnp.maximum(scale, safe_norm(w))
        if window:
            h, w = windowed_gram_schmidt(basis, w, j, reorthogonalize, min(window, k))
        else:
            h, w = gram_schmidt(basis, w, j, reorthogonalize, block_size(n, k))
        norm_w = safe_norm(w)
        broke = norm_w <= breakdown_tolerance(scale, dtype)
        num_steps = num_steps + active.astype(num_steps.dtype)
        active = active & ~broke
        hessenberg = hessenberg.at[:, j].set(h)
        sub = jnp.where(broke, jnp.zeros_like(norm_w), norm_w)
        q_next = safe_normalize(w, norm_w, broke)
        # At the last step w/||w|| has no row to go to: it becomes the residual.
        not_last = j + 1 < k
        idx = jnp.minimum(j + 1, k - 1)
        hessenberg = hessenberg.at[idx, j].set(jnp.where(not_last, sub, hessenberg[idx, j]))
        basis = basis.at[idx].set(jnp.where(not_last, q_next, basis[idx]))
        residual = jnp.where(broke, jnp.zeros_like(w), w)
        return (basis, hessenberg, residual, active, num_steps, scale), ()

    def finish(beta, state, _, size):
        # After an early stop row `size` already holds the next direction and
        # H[size, size-1] its norm; a decomposition of dimension `size` leaves
        # both out.
        basis, hessenberg, residual, _, num_steps, _ = state
        dec = KrylovDecomposition(
            leading(basis, size), leading(hessenberg, size), residual, beta, num_steps
        )
        return dec, safe_norm(residual), jnp.zeros((), residual.dtype)

    return Process(init, step, finish)


def arnoldi_iteration(
    apply: Callable[[Array], Array],
    v: Float[Array, " n"],
    krylov_dim: int,
    *,
    reorthogonalize: bool = True,
) -> KrylovDecomposition:
    """Raw (not custom-differentiated) Arnoldi iteration on ``apply(v) = A v``.

    ``krylov_dim`` steps of :func:`arnoldi_process`; the basis comes as
    ``(k, n)`` rows.  No input validation: callers (``pdeinv.expm``,
    :func:`arnoldi`) validate.  Plain JAX autodiff through this function works
    and is the reference the custom adjoint is tested against.
    """
    return iterate(arnoldi_process(apply, reorthogonalize=reorthogonalize), v, krylov_dim)[0]


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

    ``decomposition`` has the basis as ``(k, n)`` rows, ``cotangents`` likewise.
    Returns ``(v_bar, params_bar)``.
    """
    basis, h, r, beta, m = decomposition
    _, h_bar, _, beta_bar, _ = cotangents
    basis_bar, valid, r_bar, transpose = adjoint_inputs(matvec, params, decomposition, cotangents)
    k = basis.shape[0]
    dtype = basis.dtype
    rows = jnp.arange(k)
    pattern = (rows[:, None] <= rows[None, :] + 1) & valid[:, None] & valid[None, :]
    h_bar = jnp.where(pattern, h_bar, 0)

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
    v_bar = start_cotangent(z0 + gam_0 @ basis, beta, m)
    params_bar = params_cotangent(matvec, params, basis, lam)
    return v_bar, params_bar


_arnoldi = differentiable(
    "arnoldi",
    arnoldi_process,
    lambda matvec, params, _, decomposition, cotangents: arnoldi_adjoint(
        matvec, params, decomposition, cotangents
    ),
)


def arnoldi(
    matvec: Callable[[Array, Any], Array],
    v: Float[Array, " n"],
    params: Any,
    krylov_dim: int,
    *,
    reorthogonalize: bool = True,
) -> KrylovDecomposition:
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
    KrylovDecomposition
        ``basis`` ``Q`` (n, k), ``small`` the upper Hessenberg ``H`` (k, k),
        ``residual`` ``r`` (n,), ``norm`` ``||v||`` and ``num_steps`` (valid
        columns; fewer than ``k`` after a happy breakdown, whose tail is exactly
        zero).

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
    return _arnoldi(matvec, v, params, krylov_dim, reorthogonalize=reorthogonalize)

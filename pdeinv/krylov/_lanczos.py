"""Lanczos decomposition A Q = Q T + r e_k^T (A symmetric) and its adjoint."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from ._arnoldi import arnoldi_adjoint
from ._common import (
    breakdown_tolerance,
    params_cotangent,
    prepare,
    safe_norm,
    safe_normalize,
    transpose_matvec,
)

__all__ = ["LanczosDecomposition", "lanczos", "lanczos_iteration", "lanczos_until"]


class LanczosDecomposition(NamedTuple):
    """Result of ``krylov_dim`` Lanczos steps: ``A Q = Q T + r e_k^T``.

    Attributes
    ----------
    basis
        ``Q``, shape ``(n, k)``, ``Q[:, 0] = v / ||v||``; columns past a happy
        breakdown are zero. Without reorthogonalisation the columns are only
        locally orthogonal (``q_j^T q_{j+1} = 0``, unit norms) in floating point.
    tridiagonal
        ``T``, shape ``(k, k)``, symmetric tridiagonal.
    residual
        ``r = beta_{k} q_{k+1}``, shape ``(n,)``; zero after a breakdown.
    norm
        ``||v||``, shape ``()``.
    num_steps
        Number of valid basis columns (``k`` unless a happy breakdown occurred;
        ``0`` for ``v = 0``).
    """

    basis: Float[Array, "n k"]
    tridiagonal: Float[Array, "k k"]
    residual: Float[Array, " n"]
    norm: Float[Array, ""]
    num_steps: Int[Array, ""]


def lanczos_iteration(
    apply: Callable[[Array], Array],
    v: Float[Array, " n"],
    krylov_dim: int,
    *,
    reorthogonalize: bool = False,
    length=None,
    basis_rows: bool = False,
) -> LanczosDecomposition:
    """Raw (not custom-differentiated) Lanczos iteration on ``apply(v) = A v``.

    Without ``reorthogonalize`` this is the three-term recurrence,
    ``b_{j+1} q_{j+1} = A q_j - alpha_j q_j - b_j q_{j-1}``: O(n) work per step
    besides the matvec (for stencil operators full reorthogonalisation, O(n k)
    per step, costs more than the matvec; docs/design.md#plain-lanczos measured the plain
    recurrence 5x faster at equal accuracy). With ``reorthogonalize`` the new
    direction is additionally orthogonalised twice against the whole basis.

    ``A`` is assumed symmetric; nothing checks it. Happy breakdown, zero ``v``
    and ``length`` behave as in :func:`~pdeinv.krylov._arnoldi.arnoldi_iteration`.
    ``basis_rows=True`` returns the basis transposed, as ``(k, n)`` rows (the
    layout the integrator works in; transposing costs as much as several steps).

    The plain recurrence (no ``reorthogonalize``, no ``length``) is a ``lax.scan``
    that emits each basis vector as an output instead of writing it into a
    carried ``(k, n)`` buffer: measured 1.7x faster per step on XLA:CPU for a
    16k-point stencil, where the step's bookkeeping costs more than the matvec.
    """
    if not reorthogonalize and length is None:
        dec = _lanczos_scan(apply, v, int(krylov_dim))
        return dec if basis_rows else dec._replace(basis=dec.basis.T)
    n = v.shape[0]
    k = int(krylov_dim)
    dtype = v.dtype
    beta = safe_norm(v)
    active0 = beta > 0
    q0 = safe_normalize(v, beta, ~active0)

    basis = jnp.zeros((k, n), dtype=dtype).at[0].set(q0)
    alphas = jnp.zeros((k,), dtype=dtype)
    offdiag = jnp.zeros((k,), dtype=dtype)  # offdiag[j] = b_{j+1} couples q_j, q_{j+1}

    def step(j, state):
        basis, alphas, offdiag, q_prev, b_prev, _, active, num_steps, scale = state
        q = basis[j]
        w = apply(q)
        scale = jnp.maximum(scale, safe_norm(w))
        w = w - b_prev * q_prev
        alpha = jnp.dot(q, w)
        w = w - alpha * q
        if reorthogonalize:
            for _ in range(2):
                w = w - (basis @ w) @ basis
        norm_w = safe_norm(w)
        broke = norm_w <= breakdown_tolerance(scale, dtype)
        num_steps = num_steps + active.astype(num_steps.dtype)
        active = active & ~broke
        b_next = jnp.where(broke, jnp.zeros_like(norm_w), norm_w)
        q_next = safe_normalize(w, norm_w, broke)
        alphas = alphas.at[j].set(alpha)
        not_last = j + 1 < stop
        offdiag = offdiag.at[j].set(jnp.where(not_last, b_next, jnp.zeros_like(b_next)))
        idx = jnp.minimum(j + 1, k - 1)
        basis = basis.at[idx].set(jnp.where(not_last, q_next, basis[idx]))
        residual = jnp.where(broke, jnp.zeros_like(w), w)
        return basis, alphas, offdiag, q, b_next, residual, active, num_steps, scale

    init = (
        basis,
        alphas,
        offdiag,
        jnp.zeros((n,), dtype=dtype),
        jnp.zeros((), dtype=dtype),
        jnp.zeros((n,), dtype=dtype),
        active0,
        jnp.zeros((), dtype=jnp.int32),
        jnp.zeros((), dtype=dtype),
    )
    stop = k if length is None else jnp.minimum(length, k)
    out = lax.fori_loop(0, stop, step, init)
    basis, alphas, offdiag = out[0], out[1], out[2]
    residual, num_steps = out[5], out[7]
    b = offdiag[: k - 1]
    tridiagonal = jnp.diag(alphas) + jnp.diag(b, 1) + jnp.diag(b, -1)
    return LanczosDecomposition(
        basis if basis_rows else basis.T, tridiagonal, residual, beta, num_steps
    )


def _recurrence_step(apply, dtype):
    """One step of the plain three-term recurrence as a scan body.

    ``max_j ||A q_j||`` for the breakdown test is taken from the recurrence,
    ``||A q_j||^2 = b_j^2 + alpha_j^2 + b_{j+1}^2``, which saves a reduction
    per step.  After a breakdown ``q`` and ``b`` are zero, so every later step
    produces zeros.
    """

    def step(state, _):
        q, q_prev, b_prev, active, num_steps, scale = state
        w = apply(q) - b_prev * q_prev
        alpha = jnp.dot(q, w)
        w = w - alpha * q
        norm_w = safe_norm(w)
        scale = jnp.maximum(scale, jnp.sqrt(b_prev**2 + alpha**2 + norm_w**2))
        broke = norm_w <= breakdown_tolerance(scale, dtype)
        num_steps = num_steps + active.astype(num_steps.dtype)
        active = active & ~broke
        b_next = jnp.where(broke, jnp.zeros_like(norm_w), norm_w)
        q_next = safe_normalize(w, norm_w, broke)
        return (q_next, q, b_next, active, num_steps, scale), (q, alpha, b_next)

    return step


def _recurrence_init(v):
    dtype = v.dtype
    beta = safe_norm(v)
    active0 = beta > 0
    q0 = safe_normalize(v, beta, ~active0)
    zero = jnp.zeros((), dtype)
    return beta, (q0, jnp.zeros_like(v), zero, active0, jnp.zeros((), jnp.int32), zero)


def _tridiagonal(alphas, offdiag, size):
    """Symmetric tridiagonal matrix; couplings past row ``size - 1`` left out."""
    k = alphas.shape[0]
    b = jnp.where(jnp.arange(k - 1) < size - 1, offdiag[: k - 1], 0)
    return jnp.diag(alphas) + jnp.diag(b, 1) + jnp.diag(b, -1)


def _lanczos_scan(apply, v, k: int) -> LanczosDecomposition:
    """Plain three-term recurrence as a scan; basis returned as ``(k, n)`` rows.

    Same results as the loop in :func:`lanczos_iteration` (breakdown included).
    """
    beta, init = _recurrence_init(v)
    final, (basis, alphas, offdiag) = lax.scan(
        _recurrence_step(apply, v.dtype), init, None, length=k
    )
    q_last, _, b_last, _, num_steps, _ = final
    # The direction after the last column is the residual's: r = b_k q_k.
    residual = b_last * q_last
    return LanczosDecomposition(basis, _tridiagonal(alphas, offdiag, k), residual, beta, num_steps)


def lanczos_until(apply, v, krylov_dim: int, chunk: int, stop):
    """Plain recurrence that may stop before ``krylov_dim`` steps (Krylov-size control).

    Runs chunks of ``chunk`` steps (scans, as in :func:`lanczos_iteration`); after
    each chunk, ``stop(tridiagonal, size, residual_norm)`` decides whether the
    ``size``-dimensional decomposition is enough.  The result is zero-padded to
    ``krylov_dim``: ``basis`` rows and tridiagonal entries past ``size`` are
    zero, so small-matrix functions of the padded matrix act on the leading
    block unchanged.  Returns ``(decomposition with basis as (k, n) rows,
    size)``.  ``chunk`` must divide ``krylov_dim``.

    (A single scan with a ``lax.cond`` around each step's matvec was measured
    10x slower on XLA:CPU; the while loop over chunks costs ~15 % over the plain
    scan.)
    """
    k = int(krylov_dim)
    if k % chunk:
        raise ValueError(f"chunk={chunk} must divide krylov_dim={k}")
    n = v.shape[0]
    dtype = v.dtype
    beta, rec0 = _recurrence_init(v)
    step = _recurrence_step(apply, dtype)

    def body(c):
        basis, alphas, offdiag, rec, size, _ = c
        rec, (rows, a, b) = lax.scan(step, rec, None, length=chunk)
        basis = lax.dynamic_update_slice_in_dim(basis, rows, size, 0)
        alphas = lax.dynamic_update_slice_in_dim(alphas, a, size, 0)
        offdiag = lax.dynamic_update_slice_in_dim(offdiag, b, size, 0)
        size = size + chunk
        done = (size >= k) | stop(_tridiagonal(alphas, offdiag, size), size, rec[2])
        return basis, alphas, offdiag, rec, size, done

    init = (
        jnp.zeros((k, n), dtype),
        jnp.zeros((k,), dtype),
        jnp.zeros((k,), dtype),
        rec0,
        jnp.zeros((), jnp.int32),
        jnp.zeros((), bool),
    )
    basis, alphas, offdiag, rec, size, _ = lax.while_loop(lambda c: ~c[5], body, init)
    q_last, _, b_last, _, num_steps, _ = rec
    tridiagonal = _tridiagonal(alphas, offdiag, size)
    return LanczosDecomposition(basis, tridiagonal, b_last * q_last, beta, num_steps), size


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _lanczos(matvec, krylov_dim, reorthogonalize, v, params):
    return lanczos_iteration(
        lambda x: matvec(x, params), v, krylov_dim, reorthogonalize=reorthogonalize
    )


def _lanczos_fwd(matvec, krylov_dim, reorthogonalize, v, params):
    decomposition = _lanczos(matvec, krylov_dim, reorthogonalize, v, params)
    return decomposition, (decomposition, params)


def _lanczos_bwd(matvec, krylov_dim, reorthogonalize, residuals, cotangents):
    """Adjoint of the three-term recurrence, O(n) per step besides one matvec.

    The recurrence solves, column by column (0-based, b_j = T[j, j-1]),

        A q_j = b_j q_{j-1} + alpha_j q_j + b_{j+1} q_{j+1}   (q_k := r / b_k),
        q_j^T q_j = 1,  q_j^T q_{j+1} = 0,  q_{k-1}^T r = 0,  ||v|| q_0 = v,

    i.e. only *local* orthogonality, which is exactly what it enforces in
    floating point. Multipliers lam_j (for column j), nu_j (norms) and omega_j
    (adjacent orthogonality) then follow from a backward three-term recurrence:

        lam_{k-1} = r_bar + omega_{k-1} q_{k-1},  omega_{k-1} = alpha_bar_{k-1} - q_{k-1}^T r_bar,
        y_j = Q_bar[:, j] + A^T lam_j - alpha_j lam_j - b_{j+1} lam_{j+1} + omega_j q_{j+1},
        nu_j = b_j (b_bar_j - lam_j^T q_{j-1}) - q_j^T y_j,
        omega_{j-1} = b_j alpha_bar_{j-1} - q_{j-1}^T y_j,
        b_j lam_{j-1} = y_j + nu_j q_j + omega_{j-1} q_{j-1},

    (alpha_bar_j = T_bar[j, j], b_bar_j = T_bar[j, j-1] + T_bar[j-1, j]) and at
    column 0, ||v|| lam = -(y_0 + nu_0 q_0) with nu_0 = ||v|| norm_bar - q_0^T y_0;
    v_bar = -lam, params_bar = sum_j d<lam_j, A q_j>/dparams. Because the
    constraints are the ones the loop satisfies, this matches autodiff through
    the plain recurrence even after global orthogonality is lost. Breakdown and
    v = 0 are handled as in the Arnoldi adjoint.
    """
    (q, t, r, beta, m), params = residuals
    q_bar, t_bar, r_bar, beta_bar, _ = cotangents
    if reorthogonalize:
        # With full reorthogonalisation the loop enforces global orthogonality:
        # differentiate that (the Arnoldi adjoint; O(n k^2) like the forward).
        # The local recurrence below would amplify rounding like the plain
        # recurrence's loss of orthogonality does.
        return arnoldi_adjoint(matvec, params, (q, t, r, beta, m), (q_bar, t_bar, r_bar, beta_bar))
    k = krylov_dim
    dtype = q.dtype
    n = r.shape[0]
    basis = q.T
    rows = jnp.arange(k)
    valid = rows < m
    basis_bar = jnp.where(valid[:, None], q_bar.T, 0)
    alpha = jnp.diagonal(t)
    # b[j] = b_j couples q_{j-1} and q_j; b[0] = 0 and b[k] := 0 (no such entry in T).
    b = jnp.concatenate([jnp.zeros((1,), dtype), jnp.diagonal(t, -1), jnp.zeros((1,), dtype)])
    alpha_bar = jnp.where(valid, jnp.diagonal(t_bar), 0)
    b_bar = jnp.diagonal(t_bar, -1) + jnp.diagonal(t_bar, 1)
    b_bar = jnp.concatenate([jnp.zeros((1,), dtype), jnp.where(valid[1:], b_bar, 0)])
    # r is a function of (v, params) only if no breakdown zeroed it (a
    # breakdown at the last step leaves m == k but r == 0 exactly).
    r_bar = jnp.where((m == k) & jnp.any(r != 0), r_bar, 0)
    transpose = transpose_matvec(matvec, params, r)
    # The vector after q_j in the recurrence: q_{j+1}, or r for the last column.
    # After a breakdown both are zero, as the derivation needs.
    basis_next = jnp.concatenate([basis[1:], r[None, :]], axis=0)

    last = jnp.maximum(m - 1, 0)
    omega_last = alpha_bar[last] - basis[last] @ r_bar
    lam_last = r_bar + omega_last * basis[last]
    lam = jnp.zeros((k + 1, n), dtype=dtype)  # row k stays 0: lam_{k} does not exist
    lam = lam.at[last].set(jnp.where(m >= 1, lam_last, 0))
    omega = jnp.where(m == k, omega_last, 0)

    def column(j, lam, omega):
        return (
            basis_bar[j]
            + transpose(lam[j])
            - alpha[j] * lam[j]
            - b[j + 1] * lam[j + 1]
            + omega * basis_next[j]
        )

    def sweep(i, state):
        lam, omega = state
        j = k - 1 - i
        active = j < m
        y = column(j, lam, omega)
        nu = b[j] * (b_bar[j] - lam[j] @ basis[j - 1]) - basis[j] @ y
        omega_prev = b[j] * alpha_bar[j - 1] - basis[j - 1] @ y
        lam_prev = (y + nu * basis[j] + omega_prev * basis[j - 1]) / jnp.where(active, b[j], 1)
        lam = lam.at[j - 1].set(jnp.where(active, lam_prev, lam[j - 1]))
        omega = jnp.where(active, omega_prev, jnp.where(j - 1 == m - 1, omega_last, omega))
        return lam, omega

    lam, omega = lax.fori_loop(0, k - 1, sweep, (lam, omega))

    y0 = column(0, lam, omega)
    nu0 = beta * beta_bar - basis[0] @ y0
    has_v = m >= 1
    v_bar = jnp.where(has_v, (y0 + nu0 * basis[0]) / jnp.where(has_v, beta, 1), 0)
    params_bar = params_cotangent(matvec, params, basis, lam[:k])
    return v_bar, params_bar


_lanczos.defvjp(_lanczos_fwd, _lanczos_bwd)


def lanczos(
    matvec: Callable[[Array, Any], Array],
    v: Float[Array, " n"],
    params: Any,
    krylov_dim: int,
    *,
    reorthogonalize: bool = False,
) -> LanczosDecomposition:
    """Lanczos decomposition ``A Q = Q T + r e_k^T`` of a symmetric ``A(params)``.

    Parameters
    ----------
    matvec
        ``matvec(x, params) -> A(params) @ x``, symmetric and linear in ``x``
        (symmetry is assumed, not checked), same shape and dtype out as in.
        Arrays it closes over are differentiated too.
    v
        Start vector, shape ``(n,)``, real floating dtype, finite.
    params
        Any pytree of arrays ``A`` depends on.
    krylov_dim
        Number of Lanczos steps ``k``, ``1 <= k <= n``.
    reorthogonalize
        ``False`` (default): plain three-term recurrence, O(n) work per step
        besides the matvec. ``True``: full reorthogonalisation against the basis
        (O(n k) per step), for when ``k`` is large enough that orthogonality
        loss matters.

    Returns
    -------
    LanczosDecomposition
        ``basis`` (n, k), ``tridiagonal`` ``T`` (k, k), ``residual`` (n,),
        ``norm`` ``||v||`` and ``num_steps``.

    Notes
    -----
    Reverse-mode differentiable in ``v`` and every leaf of ``params`` through
    the Lanczos adjoint of Krämer et al. (NeurIPS 2024): a backward three-term
    recurrence with one transpose matvec per step and one batched VJP of
    ``matvec`` over the basis, memory O(n k). It equals autodiff through the
    plain recurrence up to rounding while the basis stays (locally)
    orthogonal; once the plain recurrence loses orthogonality (``k`` near the
    number of distinct eigenvalues) both are sensitive to rounding, and
    ``reorthogonalize=True`` should be used: its adjoint differentiates the
    globally orthogonal process (the Arnoldi adjoint), stable for any ``k``.
    Gradients with respect to ``params`` assume that ``A(params)`` is symmetric
    for every ``params`` (only symmetric perturbations are meaningful).
    Breakdown and ``v = 0`` are treated as in :func:`arnoldi`.

    Raises
    ------
    ValueError
        ``krylov_dim`` out of range, ``v`` not 1-D or not finite, ``matvec``
        output of another shape.
    TypeError
        ``krylov_dim`` not an int, ``v`` not real floating, ``matvec`` output of
        another dtype.
    """
    matvec_all, v, params_all, k = prepare(matvec, v, params, krylov_dim, "lanczos")
    return _lanczos(matvec_all, k, bool(reorthogonalize), v, params_all)

"""Lanczos process A Q = Q T + r e_k^T (A symmetric) and its adjoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from ._arnoldi import arnoldi_adjoint
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
)

__all__ = ["lanczos", "lanczos_adjoint", "lanczos_iteration", "lanczos_process"]


def lanczos_process(apply: Callable[[Array], Array], *, reorthogonalize: bool = False) -> Process:
    """Lanczos on a closure ``apply(v) = A v``, for :func:`~pdeinv.krylov._engine.iterate`.

    Without ``reorthogonalize`` this is the three-term recurrence,
    ``b_{j+1} q_{j+1} = A q_j - alpha_j q_j - b_j q_{j-1}``: O(n) work per step
    besides the matvec (for stencil operators full reorthogonalisation, O(n k)
    per step, costs more than the matvec; docs/design.md#plain-lanczos measured the plain
    recurrence 5x faster at equal accuracy).  Each step emits its basis vector
    as a scan output instead of writing it into a carried ``(k, n)`` buffer:
    measured 1.7x faster per step on XLA:CPU for a 16k-point stencil, where the
    step's bookkeeping costs more than the matvec.  With ``reorthogonalize`` the
    new direction is additionally orthogonalised twice against the basis so far
    (carried, as in Arnoldi).

    ``A`` is assumed symmetric; nothing checks it.  Happy breakdown and zero
    ``v`` behave as in :func:`~pdeinv.krylov._arnoldi.arnoldi_process`.
    """
    return _reorthogonalized(apply) if reorthogonalize else _recurrence(apply)


def _tridiagonal(alphas, offdiag, size):
    """Symmetric tridiagonal matrix; couplings past row ``size - 1`` left out."""
    k = alphas.shape[0]
    b = jnp.where(jnp.arange(k - 1) < size - 1, offdiag[: k - 1], 0)
    return jnp.diag(alphas) + jnp.diag(b, 1) + jnp.diag(b, -1)


def _start(v):
    beta = safe_norm(v)
    active0 = beta > 0
    return beta, active0, safe_normalize(v, beta, ~active0)


def _recurrence(apply, *, bordered: bool = False) -> Process:
    """The plain three-term recurrence (``bordered``: started one vector late,
    see :func:`bordered_lanczos_process`).

    ``max_j ||A q_j||`` for the breakdown test is taken from the recurrence,
    ``||A q_j||^2 = b_j^2 + alpha_j^2 + b_{j+1}^2``, which saves a reduction
    per step.  After a breakdown ``q`` and ``b`` are zero, so every later step
    produces zeros.
    """

    def init(v, k):
        beta, active0, q0 = _start(v)
        zero = jnp.zeros((), v.dtype)
        return beta, (q0, jnp.zeros_like(v), zero, active0, jnp.zeros((), jnp.int32), zero)

    def step(state, j):
        q, q_prev, b_prev, active, num_steps, scale = state
        w = apply(q) - b_prev * q_prev
        alpha = jnp.dot(q, w)
        if bordered:
            # q_0 starts the space but is not a Lanczos vector: nothing is
            # subtracted from A q_0, and q_1 has no predecessor in the recurrence.
            first = j == 0
            alpha = jnp.where(first, jnp.zeros_like(alpha), alpha)
        w = w - alpha * q
        norm_w = safe_norm(w)
        # The breakdown scale is a threshold, not a value: no derivative (whose
        # sqrt at an exact breakdown would be 0/0 in forward mode).
        scale = jnp.maximum(scale, jnp.sqrt(lax.stop_gradient(b_prev**2 + alpha**2 + norm_w**2)))
        broke = norm_w <= breakdown_tolerance(scale, q.dtype)
        num_steps = num_steps + active.astype(num_steps.dtype)
        active = active & ~broke
        b_next = jnp.where(broke, jnp.zeros_like(norm_w), norm_w)
        q_next = safe_normalize(w, norm_w, broke)
        b_carried, q_carried = b_next, q
        if bordered:
            b_carried = jnp.where(first, jnp.zeros_like(b_next), b_next)
            q_carried = jnp.where(first, jnp.zeros_like(q), q)
        return (q_next, q_carried, b_carried, active, num_steps, scale), (q, alpha, b_next)

    def finish(beta, state, outputs, size):
        basis, alphas, offdiag = outputs
        q_last, _, b_last, _, num_steps, _ = state
        # The direction after the last row is the residual's: r = b_k q_k.
        dec = KrylovDecomposition(
            basis, _tridiagonal(alphas, offdiag, size), b_last * q_last, beta, num_steps
        )
        return dec, b_last, jnp.zeros((), b_last.dtype)

    return Process(init, step, finish, hands_over=True)


def _reorthogonalized(apply) -> Process:
    """Three-term recurrence plus CGS2 against the carried basis."""

    def init(v, k):
        n = v.shape[0]
        dtype = v.dtype
        beta, active0, q0 = _start(v)
        state = (
            jnp.zeros((k, n), dtype=dtype).at[0].set(q0),
            jnp.zeros((n,), dtype=dtype),
            jnp.zeros((), dtype=dtype),
            jnp.zeros((n,), dtype=dtype),
            active0,
            jnp.zeros((), dtype=jnp.int32),
            jnp.zeros((), dtype=dtype),
        )
        return beta, state

    def step(state, j):
        basis, q_prev, b_prev, _, active, num_steps, scale = state
        k, n = basis.shape
        q = basis[j]
        w = apply(q)
        scale = jnp.maximum(scale, safe_norm(w))
        w = w - b_prev * q_prev
        alpha = jnp.dot(q, w)
        w = w - alpha * q
        _, w = gram_schmidt(basis, w, j, True, block_size(n, k))
        norm_w = safe_norm(w)
        broke = norm_w <= breakdown_tolerance(scale, q.dtype)
        num_steps = num_steps + active.astype(num_steps.dtype)
        active = active & ~broke
        b_next = jnp.where(broke, jnp.zeros_like(norm_w), norm_w)
        q_next = safe_normalize(w, norm_w, broke)
        not_last = j + 1 < k
        coupling = jnp.where(not_last, b_next, jnp.zeros_like(b_next))
        idx = jnp.minimum(j + 1, k - 1)
        basis = basis.at[idx].set(jnp.where(not_last, q_next, basis[idx]))
        residual = jnp.where(broke, jnp.zeros_like(w), w)
        return (basis, q, b_next, residual, active, num_steps, scale), (alpha, coupling)

    def finish(beta, state, outputs, size):
        alphas, offdiag = outputs
        basis, _, _, residual, _, num_steps, _ = state
        dec = KrylovDecomposition(
            leading(basis, size), _tridiagonal(alphas, offdiag, size), residual, beta, num_steps
        )
        return dec, safe_norm(residual), jnp.zeros((), residual.dtype)

    return Process(init, step, finish)


def lanczos_iteration(
    apply: Callable[[Array], Array],
    v: Float[Array, " n"],
    krylov_dim: int,
    *,
    reorthogonalize: bool = False,
) -> KrylovDecomposition:
    """Raw (not custom-differentiated) Lanczos iteration on ``apply(v) = A v``.

    ``krylov_dim`` steps of :func:`lanczos_process` in one scan; the basis comes
    as ``(k, n)`` rows.  No input validation.
    """
    return iterate(lanczos_process(apply, reorthogonalize=reorthogonalize), v, krylov_dim)[0]


def lanczos_adjoint(matvec, params, reorthogonalize, decomposition, cotangents):
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
    v = 0 are handled as in the Arnoldi adjoint.  With ``reorthogonalize`` the
    process enforces global orthogonality and the Arnoldi adjoint is used.
    ``decomposition`` has the basis as ``(k, n)`` rows, ``cotangents`` likewise.
    """
    if reorthogonalize:
        # With full reorthogonalisation the loop enforces global orthogonality:
        # differentiate that (the Arnoldi adjoint; O(n k^2) like the forward).
        # The local recurrence below would amplify rounding like the plain
        # recurrence's loss of orthogonality does.
        return arnoldi_adjoint(matvec, params, decomposition, cotangents)
    basis, t, r, beta, m = decomposition
    _, t_bar, _, beta_bar, _ = cotangents
    basis_bar, valid, r_bar, transpose = adjoint_inputs(matvec, params, decomposition, cotangents)
    k, n = basis.shape
    dtype = basis.dtype
    alpha = jnp.diagonal(t)
    # b[j] = b_j couples q_{j-1} and q_j; b[0] = 0 and b[k] := 0 (no such entry in T).
    b = jnp.concatenate([jnp.zeros((1,), dtype), jnp.diagonal(t, -1), jnp.zeros((1,), dtype)])
    alpha_bar = jnp.where(valid, jnp.diagonal(t_bar), 0)
    b_bar = jnp.diagonal(t_bar, -1) + jnp.diagonal(t_bar, 1)
    b_bar = jnp.concatenate([jnp.zeros((1,), dtype), jnp.where(valid[1:], b_bar, 0)])
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
    v_bar = start_cotangent(y0 + nu0 * basis[0], beta, m)
    params_bar = params_cotangent(matvec, params, basis, lam[:k])
    return v_bar, params_bar


_lanczos = differentiable("lanczos", lanczos_process, lanczos_adjoint)


def lanczos(
    matvec: Callable[[Array, Any], Array],
    v: Float[Array, " n"],
    params: Any,
    krylov_dim: int,
    *,
    reorthogonalize: bool = False,
) -> KrylovDecomposition:
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
    KrylovDecomposition
        ``basis`` (n, k), ``small`` the symmetric tridiagonal ``T`` (k, k),
        ``residual`` (n,), ``norm`` ``||v||`` and ``num_steps``.

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
    return _lanczos(matvec, v, params, krylov_dim, reorthogonalize=reorthogonalize)


def bordered_lanczos_process(apply: Callable[[Array], Array]) -> Process:
    """Krylov process for an affine system augmented as ``[[A, b], [0, 0]]``, ``A`` symmetric.

    For ``u' = A u + b`` on the augmented state ``x = [u; 1]`` (see
    :func:`pdeinv.augment_affine`) the Krylov space of ``x`` is ``span{x}`` plus
    ``[K(A, A u + b); 0]``: the augmented operator maps ``x`` to ``[A u + b; 0]``
    and every vector with a zero last entry to ``[A v; 0]``.  So the basis is
    ``q_0 = x / ||x||`` followed by the plain symmetric three-term recurrence
    started from ``apply(q_0)``, and the projected matrix is the symmetric
    tridiagonal ``T`` of that recurrence bordered by one column,
    ``H = [[0, 0], [||A q_0|| e_1, T]]``: ``A Q = Q H + r e_k^T`` holds exactly
    although ``q_0`` is not orthogonal to the rest.  The cost per step is that of
    Lanczos, where Arnoldi on the augmented (nonsymmetric) operator would
    orthogonalise against the whole basis.

    ``apply`` must map vectors with a zero last entry to vectors with a zero
    last entry (the caller's augmented operator does; nothing checks it here).
    """
    inner = _recurrence(apply, bordered=True)

    def finish(beta, state, outputs, size):
        dec, residual_norm, skewness = inner.finish(beta, state, outputs, size)
        # T's coupling of q_0 and q_1 is one-sided: A q_0 has a q_1 part, but
        # A q_1 has no q_0 part (the recurrence never subtracted one).
        return dec._replace(small=dec.small.at[0, 1].set(0.0)), residual_norm, skewness

    return Process(inner.init, inner.step, finish)

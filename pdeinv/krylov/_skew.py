"""Lanczos process for skew-symmetric operators (``A^T = -A``).

For a skew-symmetric ``A`` the projected matrix ``H = Q^T A Q`` is skew and upper
Hessenberg, hence tridiagonal with a zero diagonal:

    A q_j = -b_j q_{j-1} + b_{j+1} q_{j+1},

a two-term recurrence (no diagonal coefficient to compute, O(n) work per step
besides the matvec).  Such operators arise from conservative oscillatory systems
written in energy variables, e.g. the wave equation in velocity-stress form
``(u, sigma)' = (-G^T sigma, G u)``: the Euclidean norm of the state is then the
physical energy, and ``exp(t A)`` is orthogonal.

Nothing in the recurrence needs ``A`` to be skew, so the process also measures
how far it is from skew on the vectors it meets: ``max_j |q_j^T A q_j|``
relative to ``max_j ||A q_j||``.  For a skew ``A`` this is rounding noise
(``x^T A x = 0`` for every ``x``); for an operator with a symmetric part it is of
order one on almost every start vector.  Callers turn a large value into an
error instead of returning a silently wrong result.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

from ._common import breakdown_tolerance, safe_norm, safe_normalize
from ._engine import KrylovDecomposition, Process, iterate

__all__ = ["skew_lanczos_iteration", "skew_lanczos_process", "skewness_tolerance"]


def skewness_tolerance(dtype) -> float:
    """Largest ``max_j |q_j^T A q_j| / max_j ||A q_j||`` accepted as skew-symmetric.

    ``sqrt(eps)``: far above the rounding of one inner product (about
    ``sqrt(n) eps``), far below the ratio of any operator with a visible
    symmetric part.
    """
    return float(np.sqrt(np.finfo(dtype).eps))


def _skew_tridiagonal(offdiag, size):
    """``H`` with ``H[j+1, j] = b_{j+1}``, ``H[j, j+1] = -b_{j+1}``; rows past ``size`` zero."""
    k = offdiag.shape[0]
    b = jnp.where(jnp.arange(k - 1) < size - 1, offdiag[: k - 1], 0)
    return jnp.diag(b, -1) - jnp.diag(b, 1)


def skew_lanczos_process(apply: Callable[[Array], Array]) -> Process:
    """The two-term recurrence on ``apply(x) = A x``, for :func:`~pdeinv.krylov._engine.iterate`.

    State ``(q, q_prev, b_prev, active, num_steps, scale, skew, qw_prev)``; each step
    emits ``(q, b_next)``.  ``||A q_j||^2 = b_j^2 + b_{j+1}^2`` for a skew ``A``
    (the two terms are orthogonal), which gives the breakdown scale without a
    reduction.  The decomposition has ``H`` skew tridiagonal; the skewness
    returned with it is ``max_j |q_j^T A q_j| / max_j ||A q_j||`` (see
    :func:`skewness_tolerance`).  Happy breakdown and ``v = 0`` behave as in
    :func:`~pdeinv.krylov._lanczos.lanczos_process`.
    """

    def init(v, k):
        dtype = v.dtype
        beta = safe_norm(v)
        active0 = beta > 0
        q0 = safe_normalize(v, beta, ~active0)
        zero = jnp.zeros((), dtype)
        state = (q0, jnp.zeros_like(v), zero, active0, jnp.zeros((), jnp.int32), zero, zero, zero)
        return beta, state

    def step(state, _):
        q, q_prev, b_prev, active, num_steps, scale, skew, qw_prev = state
        w = apply(q) + b_prev * q_prev
        # q_j^T A q_j without a second pass over A q_j (XLA recomputes the
        # matvec for each consumer): with d_j = q_j^T w_j and
        # b_j q_j^T q_{j-1} = d_{j-1} (q_j = w_{j-1} / b_j), it is d_j - d_{j-1},
        # exact up to rounding of order eps * ||A q_j||.  No predecessor (first
        # step, after a breakdown): d_j itself.
        qw = jnp.dot(q, w)
        diagonal = qw - jnp.where(b_prev > 0, qw_prev, jnp.zeros_like(qw_prev))
        norm_w = safe_norm(w)
        # A threshold, not a value: no derivative (0/0 at an exact breakdown).
        scale = jnp.maximum(scale, jnp.sqrt(lax.stop_gradient(b_prev**2 + norm_w**2 + diagonal**2)))
        skew = jnp.maximum(skew, jnp.abs(diagonal))
        broke = norm_w <= breakdown_tolerance(scale, q.dtype)
        num_steps = num_steps + active.astype(num_steps.dtype)
        active = active & ~broke
        b_next = jnp.where(broke, jnp.zeros_like(norm_w), norm_w)
        q_next = safe_normalize(w, norm_w, broke)
        return (q_next, q, b_next, active, num_steps, scale, skew, qw), (q, b_next)

    def finish(beta, state, outputs, size):
        rows, offdiag = outputs
        q_last, _, b_last, _, num_steps, scale, skew, _ = state
        dec = KrylovDecomposition(
            rows, _skew_tridiagonal(offdiag, size), b_last * q_last, beta, num_steps
        )
        return dec, b_last, skew / jnp.where(scale > 0, scale, 1.0)

    return Process(init, step, finish, hands_over=True)


def skew_lanczos_iteration(
    apply: Callable[[Array], Array], v: Float[Array, " n"], krylov_dim: int
) -> tuple[KrylovDecomposition, Array]:
    """``krylov_dim`` steps of :func:`skew_lanczos_process`: ``(decomposition, skewness)``.

    The basis comes as ``(k, n)`` rows.  Not custom-differentiated: the
    integrator owns the gradient.
    """
    return iterate(skew_lanczos_process(apply), v, krylov_dim)

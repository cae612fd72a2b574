"""Arnoldi decomposition A Q = Q H + r e_k^T and its reverse-mode adjoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from ._common import (
    breakdown_tolerance,
    safe_norm,
    safe_normalize,
)

__all__ = ["ArnoldiDecomposition", "arnoldi_iteration"]


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
) -> ArnoldiDecomposition:
    """Raw (not custom-differentiated) Arnoldi iteration on a closure ``apply(v) = A v``.

    Orthogonalisation is classical Gram--Schmidt written as two matrix-vector
    products with the basis (BLAS-2, fast on accelerators), done twice when
    ``reorthogonalize`` (CGS2, orthogonal to working precision) and once
    otherwise. No input validation: callers (``pdeinv.expm``, :func:`arnoldi`)
    validate. Plain JAX autodiff through this function works and is the
    reference the custom adjoint is tested against.

    A happy breakdown (new direction below ``100 eps max_j ||A q_j||``) stops the
    process exactly: later columns, entries of ``H`` and the residual are zero
    and ``num_steps`` counts the valid columns. A zero ``v`` gives all zeros.
    """
    n = v.shape[0]
    k = int(krylov_dim)
    dtype = v.dtype
    beta = safe_norm(v)
    active0 = beta > 0
    q0 = safe_normalize(v, beta, ~active0)

    # Basis stored as rows (k, n) so each step writes one contiguous row.
    basis = jnp.zeros((k, n), dtype=dtype).at[0].set(q0)
    hessenberg = jnp.zeros((k, k), dtype=dtype)

    def step(j, state):
        basis, hessenberg, _, active, num_steps, scale = state
        q = basis[j]
        w = apply(q)
        scale = jnp.maximum(scale, safe_norm(w))
        # Rows > j of `basis` are still zero, so full products touch only q_0..q_j.
        h = basis @ w
        w = w - basis.T @ h
        if reorthogonalize:
            h2 = basis @ w
            w = w - basis.T @ h2
            h = h + h2
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
        return basis, hessenberg, residual, active, num_steps, scale

    init = (
        basis,
        hessenberg,
        jnp.zeros((n,), dtype=dtype),
        active0,
        jnp.zeros((), dtype=jnp.int32),
        jnp.zeros((), dtype=dtype),
    )
    basis, hessenberg, residual, _, num_steps, _ = lax.fori_loop(0, k, step, init)
    return ArnoldiDecomposition(basis.T, hessenberg, residual, beta, num_steps)

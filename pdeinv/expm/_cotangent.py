"""A step's parameter cotangent from its quadrature matrix, truncated to its numerical rank.

Shared by the checkpoint policies' forward sides (:mod:`._checkpoint`), which
choose the forward basis the sum runs over; the mathematics:
docs/design.md#the-two-sided-adjoint and docs/design.md#forward-mode.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from ..krylov._common import params_cotangent_low_rank
from ._small import _svd


def _add(a, b):
    """Leafwise ``a + b`` of two gradients; integer params' leaves stay as ``a`` has them.

    Their cotangents are ``float0`` on either side (the accumulator starts from
    ``zeros_like(params)``, integer zeros), and adding one to anything fails.
    """
    float0 = jax.dtypes.float0
    return jax.tree_util.tree_map(lambda x, y: x if float0 in (x.dtype, y.dtype) else x + y, a, b)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _low_rank_cotangent(matvec, block, params, m, basis_f, basis_b, rank_tol):
    """``sum_pq M_pq d<V_b e_q, A V_f e_p>/dparams`` with ``M`` truncated to its numerical rank.

    With ``M = U S W^T`` the sum is ``sum_r S_r d<V_b W_r, A V_f U_r>/dparams``.
    The quadrature matrix of a step is an integral of the rank-one
    ``exp(s H_f) c e1^T exp((sigma - s) H_b^T)``; its singular values fall
    exponentially (measured on stiff heat, k = 30: 3 to 5 above 1e-14 S_0), so
    instead of ``k`` VJPs of ``matvec`` only those with ``S_r > rank_tol * S_0``
    are taken.  The dropped terms change the gradient by at most
    ``k * rank_tol`` relative to the step's largest one (in the norms of the
    basis vectors and of ``dA``).

    Differentiated (forward mode over this sweep: ``jax.jvp`` of ``jax.grad``)
    by its own rule, :func:`_low_rank_cotangent_jvp`.
    """
    left, right, keep = _singular_pairs(m, rank_tol)
    return params_cotangent_low_rank(matvec, params, left, basis_f, right, basis_b, keep, block)


@_low_rank_cotangent.defjvp
def _low_rank_cotangent_jvp(matvec, block, primals, tangents):
    """Tangent of the truncated sum: the pairs' own, plus ``dM`` in full.

    Differentiating the truncated factors would miss the part of ``dM`` outside
    the kept singular subspaces, which is as large as ``dM`` itself (a
    perturbation rotates those subspaces), so the sum's tangent is taken as
    ``sum_pq dM_pq X_pq + sum_r S_r dX_r`` with the pairs of ``M`` held fixed
    in the second term; ``dM`` goes through its own numerical-rank SVD.
    """
    params, m, basis_f, basis_b, rank_tol = primals
    dparams, dm, dbasis_f, dbasis_b, _ = tangents
    left, right, keep = _singular_pairs(m, rank_tol)

    def with_pairs_fixed(params, basis_f, basis_b):
        return params_cotangent_low_rank(matvec, params, left, basis_f, right, basis_b, keep, block)

    out, dout = jax.jvp(with_pairs_fixed, (params, basis_f, basis_b), (dparams, dbasis_f, dbasis_b))
    dleft, dright, dkeep = _singular_pairs(dm, rank_tol)
    from_dm = params_cotangent_low_rank(
        matvec, params, dleft, basis_f, dright, basis_b, dkeep, block
    )
    return out, _add(dout, from_dm)


def _singular_pairs(m, rank_tol):
    """``(U^T, S W^T, count)`` of ``M = U S W^T``, ``count`` pairs above ``rank_tol * S_0``."""
    # The SVD only chooses the factors (U square and orthonormal, so S W^T =
    # U^T M); it is taken without derivative, which is undefined at repeated
    # singular values.  Forward mode over the sweep gets the tangent of the
    # truncated sum from _low_rank_cotangent_jvp, not from these factors.
    u, svals, _ = _svd(lax.stop_gradient(m))
    keep = jnp.sum(svals > rank_tol * svals[0])
    return u.T, u.T @ m, keep

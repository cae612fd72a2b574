"""Affine systems u' = A u + b through state augmentation."""

from __future__ import annotations

import jax.numpy as jnp


def augment_affine(matvec, source):
    """Linear operator of the augmented system ``[u; s]' = [A u + s b; 0]``.

    ``exp(t A_aug) [u0; 1] = [u(t); 1]`` where ``u' = A u + b``, ``u(0) = u0``, so
    an affine system is solved by :func:`pdeinv.expm_multiply` on the augmented
    state.  ``source(params) -> b`` may depend on ``params`` (and is
    differentiated through).

    Parameters
    ----------
    matvec
        ``matvec(u, params) -> A(params) u``.
    source
        ``source(params) -> b(params)``, shape ``(n,)``.

    Returns
    -------
    callable
        ``matvec_aug(w, params)`` acting on ``w = [u; s]`` of shape ``(n + 1,)``.
    """

    def matvec_aug(w, params):
        u, s = w[:-1], w[-1]
        du = matvec(u, params) + s * source(params)
        return jnp.concatenate([du, jnp.zeros((1,), du.dtype)])

    return matvec_aug

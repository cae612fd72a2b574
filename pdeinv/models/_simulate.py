"""Forward solves of a :class:`Model` with the Krylov exponential integrator."""

from __future__ import annotations

import jax.numpy as jnp

from ..expm import augment_affine, expm_multiply
from ._model import Model


def simulate(model: Model, params, times, *, u0=None, **expm_kwargs):
    """States ``u(t_i)`` of ``model`` at ``times`` with :func:`pdeinv.expm_multiply`.

    Parameters
    ----------
    model
        The semi-discrete PDE.
    params
        Parameter pytree (same structure as ``model.params``).
    times
        Scalar or 1-D non-decreasing array of times ``>= 0``.
    u0
        Initial state; defaults to ``model.u0``.
    **expm_kwargs
        Passed on to :func:`pdeinv.expm_multiply` (``tol``, ``krylov_dim``, ...).
        ``method`` defaults to ``"lanczos"`` for symmetric homogeneous models.

    Returns
    -------
    Array
        Shape ``(n_state,)`` for a scalar time, else ``(len(times), n_state)``.
        Differentiable with respect to ``params`` and ``u0``.
    """
    u0 = model.u0 if u0 is None else jnp.asarray(u0)
    if model.source is None:
        expm_kwargs.setdefault("method", "lanczos" if model.symmetric else "arnoldi")
        return expm_multiply(model.matvec, u0, params, times, **expm_kwargs)
    # Affine system: augment the state with a constant 1 (the augmented operator
    # is not symmetric, so Arnoldi is used).
    expm_kwargs["method"] = "arnoldi"
    matvec_aug = augment_affine(model.matvec, model.source)
    v = jnp.concatenate([u0, jnp.ones((1,), u0.dtype)])
    return expm_multiply(matvec_aug, v, params, times, **expm_kwargs)[..., :-1]

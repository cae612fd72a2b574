"""Forward solves of a :class:`Model` with the Krylov exponential integrator."""

from __future__ import annotations

import jax.numpy as jnp

from ..expm import augment_affine, expm_multiply_info
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
        Without ``method`` the structure of the model decides (see
        :func:`simulate_info`).

    Returns
    -------
    Array
        Shape ``(n_state,)`` for a scalar time, else ``(len(times), n_state)``.
        Differentiable with respect to ``params`` and ``u0``.
    """
    return simulate_info(model, params, times, u0=u0, **expm_kwargs)[0]


def simulate_info(model: Model, params, times, *, u0=None, **expm_kwargs):
    """:func:`simulate` that also returns the integrator's :class:`~pdeinv.ExpmStats`.

    The one place where a model's structure picks the Krylov process:

    - a model with a :class:`~pdeinv.models.KrylovForm` and no source is solved
      in those variables with the form's method (the wave: skew Lanczos);
    - a symmetric homogeneous model with Lanczos;
    - an affine model ``u' = A u + b`` through the augmented state ``[u; 1]``
      (:func:`pdeinv.augment_affine`): for a symmetric ``A`` the bordered
      Lanczos process (``method="affine-lanczos"``, the cost of Lanczos), else
      Arnoldi;
    - anything else with Arnoldi.

    An explicit ``method`` in ``expm_kwargs`` solves in the model's own state
    variables with that method (``"lanczos"`` for an affine model means its
    symmetric path, ``"affine-lanczos"``).
    """
    u0 = model.u0 if u0 is None else jnp.asarray(u0)
    form = model.krylov_form
    if model.source is None and form is not None and "method" not in expm_kwargs:
        coefficients = form.coefficients(params)
        x0 = form.to_form(u0, coefficients)
        xs, stats = expm_multiply_info(
            form.matvec, x0, coefficients, times, method=form.method, **expm_kwargs
        )
        return form.from_form(xs, coefficients), stats
    if model.source is None:
        expm_kwargs.setdefault("method", "lanczos" if model.symmetric else "arnoldi")
        return expm_multiply_info(model.matvec, u0, params, times, **expm_kwargs)
    method = expm_kwargs.get("method") or ("lanczos" if model.symmetric else "arnoldi")
    if method == "lanczos":  # the augmented operator is not symmetric; its A is
        method = "affine-lanczos"
    elif method == "skew-lanczos":
        raise ValueError("method='skew-lanczos' does not apply to a model with a source term")
    expm_kwargs["method"] = method
    matvec_aug = augment_affine(model.matvec, model.source)
    v = jnp.concatenate([u0, jnp.ones((1,), u0.dtype)])
    states, stats = expm_multiply_info(matvec_aug, v, params, times, **expm_kwargs)
    return states[..., :-1], stats

"""Fixed-size Krylov approximation f(A) v ~ ||v|| Q f(H) e_1 (the "discrete
adjoint" method: its gradient is the exact gradient of the approximation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._arnoldi import arnoldi
from ._dense import expm_small, expm_sym_tridiag_e1
from ._lanczos import lanczos

__all__ = ["expm_krylov", "funm_krylov"]

_METHODS = ("arnoldi", "lanczos")


def _decompose(matvec, v, params, krylov_dim, method, reorthogonalize, where):
    if method not in _METHODS:
        raise ValueError(f"{where}: `method` must be one of {_METHODS}, got {method!r}.")
    if method == "arnoldi":
        reorth = True if reorthogonalize is None else reorthogonalize
        return arnoldi(matvec, v, params, krylov_dim, reorthogonalize=reorth)
    reorth = False if reorthogonalize is None else reorthogonalize
    return lanczos(matvec, v, params, krylov_dim, reorthogonalize=reorth)


def funm_krylov(
    matvec: Callable[[Array, Any], Array],
    v: Float[Array, " n"],
    params: Any,
    *,
    krylov_dim: int,
    f: str | Callable[[Array], Array] = "exp",
    method: str = "arnoldi",
    reorthogonalize: bool | None = None,
) -> Float[Array, " n"]:
    """Krylov approximation ``f(A) v ~ ||v|| Q f(H) e_1`` with ``krylov_dim`` steps.

    Parameters
    ----------
    matvec
        ``matvec(x, params) -> A(params) @ x`` (symmetric for ``"lanczos"``).
    v
        Vector, shape ``(n,)``.
    params
        Pytree of arrays ``A`` depends on.
    krylov_dim
        Krylov subspace dimension ``k``, ``1 <= k <= n``.
    f
        ``"exp"`` or a callable mapping the small ``(k, k)`` matrix ``H`` to
        ``f(H)`` (JAX-differentiable if gradients are wanted). For ``"exp"``
        Arnoldi uses :func:`~pdeinv.krylov.expm_small` and Lanczos
        :func:`~pdeinv.krylov.expm_sym_tridiag_e1`.
    method
        ``"arnoldi"`` (general ``A``) or ``"lanczos"`` (symmetric ``A``).
    reorthogonalize
        Passed to :func:`arnoldi` / :func:`lanczos`; ``None`` uses their default.

    Returns
    -------
    Array
        The approximation of ``f(A) v``, shape ``(n,)``.

    Notes
    -----
    Differentiable in ``v`` and ``params`` through the custom adjoints of
    :func:`arnoldi` / :func:`lanczos`: the gradient is the exact gradient of the
    Krylov approximation, which for stiff ``A`` and small ``k`` can be far from
    the gradient of ``f(A) v`` itself (docs/design.md#the-discrete-adjoint). The accuracy is not
    controlled here; ``pdeinv.expm.expm_multiply`` adapts step and dimension.

    Raises
    ------
    ValueError
        Unknown ``method``, ``f`` string or ``f(H)`` of wrong shape, and the
        errors of :func:`arnoldi`.
    """
    decomposition = _decompose(
        matvec, v, params, krylov_dim, method, reorthogonalize, "funm_krylov"
    )
    q, h, _, beta, _ = decomposition
    k = h.shape[0]
    if isinstance(f, str):
        if f != "exp":
            raise ValueError(f"funm_krylov: `f` must be 'exp' or a callable, got {f!r}.")
        coefficients = _exp_e1(h, method, 1.0)
    elif callable(f):
        f_h = f(h)
        if getattr(f_h, "shape", None) != (k, k):
            raise ValueError(
                f"funm_krylov: `f(H)` must return a ({k}, {k}) matrix, "
                f"got shape {getattr(f_h, 'shape', None)}."
            )
        coefficients = f_h[:, 0]
    else:
        raise TypeError(f"funm_krylov: `f` must be 'exp' or a callable, got {type(f).__name__}.")
    return beta * (q @ coefficients)


def _exp_e1(h, method, t):
    if method == "lanczos":
        return expm_sym_tridiag_e1(jnp.diagonal(h), jnp.diagonal(h, 1), t)
    return expm_small(t * h)[:, 0]


def expm_krylov(
    matvec: Callable[[Array, Any], Array],
    v: Float[Array, " n"],
    params: Any,
    t: float | Float[Array, ""] = 1.0,
    *,
    krylov_dim: int,
    method: str = "arnoldi",
    reorthogonalize: bool | None = None,
) -> Float[Array, " n"]:
    """One-shot Krylov approximation ``exp(t A) v ~ ||v|| Q exp(t H) e_1``.

    Same as :func:`funm_krylov` with ``f = exp(t .)``, also differentiable in
    ``t``. No error control: for stiff ``t A`` use ``pdeinv.expm.expm_multiply``.
    """
    decomposition = _decompose(
        matvec, v, params, krylov_dim, method, reorthogonalize, "expm_krylov"
    )
    q, h, _, beta, _ = decomposition
    t = jnp.asarray(t, dtype=h.dtype)
    if t.shape != ():
        raise ValueError(f"expm_krylov: `t` must be a scalar, got shape {t.shape}.")
    return beta * (q @ _exp_e1(h, method, t))

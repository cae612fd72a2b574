"""Exponentials of the small dense matrices that Krylov methods project onto.

Two entry points:

* :func:`expm_small` -- ``exp(X)`` of a small square matrix by Padé-13 with
  scaling and squaring. ``jax.scipy.linalg.expm`` is not used because it picks
  too few squarings for projected Hessenbergs (relative error ~1e-7 for
  ``exp(+-10.6)``) and returns NaN once ``||X||_1`` exceeds a few 1e5, which is
  routine for ``tau * H`` of a stiff PDE operator (docs/design.md#small-matrix-exponentials).
* :func:`expm_sym_tridiag_e1` -- ``exp(t T) e1`` of a symmetric tridiagonal ``T``
  through its eigendecomposition, robust for any ``t ||T||``.

Both carry a ``jax.custom_vjp``: the squaring count of :func:`expm_small` is
data dependent (a ``while_loop``, not reverse differentiable), and the
eigendecomposition's own derivative has ``1 / (lambda_i - lambda_j)`` factors
that blow up for the repeated eigenvalues a Krylov breakdown produces.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from ._common import eigh_small, one_at_a_time_on_cpu

__all__ = ["expm_small", "expm_sym_tridiag_e1"]

_solve = one_at_a_time_on_cpu(jnp.linalg.solve)  # see there: batched LAPACK deadlocks

# Padé-13 numerator coefficients b_0..b_13 (Higham 2005, "The scaling and
# squaring method for the matrix exponential revisited", Table 2.3).
_PADE13 = (
    64764752532480000.0,
    32382376266240000.0,
    7771770303897600.0,
    1187353796428800.0,
    129060195264000.0,
    10559470521600.0,
    670442572800.0,
    33522128640.0,
    1323241920.0,
    40840800.0,
    960960.0,
    16380.0,
    182.0,
    1.0,
)
# Largest ||X||_1 for which r_13(X) reaches double-precision backward error
# (Higham 2005, Table 2.3). The same bound is (more than) enough in float32.
_THETA13 = 5.371920351148152
# Squarings beyond this cannot matter: 2**1100 exceeds every finite float64.
_MAX_SQUARINGS = 1100


def _num_squarings(norm1: Array) -> Array:
    """Smallest s >= 0 with norm1 / 2**s <= theta_13 (0 for non-finite norms)."""
    ratio = norm1 / _THETA13
    safe_ratio = jnp.where(ratio > 1, ratio, 2.0)
    s = jnp.ceil(jnp.log2(safe_ratio))
    s = jnp.where((ratio > 1) & jnp.isfinite(ratio), s, 0)
    return jnp.clip(s, 0, _MAX_SQUARINGS).astype(jnp.int32)


def _pade13(x: Array) -> Array:
    """The [13/13] Padé approximant of exp at a matrix with ||x||_1 <= theta_13."""
    b = [jnp.asarray(c, dtype=x.dtype) for c in _PADE13]
    eye = jnp.eye(x.shape[0], dtype=x.dtype)
    x2 = x @ x
    x4 = x2 @ x2
    x6 = x4 @ x2
    u = x @ (
        x6 @ (b[13] * x6 + b[11] * x4 + b[9] * x2) + b[7] * x6 + b[5] * x4 + b[3] * x2 + b[1] * eye
    )
    v = x6 @ (b[12] * x6 + b[10] * x4 + b[8] * x2) + b[6] * x6 + b[4] * x4 + b[2] * x2 + b[0] * eye
    return _solve(v - u, v + u)


def _expm_impl(x: Array) -> Array:
    """Scaling and squaring with the squaring count taken from ||x||_1.

    Overscaling (more squarings than the Al-Mohy--Higham bound would allow) can
    cost a few digits for strongly nonnormal matrices, but it never under-scales,
    which is what breaks ``jax.scipy.linalg.expm`` on stiff projections.
    """
    norm1 = jnp.max(jnp.sum(jnp.abs(x), axis=0))
    s = _num_squarings(norm1)
    scale = jnp.exp2(-s.astype(x.dtype))
    e = _pade13(x * scale)
    return lax.fori_loop(0, s, lambda _, e: e @ e, e)


@jax.custom_vjp
def _expm(x: Array) -> Array:
    return _expm_impl(x)


def _expm_fwd(x):
    return _expm_impl(x), x


def _expm_bwd(x, g):
    # d<G, exp(X)> = <L(X^T, G), dX>: the Fréchet derivative at X^T applied to
    # G, read off the upper-right block of exp([[X^T, G], [0, X^T]]) (Van Loan /
    # Najfeld--Havel). G is rescaled to the size of X first so that a large
    # cotangent does not add squarings; the derivative is linear in G.
    k = x.shape[0]
    xt = x.T
    norm_x = jnp.max(jnp.sum(jnp.abs(x), axis=0))
    norm_g = jnp.max(jnp.sum(jnp.abs(g), axis=0))
    target = jnp.where(norm_x > 0, norm_x, jnp.ones_like(norm_x))
    g_is_zero = norm_g == 0
    factor = jnp.where(g_is_zero, 1.0, target / jnp.where(g_is_zero, 1.0, norm_g))
    block = jnp.zeros((2 * k, 2 * k), dtype=x.dtype)
    block = block.at[:k, :k].set(xt).at[k:, k:].set(xt).at[:k, k:].set(g * factor)
    frechet = _expm_impl(block)[:k, k:]
    return (frechet / factor,)


_expm.defvjp(_expm_fwd, _expm_bwd)


def expm_small(x: Float[Array, "k k"]) -> Float[Array, "k k"]:
    """Exponential of a small dense matrix, safe for large norms.

    Padé-13 approximant with scaling and squaring (Higham 2005); the number of
    squarings ``s`` is the smallest with ``||X||_1 / 2**s <= 5.37``, computed at
    run time, so the function is accurate from ``||X||_1 = 0`` up to ~1e8 and
    beyond (as long as the result is representable).

    Parameters
    ----------
    x
        Square matrix of shape ``(k, k)``, real floating dtype (float32 or
        float64). Meant for ``k`` up to a few hundred (Krylov projections).

    Returns
    -------
    Array
        ``exp(x)``, same shape and dtype.

    Notes
    -----
    Works under ``jit`` and ``vmap``. Reverse-mode differentiable through a
    ``custom_vjp``: the cotangent ``G`` maps to ``L(X^T, G)``, the Fréchet
    derivative of exp at ``X^T`` in direction ``G``, computed as the upper-right
    block of ``exp([[X^T, G], [0, X^T]])``. Forward-mode (``jvp``) is not
    supported.

    Raises
    ------
    ValueError
        If ``x`` is not a square 2-D array.
    TypeError
        If ``x`` is not of real floating dtype.
    """
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise ValueError(f"expm_small: `x` must be a square 2-D array, got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"expm_small: `x` must have a real floating dtype, got {x.dtype}.")
    return _expm(x)


def _divided_differences_exp(lam: Array, t: Array) -> Array:
    """Phi_ij = (exp(t l_i) - exp(t l_j)) / (l_i - l_j), Phi_ii = t exp(t l_i).

    For close eigenvalues the quotient cancels, so there it is evaluated as
    t exp(t (l_i + l_j)/2) sinh(x)/x with x = t (l_i - l_j)/2, which is exact in
    the limit and cannot overflow in sinh because |x| <= 1 on that branch.
    """
    li = lam[:, None]
    lj = lam[None, :]
    x = 0.5 * t * (li - lj)
    close = jnp.abs(x) <= 1
    x_safe = jnp.where(close, x, jnp.ones_like(x))
    x_small = jnp.abs(x_safe) < 1e-4
    x_nz = jnp.where(x_small, jnp.ones_like(x_safe), x_safe)
    sinhc = jnp.where(x_small, 1 + x_safe**2 / 6, jnp.sinh(x_nz) / x_nz)
    near = t * jnp.exp(0.5 * t * (li + lj)) * sinhc
    diff = jnp.where(close, jnp.ones_like(li - lj), li - lj)
    far = (jnp.exp(t * li) - jnp.exp(t * lj)) / diff
    return jnp.where(close, near, far)


def _tridiag(alpha: Array, beta: Array) -> Array:
    return jnp.diag(alpha) + jnp.diag(beta, 1) + jnp.diag(beta, -1)


def _sym_tridiag_e1_impl(alpha, beta, t):
    lam, u = eigh_small(_tridiag(alpha, beta))
    b = u[0, :]
    return u @ (jnp.exp(t * lam) * b), (lam, u)


@jax.custom_vjp
def _sym_tridiag_e1(alpha, beta, t):
    return _sym_tridiag_e1_impl(alpha, beta, t)[0]


def _sym_tridiag_e1_fwd(alpha, beta, t):
    y, (lam, u) = _sym_tridiag_e1_impl(alpha, beta, t)
    return y, (lam, u, t)


def _sym_tridiag_e1_bwd(res, y_bar):
    # y = U exp(t Lambda) U^T e1. With a = U^T y_bar and b = U^T e1 the
    # cotangent of T is U (Phi o a b^T) U^T (Daleckii--Krein), which stays finite
    # for repeated eigenvalues, unlike differentiating eigh itself.
    lam, u, t = res
    a = u.T @ y_bar
    b = u[0, :]
    phi = _divided_differences_exp(lam, t)
    t_bar_matrix = u @ (phi * jnp.outer(a, b)) @ u.T
    alpha_bar = jnp.diagonal(t_bar_matrix)
    beta_bar = jnp.diagonal(t_bar_matrix, 1) + jnp.diagonal(t_bar_matrix, -1)
    t_bar = jnp.sum(a * lam * jnp.exp(t * lam) * b)
    return alpha_bar, beta_bar, t_bar.astype(jnp.result_type(t))


_sym_tridiag_e1.defvjp(_sym_tridiag_e1_fwd, _sym_tridiag_e1_bwd)


def expm_sym_tridiag_e1(
    alpha: Float[Array, " k"], beta: Float[Array, " k-1"], t: float | Float[Array, ""] = 1.0
) -> Float[Array, " k"]:
    """First column of ``exp(t T)`` for a symmetric tridiagonal ``T``.

    Computed as ``U exp(t Lambda) U^T e1`` from ``T = U Lambda U^T`` (``eigh``):
    backward stable for any ``t ||T||`` and exact when off-diagonals vanish.

    Parameters
    ----------
    alpha
        Diagonal of ``T``, shape ``(k,)``.
    beta
        Off-diagonal of ``T``, shape ``(k - 1,)``.
    t
        Scalar time factor.

    Returns
    -------
    Array
        ``exp(t T) e1``, shape ``(k,)``, dtype of ``alpha``.

    Notes
    -----
    Reverse-mode differentiable in ``alpha``, ``beta`` and ``t`` through a
    ``custom_vjp`` built on divided differences of exp (finite for repeated
    eigenvalues, e.g. the zero block left by a Krylov happy breakdown).

    Raises
    ------
    ValueError
        If the shapes of ``alpha`` and ``beta`` do not fit together.
    """
    alpha = jnp.asarray(alpha)
    beta = jnp.asarray(beta, dtype=alpha.dtype)
    if alpha.ndim != 1 or beta.shape != (alpha.shape[0] - 1,):
        raise ValueError(
            "expm_sym_tridiag_e1: need `alpha` of shape (k,) and `beta` of shape (k-1,), "
            f"got {alpha.shape} and {beta.shape}."
        )
    t = jnp.asarray(t, dtype=alpha.dtype)
    return _sym_tridiag_e1(alpha, beta, t)

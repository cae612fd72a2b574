"""Eigensolvers of the prior-preconditioned misfit Hessian (products only)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg

from ._prior import GaussianPrior

# "auto" resolves to "jacobian" or "randomized" in laplace_posterior (choose_method);
# generalized_eigh takes the three product-based eigensolvers.
METHODS = ("auto", "jacobian", "randomized", "nystrom", "lanczos")
PRODUCT_METHODS = ("randomized", "nystrom", "lanczos")


# -- eigensolvers ------------------------------------------------------------------------


class LowRankEigen(NamedTuple):
    """The ``r`` largest eigenpairs of a symmetric PSD operator, largest first."""

    eigenvalues: np.ndarray  # (r,)
    eigenvectors: np.ndarray  # (n, r), orthonormal columns
    num_products: int  # operator applications used
    exact: bool  # True when the whole space was spanned


def dense_eigh(apply_block, n: int) -> LowRankEigen:
    """All eigenpairs from the ``n`` columns ``apply_block(I)`` (exact)."""
    matrix = apply_block(np.eye(n))
    values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    order = np.argsort(values)[::-1]
    return LowRankEigen(np.maximum(values[order], 0.0), vectors[:, order], n, True)


def randomized_eigh(
    apply_block, n: int, rank: int, *, oversampling: int = 10, rng=None, max_rank=None
) -> LowRankEigen:
    """Randomized double pass (Halko, Martinsson & Tropp 2011, Alg. 5.3 + 4.1).

    ``Y = A Omega`` for a Gaussian ``Omega`` with ``rank + oversampling`` columns,
    ``Q = orth(Y)``, then the eigenpairs of ``Q^T A Q``; ``2 (rank + oversampling)``
    products.  With ``rank + oversampling >= n`` it is :func:`dense_eigh`; with
    ``rank + oversampling >= max_rank`` (a bound on the rank of ``A``) ``Y`` spans
    the range of ``A`` and the result is exact as well.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    samples = rank + oversampling
    if samples >= n:
        return _leading_dense(apply_block, n, rank)
    omega = rng.standard_normal((n, samples))
    q, _ = np.linalg.qr(apply_block(omega))
    t = q.T @ apply_block(q)
    values, vectors = np.linalg.eigh(0.5 * (t + t.T))
    order = np.argsort(values)[::-1][:rank]
    exact = max_rank is not None and samples >= max_rank
    return LowRankEigen(np.maximum(values[order], 0.0), q @ vectors[:, order], 2 * samples, exact)


def _leading_dense(apply_block, n: int, rank: int) -> LowRankEigen:
    """The ``rank`` leading pairs of :func:`dense_eigh` (sampling would need ``>= n`` products)."""
    result = dense_eigh(apply_block, n)
    return result._replace(
        eigenvalues=result.eigenvalues[:rank], eigenvectors=result.eigenvectors[:, :rank]
    )


def nystrom_eigh(
    apply_block, n: int, rank: int, *, oversampling: int = 10, rng=None, max_rank=None
) -> LowRankEigen:
    r"""Randomized Nyström approximation, single pass (Tropp, Yurtsever, Udell & Cevher 2017).

    For a symmetric positive semi-definite ``A``: ``Y = A Omega`` for an orthonormal
    Gaussian ``Omega`` with ``rank + oversampling`` columns, and
    :math:`A \approx Y(\Omega^T Y)^{+}Y^T`, whose eigenpairs come from the SVD of
    :math:`Y C^{-1}` (``C`` the Cholesky factor of :math:`\Omega^T Y`, both
    shifted by :math:`\nu = \epsilon\|Y\|` for stability, the shift removed from
    the eigenvalues).  ``rank + oversampling`` products, half of
    :func:`randomized_eigh`'s, in one batch; the approximation error is that of
    the randomized range finder applied to :math:`A^{1/2}` (squared), so it is
    accurate where the spectrum decays past ``rank``, as a misfit Hessian's does.
    With ``rank + oversampling >= n`` it is :func:`dense_eigh`; with
    ``rank + oversampling >= max_rank`` (a bound on the rank of ``A``) the range of
    ``A`` is captured and the result is exact.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    samples = rank + oversampling
    if samples >= n:
        return _leading_dense(apply_block, n, rank)
    omega, _ = np.linalg.qr(rng.standard_normal((n, samples)))
    y = apply_block(omega)
    shift = np.finfo(float).eps * max(np.linalg.norm(y), np.finfo(float).tiny)
    y = y + shift * omega
    core = omega.T @ y
    try:
        cholesky = np.linalg.cholesky(0.5 * (core + core.T))
    except np.linalg.LinAlgError:
        # Omega^T A Omega is singular beyond the shift (A not PSD to rounding, e.g. a
        # finite-difference product): its eigendecomposition, negative part dropped.
        values, vectors = np.linalg.eigh(0.5 * (core + core.T))
        keep = values > shift * samples
        factor = y @ (vectors[:, keep] / np.sqrt(values[keep]))
    else:
        factor = scipy.linalg.solve_triangular(cholesky, y.T, lower=True).T  # Y C^{-T}
    u, sigma, _ = np.linalg.svd(factor, full_matrices=False)
    values = np.maximum(sigma[:rank] ** 2 - shift, 0.0)
    exact = max_rank is not None and samples >= max_rank
    return LowRankEigen(values, u[:, :rank], samples, exact)


def lanczos_eigh(
    apply_block, n: int, rank: int, *, oversampling: int = 10, rng=None, max_rank=None
) -> LowRankEigen:
    """Lanczos with full reorthogonalisation, ``rank + oversampling`` steps, Ritz pairs.

    Reorthogonalising every step against the whole basis (twice, Gram–Schmidt)
    keeps the Ritz vectors orthonormal, which the eigenvalue problem needs and the
    exponential's Lanczos does not.  A breakdown (the Krylov space is invariant,
    e.g. a low-rank data misfit) ends the iteration early: the missing eigenvalues
    are then zero on the orthogonal complement, and the result is exact.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    del max_rank  # a breakdown finds the rank by itself
    steps = min(rank + oversampling, n)
    basis = np.zeros((n, steps))
    alpha, beta = np.zeros(steps), np.zeros(steps)
    v = rng.standard_normal(n)
    v /= np.linalg.norm(v)
    size = 0
    for j in range(steps):
        basis[:, j] = v
        size = j + 1
        w = apply_block(v[:, None])[:, 0]
        alpha[j] = v @ w
        for _ in range(2):
            w -= basis[:, :size] @ (basis[:, :size].T @ w)
        beta[j] = np.linalg.norm(w)
        scale = max(abs(alpha[: j + 1]).max(), 1e-300)
        if beta[j] <= 1e-12 * scale or j == steps - 1:
            break
        v = w / beta[j]
    exact = size == n or beta[size - 1] <= 1e-12 * max(abs(alpha[:size]).max(), 1e-300)
    t = np.diag(alpha[:size]) + np.diag(beta[: size - 1], 1) + np.diag(beta[: size - 1], -1)
    values, vectors = np.linalg.eigh(t)
    order = np.argsort(values)[::-1][:rank]
    return LowRankEigen(
        np.maximum(values[order], 0.0), basis[:, :size] @ vectors[:, order], size, bool(exact)
    )


_GRAM_ELEMENTS = 2**24  # float64 elements of one row block of the Gram product (128 MiB)


def jacobian_eigh(matrix, rank: int) -> LowRankEigen:
    r"""The ``rank`` largest eigenpairs of :math:`A^T A` from ``A`` itself (exact).

    ``A`` ``(d, n)`` is the prior-preconditioned weighted-residual Jacobian
    :math:`J_r L`, so :math:`A^T A = L^T H_{mis} L` (Gauss–Newton).  For ``d >= n``
    the eigendecomposition of the Gram matrix :math:`A^T A` (one matrix product and
    an ``n x n`` eigh: its eigenvalues carry an absolute error of about
    :math:`\epsilon_{mach}\lambda_{max}`, negligible in every quantity of the
    posterior, where an eigenvalue enters as :math:`\lambda/(1+\lambda)` or
    :math:`\log(1+\lambda)`), otherwise the SVD of ``A``.  ``exact`` when ``rank``
    reaches ``min(d, n)`` (every nonzero pair kept).
    """
    matrix = np.asarray(matrix)
    d, n = matrix.shape
    rank = max(1, min(int(rank), n, d))
    if d >= n:
        # In float64, a block of rows at a time (A may be float32 and large).
        gram = np.zeros((n, n))
        rows = max(1, _GRAM_ELEMENTS // n)
        for start in range(0, d, rows):
            block = np.asarray(matrix[start : start + rows], dtype=float)
            gram += block.T @ block
        values, vectors = np.linalg.eigh(0.5 * (gram + gram.T))
        order = np.argsort(values)[::-1][:rank]
        values, vectors = values[order], vectors[:, order]
    else:
        _, sigma, vt = np.linalg.svd(np.asarray(matrix, dtype=float), full_matrices=False)
        values, vectors = sigma[:rank] ** 2, vt[:rank].T
    return LowRankEigen(np.maximum(values, 0.0), vectors, 0, rank >= min(d, n))


def generalized_eigh(
    hessian_apply, prior: GaussianPrior, rank: int, *, method: str = "randomized",
    oversampling: int = 10, rng=None, max_rank: int | None = None,
) -> LowRankEigen:  # fmt: skip
    r"""Largest eigenpairs of :math:`H v = \lambda\,\Gamma_{pr}^{-1} v` (prior-preconditioned).

    Works on :math:`\tilde H = L^T H L` (:math:`\Gamma_{pr} = L L^T`); returns its
    eigenvalues and orthonormal eigenvectors ``U``; the generalised eigenvectors
    are ``V = L U`` (:math:`V^T\Gamma_{pr}^{-1}V = I`).

    Parameters
    ----------
    hessian_apply
        ``H V`` for a block ``V`` of shape ``(n, b)``.
    prior
        The :class:`GaussianPrior` (the pencil's second matrix is its precision).
    rank
        Number of pairs, ``>= 1``; ``rank + oversampling >= n`` is exact.
    method
        ``"randomized"`` (double pass, batched products), ``"nystrom"`` (single
        pass: half the products, for a positive semi-definite ``H``) or ``"lanczos"``.
    oversampling
        Extra vectors (randomized, Nyström) or steps (Lanczos), ``>= 0``.
    max_rank
        A bound on the rank of ``H`` (the number of data for a misfit Hessian):
        ``rank`` is capped there, and reaching it makes the result exact.
    """
    n = prior.size
    if method not in PRODUCT_METHODS:
        raise ValueError(
            f"uncertainty.method must be one of {', '.join(PRODUCT_METHODS)} for "
            f"Hessian-vector products, got {method!r}"
        )
    if rank < 1:
        raise ValueError(f"uncertainty.rank must be >= 1, got {rank}")
    if oversampling < 0:
        raise ValueError(f"uncertainty.oversampling must be >= 0, got {oversampling}")
    rank = min(int(rank), n, n if max_rank is None else max(int(max_rank), 1))

    def preconditioned(u):
        return prior.sqrt_covariance_t(hessian_apply(prior.sqrt_covariance(u)))

    solver = {"randomized": randomized_eigh, "nystrom": nystrom_eigh, "lanczos": lanczos_eigh}[
        method
    ]
    return solver(
        preconditioned, n, rank, oversampling=int(oversampling), rng=rng, max_rank=max_rank
    )

"""The Laplace posterior: covariance, std, samples, evidence, from the eigenpairs."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ._eigen import METHODS, generalized_eigh, jacobian_eigh
from ._hessian import MisfitHessian, jacobian_hessian, misfit_hessian, residual_jacobian
from ._prior import GaussianPrior, _x64, gaussian_prior

# -- the posterior -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class LaplacePosterior:
    r"""Gaussian posterior :math:`N(\mathrm{mean}, \Gamma_{post})` of the optimisation vector.

    Attributes
    ----------
    mean
        Posterior mean ``(n,)`` (the MAP point, or one Gauss–Newton step from it).
    prior
        The :class:`GaussianPrior`.
    eigenvalues, eigenvectors
        ``(r,)`` and ``(n, r)``: the prior-preconditioned misfit Hessian's largest
        eigenpairs (:func:`generalized_eigh`).
    misfit
        Data misfit :math:`\Phi` at the mean.
    num_data, log_sigma_sum
        Number of data and :math:`\sum_d \log\sigma_d` (the noise normalisation).
    exact
        ``True`` when every eigenpair was computed (no truncation).
    num_hessian_products, hessian_kind, time_s
        Cost: misfit Hessian–vector products, how they were computed, seconds.
    method
        The eigensolver used (``"auto"`` resolved: see :func:`choose_method`).
    num_residual_evaluations
        Residual evaluations (forward solves of every experiment) of
        ``method="jacobian"``: ``2n + 1``.
    """

    mean: np.ndarray
    prior: GaussianPrior
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    misfit: float
    num_data: int
    log_sigma_sum: float
    exact: bool = False
    num_hessian_products: int = 0
    hessian_kind: str = ""
    time_s: float = 0.0
    method: str = ""
    num_residual_evaluations: int = 0

    @property
    def _shrink(self) -> np.ndarray:
        lam = self.eigenvalues
        return lam / (1.0 + lam)

    def covariance_apply(self, v) -> np.ndarray:
        r""":math:`\Gamma_{post} v` for ``v`` of shape ``(n,)`` or ``(n, k)``."""
        u = self.prior.sqrt_covariance_t(np.asarray(v, dtype=float))
        proj = self.eigenvectors.T @ u
        proj = proj * (self._shrink[:, None] if proj.ndim == 2 else self._shrink)
        return self.prior.sqrt_covariance(u - self.eigenvectors @ proj)

    def covariance(self) -> np.ndarray:
        """Dense :math:`\\Gamma_{post}`, ``(n, n)`` (small problems and tests)."""
        return self.covariance_apply(np.eye(self.prior.size))

    def variance(self) -> np.ndarray:
        """Pointwise posterior variance of ``m``, ``(n,)``."""
        root = self.prior.sqrt_covariance(np.eye(self.prior.size))  # L
        lu = root @ self.eigenvectors
        return np.sum(root**2, axis=1) - np.sum(lu**2 * self._shrink, axis=1)

    def std(self) -> np.ndarray:
        """Pointwise posterior standard deviation of ``m``, ``(n,)``."""
        return np.sqrt(np.maximum(self.variance(), 0.0))

    def field_std(self, linear_map: Callable, *, chunk: int = 256) -> np.ndarray:
        r"""Pointwise std of ``linear_map(m)`` (e.g. the nodal log-coefficient field).

        For a linear map ``P``: :math:`\mathrm{diag}(P\Gamma_{post}P^T)` from the
        columns of ``P L`` and ``P L U``, ``chunk`` columns at a time.
        """
        n = self.prior.size
        dtype = jnp.float64 if _x64() else jnp.float32
        mapped = jax.jit(jax.vmap(linear_map, in_axes=1, out_axes=1))
        zero = np.asarray(linear_map(jnp.zeros(n, dtype)), dtype=float)
        root = self.prior.sqrt_covariance(np.eye(n))
        prior_part = np.zeros_like(zero)
        for start in range(0, n, chunk):
            cols = root[:, start : start + chunk]
            prior_part += np.sum(
                (np.asarray(mapped(jnp.asarray(cols, dtype)), dtype=float) - zero[:, None]) ** 2,
                axis=1,
            )
        reduction = np.zeros_like(zero)
        lu = root @ self.eigenvectors
        for start in range(0, lu.shape[1], chunk):
            cols = lu[:, start : start + chunk]
            plu = np.asarray(mapped(jnp.asarray(cols, dtype)), dtype=float) - zero[:, None]
            reduction += np.sum(plu**2 * self._shrink[start : start + chunk], axis=1)
        return np.sqrt(np.maximum(prior_part - reduction, 0.0))

    def sample(self, rng: np.random.Generator, num_samples: int) -> np.ndarray:
        """``(num_samples, n)`` posterior samples."""
        xi = rng.standard_normal((self.prior.size, int(num_samples)))
        damp = 1.0 - 1.0 / np.sqrt(1.0 + self.eigenvalues)
        xi = xi - self.eigenvectors @ (damp[:, None] * (self.eigenvectors.T @ xi))
        return (self.mean[:, None] + self.prior.sqrt_covariance(xi)).T

    @property
    def effective_parameters(self) -> float:
        r""":math:`\sum_i \lambda_i/(1+\lambda_i)`: how many directions the data determine."""
        return float(np.sum(self._shrink))

    @property
    def log_evidence(self) -> float | None:
        """Laplace log marginal likelihood ``log p(d | w)``; ``None`` for a non-Gaussian prior."""
        if not self.prior.gaussian:
            return None
        return float(
            -self.misfit
            - self.prior.quadratic(self.mean)
            - 0.5 * np.sum(np.log1p(self.eigenvalues))
            - 0.5 * self.num_data * math.log(2.0 * math.pi)
            - self.log_sigma_sum
        )


def default_rank(num_unknowns: int) -> int:
    """``min(num_unknowns, 200)``, the default of ``uncertainty.rank``."""
    return int(min(num_unknowns, 200))


# method="auto": the Jacobian while it fits in this much memory (at the run's precision) ...
JACOBIAN_BYTES = 2**30
# ... and its n columns (2n forward solves) cost no more than about what the double
# pass's rank + oversampling products cost: one Gauss-Newton product (a tangent and an
# adjoint solve, vmapped 8 at a time) took 10-20 central-difference columns' time on
# examples/heat.yaml (benchmarks/uncertainty_cost.md), and it compiles a tangent and an
# adjoint solve where the Jacobian compiles the forward model only.
JACOBIAN_COLUMNS_PER_PRODUCT = 10


def choose_method(problem, rank: int, oversampling: int = 10, hessian=None) -> str:
    """The eigensolver of ``method="auto"``: ``"jacobian"`` or ``"randomized"``.

    ``"jacobian"`` (the prior-preconditioned Jacobian by forward differences, then
    its exact eigendecomposition) when the Hessian is Gauss–Newton, the Jacobian
    (``num_data x n``, float64 or float32 as the run) fits in ``JACOBIAN_BYTES``
    (1 GiB) and
    ``n <= JACOBIAN_COLUMNS_PER_PRODUCT * min(rank + oversampling, num_data)``
    (10: its ``n`` columns cost less than the double pass's products); otherwise
    the randomized double pass with Hessian–vector products.
    """
    n, d = int(problem.parameters.size), int(problem.num_observations)
    if hessian is not None and not (isinstance(hessian, str) and hessian == "gauss-newton"):
        return "randomized"
    if (8 if _x64() else 4) * n * d > JACOBIAN_BYTES:
        return "randomized"
    if n > JACOBIAN_COLUMNS_PER_PRODUCT * min(int(rank) + int(oversampling), d):
        return "randomized"
    return "jacobian"


def laplace_posterior(
    problem,
    m,
    *,
    rank: int | None = None,
    method: str = "auto",
    oversampling: int = 10,
    weight: float | None = None,
    nugget: float = 1e-2,
    center=None,
    newton_step: bool = False,
    batch_size: int | None = None,
    seed: int = 0,
    hessian: MisfitHessian | str | None = None,
) -> LaplacePosterior:
    r"""Laplace posterior of ``problem`` at ``m`` (the MAP point of a fit).

    Parameters
    ----------
    problem
        :class:`~pdeinv.inverse.InverseProblem` (or multi-experiment problem).
    m
        Linearisation point, ``(n,)``: the fitted vector.
    rank
        Eigenpairs kept; default ``min(n, 200)``, and never more than the number of
        data (the misfit Hessian's rank).  ``rank + oversampling`` reaching ``n`` or
        the number of data (randomized), or a Lanczos breakdown, make the result exact.
    method, oversampling
        ``"jacobian"``: the prior-preconditioned residual Jacobian :math:`J_r L`
        by central differences of the forward model (``2n + 1`` forward solves,
        :func:`residual_jacobian`), then its exact eigendecomposition
        (:func:`jacobian_eigh`): every pair, of which ``rank`` are kept, and nothing
        compiled but the forward model.  ``"randomized"`` double pass,
        ``"nystrom"`` single pass or ``"lanczos"``: Hessian–vector products (see
        :func:`generalized_eigh`), ``oversampling`` their extra vectors.
        ``"auto"`` (default): :func:`choose_method`.
    weight, nugget, center
        Prior: see :func:`gaussian_prior`.
    newton_step
        Take the mean one Gauss–Newton step from ``m``,
        :math:`m - \Gamma_{post}\nabla J(m)`: the exact posterior mean of a linear
        model from any ``m`` (leave off for nonlinear fits at a bound).  Taken only
        when the posterior is exact (no truncated eigenpairs); otherwise the mean is ``m``.
    batch_size
        Hessian–vector products at once (see :func:`misfit_hessian`); Lanczos
        uses 1.
    seed
        Seed of the random start vectors.
    hessian
        A ready :class:`MisfitHessian`, or the kind of :func:`misfit_hessian` at ``m``
        to use: ``"gauss-newton"`` (default) or ``"gradient-difference"`` (no
        compilation: the fit's gradient program).
    """
    start = time.perf_counter()
    m = np.asarray(m, dtype=float)
    n = problem.parameters.size
    if m.shape != (n,):
        raise ValueError(f"m must have shape ({n},), got {m.shape}")
    rank = default_rank(n) if rank is None else int(rank)
    if method not in METHODS:
        raise ValueError(f"uncertainty.method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "auto":
        method = choose_method(problem, rank, oversampling, hessian)
    weight = float(problem.weight if weight is None else weight)
    prior = gaussian_prior(problem, m, weight=weight, nugget=nugget, center=center)
    evaluations = before = 0
    if method == "jacobian":
        if hessian is not None and not (isinstance(hessian, str) and hessian == "gauss-newton"):
            raise ValueError(
                "uncertainty.method = jacobian forms the Gauss-Newton Hessian; with "
                "uncertainty.hessian = gradient-difference use randomized, nystrom or lanczos"
            )
        if rank < 1:
            raise ValueError(f"uncertainty.rank must be >= 1, got {rank}")
        matrix, r0, evaluations = residual_jacobian(
            problem, m, prior.sqrt_covariance(np.eye(n)), batch_size=batch_size
        )
        eigen = jacobian_eigh(matrix, rank)
        hessian = jacobian_hessian(matrix, r0, prior)
    else:
        if hessian is None or isinstance(hessian, str):
            # Lanczos applies one vector at a time: a wider block would be padding only.
            width = 1 if method == "lanczos" else batch_size
            hessian = misfit_hessian(
                problem, m, batch_size=width, hessian="gauss-newton" if hessian is None else hessian
            )
        before = hessian.counter[0]
        eigen = generalized_eigh(
            hessian.apply, prior, rank, method=method, oversampling=oversampling,
            rng=np.random.default_rng(seed), max_rank=int(problem.num_observations),
        )  # fmt: skip
    posterior = LaplacePosterior(
        mean=m,
        prior=prior,
        eigenvalues=eigen.eigenvalues,
        eigenvectors=eigen.eigenvectors,
        misfit=0.0,
        num_data=int(problem.num_observations),
        log_sigma_sum=_log_sigma_sum(problem),
        exact=eigen.exact,
        hessian_kind=hessian.kind,
        method=method,
        num_residual_evaluations=evaluations,
    )
    misfit = hessian.misfit()
    # Only an exact posterior gives the Newton step: a truncated one has the prior's
    # (much larger) covariance along the dropped directions and would overshoot there.
    if newton_step and eigen.exact:
        # Gradient of misfit + the prior's quadratic (which is w R for a quadratic R).
        misfit_gradient = hessian.gradient()
        step = -posterior.covariance_apply(misfit_gradient + prior.precision @ (m - prior.center))
        # The Gauss-Newton model of the misfit at the new point (exact for a linear model).
        misfit += float(misfit_gradient @ step + 0.5 * step @ hessian.apply(step))
        m = m + step
    return dataclasses.replace(
        posterior,
        mean=m,
        misfit=misfit,
        # The Jacobian's Newton-step product is a matrix product, no PDE solve.
        num_hessian_products=0 if method == "jacobian" else hessian.counter[0] - before,
        time_s=time.perf_counter() - start,
    )


def _log_sigma_sum(problem) -> float:
    sigma = np.asarray(problem.sigma, dtype=float)
    shape = np.shape(problem.data)
    return float(np.sum(np.log(np.broadcast_to(sigma, shape))))


def coverage(true_field, map_field, std_field, *, num_std: float = 2.0) -> float:
    """Fraction of nodes with ``|true - map| <= num_std * std``."""
    true_field, map_field = np.asarray(true_field, float), np.asarray(map_field, float)
    inside = np.abs(true_field - map_field) <= num_std * np.asarray(std_field, float)
    return float(np.mean(inside))

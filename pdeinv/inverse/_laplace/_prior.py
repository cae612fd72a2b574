"""The Gaussian prior of the Laplace posterior: the regulariser's Hessian, held densely."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

MAX_DENSE_UNKNOWNS = 8000  # the prior is a dense (n, n) matrix: 8000^2 doubles = 512 MB


# -- the prior -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianPrior:
    r"""Gaussian prior :math:`N(m_0, \Gamma_{pr})` on the optimisation vector, held densely.

    Attributes
    ----------
    center
        Prior mean :math:`m_0`, ``(n,)``.
    precision
        :math:`\Gamma_{pr}^{-1}`, ``(n, n)`` (float64).
    cholesky
        Lower-triangular ``C`` with ``precision = C C^T``; the covariance square
        root is :math:`L = C^{-T}` (:math:`\Gamma_{pr} = L L^T`).
    gaussian
        ``False`` when the regulariser is not quadratic (total variation): then its
        Hessian at the MAP point is only a local Gaussian model and the evidence is
        not defined.
    """

    center: np.ndarray
    precision: np.ndarray
    cholesky: np.ndarray
    gaussian: bool = True

    @property
    def size(self) -> int:
        return int(self.center.shape[0])

    def sqrt_covariance(self, u):
        """``L u`` (``u`` of shape ``(n,)`` or ``(n, k)``)."""
        return scipy.linalg.solve_triangular(self.cholesky, u, lower=True, trans="T")

    def sqrt_covariance_t(self, v):
        """``L^T v``."""
        return scipy.linalg.solve_triangular(self.cholesky, v, lower=True)

    def variance(self) -> np.ndarray:
        """Pointwise prior variance ``diag(Gamma_pr)``, ``(n,)``."""
        return np.sum(self.sqrt_covariance(np.eye(self.size)) ** 2, axis=1)

    def quadratic(self, m) -> float:
        r""":math:`\tfrac12 (m - m_0)^T \Gamma_{pr}^{-1} (m - m_0)`."""
        r = np.asarray(m, dtype=float) - self.center
        return 0.5 * float(r @ self.precision @ r)

    def sample(self, rng: np.random.Generator, num_samples: int) -> np.ndarray:
        """``(num_samples, n)`` prior samples."""
        xi = rng.standard_normal((self.size, int(num_samples)))
        return (self.center[:, None] + self.sqrt_covariance(xi)).T


def gaussian_prior(problem, m, *, weight=None, nugget: float = 1e-2, center=None):
    r"""The prior whose precision is the regulariser's Hessian at ``m``.

    .. math::
        \Gamma_{pr}^{-1} = w\,\nabla^2_m R(\mathrm{field}(m))
            + \nu\,\mathrm{blockdiag}(P^T M P, I)\quad(\text{nugget, see below})

    Parameters
    ----------
    problem
        :class:`~pdeinv.inverse.InverseProblem` or multi-experiment problem.
    m
        Point of the Hessian (the MAP point; quadratic regularisers do not depend on it).
    weight
        Regularisation weight ``w``; default ``problem.weight``.
    nugget
        Precision :math:`\nu \ge 0` of a weak Tikhonov term
        :math:`\tfrac\nu2\int(\mathrm{field}(m) - \mathrm{field}(m_c))^2` added when the
        regulariser alone is not a proper prior (``h1``, ``tv``, ``none``: constants
        cost nothing), and always on unknowns the regulariser does not see (an
        advection velocity): there :math:`\tfrac\nu2\|m - m_c\|^2`.
    center
        :math:`m_c`, ``(n,)``: the prior mean of the nugget term; default: the
        regulariser's ``mean`` on the field block and zero elsewhere.

    Raises
    ------
    ValueError
        When there are more than ``MAX_DENSE_UNKNOWNS`` unknowns, the weight or
        nugget is negative, or the precision is not positive definite (name the
        keys to change).
    """
    parameters = problem.parameters
    regularizer = problem.regularizer
    weight = float(problem.weight if weight is None else weight)
    m = np.asarray(m, dtype=float)
    n, k = parameters.size, parameters.num_field_params
    if n > MAX_DENSE_UNKNOWNS:
        raise ValueError(
            f"uncertainty needs at most {MAX_DENSE_UNKNOWNS} unknowns (the prior is held as a "
            f"dense matrix), got {n}; use parameterization.kind = coarse or regions"
        )
    if weight < 0 or nugget < 0:
        raise ValueError(f"weight and uncertainty.nugget must be >= 0, got {weight}, {nugget}")
    if center is None:
        center = np.zeros(n)
        center[:k] = float(getattr(regularizer, "mean", 0.0))
    center = np.asarray(center, dtype=float)
    if center.shape != (n,):
        raise ValueError(f"center must have shape ({n},), got {center.shape}")
    proper = bool(getattr(regularizer, "proper", False))
    gaussian = bool(getattr(regularizer, "gaussian", False))
    mass = _lumped_mass(regularizer, parameters)
    # Assembled in float64 whatever the run's precision: the nugget's eigenvalues can sit
    # below float32's resolution of the regulariser's (Cholesky would then fail).
    field_matrix = _field_matrix(parameters)  # P: (nodes, k), field = P m[:k]
    hessian_p = _field_hessian_times(regularizer, parameters.field(jnp.asarray(m)), field_matrix)
    block = weight * (field_matrix.T @ hessian_p)
    if not proper:
        block = block + nugget * field_matrix.T @ (mass[:, None] * field_matrix)
    precision = np.zeros((n, n))
    precision[:k, :k] = block
    precision[k:, k:] = nugget * np.eye(n - k)
    precision = 0.5 * (precision + precision.T)
    try:
        cholesky = np.linalg.cholesky(precision)
    except np.linalg.LinAlgError:
        raise ValueError(
            "the prior precision (regulariser Hessian) is not positive definite; use "
            "regularization.kind = bilaplacian or tikhonov, or uncertainty.nugget > 0"
        ) from None
    if gaussian and proper:
        # A quadratic regulariser's own mean is the prior mean (R = 0 there).
        center = _field_mean(regularizer, center, k)
    return GaussianPrior(center, precision, cholesky, gaussian)


def _field_matrix(parameters) -> np.ndarray:
    """The linear map ``P`` (nodes x field unknowns) of the parameterisation, in float64."""
    from .._parameterization import CoarseGrid, NodalField, PiecewiseConstant

    param = parameters.parameterization
    if isinstance(param, NodalField):
        return np.eye(param.num_nodes)
    if isinstance(param, PiecewiseConstant):
        return np.eye(param.num_params)[param.labels]
    if isinstance(param, CoarseGrid):
        nodes = param.index.shape[0]
        matrix = np.zeros((nodes, param.num_params))
        np.add.at(matrix, (np.arange(nodes)[:, None], param.index), param.weight)
        return matrix
    # Any other linear map: its columns in the run's precision.
    k = parameters.num_field_params
    columns = jax.vmap(param.field)(jnp.eye(k))
    return np.asarray(columns, dtype=float).T


def _field_hessian_times(regularizer, field, matrix) -> np.ndarray:
    """``H_R @ matrix`` for the regulariser's Hessian on the nodal field, float64.

    Quadratic regularisers use their sparse matrices (never a dense nodes x nodes
    one); others (total variation) Hessian-vector products in the run's precision.
    """
    from .._regularization import (
        BiLaplacian,
        H1Seminorm,
        NoRegularization,
        Tikhonov,
        lumped_mass,
        stiffness_matrix,
    )

    if isinstance(regularizer, H1Seminorm):
        return np.asarray(stiffness_matrix(regularizer.space) @ matrix)
    if isinstance(regularizer, Tikhonov):
        return lumped_mass(regularizer.space)[:, None] * matrix
    if isinstance(regularizer, BiLaplacian):
        a = regularizer.operator()
        return np.asarray(a.T @ ((a @ matrix) / lumped_mass(regularizer.space)[:, None]))
    if isinstance(regularizer, NoRegularization):
        return np.zeros_like(matrix)
    gradient = jax.grad(regularizer)

    def hvp(v):
        return jax.jvp(gradient, (field,), (v,))[1]

    columns = jax.jit(jax.vmap(hvp, in_axes=1, out_axes=1))(jnp.asarray(matrix, field.dtype))
    return np.asarray(columns, dtype=float)


def _field_mean(regularizer, center, k):
    center = center.copy()
    if hasattr(regularizer, "mean"):
        center[:k] = float(regularizer.mean)
    return center


def _lumped_mass(regularizer, parameters):
    from .._regularization import lumped_mass

    space = getattr(regularizer, "space", None)
    if space is None:
        return np.ones(int(np.shape(parameters.field(jnp.zeros(parameters.size)))[0]))
    return lumped_mass(space)


def _x64() -> bool:
    return bool(jax.config.read("jax_enable_x64"))

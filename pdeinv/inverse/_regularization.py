r"""Regularisers of a nodal log-coefficient field ``m`` (P1 integrals over the space).

- :class:`Tikhonov`: :math:`\tfrac12\int (m - m_0)^2` (lumped mass),
- :class:`H1Seminorm`: :math:`\tfrac12\int |\nabla m|^2`,
- :class:`TotalVariation`: :math:`\int \sqrt{|\nabla m|^2 + \varepsilon^2}` (smoothed),
- :class:`BiLaplacian`: :math:`\tfrac12\|(\delta - \gamma\Delta)(m - m_0)\|^2_{M^{-1}}`, the
  negative log-density of a Matérn-like Gaussian prior with a correlation length and a
  pointwise variance.

Gradients are the exact P1 gradients per simplex (grids are split into
simplices), so there is no checkerboard null space.  Each regulariser says whether
``exp(-R)`` is a Gaussian density (``gaussian``: ``R`` is quadratic) and whether that
Gaussian is proper (``proper``: its Hessian is positive definite); the Laplace
posterior (:mod:`pdeinv.inverse._laplace`) uses the Hessian as the prior precision.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from ..discretize._space import Space
from ._geometry import simplex_geometry


def _cell_gradients(space, m):
    geometry = simplex_geometry(space)
    grads = jnp.asarray(geometry.gradients, m.dtype)
    return jnp.einsum("cad,ca->cd", grads, m[geometry.simplices]), jnp.asarray(
        geometry.volumes, m.dtype
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Tikhonov:
    """``0.5 * integral (m - mean)^2``."""

    space: Space
    mean: float = 0.0
    gaussian = True
    proper = True

    def __call__(self, m):
        mass = jnp.asarray(simplex_geometry(self.space).lumped_mass, m.dtype)
        return 0.5 * jnp.sum(mass * (m - self.mean) ** 2)


@dataclasses.dataclass(frozen=True, eq=False)
class H1Seminorm:
    """``0.5 * integral |grad m|^2``."""

    space: Space
    gaussian = True
    proper = False  # constants cost nothing

    def __call__(self, m):
        grads, volumes = _cell_gradients(self.space, m)
        return 0.5 * jnp.sum(volumes * jnp.sum(grads**2, axis=-1))


@dataclasses.dataclass(frozen=True, eq=False)
class TotalVariation:
    """``integral sqrt(|grad m|^2 + epsilon^2)`` (smoothed total variation)."""

    space: Space
    epsilon: float = 1e-2
    gaussian = False
    proper = False

    def __call__(self, m):
        grads, volumes = _cell_gradients(self.space, m)
        return jnp.sum(volumes * jnp.sqrt(jnp.sum(grads**2, axis=-1) + self.epsilon**2))


@dataclasses.dataclass(frozen=True, eq=False)
class NoRegularization:
    """``R = 0`` (an improper flat prior)."""

    space: Space | None = None
    gaussian = True
    proper = False

    def __call__(self, m):
        return jnp.zeros((), m.dtype)


def stiffness_matvec(space: Space, v):
    """``K v`` with the P1 stiffness matrix ``K`` (``v^T K v = integral |grad v|^2``)."""
    geometry = simplex_geometry(space)
    grads = jnp.asarray(geometry.gradients, v.dtype)  # (c, d+1, dim)
    volumes = jnp.asarray(geometry.volumes, v.dtype)
    cell_grad = jnp.einsum("cad,ca->cd", grads, v[geometry.simplices])
    contributions = volumes[:, None] * jnp.einsum("cad,cd->ca", grads, cell_grad)
    return jnp.zeros_like(v).at[geometry.simplices].add(contributions)


def stiffness_matrix(space: Space) -> scipy.sparse.csr_matrix:
    """The P1 stiffness matrix ``K`` as a sparse matrix (natural/Neumann boundary)."""
    geometry = simplex_geometry(space)
    local = geometry.volumes[:, None, None] * np.einsum(
        "cad,cbd->cab", geometry.gradients, geometry.gradients
    )
    rows = np.repeat(geometry.simplices[:, :, None], geometry.simplices.shape[1], axis=2)
    cols = np.swapaxes(rows, 1, 2)
    n = space.num_nodes
    return scipy.sparse.csr_matrix((local.ravel(), (rows.ravel(), cols.ravel())), shape=(n, n))


def matern_coefficients(dim: int, correlation_length: float, variance: float):
    r"""``(delta, gamma)`` of :math:`(\delta - \gamma\Delta)^2` for a Matérn field.

    In ``dim`` dimensions the Gaussian field with precision operator
    :math:`(\delta - \gamma\Delta)^2` is Matérn with smoothness
    :math:`\nu = 2 - d/2`, correlation length :math:`\rho = \sqrt{8\nu\gamma/\delta}` and
    pointwise variance
    :math:`\sigma^2 = \Gamma(\nu) / (\Gamma(\nu + d/2) (4\pi)^{d/2} \delta^\nu \gamma^{d/2})`
    (away from the boundary).  Solved for ``delta`` and ``gamma``.
    """
    if dim not in (1, 2, 3):
        raise ValueError(f"the bilaplacian prior needs a 1-, 2- or 3-D space, got dim={dim}")
    if not correlation_length > 0:
        raise ValueError(f"regularization.correlation_length must be > 0, got {correlation_length}")
    if not variance > 0:
        raise ValueError(f"regularization.prior_variance must be > 0, got {variance}")
    nu = 2.0 - dim / 2.0
    ratio = correlation_length**2 / (8.0 * nu)  # gamma / delta
    # nu + d/2 = 2, so delta^nu gamma^(d/2) = delta^2 ratio^(d/2).
    delta = math.sqrt(
        math.gamma(nu) / ((4.0 * math.pi) ** (dim / 2.0) * ratio ** (dim / 2.0) * variance)
    )
    return delta, ratio * delta


@dataclasses.dataclass(frozen=True, eq=False)
class BiLaplacian:
    r"""Matérn-like Gaussian prior :math:`\tfrac12 \|A (m - m_0)\|^2_{M^{-1}}`, ``A = δM + γK``.

    ``M`` is the lumped P1 mass matrix and ``K`` the P1 stiffness matrix with the
    natural (Neumann) boundary condition, so :math:`\exp(-R)` is the density of the
    Gaussian field with covariance :math:`A^{-1} M A^{-1}`: the discretised
    :math:`(\delta - \gamma\Delta)^{-2}` white-noise model, a Matérn field with
    the given ``correlation_length`` and pointwise ``variance`` away from the
    boundary (larger within about one correlation length of a Neumann boundary).
    With a regularisation weight ``w`` the precision is ``w`` times this one.

    Parameters
    ----------
    space
        Grid or mesh of the nodal field.
    correlation_length
        Distance at which the correlation has dropped to about 0.1 (``> 0``).
    variance
        Pointwise variance of ``m`` (``> 0``).
    mean
        Prior mean ``m_0`` (a constant).
    """

    space: Space
    correlation_length: float
    variance: float = 1.0
    mean: float = 0.0
    gaussian = True
    proper = True

    @property
    def coefficients(self) -> tuple[float, float]:
        """``(delta, gamma)`` of ``A = delta M + gamma K``."""
        return matern_coefficients(self.space.dim, self.correlation_length, self.variance)

    def __post_init__(self):
        self.coefficients  # noqa: B018 - validates the keys

    def apply_a(self, v):
        """``A v = delta M v + gamma K v``."""
        delta, gamma = self.coefficients
        mass = jnp.asarray(lumped_mass(self.space), v.dtype)
        return delta * mass * v + gamma * stiffness_matvec(self.space, v)

    def __call__(self, m):
        mass = jnp.asarray(lumped_mass(self.space), m.dtype)
        a_m = self.apply_a(m - self.mean)
        return 0.5 * jnp.sum(a_m**2 / mass)

    def operator(self) -> scipy.sparse.csc_matrix:
        """``A`` as a sparse matrix."""
        delta, gamma = self.coefficients
        mass = scipy.sparse.diags(lumped_mass(self.space))
        return scipy.sparse.csc_matrix(delta * mass + gamma * stiffness_matrix(self.space))

    def sample(self, key, num_samples: int) -> np.ndarray:
        """Prior samples ``m_0 + A^{-1} M^{1/2} xi`` (``xi`` standard normal), ``(num, nodes)``.

        The square root of the covariance ``A^{-1} M A^{-1}`` is applied with one
        sparse LU factorisation of ``A``, so this scales to large grids.
        """
        xi = np.asarray(jax.random.normal(key, (self.space.num_nodes, int(num_samples))))
        root_mass = np.sqrt(lumped_mass(self.space))[:, None]
        solve = scipy.sparse.linalg.splu(self.operator()).solve
        return (self.mean + solve(root_mass * xi)).T


REGULARIZERS = ("h1", "tikhonov", "tv", "bilaplacian", "none")


def make_regularizer(
    kind: str,
    space: Space,
    *,
    mean: float = 0.0,
    epsilon: float = 1e-2,
    correlation_length: float | None = None,
    variance: float = 1.0,
):
    """Regulariser by name (``h1``, ``tikhonov``, ``tv``, ``bilaplacian``, ``none``).

    ``correlation_length`` (default: a quarter of the longest side of the bounding
    box) and ``variance`` configure ``bilaplacian``; ``mean`` is the value
    ``tikhonov`` and ``bilaplacian`` pull towards.
    """
    if kind == "h1":
        return H1Seminorm(space)
    if kind == "tikhonov":
        return Tikhonov(space, float(mean))
    if kind == "tv":
        if epsilon <= 0:
            raise ValueError(f"regularization.tv_epsilon must be > 0, got {epsilon}")
        return TotalVariation(space, float(epsilon))
    if kind == "bilaplacian":
        if correlation_length is None:
            extent = space.points.max(axis=0) - space.points.min(axis=0)
            correlation_length = 0.25 * float(np.max(extent))
        return BiLaplacian(space, float(correlation_length), float(variance), float(mean))
    if kind == "none":
        return NoRegularization(space)
    raise ValueError(f"regularization.kind must be one of {REGULARIZERS}, got {kind!r}")


def lumped_mass(space: Space) -> np.ndarray:
    """Node weights of P1 integrals over ``space``."""
    return simplex_geometry(space).lumped_mass

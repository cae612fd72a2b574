r"""Regularisers of a nodal log-coefficient field ``m`` (P1 integrals over the space).

- :class:`Tikhonov`: :math:`\tfrac12\int (m - m_0)^2` (lumped mass),
- :class:`H1Seminorm`: :math:`\tfrac12\int |\nabla m|^2`,
- :class:`TotalVariation`: :math:`\int \sqrt{|\nabla m|^2 + \varepsilon^2}` (smoothed).

Gradients are the exact P1 gradients per simplex (grids are split into
simplices), so there is no checkerboard null space.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

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

    def __call__(self, m):
        mass = jnp.asarray(simplex_geometry(self.space).lumped_mass, m.dtype)
        return 0.5 * jnp.sum(mass * (m - self.mean) ** 2)


@dataclasses.dataclass(frozen=True, eq=False)
class H1Seminorm:
    """``0.5 * integral |grad m|^2``."""

    space: Space

    def __call__(self, m):
        grads, volumes = _cell_gradients(self.space, m)
        return 0.5 * jnp.sum(volumes * jnp.sum(grads**2, axis=-1))


@dataclasses.dataclass(frozen=True, eq=False)
class TotalVariation:
    """``integral sqrt(|grad m|^2 + epsilon^2)`` (smoothed total variation)."""

    space: Space
    epsilon: float = 1e-2

    def __call__(self, m):
        grads, volumes = _cell_gradients(self.space, m)
        return jnp.sum(volumes * jnp.sqrt(jnp.sum(grads**2, axis=-1) + self.epsilon**2))


REGULARIZERS = ("h1", "tikhonov", "tv", "none")


def make_regularizer(kind: str, space: Space, *, mean: float = 0.0, epsilon: float = 1e-2):
    """Regulariser by name (``h1``, ``tikhonov``, ``tv``, ``none``)."""
    if kind == "h1":
        return H1Seminorm(space)
    if kind == "tikhonov":
        return Tikhonov(space, float(mean))
    if kind == "tv":
        if epsilon <= 0:
            raise ValueError(f"regularization.tv_epsilon must be > 0, got {epsilon}")
        return TotalVariation(space, float(epsilon))
    if kind == "none":
        return lambda m: jnp.zeros((), m.dtype)
    raise ValueError(f"regularization.kind must be one of {REGULARIZERS}, got {kind!r}")


def lumped_mass(space: Space) -> np.ndarray:
    """Node weights of P1 integrals over ``space``."""
    return simplex_geometry(space).lumped_mass

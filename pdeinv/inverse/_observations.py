"""Observation operators: nodal fields -> measured values, and synthetic noisy data."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..discretize._space import Space
from ._geometry import interpolation_weights


@dataclasses.dataclass(frozen=True, eq=False)
class FullField:
    """Every node is observed."""

    space: Space

    @property
    def num_observations(self) -> int:
        return self.space.num_nodes

    @property
    def locations(self) -> np.ndarray:
        return self.space.points

    def __call__(self, fields):
        """``(..., num_nodes) -> (..., num_nodes)``."""
        return fields


@dataclasses.dataclass(frozen=True, eq=False)
class PointSensors:
    """Values at sensor points, by nearest node or linear (P1) interpolation."""

    locations: np.ndarray  # (num_sensors, dim)
    index: np.ndarray  # (num_sensors, k)
    weight: np.ndarray  # (num_sensors, k)
    interpolation: str = "linear"

    @property
    def num_observations(self) -> int:
        return int(self.index.shape[0])

    def __call__(self, fields):
        """``(..., num_nodes) -> (..., num_sensors)``."""
        fields = jnp.asarray(fields)
        return jnp.sum(fields[..., self.index] * jnp.asarray(self.weight, fields.dtype), axis=-1)

    @classmethod
    def at(cls, space: Space, locations, interpolation: str = "linear") -> PointSensors:
        locations = np.atleast_2d(np.asarray(locations, dtype=float))
        index, weight = interpolation_weights(space, locations, method=interpolation)
        return cls(locations, index, weight, interpolation)


def sensor_layout(space: Space, count: int, layout: str = "grid", *, seed: int = 0) -> np.ndarray:
    """``count`` sensor positions inside the bounding box of ``space``.

    ``layout="grid"``: a regular lattice with about ``count`` points, inset by half a
    spacing from the boundary; ``"random"``: uniform random nodes of the space (seeded).
    """
    if count < 1:
        raise ValueError(f"observations.sensors.count must be >= 1, got {count}")
    lo, hi = space.points.min(axis=0), space.points.max(axis=0)
    if layout == "random":
        rng = np.random.default_rng(seed)
        pick = rng.choice(space.num_nodes, size=min(count, space.num_nodes), replace=False)
        return space.points[np.sort(pick)]
    if layout != "grid":
        raise ValueError(f"observations.sensors.layout must be 'grid' or 'random', got {layout!r}")
    per_axis = max(1, int(round(count ** (1.0 / space.dim))))
    axes = [
        lo[i] + (hi[i] - lo[i]) * (np.arange(per_axis) + 0.5) / per_axis for i in range(space.dim)
    ]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def add_noise(clean, level: float, *, seed: int):
    """Clean data plus Gaussian noise of standard deviation ``level * rms(clean)``.

    Returns
    -------
    data, sigma
        Noisy data (same shape) and the scalar noise standard deviation used (the
        misfit divides by it).  ``level = 0`` gives ``sigma = rms(clean)`` as a scale
        and no noise.
    """
    clean = np.asarray(clean, dtype=float)
    if level < 0:
        raise ValueError(f"noise.level must be >= 0, got {level}")
    rms = float(np.sqrt(np.mean(clean**2)))
    if rms == 0.0:
        raise ValueError(
            "the synthetic observations are all zero; choose another initial_condition"
        )
    if level == 0:
        return clean.copy(), rms
    sigma = level * rms
    rng = np.random.default_rng(seed)
    return clean + sigma * rng.standard_normal(clean.shape), sigma

"""Parameterisations: optimisation vector ``m`` -> nodal log-coefficient field.

All three are linear maps ``field = P m`` (so a constant ``m`` gives a constant
field), written as gathers so they jit and differentiate cheaply.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..discretize._space import Space
from ._geometry import grid_space, interpolation_weights


@dataclasses.dataclass(frozen=True, eq=False)
class NodalField:
    """One unknown per node: ``field = m`` (the default)."""

    num_nodes: int

    @property
    def num_params(self) -> int:
        return self.num_nodes

    def field(self, m):
        return m


@dataclasses.dataclass(frozen=True, eq=False)
class PiecewiseConstant:
    """One unknown per region: ``field[i] = m[labels[i]]``.

    ``labels`` holds a region number ``0..num_regions-1`` per node.
    """

    labels: np.ndarray

    def __post_init__(self):
        labels = np.asarray(self.labels, dtype=np.int64)
        _, compact = np.unique(labels, return_inverse=True)
        object.__setattr__(self, "labels", compact.reshape(-1))

    @property
    def num_params(self) -> int:
        return int(self.labels.max()) + 1

    def field(self, m):
        return jnp.asarray(m)[self.labels]

    @classmethod
    def boxes(cls, space: Space, shape) -> PiecewiseConstant:
        """Regions = cells of a ``shape`` box partition of the bounding box."""
        shape = np.asarray(shape, dtype=np.int64)
        if shape.size != space.dim or np.any(shape < 1):
            raise ValueError(f"regions must be {space.dim} positive integers, got {shape.tolist()}")
        lo, hi = space.points.min(axis=0), space.points.max(axis=0)
        xi = (space.points - lo) / np.where(hi > lo, hi - lo, 1.0)
        box = np.minimum((xi * shape).astype(np.int64), shape - 1)
        return cls(np.ravel_multi_index(tuple(box.T), tuple(shape)))


@dataclasses.dataclass(frozen=True, eq=False)
class CoarseGrid:
    """Unknowns on a coarse grid over the bounding box, linearly interpolated to the nodes."""

    coarse: Space
    index: np.ndarray  # (num_nodes, dim + 1)
    weight: np.ndarray  # (num_nodes, dim + 1)

    @property
    def num_params(self) -> int:
        return self.coarse.num_nodes

    def field(self, m):
        m = jnp.asarray(m)
        return jnp.sum(m[self.index] * jnp.asarray(self.weight, m.dtype), axis=-1)

    @classmethod
    def build(cls, space: Space, shape) -> CoarseGrid:
        shape = tuple(int(s) for s in np.ravel(shape))
        if len(shape) != space.dim or min(shape) < 2:
            raise ValueError(f"coarse_grid must be {space.dim} integers >= 2, got {list(shape)}")
        lo, hi = space.points.min(axis=0), space.points.max(axis=0)
        coarse = grid_space(shape, lo, hi)
        index, weight = interpolation_weights(coarse, space.points, method="linear")
        return cls(coarse, index, weight)


@dataclasses.dataclass(frozen=True, eq=False)
class ParameterMap:
    """Optimisation vector ``m`` <-> model parameter pytree.

    ``m = [field unknowns, extra vector unknowns...]``.  The field unknowns go
    through ``parameterization`` to the nodal field ``params[field_name]`` (a
    log-coefficient); each extra entry ``(name, size)`` is copied into
    ``params[name]`` unchanged (e.g. an advection velocity).  Entries of
    ``base_params`` that are not fitted keep their values.
    """

    parameterization: NodalField | PiecewiseConstant | CoarseGrid
    field_name: str
    base_params: dict
    extra: tuple[tuple[str, int], ...] = ()

    @property
    def num_field_params(self) -> int:
        return self.parameterization.num_params

    @property
    def size(self) -> int:
        return self.num_field_params + sum(size for _, size in self.extra)

    def split(self, m):
        k = self.num_field_params
        parts, offset = {}, k
        for name, size in self.extra:
            parts[name] = m[offset : offset + size]
            offset += size
        return m[:k], parts

    def field(self, m):
        """Nodal log-coefficient field of ``m``."""
        return self.parameterization.field(self.split(m)[0])

    def to_params(self, m):
        field_m, extra = self.split(m)
        params = dict(self.base_params)
        params[self.field_name] = self.parameterization.field(field_m)
        params.update(extra)
        return params

    def initial(self, log_value: float, extra_values: dict | None = None, dtype=float):
        """Vector with a constant log-field ``log_value`` and the given extras."""
        extra_values = extra_values or {}
        # The optimisation vector is the field's block followed by one block per extra.
        blocks = [np.full(self.num_field_params, float(log_value))]
        for name, size in self.extra:
            value = np.asarray(extra_values.get(name, np.zeros(size)), dtype=float).ravel()
            if value.size != size:
                raise ValueError(f"initial value of {name!r} must have {size} entries")
            blocks.append(value)
        return np.concatenate(blocks).astype(dtype)

"""Geometry a discrete state lives on: node coordinates plus cells for plotting and VTU."""

from __future__ import annotations

import dataclasses

import numpy as np

_CELL_TYPES = ("vertex", "line", "quad", "hexahedron", "triangle", "tetra")


@dataclasses.dataclass(frozen=True, eq=False)
class Space:
    """Nodes and cells of a structured grid or an unstructured mesh.

    Parameters
    ----------
    points
        Node coordinates, shape ``(num_nodes, dim)``.  Coefficient fields are flat
        arrays over these nodes (C order over the grid index for grids).
    cells
        Connectivity, shape ``(num_cells, nodes_per_cell)``, used for plotting and VTU.
    cell_type
        meshio cell type name of ``cells``.
    shape
        Grid shape ``(nx, ny[, nz])`` for structured grids, ``None`` for meshes.
    boundary
        Named node sets (e.g. ``{"left": idx}`` or physical groups of a mesh).
    """

    points: np.ndarray
    cells: np.ndarray
    cell_type: str
    shape: tuple[int, ...] | None = None
    boundary: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        points = np.asarray(self.points, dtype=float)
        if points.ndim != 2 or points.shape[1] not in (1, 2, 3):
            raise ValueError(f"points must have shape (num_nodes, dim<=3), got {points.shape}")
        cells = np.asarray(self.cells, dtype=np.int64)
        if cells.ndim != 2:
            raise ValueError(
                f"cells must have shape (num_cells, nodes_per_cell), got {cells.shape}"
            )
        if self.cell_type not in _CELL_TYPES:
            raise ValueError(f"cell_type must be one of {_CELL_TYPES}, got {self.cell_type!r}")
        if self.shape is not None and int(np.prod(self.shape)) != points.shape[0]:
            raise ValueError(f"shape {self.shape} does not match {points.shape[0]} points")
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "cells", cells)

    @property
    def num_nodes(self) -> int:
        return self.points.shape[0]

    @property
    def dim(self) -> int:
        return self.points.shape[1]

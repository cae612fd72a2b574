"""Discrete point sources (Dirac deltas) on grids and P1 meshes.

A point source of rate ``Q`` at ``x0`` is the right-hand side ``Q delta(x - x0)``.  Its
discrete forms conserve the injected amount exactly (``sum_i w_i b_i = Q`` with ``w_i``
the quadrature weights of the nodes) and are exact for linear test functions:

* cell-centred grid: ``Q`` is split over the ``2^dim`` cell centres around ``x0`` with
  multilinear (bilinear in 2-D) weights and divided by the cell volume, giving a source
  *density*; a point at a cell centre puts ``Q / h^dim`` on that cell only.  Between the
  outermost centres and the box faces the weight goes to the outermost centre.
* P1 mesh: the load vector ``b_i = Q phi_i(x0)`` (barycentric coordinates of ``x0`` in
  the containing simplex), i.e. ``int Q delta phi_i dx`` exactly.
"""

from __future__ import annotations

import itertools

import numpy as np

from ._fem import element_geometry
from ._grid import Grid, as_grid
from ._space import Space


def _location(space: Space, location) -> np.ndarray:
    x0 = np.asarray(location, dtype=float).reshape(-1)
    if x0.shape != (space.dim,):
        raise ValueError(
            f"location must have {space.dim} coordinates for this {space.dim}-D space, "
            f"got {np.asarray(location).tolist()}"
        )
    if not np.all(np.isfinite(x0)):
        raise ValueError(f"location must be finite, got {x0.tolist()}")
    return x0


def grid_point_source(space, location) -> np.ndarray:
    """Density ``delta(x - location)`` on a cell-centred grid (multilinear weights).

    Parameters
    ----------
    space
        A :class:`~pdeinv.discretize.Grid`.
    location
        Point ``(dim,)`` inside the closed box ``[lower, upper]``.

    Returns
    -------
    numpy.ndarray
        ``(num_nodes,)`` float64 with ``sum(b) * cell_volume == 1``; multiply by the rate.

    Raises
    ------
    ValueError
        If ``location`` lies outside the box or has the wrong number of coordinates.
    """
    g: Grid = as_grid(space)
    x0 = _location(g, location)
    lower, upper = np.asarray(g.lower), np.asarray(g.upper)
    tol = 1e-12 * np.maximum(np.abs(upper - lower), 1.0)
    if np.any(x0 < lower - tol) or np.any(x0 > upper + tol):
        raise ValueError(
            f"location {x0.tolist()} lies outside the grid box [{list(g.lower)}, {list(g.upper)}]"
        )
    per_axis = []  # (indices, weights) per axis
    for d, (n, h) in enumerate(zip(g.shape, g.spacing, strict=True)):
        s = (x0[d] - g.lower[d]) / h - 0.5  # fractional cell-centre index
        s = min(max(s, 0.0), n - 1.0)
        i = min(int(np.floor(s)), n - 2)
        f = s - i
        per_axis.append(((i, i + 1), (1.0 - f, f)))
    b = np.zeros(g.shape)
    for corner in itertools.product((0, 1), repeat=g.dim):
        idx = tuple(per_axis[d][0][c] for d, c in enumerate(corner))
        b[idx] += np.prod([per_axis[d][1][c] for d, c in enumerate(corner)])
    return b.reshape(-1) / g.cell_volume


def locate_simplex(space: Space, location, *, tol: float = 1e-10):
    """Containing simplex of a point and its barycentric coordinates.

    Returns
    -------
    cell, barycentric
        Index of a triangle/tetrahedron containing ``location`` and the ``(dim + 1,)``
        barycentric coordinates there (``>= 0`` up to rounding, summing to 1).

    Raises
    ------
    ValueError
        If no cell contains the point (outside the mesh).
    """
    x0 = _location(space, location)
    geometry = element_geometry(space)
    origin = space.points[space.cells[:, 0]]  # (c, d)
    rest = np.einsum("cij,cj->ci", geometry.grads[:, 1:, :], x0 - origin)  # (c, d)
    lam = np.concatenate([1.0 - rest.sum(axis=1, keepdims=True), rest], axis=1)
    worst = lam.min(axis=1)
    cell = int(np.argmax(worst))
    if worst[cell] < -tol:
        lo, hi = space.points.min(axis=0), space.points.max(axis=0)
        raise ValueError(
            f"location {x0.tolist()} lies outside the mesh (bounding box "
            f"[{lo.tolist()}, {hi.tolist()}])"
        )
    bary = np.clip(lam[cell], 0.0, None)
    return cell, bary / bary.sum()


def p1_point_load(space: Space, location) -> np.ndarray:
    """P1 load vector ``b_i = phi_i(location)`` of a unit point source.

    Parameters
    ----------
    space
        Triangle or tetrahedron mesh.
    location
        Point ``(dim,)`` inside the mesh.

    Returns
    -------
    numpy.ndarray
        ``(num_nodes,)`` float64, non-zero at the vertices of the containing cell,
        ``sum(b) == 1`` and ``b @ points == location``.
    """
    cell, bary = locate_simplex(space, location)
    b = np.zeros(space.num_nodes)
    np.add.at(b, space.cells[cell], bary)
    return b

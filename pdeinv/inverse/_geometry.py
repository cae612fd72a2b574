"""Simplex view of a :class:`~pdeinv.discretize.Space`: gradients, volumes, point location.

Grids (quad/hexahedron cells) are split into simplices so one code path serves
grids and meshes: P1 gradients per simplex give H1/TV regularisers without the
checkerboard null space of averaged differences, and barycentric coordinates give
linear interpolation at sensors and from coarse grids.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from scipy.spatial import cKDTree

from ..discretize._space import Space

# Kuhn split of a hexahedron (VTK/meshio vertex order) around the diagonal 0-6.
_HEX_TO_TETS = np.array(
    [[0, 1, 2, 6], [0, 2, 3, 6], [0, 3, 7, 6], [0, 7, 4, 6], [0, 4, 5, 6], [0, 5, 1, 6]]
)
_QUAD_TO_TRIANGLES = np.array([[0, 1, 2], [0, 2, 3]])


@dataclasses.dataclass(frozen=True, eq=False)
class SimplexGeometry:
    """P1 data of a space split into simplices.

    Attributes
    ----------
    simplices
        ``(num_simplices, dim + 1)`` node indices.
    gradients
        ``(num_simplices, dim + 1, dim)`` gradients of the barycentric (hat) functions.
    volumes
        ``(num_simplices,)`` simplex measures.
    inverse_maps, origins
        Affine maps to barycentric coordinates (``lambda_{1..d} = inv @ (p - origin)``).
    """

    simplices: np.ndarray
    gradients: np.ndarray
    volumes: np.ndarray
    inverse_maps: np.ndarray
    origins: np.ndarray

    @property
    def lumped_mass(self) -> np.ndarray:
        """Row sums of the P1 mass matrix (node weights of integrals)."""
        num_nodes = int(self.simplices.max()) + 1
        share = np.repeat(self.volumes / self.simplices.shape[1], self.simplices.shape[1])
        return np.bincount(self.simplices.ravel(), weights=share, minlength=num_nodes)


def simplex_split(space: Space) -> np.ndarray:
    """Cells of ``space`` as simplices of the space's dimension."""
    cells = space.cells
    if space.cell_type == "quad":
        return cells[:, _QUAD_TO_TRIANGLES].reshape(-1, 3)
    if space.cell_type == "hexahedron":
        return cells[:, _HEX_TO_TETS].reshape(-1, 4)
    expected = {1: "line", 2: "triangle", 3: "tetra"}[space.dim]
    if space.cell_type != expected:
        raise ValueError(
            f"cannot build a {space.dim}-D geometry from {space.cell_type!r} cells; "
            f"expected {expected!r}, 'quad' or 'hexahedron'"
        )
    return cells


@functools.lru_cache(maxsize=32)
def _geometry_cached(space_id, space):
    del space_id
    simplices = simplex_split(space)
    vertices = space.points[simplices]  # (c, d+1, d)
    origins = vertices[:, 0, :]
    edges = np.swapaxes(vertices[:, 1:, :] - origins[:, None, :], 1, 2)  # (c, d, d) columns
    det = np.linalg.det(edges)
    keep = np.abs(det) > 1e-14 * np.max(np.abs(det))
    simplices, origins, edges, det = simplices[keep], origins[keep], edges[keep], det[keep]
    inverse_maps = np.linalg.inv(edges)  # rows: gradients of lambda_1..lambda_d
    grad_rest = inverse_maps
    grad_first = -grad_rest.sum(axis=1, keepdims=True)
    gradients = np.concatenate([grad_first, grad_rest], axis=1)
    dim = space.dim
    volumes = np.abs(det) / float(np.prod(np.arange(1, dim + 1)))
    return SimplexGeometry(simplices, gradients, volumes, inverse_maps, origins)


def simplex_geometry(space: Space) -> SimplexGeometry:
    """Simplices, hat-function gradients and volumes of ``space`` (cached per space)."""
    return _geometry_cached(id(space), space)


def interpolation_weights(space: Space, query: np.ndarray, *, method: str = "linear"):
    """Sparse weights ``(index, weight)`` so that ``f(query) = sum(weight * f[index], -1)``.

    Parameters
    ----------
    space
        Where the nodal field lives.
    query
        Points, shape ``(num_query, dim)``.
    method
        ``"nearest"`` (nearest node) or ``"linear"`` (P1 interpolation in the
        containing simplex; points outside the domain fall back to the nearest node).

    Returns
    -------
    index, weight
        Arrays of shape ``(num_query, k)``; ``k = 1`` for nearest, ``dim + 1`` for linear.
    """
    query = np.atleast_2d(np.asarray(query, dtype=float))
    if query.shape[1] != space.dim:
        raise ValueError(
            f"points have dimension {query.shape[1]}, the {space.dim}-D space needs {space.dim}"
        )
    _, nearest = cKDTree(space.points).query(query)
    if method == "nearest":
        return nearest[:, None].astype(np.int64), np.ones((len(query), 1))
    if method != "linear":
        raise ValueError(f"interpolation must be 'nearest' or 'linear', got {method!r}")
    geometry = simplex_geometry(space)
    centroids = space.points[geometry.simplices].mean(axis=1)
    num_candidates = min(len(centroids), 64)
    _, candidates = cKDTree(centroids).query(query, k=num_candidates)
    candidates = np.asarray(candidates).reshape(len(query), num_candidates)
    dim = space.dim
    index = np.repeat(nearest[:, None], dim + 1, axis=1).astype(np.int64)
    weight = np.zeros((len(query), dim + 1))
    weight[:, 0] = 1.0
    offsets = query[:, None, :] - geometry.origins[candidates]  # (q, k, d)
    rest = np.einsum("qkij,qkj->qki", geometry.inverse_maps[candidates], offsets)
    lam = np.concatenate([1.0 - rest.sum(axis=-1, keepdims=True), rest], axis=-1)
    inside = np.all(lam >= -1e-10, axis=-1)
    for q in np.flatnonzero(inside.any(axis=1)):
        j = int(np.argmax(inside[q]))
        index[q] = geometry.simplices[candidates[q, j]]
        weight[q] = np.clip(lam[q, j], 0.0, 1.0)
        weight[q] /= weight[q].sum()
    return index, weight


def grid_space(shape, lower, upper) -> Space:
    """A structured quad/hex (or line) grid ``Space`` with ``shape`` nodes per axis."""
    shape = tuple(int(s) for s in shape)
    axes = [np.linspace(lo, hi, n) for lo, hi, n in zip(lower, upper, shape, strict=False)]
    mesh = np.meshgrid(*axes, indexing="ij")
    points = np.stack([m.ravel() for m in mesh], axis=1)
    ids = np.arange(points.shape[0]).reshape(shape)
    if len(shape) == 1:
        cells = np.stack([ids[:-1], ids[1:]], axis=1)
        return Space(points, cells, "line", shape)
    if len(shape) == 2:
        a, b = ids[:-1, :-1], ids[1:, :-1]
        c, d = ids[1:, 1:], ids[:-1, 1:]
        cells = np.stack([a.ravel(), b.ravel(), c.ravel(), d.ravel()], axis=1)
        return Space(points, cells, "quad", shape)
    corners = [
        ids[:-1, :-1, :-1], ids[1:, :-1, :-1], ids[1:, 1:, :-1], ids[:-1, 1:, :-1],
        ids[:-1, :-1, 1:], ids[1:, :-1, 1:], ids[1:, 1:, 1:], ids[:-1, 1:, 1:],
    ]  # fmt: skip
    cells = np.stack([c.ravel() for c in corners], axis=1)
    return Space(points, cells, "hexahedron", shape)

"""Unstructured simplex meshes: reading (through meshio), writing, and structured generators.

This is the only module of pdeinv that imports meshio, so that the reader can be
replaced in one place.  Everything else works with :class:`~pdeinv.discretize.Space`.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
from collections.abc import Mapping, Sequence

import numpy as np

from ._space import Space

#: Domain cell types P1 finite elements support, by spatial dimension.
SUPPORTED_CELL_TYPES = {2: "triangle", 3: "tetra"}

# Topological dimension of meshio's cell type names (anything not listed is
# reported as unsupported if it is the highest-dimensional block of a mesh).
_CELL_DIM = {
    "vertex": 0,
    "line": 1,
    "line3": 1,
    "triangle": 2,
    "triangle6": 2,
    "triangle7": 2,
    "quad": 2,
    "quad8": 2,
    "quad9": 2,
    "polygon": 2,
    "tetra": 3,
    "tetra10": 3,
    "hexahedron": 3,
    "hexahedron20": 3,
    "hexahedron27": 3,
    "wedge": 3,
    "wedge15": 3,
    "pyramid": 3,
    "pyramid13": 3,
}

# Facet (d-1 dimensional) cells whose physical groups are boundary tags.
_FACET_TYPE = {"triangle": "line", "tetra": "triangle"}

#: Name of the computed set of all boundary nodes in ``Space.boundary``.
ALL_BOUNDARY = "boundary"

# point_data keys written by space_to_meshio for named node sets, so that tags
# survive formats (VTU, XDMF) that have no physical groups.
_NODE_SET_PREFIX = "boundary:"


def read_mesh(path: str | os.PathLike) -> Space:
    """Read a triangle (2-D) or tetrahedron (3-D) mesh into a :class:`Space`.

    Any format meshio reads works (gmsh ``.msh`` 2.2 and 4.1, VTU, XDMF, ...).
    The highest-dimensional cells form the domain and must all be triangles or
    all tetrahedra; lower-dimensional cells (lines, facets, vertices) are used
    only to collect boundary tags.  Nodes not referenced by any domain cell are
    dropped and the rest renumbered, preserving their order.

    Parameters
    ----------
    path
        Mesh file.

    Returns
    -------
    Space
        ``points`` of shape ``(num_nodes, dim)`` (a 2-D mesh stored with an
        all-zero z coordinate gets ``dim == 2``), ``cells`` of shape
        ``(num_cells, dim + 1)``, ``cell_type`` ``"triangle"`` or ``"tetra"``,
        ``shape=None`` and ``boundary``: a dict from name to sorted unique node
        indices containing

        - every physical group of dimension below the domain's (gmsh
          ``$PhysicalNames`` of facets and points, meshio ``cell_sets`` and
          ``point_sets``, and the ``"boundary:<name>"`` node indicators written by
          :func:`space_to_meshio`);
        - ``"boundary"``: all nodes on facets that belong to exactly one cell.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file has no points or no domain cells, if the domain cells are
        of an unsupported or mixed type, or if a triangle mesh is not planar
        (z not identically zero).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"read_mesh: mesh file {path!r} does not exist")
    return _space_from_meshio(_meshio_read(path), source=path)


def _meshio_read(path: str):
    """``meshio.read`` without its side effects.

    For an ambiguous suffix meshio tries each format, prints every failure to
    stdout and calls ``sys.exit`` when none works; a library must do neither.
    So try the candidate formats here (gmsh first for ``.msh``), silenced.
    """
    import meshio

    name = os.path.basename(path).lower()
    candidates = []
    for ext in sorted(meshio.extension_to_filetypes, key=len, reverse=True):
        if name.endswith(ext):
            candidates.extend(f for f in meshio.extension_to_filetypes[ext] if f not in candidates)
    if name.endswith(".msh") and "gmsh" in candidates:
        candidates.remove("gmsh")
        candidates.insert(0, "gmsh")
    if not candidates:
        known = sorted(meshio.extension_to_filetypes)
        raise ValueError(
            f"read_mesh: cannot tell the mesh format of {path!r} from its suffix; "
            f"meshio reads {known}"
        )
    failures = []
    for file_format in candidates:
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                return meshio.read(path, file_format=file_format)
        except (Exception, SystemExit) as err:  # meshio raises assorted errors, or exits
            printed = " ".join(sink.getvalue().split())
            reason = printed if isinstance(err, SystemExit) or not str(err) else str(err)
            failures.append(f"as {file_format}: {reason or type(err).__name__}")
    raise ValueError(f"read_mesh: meshio cannot read {path!r} ({'; '.join(failures)})")


def _space_from_meshio(mesh, *, source: str) -> Space:
    points = np.asarray(mesh.points, dtype=float)
    blocks = [(block.type, np.asarray(block.data)) for block in mesh.cells]
    if points.shape[0] == 0 or not any(len(data) for _, data in blocks):
        raise ValueError(f"read_mesh: mesh {source!r} is empty (no points or no cells)")

    dims = {_CELL_DIM.get(cell_type, -1) for cell_type, data in blocks if len(data)}
    if -1 in dims:
        unknown = sorted({t for t, d in blocks if _CELL_DIM.get(t) is None and len(d)})
        raise ValueError(
            f"read_mesh: mesh {source!r} has cell types {unknown} of unknown dimension; "
            f"supported domain cell types are {sorted(SUPPORTED_CELL_TYPES.values())}"
        )
    domain_dim = max(dims)
    domain_types = sorted({t for t, d in blocks if _CELL_DIM[t] == domain_dim and len(d)})
    if domain_dim not in SUPPORTED_CELL_TYPES or domain_types != [SUPPORTED_CELL_TYPES[domain_dim]]:
        raise ValueError(
            f"read_mesh: mesh {source!r} has domain cells of type(s) {domain_types}; "
            f"supported are {sorted(SUPPORTED_CELL_TYPES.values())}, one type per mesh "
            "(convert quads/hexahedra/higher-order cells to linear simplices, e.g. in gmsh)"
        )
    cell_type = domain_types[0]
    cells = np.concatenate([d for t, d in blocks if t == cell_type]).astype(np.int64)

    if domain_dim == 2 and points.shape[1] == 3:
        if np.any(points[:, 2] != 0.0):
            raise ValueError(
                f"read_mesh: triangle mesh {source!r} has nonzero z coordinates; only "
                "planar 2-D triangle meshes (z == 0) are supported"
            )
        points = points[:, :2]
    if points.shape[1] < domain_dim:
        raise ValueError(
            f"read_mesh: mesh {source!r} has {points.shape[1]}-D points but {cell_type} cells"
        )

    named = _named_node_sets(mesh, blocks, domain_dim)

    # Drop orphan nodes (e.g. geometry points gmsh keeps), renumber in order.
    used = np.zeros(points.shape[0], dtype=bool)
    used[cells.ravel()] = True
    new_index = np.cumsum(used) - 1
    points = points[used]
    cells = new_index[cells]
    boundary = {name: np.unique(new_index[idx[used[idx]]]) for name, idx in named.items()}
    boundary[ALL_BOUNDARY] = boundary_nodes(cells, cell_type)
    return Space(points=points, cells=cells, cell_type=cell_type, shape=None, boundary=boundary)


def _named_node_sets(mesh, blocks, domain_dim: int) -> dict[str, np.ndarray]:
    """Node indices (in the file's numbering) of named lower-dimensional sets."""
    sets: dict[str, list[np.ndarray]] = {}

    def add(name, idx):
        idx = np.asarray(idx, dtype=np.int64).ravel()
        if idx.size:  # cell_sets list empty parts for blocks of other groups
            sets.setdefault(str(name), []).append(idx)

    # gmsh physical groups: field_data maps name -> (tag, dim), cell_data gives tags.
    physical = mesh.cell_data.get("gmsh:physical")
    if physical is not None:
        by_tag = {
            (int(v[0]), int(v[1])): k
            for k, v in mesh.field_data.items()
            if np.size(v) >= 2 and int(v[1]) < domain_dim
        }
        for (cell_type, data), tags in zip(blocks, physical, strict=True):
            dim = _CELL_DIM[cell_type]
            if dim >= domain_dim:
                continue
            tags = np.asarray(tags).astype(np.int64)
            for tag in np.unique(tags):
                name = by_tag.get((int(tag), dim))
                if name is not None:
                    add(name, data[tags == tag])

    # meshio cell_sets (gmsh 4.1, med, abaqus, ...): per-block cell indices.
    for name, per_block in mesh.cell_sets.items():
        if name.startswith("gmsh:"):
            continue
        for (cell_type, data), idx in zip(blocks, per_block, strict=False):
            if idx is None or _CELL_DIM[cell_type] >= domain_dim:
                continue
            add(name, data[np.asarray(idx, dtype=np.int64)])

    for name, idx in mesh.point_sets.items():
        add(name, idx)

    for key, values in mesh.point_data.items():
        if key.startswith(_NODE_SET_PREFIX):
            add(key[len(_NODE_SET_PREFIX) :], np.flatnonzero(np.asarray(values)))

    return {name: np.unique(np.concatenate(parts)) for name, parts in sets.items()}


def boundary_facets(cells: np.ndarray, cell_type: str) -> np.ndarray:
    """Facets that belong to exactly one cell (the boundary of the mesh).

    Parameters
    ----------
    cells
        Connectivity, shape ``(num_cells, dim + 1)``.
    cell_type
        ``"triangle"`` or ``"tetra"``.

    Returns
    -------
    numpy.ndarray
        Shape ``(num_boundary_facets, dim)``, node indices of each facet (sorted
        within the facet).
    """
    _check_cell_type(cell_type)
    cells = np.asarray(cells, dtype=np.int64)
    nodes_per_cell = cells.shape[1]
    # Facet k of a simplex is the simplex without its k-th node.
    facets = np.concatenate([np.delete(cells, k, axis=1) for k in range(nodes_per_cell)], axis=0)
    facets = np.sort(facets, axis=1)
    unique, counts = np.unique(facets, axis=0, return_counts=True)
    return unique[counts == 1]


def boundary_nodes(cells: np.ndarray, cell_type: str) -> np.ndarray:
    """Sorted unique nodes on the boundary facets of a triangle or tetra mesh."""
    return np.unique(boundary_facets(cells, cell_type))


def tagged_facets(space: Space, names: str | Sequence[str]) -> np.ndarray:
    """Boundary facets (lines in 2-D, triangles in 3-D) of named boundary parts.

    A facet belongs to a part when all its nodes are in ``space.boundary[name]``.
    (A facet of another part whose every node is a corner shared with this part
    would be counted too; that needs a part only one facet long.)

    Parameters
    ----------
    space
        Triangle or tetra mesh.
    names
        A name of ``space.boundary`` or a sequence of names (union); ``"boundary"``
        is the whole boundary.

    Returns
    -------
    numpy.ndarray
        Shape ``(num_facets, dim)`` node indices.
    """
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in space.boundary]
    if unknown or not names:
        raise ValueError(
            f"names: unknown boundary name(s) {unknown or names}; this space has "
            f"{sorted(space.boundary)}"
        )
    facets = boundary_facets(space.cells, space.cell_type)
    nodes = np.unique(np.concatenate([np.asarray(space.boundary[n]) for n in names]))
    return facets[np.all(np.isin(facets, nodes), axis=1)]


def _check_cell_type(cell_type: str) -> None:
    if cell_type not in _FACET_TYPE:
        raise ValueError(
            f"cell_type must be one of {sorted(_FACET_TYPE)} for P1 meshes, got {cell_type!r}"
        )


def space_to_meshio(
    space: Space,
    point_data: Mapping[str, np.ndarray] | None = None,
    cell_data: Mapping[str, np.ndarray] | None = None,
    *,
    boundary_as_point_data: bool = True,
):
    """Convert a :class:`Space` (and nodal/cell fields on it) to a ``meshio.Mesh``.

    Parameters
    ----------
    space
        Mesh or grid.  2-D points are padded with z = 0 (VTU and ParaView expect 3-D).
    point_data
        Fields over the nodes, each of leading dimension ``num_nodes``.
    cell_data
        Fields over the cells, each of leading dimension ``num_cells``.
    boundary_as_point_data
        Store each named node set of ``space.boundary`` as a ``uint8`` indicator
        ``"boundary:<name>"`` so that :func:`read_mesh` recovers the tags from
        formats without physical groups (VTU, XDMF).

    Returns
    -------
    meshio.Mesh
        Write it with ``mesh.write(path)`` in any meshio format.
    """
    import meshio

    points = np.asarray(space.points, dtype=float)
    if points.shape[1] < 3:
        points = np.pad(points, ((0, 0), (0, 3 - points.shape[1])))
    data = {}
    for name, values in (point_data or {}).items():
        values = np.asarray(values)
        if values.shape[:1] != (space.num_nodes,):
            raise ValueError(
                f"point_data[{name!r}] must have leading dimension num_nodes="
                f"{space.num_nodes}, got shape {values.shape}"
            )
        data[name] = values
    if boundary_as_point_data:
        for name, idx in space.boundary.items():
            indicator = np.zeros(space.num_nodes, dtype=np.uint8)
            indicator[np.asarray(idx, dtype=np.int64)] = 1
            data[_NODE_SET_PREFIX + name] = indicator
    cells_out = {}
    for name, values in (cell_data or {}).items():
        values = np.asarray(values)
        if values.shape[:1] != (space.cells.shape[0],):
            raise ValueError(
                f"cell_data[{name!r}] must have leading dimension num_cells="
                f"{space.cells.shape[0]}, got shape {values.shape}"
            )
        cells_out[name] = [values]
    return meshio.Mesh(
        points, [(space.cell_type, space.cells)], point_data=data, cell_data=cells_out
    )


def write_mesh(
    path: str | os.PathLike,
    space: Space,
    point_data: Mapping[str, np.ndarray] | None = None,
    cell_data: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write a :class:`Space` and fields on it to ``path`` (format from the suffix).

    See :func:`space_to_meshio` for the arguments; boundary tags are stored as
    node indicators so that :func:`read_mesh` reads them back.
    """
    space_to_meshio(space, point_data, cell_data).write(os.fspath(path))


# ---------------------------------------------------------------------------
# Structured generators (tests, convergence studies, large benchmark meshes)
# ---------------------------------------------------------------------------


def _check_box(name: str, counts: Sequence[int], lower, upper, dim: int):
    counts = tuple(int(c) for c in counts)
    if any(c < 1 for c in counts):
        raise ValueError(f"{name}: numbers of cells per axis must be >= 1, got {counts}")
    lower = np.broadcast_to(np.asarray(lower, dtype=float), (dim,))
    upper = np.broadcast_to(np.asarray(upper, dtype=float), (dim,))
    if np.any(upper <= lower):
        raise ValueError(f"{name}: need lower < upper on every axis, got {lower} and {upper}")
    return counts, lower, upper


def _grid_points(counts, lower, upper) -> np.ndarray:
    axes = [np.linspace(lo, hi, n + 1) for n, lo, hi in zip(counts, lower, upper, strict=True)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def _side_sets(counts, names) -> dict[str, np.ndarray]:
    index = np.arange(int(np.prod([n + 1 for n in counts]))).reshape([n + 1 for n in counts])
    sets = {}
    for axis, (low_name, high_name) in enumerate(names):
        sets[low_name] = np.sort(np.take(index, 0, axis=axis).ravel())
        sets[high_name] = np.sort(np.take(index, -1, axis=axis).ravel())
    sets[ALL_BOUNDARY] = np.unique(np.concatenate(list(sets.values())))
    return sets


def structured_triangle_mesh(nx: int, ny: int, lower=(0.0, 0.0), upper=(1.0, 1.0)) -> Space:
    """Triangulation of a box by ``nx * ny`` rectangles, each cut along its rising diagonal.

    Parameters
    ----------
    nx, ny
        Numbers of rectangles along x and y; the mesh has ``(nx + 1) * (ny + 1)``
        nodes (node ``(i, j)`` has index ``i * (ny + 1) + j``) and ``2 nx ny`` triangles.
    lower, upper
        Corners of the box ``[lower[0], upper[0]] x [lower[1], upper[1]]``.

    Returns
    -------
    Space
        ``cell_type="triangle"``, ``shape=None``, boundary node sets ``"left"``
        (x = lower), ``"right"``, ``"bottom"`` (y = lower), ``"top"`` and ``"boundary"``.
    """
    (nx, ny), lower, upper = _check_box("structured_triangle_mesh", (nx, ny), lower, upper, 2)
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    v00 = (i * (ny + 1) + j).ravel()
    v10 = v00 + (ny + 1)
    v01 = v00 + 1
    v11 = v10 + 1
    cells = np.concatenate(
        [np.stack([v00, v10, v11], axis=1), np.stack([v00, v11, v01], axis=1)], axis=0
    )
    boundary = _side_sets((nx, ny), [("left", "right"), ("bottom", "top")])
    return Space(
        points=_grid_points((nx, ny), lower, upper),
        cells=cells,
        cell_type="triangle",
        shape=None,
        boundary=boundary,
    )


def structured_tetra_mesh(
    nx: int, ny: int, nz: int, lower=(0.0, 0.0, 0.0), upper=(1.0, 1.0, 1.0)
) -> Space:
    """Conforming tetrahedral mesh of a box: each of ``nx * ny * nz`` bricks cut into 6 tetra.

    The Kuhn (Freudenthal) subdivision is used: every tetrahedron runs from the
    brick's lower corner to its upper corner along the edges in one of the six
    axis orders, so neighbouring bricks share faces exactly.

    Parameters
    ----------
    nx, ny, nz
        Numbers of bricks per axis; node ``(i, j, k)`` has index
        ``(i * (ny + 1) + j) * (nz + 1) + k``.
    lower, upper
        Corners of the box.

    Returns
    -------
    Space
        ``cell_type="tetra"``, boundary node sets ``"left"``/``"right"`` (x),
        ``"bottom"``/``"top"`` (y), ``"back"``/``"front"`` (z) and ``"boundary"``.
    """
    (nx, ny, nz), lower, upper = _check_box("structured_tetra_mesh", (nx, ny, nz), lower, upper, 3)
    strides = np.array([(ny + 1) * (nz + 1), nz + 1, 1])
    i, j, k = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    corner = (i * strides[0] + j * strides[1] + k * strides[2]).ravel()
    tets = []
    for order in itertools.permutations(range(3)):
        path = [corner]
        for axis in order:
            path.append(path[-1] + strides[axis])
        tets.append(np.stack(path, axis=1))
    boundary = _side_sets((nx, ny, nz), [("left", "right"), ("bottom", "top"), ("back", "front")])
    return Space(
        points=_grid_points((nx, ny, nz), lower, upper),
        cells=np.concatenate(tets, axis=0),
        cell_type="tetra",
        shape=None,
        boundary=boundary,
    )

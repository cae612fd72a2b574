"""Mesh reading, writing and generation (pdeinv.discretize._mesh)."""

import pathlib

import meshio
import numpy as np
import pytest

from pdeinv.discretize import (
    boundary_facets,
    element_geometry,
    read_mesh,
    space_to_meshio,
    structured_tetra_mesh,
    structured_triangle_mesh,
    write_mesh,
)

MESHES = pathlib.Path(__file__).resolve().parents[2] / "meshes"

# name -> (cell type, exact or polygonal domain measure, physical boundary groups)
COMMITTED = {
    "unit_square": ("triangle", 1.0, {"left", "right", "bottom", "top"}),
    "l_shape": ("triangle", 3.0, {"outer", "reentrant"}),
    "disk_with_hole": ("triangle", np.pi * (1 - 0.3**2), {"outer", "inner"}),
    "unit_cube": ("tetra", 1.0, {"left", "right", "bottom", "top", "back", "front"}),
}


def assert_same_space(a, b):
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.cells, b.cells)
    assert a.cell_type == b.cell_type
    assert a.boundary.keys() == b.boundary.keys()
    for name in a.boundary:
        np.testing.assert_array_equal(a.boundary[name], b.boundary[name], err_msg=name)


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_meshes(name):
    cell_type, measure, groups = COMMITTED[name]
    space = read_mesh(MESHES / f"{name}.msh")
    dim = 2 if cell_type == "triangle" else 3
    assert space.cell_type == cell_type
    assert space.points.shape == (space.num_nodes, dim)  # zero z dropped for 2-D
    assert space.cells.shape[1] == dim + 1
    assert 200 <= space.num_nodes <= 5000
    assert set(space.boundary) == groups | {"boundary"}
    # every node is used, and the physical groups cover exactly the computed boundary
    assert np.array_equal(np.unique(space.cells), np.arange(space.num_nodes))
    union = np.unique(np.concatenate([space.boundary[g] for g in groups]))
    np.testing.assert_array_equal(union, space.boundary["boundary"])
    volume = element_geometry(space).volumes.sum()
    np.testing.assert_allclose(volume, measure, rtol=2e-3 if name == "disk_with_hole" else 1e-12)


def test_committed_meshes_are_small():
    total = sum(p.stat().st_size for p in MESHES.glob("*.msh"))
    assert total < 1_000_000


def test_boundary_tags_are_geometric():
    square = read_mesh(MESHES / "unit_square.msh")
    for name, axis, value in [("left", 0, 0), ("right", 0, 1), ("bottom", 1, 0), ("top", 1, 1)]:
        np.testing.assert_allclose(square.points[square.boundary[name], axis], value, atol=1e-12)
    disk = read_mesh(MESHES / "disk_with_hole.msh")
    for name, radius in [("outer", 1.0), ("inner", 0.3)]:
        r = np.linalg.norm(disk.points[disk.boundary[name]], axis=1)
        np.testing.assert_allclose(r, radius, rtol=1e-9)
    cube = read_mesh(MESHES / "unit_cube.msh")
    np.testing.assert_allclose(cube.points[cube.boundary["front"], 2], 1.0, atol=1e-12)


@pytest.mark.parametrize("name", ["l_shape", "unit_cube"])
@pytest.mark.parametrize("suffix", [".vtu", ".vtk", ".xdmf"])
def test_round_trip_through_other_formats(tmp_path, name, suffix):
    if suffix == ".xdmf":
        pytest.importorskip("h5py", reason="meshio writes XDMF data through h5py")
    space = read_mesh(MESHES / f"{name}.msh")
    path = tmp_path / f"mesh{suffix}"
    field = np.sin(space.points[:, 0])
    write_mesh(path, space, point_data={"u": field})
    back = read_mesh(path)
    assert_same_space(space, back)
    np.testing.assert_allclose(meshio.read(path).point_data["u"], field)


@pytest.mark.parametrize("name, file_format", [("disk_with_hole", "gmsh22"), ("unit_cube", "gmsh")])
def test_round_trip_gmsh_binary_written_by_meshio(tmp_path, name, file_format):
    """The raw gmsh file (2.2 and 4.1 ASCII) rewritten by meshio as binary keeps the tags."""
    original = read_mesh(MESHES / f"{name}.msh")
    path = tmp_path / "mesh.msh"
    raw = meshio.read(MESHES / f"{name}.msh", file_format="gmsh")
    meshio.write(path, raw, file_format, binary=True)
    assert path.read_bytes() != (MESHES / f"{name}.msh").read_bytes()
    assert_same_space(original, read_mesh(path))


def test_space_to_meshio_pads_z_and_checks_shapes():
    space = structured_triangle_mesh(2, 3)
    mesh = space_to_meshio(space, point_data={"u": np.zeros(space.num_nodes)})
    assert mesh.points.shape == (12, 3)
    with pytest.raises(ValueError, match="point_data\\['u'\\]"):
        space_to_meshio(space, point_data={"u": np.zeros(5)})
    with pytest.raises(ValueError, match="cell_data\\['k'\\]"):
        space_to_meshio(space, cell_data={"k": np.zeros(5)})


def test_orphan_nodes_are_dropped(tmp_path):
    points = np.array([[0.0, 0, 0], [9, 9, 0], [1, 0, 0], [0, 1, 0]])
    path = tmp_path / "orphan.vtu"
    meshio.write(path, meshio.Mesh(points, [("triangle", np.array([[0, 2, 3]]))]))
    space = read_mesh(path)
    np.testing.assert_array_equal(space.points, [[0, 0], [1, 0], [0, 1]])
    np.testing.assert_array_equal(space.cells, [[0, 1, 2]])
    np.testing.assert_array_equal(space.boundary["boundary"], [0, 1, 2])


# ---------------------------------------------------------------------------
# Errors a user can cause
# ---------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "mesh.msh"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_mesh(path)


def test_unreadable_file(tmp_path):
    path = tmp_path / "garbage.msh"
    path.write_text("this is not a mesh\n")
    with pytest.raises(ValueError, match="garbage.msh"):
        read_mesh(path)
    with pytest.raises(ValueError, match="suffix"):
        read_mesh(tmp_path / "garbage.msh" if False else _touch(tmp_path / "mesh.unknown"))


def _touch(path):
    path.write_text("")
    return path


def test_unsupported_cell_type_is_named(tmp_path):
    points = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    path = tmp_path / "quads.vtu"
    meshio.write(path, meshio.Mesh(points, [("quad", np.array([[0, 1, 2, 3]]))]))
    with pytest.raises(ValueError, match="quad.*supported.*tetra.*triangle"):
        read_mesh(path)


def test_mixed_cell_types_are_named(tmp_path):
    points = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0]])
    cells = [("quad", np.array([[0, 1, 2, 3]])), ("triangle", np.array([[1, 4, 2]]))]
    path = tmp_path / "mixed.vtu"
    meshio.write(path, meshio.Mesh(points, cells))
    with pytest.raises(ValueError, match=r"\['quad', 'triangle'\]"):
        read_mesh(path)


def test_empty_mesh(tmp_path):
    path = tmp_path / "empty.vtu"
    meshio.write(path, meshio.Mesh(np.zeros((3, 3)), [("triangle", np.zeros((0, 3), int))]))
    with pytest.raises(ValueError, match="empty"):
        read_mesh(path)


def test_nonplanar_triangles(tmp_path):
    points = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 1]])
    path = tmp_path / "surface.vtu"
    meshio.write(path, meshio.Mesh(points, [("triangle", np.array([[0, 1, 2]]))]))
    with pytest.raises(ValueError, match="z"):
        read_mesh(path)


# ---------------------------------------------------------------------------
# Structured generators
# ---------------------------------------------------------------------------


def test_structured_triangle_mesh():
    space = structured_triangle_mesh(4, 3, lower=(-1, 0), upper=(1, 3))
    assert space.points.shape == (20, 2)
    assert space.cells.shape == (24, 3)
    np.testing.assert_allclose(element_geometry(space).volumes.sum(), 6.0)
    np.testing.assert_allclose(space.points[space.boundary["left"], 0], -1)
    np.testing.assert_allclose(space.points[space.boundary["top"], 1], 3)
    # node (i, j) has index i * (ny + 1) + j
    np.testing.assert_allclose(space.points[1 * 4 + 2], [-0.5, 2.0])
    np.testing.assert_array_equal(
        space.boundary["boundary"], np.unique(boundary_facets(space.cells, "triangle"))
    )
    assert len(boundary_facets(space.cells, "triangle")) == 2 * (4 + 3)


def test_structured_tetra_mesh_is_conforming():
    nx, ny, nz = 3, 2, 4
    space = structured_tetra_mesh(nx, ny, nz, upper=(3, 2, 1))
    assert space.cells.shape == (6 * nx * ny * nz, 4)
    np.testing.assert_allclose(element_geometry(space).volumes.sum(), 6.0)
    # conforming: only the box surface has facets with one cell (2 triangles per brick face)
    facets = boundary_facets(space.cells, "tetra")
    assert len(facets) == 4 * (nx * ny + ny * nz + nx * nz)
    np.testing.assert_array_equal(np.unique(facets), space.boundary["boundary"])
    np.testing.assert_allclose(space.points[space.boundary["front"], 2], 1.0)


@pytest.mark.parametrize(
    "args, match",
    [((0, 2), "cells per axis"), ((2, 2, (0, 0), (1, 0)), "lower < upper")],
)
def test_structured_mesh_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        structured_triangle_mesh(*args)

"""Point sources (grid delta, P1 load vector) and boundary conditions per side / mesh tag."""

import numpy as np
import pytest

from pdeinv.discretize import (
    boundary_conditions,
    grid,
    grid_point_source,
    mesh_boundary_conditions,
    p1_point_load,
    structured_triangle_mesh,
)


@pytest.mark.parametrize(
    "location", [(0.5, 0.5), (0.31, 0.77), (0.05, 0.5), (0.0, 1.0), (0.0625, 0.1875)]
)
def test_grid_point_source_conserves_and_is_centred(location):
    g = grid((8, 8))
    b = grid_point_source(g, location)
    assert b.shape == (64,)
    assert np.all(b >= 0)
    np.testing.assert_allclose(b.sum() * g.cell_volume, 1.0, rtol=1e-14)
    inside = all(h / 2 <= x <= 1 - h / 2 for x, h in zip(location, g.spacing, strict=True))
    if inside:  # multilinear weights reproduce linear functions: the centre of mass is x0
        np.testing.assert_allclose(b @ g.points * g.cell_volume, location, atol=1e-14)


def test_grid_point_source_at_a_cell_centre_is_one_cell():
    g = grid((5, 7), lower=-1.0, upper=(4.0, 6.0))
    b = grid_point_source(g, (1.5, 2.5))
    (nonzero,) = np.flatnonzero(b)
    np.testing.assert_allclose(g.points[nonzero], (1.5, 2.5))
    assert b[nonzero] == pytest.approx(1.0 / g.cell_volume)


def test_grid_point_source_outside_or_wrong_dimension():
    g = grid((4, 4))
    with pytest.raises(ValueError, match="outside the grid box"):
        grid_point_source(g, (1.2, 0.5))
    with pytest.raises(ValueError, match="2 coordinates"):
        grid_point_source(g, (0.5,))


def test_p1_point_load_is_the_exact_delta():
    mesh = structured_triangle_mesh(6, 5)
    x0 = np.array([0.37, 0.61])
    b = p1_point_load(mesh, x0)
    assert np.count_nonzero(b) <= 3 and np.all(b >= 0)
    np.testing.assert_allclose(b.sum(), 1.0, rtol=1e-14)
    np.testing.assert_allclose(b @ mesh.points, x0, atol=1e-14)  # exact for linear phi
    with pytest.raises(ValueError, match="outside the mesh"):
        p1_point_load(mesh, (1.5, 0.5))


def test_grid_sides_by_everyday_names():
    g = grid((4, 3))
    bcs = boundary_conditions(
        g, {"left": {"dirichlet": 1.0}, "right": {"neumann": 0.0}, "top": "neumann",
            "bottom": "neumann"},
    )  # fmt: skip
    assert bcs.kinds() == {
        "xmin": "dirichlet", "xmax": "neumann", "ymin": "neumann", "ymax": "neumann",
    }  # fmt: skip
    np.testing.assert_allclose(bcs.sides[0][0].data, 1.0)
    assert bcs.sides[0][1].data is None


@pytest.mark.parametrize(
    "bc, pattern",
    [
        ({"lef": "dirichlet", "default": "neumann"}, r"unknown side 'lef'; did you mean 'left'"),
        ({"left": "dirichlet", "xmin": "neumann", "default": "neumann"}, "given twice"),
        ({"left": {"dirchlet": 1.0}, "default": "neumann"}, r"did you mean 'dirichlet'"),
        ({"left": {"dirichlet": float("nan")}, "default": "neumann"}, "must be finite"),
        ({"front": "dirichlet", "default": "neumann"}, r"unknown side 'front'"),
    ],
)
def test_grid_side_errors(bc, pattern):
    with pytest.raises(ValueError, match=pattern):
        boundary_conditions(grid((4, 3)), bc)


def test_mesh_tags_dirichlet_values_and_neumann_load():
    mesh = structured_triangle_mesh(4, 4)
    conditions = mesh_boundary_conditions(
        mesh, {"left": {"dirichlet": 2.0}, "right": "dirichlet", "top": {"neumann": 3.0}}
    )
    expected = np.union1d(mesh.boundary["left"], mesh.boundary["right"])
    np.testing.assert_array_equal(conditions.dirichlet, expected)
    np.testing.assert_allclose(conditions.dirichlet_values[mesh.boundary["left"]], 2.0)
    assert np.all(conditions.dirichlet_values[mesh.boundary["right"]] == 0.0)
    # int_top 3 ds = 3 (length 1); the corner nodes are Dirichlet and carry none of it
    top_free = np.setdiff1d(mesh.boundary["top"], expected)
    np.testing.assert_allclose(conditions.neumann_load[top_free].sum(), 3.0 * 0.75)
    assert mesh_boundary_conditions(mesh, "neumann").homogeneous


def test_mesh_tag_errors_name_the_nearest_tag():
    mesh = structured_triangle_mesh(3, 3)
    with pytest.raises(ValueError, match=r"unknown boundary tag 'lft'; did you mean 'left'"):
        mesh_boundary_conditions(mesh, {"lft": "dirichlet"})
    with pytest.raises(ValueError, match=r"periodic needs a grid"):
        mesh_boundary_conditions(mesh, {"left": "periodic"})

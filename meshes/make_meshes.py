"""Generate the small committed meshes in this folder with gmsh's Python API.

Run from the repository root (gmsh is needed only here, not by pdeinv or its tests):

    pip install gmsh
    python meshes/make_meshes.py            # rewrites meshes/*.msh

The 2-D meshes are written in gmsh MSH 2.2 ASCII (read by meshio and every
gmsh version), the tetra cube in MSH 4.1 ASCII (gmsh's current format, so both
readers are exercised by the tests), with linear cells only and physical
groups for the domain and for each named boundary part.  Mesh sizes are fixed and the algorithm is
single-threaded, so re-running reproduces the files on the same gmsh version.
"""

from __future__ import annotations

import math
import pathlib
import sys

import gmsh

HERE = pathlib.Path(__file__).resolve().parent


def _tag_curves(dim_tags, classify):
    """Group boundary curves by the name classify(center of mass) returns."""
    groups: dict[str, list[int]] = {}
    for dim, tag in dim_tags:
        x, y, _ = gmsh.model.occ.getCenterOfMass(dim, tag)
        groups.setdefault(classify(x, y), []).append(tag)
    return groups


def _finish(
    name: str, dim: int, domain_tags, boundary_groups, mesh_size: float, version: float = 2.2
) -> None:
    gmsh.model.addPhysicalGroup(dim, list(domain_tags), name="domain")
    for group, tags in sorted(boundary_groups.items()):
        gmsh.model.addPhysicalGroup(dim - 1, sorted(tags), name=group)
    gmsh.option.setNumber("Mesh.MeshSizeMax", mesh_size)
    gmsh.option.setNumber("Mesh.MeshSizeMin", mesh_size)
    gmsh.model.mesh.generate(dim)
    gmsh.option.setNumber("Mesh.MshFileVersion", version)
    gmsh.option.setNumber("Mesh.Binary", 0)
    gmsh.option.setNumber("Mesh.SaveAll", 0)  # only elements of physical groups
    path = HERE / f"{name}.msh"
    gmsh.write(str(path))
    print(f"wrote {path.relative_to(HERE.parent)}", file=sys.stderr)


def unit_square(h: float = 0.05) -> None:
    """[0, 1]^2 with sides "left", "right", "bottom", "top"."""
    gmsh.model.add("unit_square")
    surface = gmsh.model.occ.addRectangle(0, 0, 0, 1, 1)
    gmsh.model.occ.synchronize()

    def side(x, y):
        if math.isclose(x, 0.0):
            return "left"
        if math.isclose(x, 1.0):
            return "right"
        return "bottom" if math.isclose(y, 0.0) else "top"

    curves = gmsh.model.getBoundary([(2, surface)], oriented=False)
    _finish("unit_square", 2, [surface], _tag_curves(curves, side), h)


def l_shape(h: float = 0.05) -> None:
    """[-1, 1]^2 minus the quadrant (0, 1) x (-1, 0); "reentrant" edges meet at the origin."""
    gmsh.model.add("l_shape")
    corners = [(-1, -1), (0, -1), (0, 0), (1, 0), (1, 1), (-1, 1)]
    points = [gmsh.model.occ.addPoint(x, y, 0) for x, y in corners]
    lines = [gmsh.model.occ.addLine(points[i], points[(i + 1) % 6]) for i in range(6)]
    loop = gmsh.model.occ.addCurveLoop(lines)
    surface = gmsh.model.occ.addPlaneSurface([loop])
    gmsh.model.occ.synchronize()
    groups = {"outer": [lines[0], lines[3], lines[4], lines[5]], "reentrant": [lines[1], lines[2]]}
    _finish("l_shape", 2, [surface], groups, 2 * h)


def disk_with_hole(h: float = 0.06) -> None:
    """Disk of radius 1 minus a disk of radius 0.3 at the origin: "outer" and "inner" circles."""
    gmsh.model.add("disk_with_hole")
    outer = gmsh.model.occ.addDisk(0, 0, 0, 1.0, 1.0)
    inner = gmsh.model.occ.addDisk(0, 0, 0, 0.3, 0.3)
    (annulus, *_), _ = gmsh.model.occ.cut([(2, outer)], [(2, inner)])
    gmsh.model.occ.synchronize()

    def circle(x, y):
        return "outer" if math.hypot(x, y) > 0.5 else "inner"

    curves = gmsh.model.getBoundary([annulus], oriented=False)
    # A circle's center of mass is its center: classify by a point on the curve instead.
    groups: dict[str, list[int]] = {}
    for dim, tag in curves:
        xmin, ymin, _, xmax, ymax, _ = gmsh.model.getBoundingBox(dim, tag)
        groups.setdefault(circle(xmax, 0.5 * (ymin + ymax)), []).append(tag)
    _finish("disk_with_hole", 2, [annulus[1]], groups, h)


def unit_cube(h: float = 0.15) -> None:
    """[0, 1]^3 tetrahedra; faces "left"/"right" (x), "bottom"/"top" (y), "back"/"front" (z)."""
    gmsh.model.add("unit_cube")
    volume = gmsh.model.occ.addBox(0, 0, 0, 1, 1, 1)
    gmsh.model.occ.synchronize()
    names = [("left", "right"), ("bottom", "top"), ("back", "front")]
    groups: dict[str, list[int]] = {}
    for dim, tag in gmsh.model.getBoundary([(3, volume)], oriented=False):
        center = gmsh.model.occ.getCenterOfMass(dim, tag)
        for axis, (low, high) in enumerate(names):
            if math.isclose(center[axis], 0.0, abs_tol=1e-9):
                groups.setdefault(low, []).append(tag)
            elif math.isclose(center[axis], 1.0):
                groups.setdefault(high, []).append(tag)
    _finish("unit_cube", 3, [volume], groups, h, version=4.1)


def main() -> None:
    gmsh.initialize()
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("General.NumThreads", 1)
        for build in (unit_square, l_shape, disk_with_hole, unit_cube):
            build()
            gmsh.model.remove()
    finally:
        gmsh.finalize()


if __name__ == "__main__":
    main()

"""Structured cell-centred box grids in 1-D, 2-D and 3-D, and their boundary conditions.

Geometry choice (used by every finite-difference operator in this package): the box
``[lower, upper]`` is cut into ``shape`` equal cells per axis and the unknowns live at
the *cell centres* ``lower + (i + 1/2) h``.  Boundary conditions are imposed on the box
faces, half a spacing outside the outermost points, through one ghost value per face:

* homogeneous Neumann: ghost = edge value (zero flux; the seed paper's "edge padding"),
* homogeneous Dirichlet: ghost = minus the edge value (the face value is zero),
* periodic: ghost = value at the opposite end.

With this choice all grid points are unknowns (no node is eliminated), the diffusion
operator is symmetric in the plain Euclidean inner product for every combination of
conditions, and under Neumann conditions ``1^T A = 0`` exactly (mass conservation).
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
from collections.abc import Callable, Mapping

import numpy as np

from ._space import Space

AXIS_NAMES = ("x", "y", "z")
_CELL_TYPE_BY_DIM = {1: "line", 2: "quad", 3: "hexahedron"}


def side_names(dim: int) -> tuple[str, ...]:
    """Names of the box faces of a ``dim``-dimensional grid: ``xmin, xmax, ymin, ...``."""
    return tuple(f"{a}{end}" for a in AXIS_NAMES[:dim] for end in ("min", "max"))


#: Everyday names of the box faces (as in :func:`~pdeinv.discretize.structured_triangle_mesh`):
#: left/right = x, bottom/top = y, back/front = z.
SIDE_ALIASES = {
    "left": "xmin",
    "right": "xmax",
    "bottom": "ymin",
    "top": "ymax",
    "back": "zmin",
    "front": "zmax",
}


def side_aliases(dim: int) -> dict[str, str]:
    """The entries of :data:`SIDE_ALIASES` that name a face of a ``dim``-D grid."""
    names = side_names(dim)
    return {alias: side for alias, side in SIDE_ALIASES.items() if side in names}


@dataclasses.dataclass(frozen=True, eq=False)
class Grid(Space):
    """A :class:`Space` that is a cell-centred structured grid on a box.

    Build it with :func:`grid`.  Besides the :class:`Space` fields it records the box
    ``lower``/``upper`` corners; ``boundary`` holds, for each face (``"xmin"``,
    ``"xmax"``, ``"ymin"``, ...), the flat indices of the points next to that face.
    """

    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()

    @property
    def spacing(self) -> tuple[float, ...]:
        """Cell width ``h`` per axis."""
        return tuple(
            (b - a) / n for a, b, n in zip(self.lower, self.upper, self.shape, strict=True)
        )

    @property
    def cell_volume(self) -> float:
        """Volume (length, area) ``prod(h)`` of one cell; quadrature weight of a point."""
        return float(np.prod(self.spacing))

    def axis_coordinates(self, axis: int) -> np.ndarray:
        """Cell-centre coordinates along ``axis``, shape ``(shape[axis],)``."""
        h = self.spacing[axis]
        return self.lower[axis] + (np.arange(self.shape[axis]) + 0.5) * h

    def face_points(self, side: str) -> np.ndarray:
        """Coordinates of the boundary-face centres on ``side``.

        Returns an array of shape ``face_shape + (dim,)`` where ``face_shape`` is the
        grid shape without the face's axis; these are the points where Dirichlet and
        Neumann data of that side are evaluated.
        """
        axis, upper = _parse_side(side, self.dim)
        coords = [self.axis_coordinates(d) for d in range(self.dim)]
        coords[axis] = np.array([self.upper[axis] if upper else self.lower[axis]])
        mesh = np.stack(np.meshgrid(*coords, indexing="ij"), axis=-1)
        return np.take(mesh, 0, axis=axis)

    def to_grid(self, field) -> np.ndarray:
        """Reshape a flat nodal field ``(num_nodes, ...)`` to ``shape + (...)``."""
        field = np.asarray(field)
        return field.reshape(tuple(self.shape) + field.shape[1:])


def grid(shape, lower=0.0, upper=1.0) -> Grid:
    """Cell-centred structured grid on the box ``[lower, upper]``.

    Parameters
    ----------
    shape
        Number of cells per axis, an int (1-D) or a tuple of 1 to 3 ints, each >= 2.
    lower, upper
        Box corners: scalars (same on every axis) or one value per axis, ``upper > lower``.

    Returns
    -------
    Grid
        Points at the cell centres ``lower + (i + 1/2) h`` with ``h = (upper - lower) /
        shape``, flattened in C order over the grid index; ``cells`` join neighbouring
        points into lines / quads / hexahedra for plotting and VTU; ``boundary`` maps
        each face name to the indices of the points next to it.

    Examples
    --------
    >>> g = grid((64, 32), lower=0.0, upper=(2.0, 1.0))
    >>> g.num_nodes, g.spacing
    (2048, (0.03125, 0.03125))
    """
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(n) for n in shape)
    dim = len(shape)
    if dim not in (1, 2, 3):
        raise ValueError(f"shape must have 1, 2 or 3 entries, got {shape}")
    if min(shape) < 2:
        raise ValueError(f"shape must have at least 2 cells per axis, got {shape}")
    lower = _per_axis(lower, dim, "lower")
    upper = _per_axis(upper, dim, "upper")
    if any(b <= a for a, b in zip(lower, upper, strict=True)):
        raise ValueError(f"upper must exceed lower on every axis, got lower={lower}, upper={upper}")

    h = [(b - a) / n for a, b, n in zip(lower, upper, shape, strict=True)]
    coords = [a + (np.arange(n) + 0.5) * hd for a, n, hd in zip(lower, shape, h, strict=True)]
    points = np.stack(np.meshgrid(*coords, indexing="ij"), axis=-1).reshape(-1, dim)

    index = np.arange(int(np.prod(shape))).reshape(shape)
    cells = _cells(index)
    boundary = {}
    for side in side_names(dim):
        axis, upper_side = _parse_side(side, dim)
        boundary[side] = np.take(index, -1 if upper_side else 0, axis=axis).ravel()
    return Grid(
        points=points,
        cells=cells,
        cell_type=_CELL_TYPE_BY_DIM[dim],
        shape=shape,
        boundary=boundary,
        lower=lower,
        upper=upper,
    )


def _per_axis(value, dim, name):
    values = np.asarray(value, dtype=float)
    if values.ndim == 0:
        values = np.full(dim, float(values))
    if values.shape != (dim,):
        raise ValueError(f"{name} must be a scalar or have {dim} entries, got {value!r}")
    return tuple(float(v) for v in values)


def _cells(index: np.ndarray) -> np.ndarray:
    dim = index.ndim
    if dim == 1:
        corners = [(0,), (1,)]
    elif dim == 2:  # counter-clockwise quad
        corners = [(0, 0), (1, 0), (1, 1), (0, 1)]
    else:  # VTK hexahedron: bottom face ccw, then top face ccw
        corners = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0),
                   (0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)]  # fmt: skip
    cols = []
    for corner in corners:
        sl = tuple(slice(c, n - 1 + c) for c, n in zip(corner, index.shape, strict=True))
        cols.append(index[sl].ravel())
    return np.stack(cols, axis=1)


def _parse_side(side: str, dim: int) -> tuple[int, bool]:
    names = side_names(dim)
    if side not in names:
        raise ValueError(f"side must be one of {names}, got {side!r}")
    return AXIS_NAMES.index(side[0]), side.endswith("max")


def as_grid(space) -> Grid:
    """``space`` as a :class:`Grid` (rebuilt from its cell-centred points if needed)."""
    if isinstance(space, Grid):
        return space
    shape = getattr(space, "shape", None)
    if shape is None:
        raise TypeError(
            "finite-difference operators need a structured grid (see pdeinv.discretize.grid)"
        )
    if min(shape) < 2:
        raise ValueError(f"grid shape must have at least 2 cells per axis, got {shape}")
    pts = np.asarray(space.points).reshape(tuple(shape) + (len(shape),))
    lower, upper = [], []
    for d, n in enumerate(shape):
        line = np.moveaxis(pts[..., d], d, 0).reshape(n, -1)[:, 0]
        h = (line[-1] - line[0]) / (n - 1)
        lower.append(float(line[0] - h / 2))
        upper.append(float(line[-1] + h / 2))
    return grid(shape, lower, upper)


# --------------------------------------------------------------------------------------
# Boundary conditions


@dataclasses.dataclass(frozen=True)
class Dirichlet:
    """Dirichlet condition ``u = value`` on a box face.

    ``value`` is a scalar, an array of the face shape (grid shape without the face's
    axis), or a callable ``value(x)`` of the face-centre coordinates ``x`` (shape
    ``face_shape + (dim,)``, see :meth:`Grid.face_points`).  Non-zero data enter the
    model as a source term ``b`` in ``u' = A u + b``.
    """

    value: float | np.ndarray | Callable = 0.0


@dataclasses.dataclass(frozen=True)
class Neumann:
    """Neumann condition ``du/dn = value`` (outward normal derivative) on a box face.

    ``value`` as for :class:`Dirichlet`.  The diffusive flux entering the domain is then
    ``kappa * value`` with ``kappa`` of the adjacent cell.
    """

    value: float | np.ndarray | Callable = 0.0


@dataclasses.dataclass(frozen=True)
class Periodic:
    """Periodic condition; must be set on both faces of an axis."""


_BC_NAMES = {"dirichlet": Dirichlet, "neumann": Neumann, "periodic": Periodic}


@dataclasses.dataclass(frozen=True)
class _Side:
    kind: str  # "dirichlet" | "neumann" | "periodic"
    data: np.ndarray | None  # face-shaped data, None when homogeneous


@dataclasses.dataclass(frozen=True)
class BoundaryConditions:
    """Normalised per-face boundary conditions of a grid (see :func:`boundary_conditions`)."""

    sides: tuple[tuple[_Side, _Side], ...]  # per axis: (min side, max side)

    @property
    def homogeneous(self) -> bool:
        return all(s.data is None for pair in self.sides for s in pair)

    def periodic(self, axis: int) -> bool:
        return self.sides[axis][0].kind == "periodic"

    def kinds(self) -> dict[str, str]:
        return {
            name: side.kind
            for name, side in zip(
                side_names(len(self.sides)), itertools.chain(*self.sides), strict=True
            )
        }


def boundary_conditions(space, bc="neumann") -> BoundaryConditions:
    """Normalise a boundary-condition specification for ``space``.

    Parameters
    ----------
    space
        The :class:`Grid`.
    bc
        One of ``"dirichlet"``, ``"neumann"``, ``"periodic"`` or a :class:`Dirichlet` /
        :class:`Neumann` / :class:`Periodic` object for every face; or a mapping whose
        keys are face names (``"xmin"``, ``"xmax"``, ``"ymin"``, ...; or ``"left"``,
        ``"right"``, ``"bottom"``, ``"top"``, ``"back"``, ``"front"``, see
        :data:`SIDE_ALIASES`), axis names (``"x"``: both faces of that axis) or
        ``"default"``, and whose values are such specifications or one-entry mappings
        ``{"dirichlet": value}`` / ``{"neumann": value}`` (the form of a YAML config).
        A :class:`BoundaryConditions` is returned unchanged.

    Returns
    -------
    BoundaryConditions
    """
    if isinstance(bc, BoundaryConditions):
        return bc
    g = as_grid(space)
    dim = g.dim
    names = side_names(dim)
    if isinstance(bc, Mapping):
        aliases = side_aliases(dim)
        allowed = list(names) + list(aliases) + list(AXIS_NAMES[:dim]) + ["default"]
        for key in bc:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"unknown side {key!r}{hint} (sides of this {dim}-D grid: {', '.join(allowed)})"
                )
        bc = dict(bc)
        for alias, side in aliases.items():
            if alias in bc:
                if side in bc:
                    raise ValueError(f"side {side!r} is given twice (as {alias!r} and {side!r})")
                bc[side] = bc.pop(alias)
        spec = {}
        for name in names:
            if name in bc:
                spec[name] = bc[name]
            elif name[0] in bc:
                spec[name] = bc[name[0]]
            elif "default" in bc:
                spec[name] = bc["default"]
            else:
                raise ValueError(f"bc gives no condition for side {name!r} (add it or 'default')")
    else:
        spec = dict.fromkeys(names, bc)

    sides = []
    for axis in range(dim):
        pair = []
        for name in names[2 * axis : 2 * axis + 2]:
            pair.append(_normalise_side(spec[name], name, g))
        if (pair[0].kind == "periodic") != (pair[1].kind == "periodic"):
            raise ValueError(
                f"periodic conditions must be set on both sides of axis {AXIS_NAMES[axis]!r}"
            )
        sides.append(tuple(pair))
    return BoundaryConditions(tuple(sides))


def _normalise_side(spec, name, g: Grid) -> _Side:
    if isinstance(spec, Mapping):
        spec = _from_mapping(spec, f"bc for side {name!r}")
    if isinstance(spec, str):
        if spec.lower() not in _BC_NAMES:
            close = difflib.get_close_matches(spec.lower(), list(_BC_NAMES), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"bc for side {name!r} must be one of {sorted(_BC_NAMES)}, got {spec!r}{hint}"
            )
        spec = _BC_NAMES[spec.lower()]()
    if isinstance(spec, Periodic):
        return _Side("periodic", None)
    if not isinstance(spec, (Dirichlet, Neumann)):
        raise TypeError(
            f"bc for side {name!r} must be a name in {sorted(_BC_NAMES)} or a Dirichlet/Neumann/"
            f"Periodic object, got {spec!r}"
        )
    kind = "dirichlet" if isinstance(spec, Dirichlet) else "neumann"
    axis, _ = _parse_side(name, g.dim)
    face_shape = tuple(n for d, n in enumerate(g.shape) if d != axis)
    value = spec.value
    if callable(value):
        value = value(g.face_points(name))
    value = np.asarray(value, dtype=float)
    try:
        value = np.broadcast_to(value, face_shape).copy()
    except ValueError:
        raise ValueError(
            f"bc value on side {name!r} must be a scalar or have the face shape {face_shape}, "
            f"got shape {value.shape}"
        ) from None
    return _Side(kind, None if not np.any(value) else value)


def _from_mapping(spec: Mapping, where: str):
    """``{"dirichlet": value}`` / ``{"neumann": value}`` / ``{"periodic": None}`` -> object."""
    if len(spec) != 1:
        raise ValueError(
            f"{where} must be a name or a mapping with one of {sorted(_BC_NAMES)}, got {dict(spec)}"
        )
    ((kind, value),) = spec.items()
    kind = str(kind).lower()
    if kind not in _BC_NAMES:
        close = difflib.get_close_matches(kind, list(_BC_NAMES), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{where}: unknown condition {kind!r}{hint}")
    if kind == "periodic":
        return Periodic()
    if value is None:
        value = 0.0
    if not callable(value):
        array = np.asarray(value, dtype=float)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{where}: the {kind} value must be finite, got {value!r}")
    return _BC_NAMES[kind](value)

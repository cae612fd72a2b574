"""Boundary conditions of P1 meshes per tagged boundary part (gmsh physical group)."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping

import numpy as np

from ._fem import p1_boundary_load
from ._mesh import ALL_BOUNDARY, tagged_facets
from ._space import Space

_KINDS = ("dirichlet", "neumann")


@dataclasses.dataclass(frozen=True, eq=False)
class MeshBoundary:
    """Normalised boundary conditions of a mesh (see :func:`mesh_boundary_conditions`).

    Attributes
    ----------
    dirichlet
        Sorted node indices where ``u`` is prescribed (eliminated from the state).
    dirichlet_values
        ``(num_nodes,)`` prescribed values (zero off ``dirichlet``), or ``None`` when
        every Dirichlet value is zero.
    neumann_load
        ``(num_nodes,)`` boundary load ``int_Gamma g phi_i ds`` of the Neumann data
        ``du/dn = g`` (outward normal), or ``None`` when all Neumann data vanish.  The
        diffusive flux entering the domain is ``kappa g``; models multiply node-wise
        by ``kappa``.
    """

    dirichlet: np.ndarray
    dirichlet_values: np.ndarray | None
    neumann_load: np.ndarray | None

    @property
    def homogeneous(self) -> bool:
        return self.dirichlet_values is None and self.neumann_load is None


def _condition(spec, where: str):
    """``(kind, value)`` of one part's specification."""
    if isinstance(spec, str):
        kind, value = spec.lower(), 0.0
    elif isinstance(spec, Mapping) and len(spec) == 1:
        ((kind, value),) = spec.items()
        kind = str(kind).lower()
        value = 0.0 if value is None else value
    else:
        raise ValueError(
            f"{where} must be 'dirichlet', 'neumann' or a mapping like {{dirichlet: 1.0}}, "
            f"got {spec!r}"
        )
    if kind not in _KINDS:
        close = difflib.get_close_matches(kind, _KINDS, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        extra = " (periodic needs a grid)" if kind == "periodic" else ""
        raise ValueError(f"{where}: unknown condition {kind!r}{hint}{extra}")
    if not callable(value):
        array = np.asarray(value, dtype=float)
        if array.ndim != 0 or not np.isfinite(array):
            raise ValueError(f"{where}: the {kind} value must be a finite number, got {value!r}")
        value = float(array)
    return kind, value


def mesh_boundary_conditions(space: Space, boundary="neumann") -> MeshBoundary:
    """Normalise boundary conditions of a triangle/tetra mesh.

    Parameters
    ----------
    space
        Mesh whose ``boundary`` dict holds the named node sets (gmsh physical groups,
        meshio cell sets; ``"boundary"`` is the whole boundary).
    boundary
        ``"neumann"`` (insulated everywhere) or ``"dirichlet"`` (``u = 0`` everywhere), or
        a mapping from part names to ``"dirichlet"``, ``"neumann"``, ``{"dirichlet": g}``
        or ``{"neumann": g}`` with ``g`` a number or a callable of the ``(num_nodes, dim)``
        points.  Parts not named are insulated (homogeneous Neumann, the natural
        condition); nodes shared by a Dirichlet part and another part are Dirichlet.
        Neumann data are ``du/dn = g`` with the outward normal (``g > 0``: inflow).

    Returns
    -------
    MeshBoundary

    Raises
    ------
    ValueError
        For an unknown part name (the message names the nearest one) or condition.
    """
    if isinstance(boundary, str):
        boundary = {ALL_BOUNDARY: boundary}
    if not isinstance(boundary, Mapping):
        raise ValueError(
            f"boundary must be a condition name or a mapping of boundary parts, got {boundary!r}"
        )
    names = sorted(space.boundary)
    n = space.num_nodes
    dirichlet_parts, neumann_parts = [], []
    for name, spec in boundary.items():
        if name not in space.boundary:
            close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown boundary tag {name!r}{hint} (this mesh has {', '.join(names)})"
            )
        kind, value = _condition(spec, f"boundary tag {name!r}")
        (dirichlet_parts if kind == "dirichlet" else neumann_parts).append((name, value))
    nodes = [np.asarray(space.boundary[name], dtype=np.int64) for name, _ in dirichlet_parts]
    dirichlet = np.unique(np.concatenate(nodes)) if nodes else np.zeros(0, np.int64)
    values = np.zeros(n)
    for (_, value), idx in zip(dirichlet_parts, nodes, strict=True):
        values[idx] = value(space.points)[idx] if callable(value) else value
    load = np.zeros(n)
    for name, value in neumann_parts:
        g = value(space.points) if callable(value) else value
        if np.any(np.asarray(g) != 0) and tagged_facets(space, name).size:
            load += np.asarray(p1_boundary_load(space, name, g), dtype=float)
    load[dirichlet] = 0.0
    return MeshBoundary(
        dirichlet=dirichlet,
        dirichlet_values=values if np.any(values) else None,
        neumann_load=load if np.any(load) else None,
    )

"""Heat equation ``S u_t = div(kappa grad u) + q`` with ``kappa = exp(m)``, on grids and meshes.

``S`` is a fixed positive capacity (heat capacity, or specific storage / storativity
in groundwater flow, where ``u`` is the hydraulic head and ``kappa`` the hydraulic
conductivity, or the transmissivity in 2-D); ``q`` collects volume and point sources
(:mod:`pdeinv.models._sources`).  With a diagonal capacity the state is the scaled
``w = S^{1/2} u``, for which the operator ``S^{-1/2} A S^{-1/2}`` stays symmetric.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..discretize._fd import diffusion_matvec, diffusion_norm_bound, diffusion_source
from ..discretize._fem import (
    dirichlet_nodes,
    free_nodes,
    p1_lumped_mass,
    p1_stiffness_matvec,
    p1_stiffness_norm_bound,
)
from ..discretize._grid import as_grid, boundary_conditions
from ..discretize._mesh_boundary import mesh_boundary_conditions
from ._common import nodal_field, optional_forcing, positive_field
from ._model import Model, TimedSource
from ._sources import source_loads


def heat_fd(
    space,
    log_kappa,
    u0,
    *,
    bc="neumann",
    mean: str = "harmonic",
    source=None,
    capacity=None,
    sources=(),
) -> Model:
    """Heat equation ``S u_t = div(kappa grad u) + f + q`` by finite differences on a grid.

    Cell-centred conservative differences (see :func:`pdeinv.discretize.diffusion_matvec`);
    the operator ``A`` is symmetric negative semi-definite.  With a capacity ``S`` the
    state is ``w = S^{1/2} u`` and ``w' = S^{-1/2} A S^{-1/2} w + S^{-1/2} b``, again
    symmetric, so the model is ``symmetric`` and :func:`pdeinv.models.simulate` uses
    Lanczos when there is no source term.

    Parameters
    ----------
    space
        A grid from :func:`pdeinv.discretize.grid`.
    log_kappa
        Log-diffusivity ``m`` with ``kappa = exp(m)``: scalar, ``(num_nodes,)`` or a
        callable of the points.  Stored flat in ``params["log_kappa"]``.
    u0
        Initial temperature (head): ``(num_nodes,)`` array or a callable of the points
        (see :func:`gaussian_bump` and friends).
    bc
        Boundary conditions (see :func:`pdeinv.discretize.boundary_conditions`, e.g.
        ``{"left": {"dirichlet": 1.0}, "right": "neumann", ...}``), default
        homogeneous Neumann (insulated: total heat is conserved).  Non-zero Dirichlet
        or Neumann data become part of the source ``b(params)``.
    mean
        Face coefficient: ``"harmonic"`` or ``"arithmetic"`` mean of nodal kappa.
    source
        Time-independent heat source density ``f``: scalar, ``(num_nodes,)`` or
        callable, or ``None``.
    capacity
        Capacity ``S > 0`` (heat capacity, storativity): scalar, ``(num_nodes,)`` or
        callable; ``None`` means 1.  Fixed, not a fitted parameter.
    sources
        :class:`~pdeinv.models.PointSource` / :class:`~pdeinv.models.VolumeSource`
        objects; those that switch on or off later go to ``Model.timed_sources``
        (solve with :func:`pdeinv.models.simulate_sources`).

    Returns
    -------
    Model
        ``params = {"log_kappa": (num_nodes,)}``; the state is ``S^{1/2} u`` (``u`` when
        ``capacity`` is ``None``), ``observe`` returns ``u``.
    """
    g = as_grid(space)
    bcs = boundary_conditions(g, bc)
    diffusion = diffusion_matvec(g, bcs, mean=mean)
    bound = diffusion_norm_bound(g, bcs, mean=mean)
    boundary_source = None if bcs.homogeneous else diffusion_source(g, bcs, mean=mean)
    forcing = optional_forcing(source, g)
    loads = source_loads(g, sources, kind="density")
    always = loads.pop((0.0, None), None)
    if always is not None:
        always = jnp.asarray(always)
        forcing = always if forcing is None else forcing + always
    if capacity is None:
        inv_sqrt = None
        min_capacity = 1.0
    else:
        cap = positive_field(capacity, g, "capacity")
        inv_sqrt = jnp.asarray(1.0 / np.sqrt(cap))
        min_capacity = float(np.min(cap))

    def scale(v):
        return v if inv_sqrt is None else v * inv_sqrt.astype(v.dtype)

    def matvec(w, params):
        return scale(diffusion(scale(w), jnp.exp(params["log_kappa"])))

    unscaled = _combine_sources(boundary_source, forcing)
    source_fn = None if unscaled is None else (lambda params: scale(unscaled(params)))
    timed = _timed_sources(loads, scale)

    def observe(states):
        return scale(states)

    def state_from_field(field):
        return field / inv_sqrt.astype(field.dtype)

    return Model(
        name="heat",
        space=g,
        matvec=matvec,
        params={"log_kappa": nodal_field(log_kappa, g, "log_kappa")},
        u0=nodal_field(u0, g, "u0")
        if inv_sqrt is None
        else state_from_field(nodal_field(u0, g, "u0")),
        symmetric=True,
        source=source_fn,
        norm_bound=lambda params: bound(jnp.exp(params["log_kappa"])) / min_capacity,
        observe_fn=None if inv_sqrt is None else observe,
        state_from_field_fn=None if inv_sqrt is None else state_from_field,
        timed_sources=timed,
    )


def _timed_sources(loads: dict, finish) -> tuple[TimedSource, ...]:
    """:class:`TimedSource` per ``(start, stop)`` group; ``finish`` maps a load to the state."""

    def fixed(q):
        q = jnp.asarray(q)
        return lambda params: finish(q.astype(params["log_kappa"].dtype))

    return tuple(TimedSource(fixed(q), start, stop) for (start, stop), q in loads.items())


def _combine_sources(boundary_source, forcing):
    if boundary_source is None and forcing is None:
        return None

    def source(params):
        b = 0.0 if forcing is None else forcing
        if boundary_source is not None:
            b = b + boundary_source(jnp.exp(params["log_kappa"]))
        return b

    return source


def heat_p1(
    space, log_kappa, u0, *, dirichlet=None, source=None, boundary=None, capacity=None, sources=()
) -> Model:
    """Heat equation on a triangle/tetra mesh with P1 elements and mass lumping.

    The semi-discrete system ``M_S u' = -K(kappa) u + b`` (``K`` the P1 stiffness of
    ``-div(kappa grad .)``, nodal ``kappa = exp(m)`` averaged per cell, ``M_S`` the
    lumped mass weighted by the nodal capacity ``S``, ``b`` the loads of sources and
    boundary data) is written for ``w = M_S^{1/2} u`` on the free (non-Dirichlet) nodes:

        w' = A w + M_S^{-1/2} b,   A = -M_S^{-1/2} K M_S^{-1/2}  (symmetric),

    so Lanczos applies.  Non-zero Dirichlet values ``g`` enter ``b`` as
    ``-K_{free, D} g``; Neumann data ``du/dn = h`` as ``kappa_i int h phi_i ds``.
    ``observe`` maps ``w`` back to the nodal ``u`` (``g`` on Dirichlet nodes) and
    ``state_from_field`` maps ``u`` to ``w``.

    Parameters
    ----------
    space
        Triangle or tetrahedron mesh (:func:`pdeinv.discretize.read_mesh`, ...).
    log_kappa
        Nodal log-diffusivity: scalar, ``(num_nodes,)`` or callable of the points.
    u0
        Initial temperature over all nodes: ``(num_nodes,)`` or callable.  Its values on
        Dirichlet nodes are dropped.
    dirichlet
        Homogeneous Dirichlet nodes: a boundary name of ``space.boundary`` (e.g.
        ``"boundary"``), a list of names, or node indices; ``None`` = insulated
        (homogeneous Neumann) everywhere.  Use ``boundary`` for data.
    source
        Time-independent heat source density ``f`` (nodal), or ``None``.
    boundary
        Conditions per tagged boundary part, see
        :func:`pdeinv.discretize.mesh_boundary_conditions` (e.g.
        ``{"left": {"dirichlet": 1.0}, "outer": "neumann"}``); not together with
        ``dirichlet``.
    capacity
        Capacity ``S > 0``: scalar, ``(num_nodes,)`` or callable; ``None`` means 1.
    sources
        :class:`~pdeinv.models.PointSource` (load vector ``rate * phi_i(x0)``) and
        :class:`~pdeinv.models.VolumeSource` objects.

    Returns
    -------
    Model
        ``params = {"log_kappa": (num_nodes,)}``; state ``w`` over the free nodes.
    """
    if boundary is not None and dirichlet is not None:
        raise ValueError("heat_p1: give boundary or dirichlet, not both")
    if boundary is not None:
        conditions = mesh_boundary_conditions(space, boundary)
        dirichlet = conditions.dirichlet if conditions.dirichlet.size else None
    else:
        conditions = None
    stiffness = p1_stiffness_matvec(space, kappa_location="node", dirichlet=dirichlet)
    free = free_nodes(space, dirichlet)
    lumped = p1_lumped_mass(space)
    mass = lumped if capacity is None else lumped * positive_field(capacity, space, "capacity")
    sqrt_mass = jnp.asarray(np.sqrt(mass[free]))
    has_dirichlet = dirichlet_nodes(space, dirichlet).size > 0
    free_index = jnp.asarray(free)
    num_nodes = space.num_nodes
    mass_jnp = jnp.asarray(mass)
    lifted = None if conditions is None else conditions.dirichlet_values
    neumann = None if conditions is None else conditions.neumann_load
    full_stiffness = (
        p1_stiffness_matvec(space, kappa_location="node") if lifted is not None else None
    )
    boundary_values = jnp.zeros(num_nodes) if lifted is None else jnp.asarray(lifted)

    def matvec(w, params):
        kappa = jnp.exp(params["log_kappa"])
        scale = sqrt_mass.astype(w.dtype)
        return -stiffness(w / scale, kappa) / scale

    def observe(states):
        u_free = states / sqrt_mass.astype(states.dtype)
        if not has_dirichlet:
            return u_free
        full = jnp.broadcast_to(
            boundary_values.astype(states.dtype), states.shape[:-1] + (num_nodes,)
        )
        return full.at[..., free_index].set(u_free)

    def restrict(load):
        load = load[..., free_index] if has_dirichlet else load
        return load / sqrt_mass.astype(load.dtype)

    def state_from_field(field):
        u_free = field[..., free_index] if has_dirichlet else field
        return u_free * sqrt_mass.astype(field.dtype)

    forcing = optional_forcing(source, space)
    loads = source_loads(space, sources, kind="load")
    constant = loads.pop((0.0, None), None)
    if forcing is not None:
        constant = (0.0 if constant is None else constant) + lumped * np.asarray(forcing)
    constant = None if constant is None else jnp.asarray(constant)
    neumann_jnp = None if neumann is None else jnp.asarray(neumann)

    source_fn = None
    if constant is not None or neumann is not None or lifted is not None:

        def source_fn(params):
            kappa = jnp.exp(params["log_kappa"])
            b = jnp.zeros(num_nodes, kappa.dtype)
            if constant is not None:
                b = b + constant.astype(kappa.dtype)
            if neumann_jnp is not None:
                b = b + kappa * neumann_jnp.astype(kappa.dtype)
            if full_stiffness is not None:
                b = b - full_stiffness(boundary_values.astype(kappa.dtype), kappa)
            return restrict(b)

    timed = _timed_sources(loads, restrict)

    def norm_bound(params):
        return p1_stiffness_norm_bound(
            space, jnp.exp(params["log_kappa"]), mass_jnp, kappa_location="node"
        )

    return Model(
        name="heat",
        space=space,
        matvec=matvec,
        params={"log_kappa": nodal_field(log_kappa, space, "log_kappa")},
        u0=state_from_field(nodal_field(u0, space, "u0")),
        symmetric=True,
        source=source_fn,
        norm_bound=norm_bound,
        observe_fn=observe,
        state_from_field_fn=state_from_field,
        timed_sources=timed,
    )

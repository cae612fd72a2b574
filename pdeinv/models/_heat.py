"""Heat equation ``u_t = div(kappa grad u) + f`` with ``kappa = exp(m)``, on grids and meshes."""

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
from ._common import nodal_field, optional_forcing
from ._model import Model


def heat_fd(space, log_kappa, u0, *, bc="neumann", mean: str = "harmonic", source=None) -> Model:
    """Heat equation ``u_t = div(kappa grad u) + f`` by finite differences on a grid.

    Cell-centred conservative differences (see :func:`pdeinv.discretize.diffusion_matvec`);
    the operator is symmetric negative semi-definite, so the model is ``symmetric`` and
    :func:`pdeinv.models.simulate` uses Lanczos when there is no source term.

    Parameters
    ----------
    space
        A grid from :func:`pdeinv.discretize.grid`.
    log_kappa
        Log-diffusivity ``m`` with ``kappa = exp(m)``: scalar, ``(num_nodes,)`` or a
        callable of the points.  Stored flat in ``params["log_kappa"]``.
    u0
        Initial temperature: ``(num_nodes,)`` array or a callable of the points
        (see :func:`gaussian_bump` and friends).
    bc
        Boundary conditions (see :func:`pdeinv.discretize.boundary_conditions`), default
        homogeneous Neumann (insulated: total heat is conserved).  Non-zero Dirichlet
        or Neumann data become part of the source ``b(params)``.
    mean
        Face coefficient: ``"harmonic"`` or ``"arithmetic"`` mean of nodal kappa.
    source
        Time-independent heat source ``f``: scalar, ``(num_nodes,)`` or callable, or
        ``None``.

    Returns
    -------
    Model
        ``params = {"log_kappa": (num_nodes,)}``, state = nodal temperature.
    """
    g = as_grid(space)
    bcs = boundary_conditions(g, bc)
    diffusion = diffusion_matvec(g, bcs, mean=mean)
    bound = diffusion_norm_bound(g, bcs, mean=mean)
    boundary_source = None if bcs.homogeneous else diffusion_source(g, bcs, mean=mean)
    forcing = optional_forcing(source, g)

    def matvec(u, params):
        return diffusion(u, jnp.exp(params["log_kappa"]))

    return Model(
        name="heat",
        space=g,
        matvec=matvec,
        params={"log_kappa": nodal_field(log_kappa, g, "log_kappa")},
        u0=nodal_field(u0, g, "u0"),
        symmetric=True,
        source=_combine_sources(boundary_source, forcing),
        norm_bound=lambda params: bound(jnp.exp(params["log_kappa"])),
    )


def _combine_sources(boundary_source, forcing):
    if boundary_source is None and forcing is None:
        return None

    def source(params):
        b = 0.0 if forcing is None else forcing
        if boundary_source is not None:
            b = b + boundary_source(jnp.exp(params["log_kappa"]))
        return b

    return source


def heat_p1(space, log_kappa, u0, *, dirichlet=None, source=None) -> Model:
    """Heat equation on a triangle/tetra mesh with P1 elements and mass lumping.

    The semi-discrete system ``M_L u' = -K(kappa) u + M_L f`` (``K`` the P1 stiffness
    of ``-div(kappa grad .)``, nodal ``kappa = exp(m)`` averaged per cell, ``M_L`` the
    lumped mass) is written for ``w = M_L^{1/2} u`` on the free (non-Dirichlet) nodes:

        w' = A w + b,   A = -M_L^{-1/2} K M_L^{-1/2}  (symmetric),  b = M_L^{1/2} f,

    so Lanczos applies.  ``observe`` maps ``w`` back to the nodal temperature ``u``
    (zero on Dirichlet nodes) and ``state_from_field`` maps ``u`` to ``w``.

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
        (homogeneous Neumann) everywhere.
    source
        Time-independent heat source ``f`` (nodal), or ``None``.

    Returns
    -------
    Model
        ``params = {"log_kappa": (num_nodes,)}``; state ``w`` over the free nodes.
    """
    stiffness = p1_stiffness_matvec(space, kappa_location="node", dirichlet=dirichlet)
    free = free_nodes(space, dirichlet)
    mass = p1_lumped_mass(space)
    sqrt_mass = jnp.asarray(np.sqrt(mass[free]))
    has_dirichlet = dirichlet_nodes(space, dirichlet).size > 0
    free_index = jnp.asarray(free)
    num_nodes = space.num_nodes
    mass_jnp = jnp.asarray(mass)

    def matvec(w, params):
        kappa = jnp.exp(params["log_kappa"])
        scale = sqrt_mass.astype(w.dtype)
        return -stiffness(w / scale, kappa) / scale

    def observe(states):
        u_free = states / sqrt_mass.astype(states.dtype)
        if not has_dirichlet:
            return u_free
        full = jnp.zeros(states.shape[:-1] + (num_nodes,), states.dtype)
        return full.at[..., free_index].set(u_free)

    def state_from_field(field):
        u_free = field[..., free_index] if has_dirichlet else field
        return u_free * sqrt_mass.astype(field.dtype)

    forcing = optional_forcing(source, space)
    source_fn = None
    if forcing is not None:
        b = state_from_field(forcing)
        source_fn = lambda params: b  # noqa: E731

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
    )

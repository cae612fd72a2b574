"""Advection-diffusion ``u_t = div(kappa grad u) - v . grad u - r u + f`` on grids."""

from __future__ import annotations

import jax.numpy as jnp

from ..discretize._fd import (
    advection_matvec,
    advection_norm_bound,
    advection_source,
    diffusion_matvec,
    diffusion_norm_bound,
    diffusion_source,
)
from ..discretize._grid import as_grid, boundary_conditions
from ._common import nodal_field, optional_forcing, velocity_param
from ._model import Model


def advection_diffusion_fd(
    space,
    log_kappa,
    velocity,
    u0,
    *,
    bc="neumann",
    scheme: str = "upwind",
    mean: str = "harmonic",
    reaction: float = 0.0,
    source=None,
) -> Model:
    """Advection-diffusion-reaction ``u_t = div(kappa grad u) - v . grad u - r u + f``.

    Both the diffusivity field and the velocity are parameters, so both can be
    recovered.  The operator is not symmetric (Arnoldi).

    Parameters
    ----------
    space
        A grid from :func:`pdeinv.discretize.grid`.
    log_kappa
        Log-diffusivity, ``kappa = exp(log_kappa)``: scalar, ``(num_nodes,)`` or callable.
    velocity
        Constant velocity ``(dim,)`` or nodal field ``(num_nodes, dim)`` (or callable).
    u0
        Initial concentration (nodal array or callable).
    bc
        Boundary conditions (default homogeneous Neumann); data become a source term.
    scheme
        Advection differences: ``"upwind"`` (first order, monotone) or ``"central"``
        (second order; oscillates when the cell Peclet number ``|v| h / kappa > 2``).
    mean
        Face mean of kappa.
    reaction
        Constant decay rate ``r`` (not a parameter).
    source
        Time-independent source ``f`` or ``None``.

    Returns
    -------
    Model
        ``params = {"log_kappa": (num_nodes,), "velocity": velocity.shape}``.
    """
    g = as_grid(space)
    bcs = boundary_conditions(g, bc)
    diffusion = diffusion_matvec(g, bcs, mean=mean)
    advection = advection_matvec(g, bcs, scheme=scheme)
    diffusion_bound = diffusion_norm_bound(g, bcs, mean=mean)
    advection_bound = advection_norm_bound(g, bcs, scheme=scheme)
    reaction = float(reaction)
    forcing = optional_forcing(source, g)
    data_sources = None
    if not bcs.homogeneous:
        data_sources = (
            diffusion_source(g, bcs, mean=mean),
            advection_source(g, bcs, scheme=scheme),
        )

    def matvec(u, params):
        out = diffusion(u, jnp.exp(params["log_kappa"])) - advection(u, params["velocity"])
        return out - reaction * u if reaction else out

    source_fn = None
    if data_sources is not None or forcing is not None:

        def source_fn(params):
            b = 0.0 if forcing is None else forcing
            if data_sources is not None:
                b = b + data_sources[0](jnp.exp(params["log_kappa"]))
                b = b - data_sources[1](params["velocity"])
            return b

    def norm_bound(params):
        # ||D - C - r I||_2 <= ||D||_2 + ||C||_2 + |r|
        return (
            diffusion_bound(jnp.exp(params["log_kappa"]))
            + advection_bound(params["velocity"])
            + abs(reaction)
        )

    return Model(
        name="advection_diffusion",
        space=g,
        matvec=matvec,
        params={
            "log_kappa": nodal_field(log_kappa, g, "log_kappa"),
            "velocity": velocity_param(velocity, g),
        },
        u0=nodal_field(u0, g, "u0"),
        symmetric=False,
        source=source_fn,
        norm_bound=norm_bound,
    )

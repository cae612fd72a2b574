"""Wave equation ``u_tt = div(c^2 grad u)`` (or ``c^2 lap u``) in first-order form on grids."""

from __future__ import annotations

import jax.numpy as jnp

from ..discretize._fd import diffusion_matvec, diffusion_norm_bound, diffusion_source
from ..discretize._grid import as_grid, boundary_conditions
from ._common import nodal_field
from ._model import Model

FORMS = ("divergence", "nondivergence")


def wave_fd(
    space,
    log_c,
    u0,
    v0=None,
    *,
    bc="neumann",
    form: str = "divergence",
    mean: str = "harmonic",
) -> Model:
    """Acoustic wave equation as the first-order system ``(u, v)' = (v, L(c) u)``.

    ``L(c) u = div(c^2 grad u)`` (``form="divergence"``, conservative) or
    ``c^2 lap u`` (``form="nondivergence"``, the seed paper's case study with
    Neumann conditions by edge padding).  The state is ``[u; v]`` of size
    ``2 num_nodes``; the operator ``[[0, I], [L, 0]]`` is not symmetric, so
    :func:`pdeinv.models.simulate` uses Arnoldi.

    Parameters
    ----------
    space
        A grid from :func:`pdeinv.discretize.grid`.
    log_c
        Log wave speed, ``c = exp(log_c)``: scalar, ``(num_nodes,)`` or callable.
    u0, v0
        Initial displacement and velocity (``v0=None``: at rest), nodal arrays or
        callables.
    bc
        Boundary conditions for ``u`` (default homogeneous Neumann); data become a
        source term.
    form
        ``"divergence"`` or ``"nondivergence"``.
    mean
        Face mean of ``c^2`` in the divergence form.

    Returns
    -------
    Model
        ``params = {"log_c": (num_nodes,)}``; ``observe`` returns the displacement ``u``,
        ``state_from_field(u)`` the state ``[u; 0]``.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    g = as_grid(space)
    bcs = boundary_conditions(g, bc)
    n = g.num_nodes
    diffusion = diffusion_matvec(g, bcs, mean=mean)
    bound = diffusion_norm_bound(g, bcs, mean=mean)
    data_source = None if bcs.homogeneous else diffusion_source(g, bcs, mean=mean)

    def speed_squared(params):
        return jnp.exp(2.0 * params["log_c"])

    def spatial(u, params):
        c2 = speed_squared(params)
        if form == "divergence":
            return diffusion(u, c2)
        return c2 * diffusion(u, 1.0)

    def matvec(state, params):
        u, v = state[:n], state[n:]
        return jnp.concatenate([v, spatial(u, params)])

    source = None
    if data_source is not None:

        def source(params):
            c2 = speed_squared(params)
            b = data_source(c2) if form == "divergence" else c2 * data_source(1.0)
            return jnp.concatenate([jnp.zeros_like(b), b])

    def norm_bound(params):
        # ||[[0, I], [L, 0]]||_2 = max(1, ||L||_2); for c^2 lap, ||L|| <= max c^2 ||lap||.
        c2 = speed_squared(params)
        norm_l = bound(c2) if form == "divergence" else jnp.max(c2) * bound(1.0)
        return jnp.maximum(1.0, norm_l)

    u0 = nodal_field(u0, g, "u0")
    v0 = jnp.zeros_like(u0) if v0 is None else nodal_field(v0, g, "v0")
    return Model(
        name="wave",
        space=g,
        matvec=matvec,
        params={"log_c": nodal_field(log_c, g, "log_c")},
        u0=jnp.concatenate([u0, v0.astype(u0.dtype)]),
        symmetric=False,
        source=source,
        norm_bound=norm_bound,
        observe_fn=lambda states: states[..., :n],
        state_from_field_fn=lambda field: jnp.concatenate([field, jnp.zeros_like(field)], -1),
    )

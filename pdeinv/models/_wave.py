"""Wave equation ``u_tt = div(c^2 grad u)`` (or ``c^2 lap u``) in first-order form on grids."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..discretize._fd import (
    diffusion_matvec,
    diffusion_norm_bound,
    diffusion_source,
    padded_face_gradient,
)
from ..discretize._grid import as_grid, boundary_conditions
from ._common import nodal_field
from ._model import KrylovForm, Model

FORMS = ("divergence", "nondivergence")
FORMULATIONS = ("auto", "skew", "first-order")


def wave_fd(
    space,
    log_c,
    u0,
    v0=None,
    *,
    bc="neumann",
    form: str = "divergence",
    mean: str = "harmonic",
    formulation: str = "auto",
) -> Model:
    """Acoustic wave equation as the first-order system ``(u, v)' = (v, L(c) u)``.

    ``L(c) u = div(c^2 grad u)`` (``form="divergence"``, conservative) or
    ``c^2 lap u`` (``form="nondivergence"``, the seed paper's case study with
    Neumann conditions by edge padding).  The state is ``[u; v]`` of size
    ``2 num_nodes``; the operator ``[[0, I], [L, 0]]`` is not symmetric, so
    :func:`pdeinv.models.simulate` solves it in skew-symmetric velocity-stress
    variables when it can (``formulation``).

    The skew form.  With ``G`` the weighted face differences of
    :func:`~pdeinv.discretize.face_gradient` (``G^T G = -div(grad .)`` with the
    same boundary rules and face means), ``L = -G_c^T G_c`` for
    ``G_c = G(c^2)`` (divergence form) or ``L = -C G_1^T G_1 C`` in the scaled
    displacement ``u / c`` (non-divergence form, ``C = diag(c)``).  Then
    ``x = (u / s, sigma)`` with ``s = 1`` or ``c`` and a face variable ``sigma``
    (``sigma(0) = 0`` for a wave at rest) obeys ``x' = [[0, -B^T], [B, 0]] x``
    with ``B = G_c`` or ``G_1 C``: a skew-symmetric operator, so the two-term
    skew Lanczos process applies (``method="skew-lanczos"``), and the Euclidean
    norm of ``x`` is the discrete wave energy, the norm the integrator's error
    control then uses.  Velocity: ``v = s (-B^T sigma)``.  The first-order form
    ``[[0, I], [L, 0]]`` is non-normal and badly scaled (``||A|| ~ ||L||`` against
    a spectral radius ``~ sqrt(||L||)``) and needs Arnoldi.

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
    formulation
        ``"auto"`` (default): ``"skew"`` when the boundary data are zero and the
        wave starts at rest (``v0`` None or zero), else ``"first-order"``.
        ``"skew"`` requires both (a nonzero initial velocity needs a face field
        ``sigma(0)`` with ``B^T sigma(0) = -v0 / s``, which this model does not
        solve for; boundary data have no place in the skew operator).  The
        model's state, ``matvec`` and ``observe`` are those of the first-order
        system either way; only :func:`~pdeinv.models.simulate` changes
        variables (``model.krylov_form``).  In the skew form the velocity half
        of the initial state is held at zero: ``simulate`` refuses a nonzero
        one, and derivatives with respect to it are not computed (they come out
        as zero, those of the fixed start).  Derivatives with respect to the
        initial displacement and ``log_c`` are exact to ``tol``; to
        differentiate with respect to the initial velocity, build the model
        with ``formulation="first-order"``.

    Returns
    -------
    Model
        ``params = {"log_c": (num_nodes,)}``; ``observe`` returns the displacement ``u``,
        ``state_from_field(u)`` the state ``[u; 0]``.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
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
    at_rest = v0 is None
    v0 = jnp.zeros_like(u0) if v0 is None else nodal_field(v0, g, "v0")
    at_rest = at_rest or not np.any(np.asarray(v0))
    if formulation == "skew" and not (at_rest and bcs.homogeneous):
        raise ValueError(
            "formulation='skew' needs zero boundary data and a wave at rest (v0 None or 0); "
            "use formulation='first-order'"
        )
    skew = formulation == "skew" or (formulation == "auto" and at_rest and bcs.homogeneous)
    krylov_form = _skew_form(g, bcs, form, mean, speed_squared) if skew else None
    return Model(
        name="wave",
        space=g,
        matvec=matvec,
        params={"log_c": nodal_field(log_c, g, "log_c")},
        u0=jnp.concatenate([u0, v0.astype(u0.dtype)]),
        symmetric=False,
        source=source,
        norm_bound=norm_bound,
        # Eigenvalues +-i sqrt(lambda(-L)): the spectral radius is sqrt(||L||).
        spectral_bound=lambda params: jnp.sqrt(norm_bound(params)),
        observe_fn=lambda states: states[..., :n],
        state_from_field_fn=lambda field: jnp.concatenate([field, jnp.zeros_like(field)], -1),
        krylov_form=krylov_form,
    )


def _skew_form(g, bcs, form, mean, speed_squared) -> KrylovForm:
    """Velocity-stress variables ``x = (u / s, sigma)`` of the wave (see :func:`wave_fd`).

    Coefficients: the face weights of ``G(c^2)`` (divergence form, ``s = 1``), or
    the nodal speed ``c`` (non-divergence form, ``B = G(1) C``, ``s = c``).
    ``x`` is stored in the padded layout of
    :func:`~pdeinv.discretize.padded_face_gradient` (``u / s`` and the ``dim``
    face fields on one padded grid shape ``P``, ``(1 + dim) prod(P)`` entries, zero
    on the padding), where the operator runs ~2x faster on CPU than on the flat
    face vector.  The ``scale`` coefficient is zero on the padding, which keeps
    it there.
    """
    n = g.num_nodes
    grad = padded_face_gradient(g, bcs, mean=mean)
    shape, dim = grad.shape, g.dim
    size = int(np.prod(shape))
    unit_weights = grad.weights(1.0)

    def coefficients(params):
        c2 = speed_squared(params)
        if form == "divergence":
            return {"weights": grad.weights(c2), "scale": grad.mask.astype(c2.dtype)}
        return {"weights": unit_weights.astype(c2.dtype), "scale": grad.pad(jnp.sqrt(c2))}

    def apply_b(u, w):
        jumps = grad.difference(w["scale"] * u)
        return [w["weights"][a] * jumps[a] for a in range(dim)]

    def apply_bt(f, w):
        return w["scale"] * grad.difference_transpose([w["weights"][a] * f[a] for a in range(dim)])

    def matvec(x, w):
        x = x.reshape((1 + dim, *shape))
        return jnp.stack([-apply_bt(x[1:], w), *apply_b(x[0], w)]).reshape(-1)

    def to_form(state, w):
        u, v = state[:n], state[n:]
        u = eqx.error_if(
            u,
            jnp.any(v != 0),
            "wave model in skew form: the initial velocity must be zero "
            "(build it with formulation='first-order')",
        )
        scale = grad.unpad(w["scale"])
        return jnp.concatenate([grad.pad(u / scale).reshape(-1), jnp.zeros(dim * size, u.dtype)])

    def from_form(xs, w):
        def state(x):
            x = x.reshape((1 + dim, *shape))
            velocity = -w["scale"] * apply_bt(x[1:], w)
            return jnp.concatenate([grad.unpad(w["scale"] * x[0]), grad.unpad(velocity)])

        for _ in range(xs.ndim - 1):
            state = jax.vmap(state)
        return state(xs)

    return KrylovForm(
        matvec=matvec,
        method="skew-lanczos",
        coefficients=coefficients,
        to_form=to_form,
        from_form=from_form,
    )

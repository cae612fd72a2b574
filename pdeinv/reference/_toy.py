"""Small self-contained models for tests, demos and benchmarks of the reference solvers.

Written with plain ``jnp`` slicing so that ``pdeinv.reference`` can be exercised
without the discretisation layer; the production models live in ``pdeinv.models``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..discretize._space import Space
from ..models._model import Model


def _line_space(n):
    x = (np.arange(n) + 0.5) / n
    cells = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1)
    return Space(points=x[:, None], cells=cells, cell_type="line", shape=(n,)), x


def _square_space(n):
    x = (np.arange(n) + 0.5) / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    idx = np.arange(n * n).reshape(n, n)
    cells = np.stack(
        [idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()],
        axis=1,
    )
    points = np.stack([X.ravel(), Y.ravel()], axis=1)
    return Space(points=points, cells=cells, cell_type="quad", shape=(n, n)), X, Y


def _harmonic(a, b):
    return 2.0 * a * b / (a + b)


def heat_1d(n: int = 32, *, source: bool = False) -> Model:
    """1-D heat ``u_t = (kappa u_x)_x`` on ``[0, 1]``, Neumann, ``kappa = exp(log_kappa)``.

    ``A`` is symmetric; with ``source=True`` the system is the affine ``u' = A u + b`` with
    ``b = exp(log_kappa) * s(x)`` (so that ``b`` depends on the parameters).
    """
    space, x = _line_space(n)
    h2 = float(n) ** 2

    def matvec(u, params):
        kappa = jnp.exp(params["log_kappa"])
        k_face = _harmonic(kappa[:-1], kappa[1:])
        flux = k_face * (u[1:] - u[:-1]) * h2
        zero = jnp.zeros((1,), u.dtype)
        return jnp.concatenate([flux, zero]) - jnp.concatenate([zero, flux])

    def norm_bound(params):
        return 4.0 * h2 * jnp.max(jnp.exp(params["log_kappa"]))

    src_shape = jnp.asarray(np.sin(np.pi * x))

    def source_fn(params):
        return jnp.exp(params["log_kappa"]) * src_shape

    params = {"log_kappa": jnp.asarray(0.3 * np.sin(2 * np.pi * x) - 2.0)}
    u0 = jnp.asarray(np.exp(-40.0 * (x - 0.4) ** 2))
    return Model(
        name="heat",
        space=space,
        matvec=matvec,
        params=params,
        u0=u0,
        symmetric=True,
        source=source_fn if source else None,
        norm_bound=norm_bound,
    )


def advection_diffusion_1d(n: int = 32) -> Model:
    """1-D periodic ``u_t = d u_xx - v u_x`` (upwind), parameters ``log_d`` (field) and ``v``."""
    space, x = _line_space(n)
    h = 1.0 / n

    def matvec(u, params):
        d = jnp.exp(params["log_d"])
        v = params["velocity"]
        up, um = jnp.roll(u, -1), jnp.roll(u, 1)
        d_face = _harmonic(d, jnp.roll(d, -1))
        flux = d_face * (up - u) / h**2
        diffusion = flux - jnp.roll(flux, 1)
        advection = v * (u - um) / h
        return diffusion - advection

    def norm_bound(params):
        return (
            4.0 * jnp.max(jnp.exp(params["log_d"])) / h**2 + 2.0 * jnp.abs(params["velocity"]) / h
        )

    params = {"log_d": jnp.asarray(0.2 * np.cos(2 * np.pi * x) - 4.0), "velocity": jnp.asarray(1.5)}
    u0 = jnp.asarray(np.exp(-60.0 * (x - 0.5) ** 2))
    return Model(
        name="advection_diffusion",
        space=space,
        matvec=matvec,
        params=params,
        u0=u0,
        symmetric=False,
        norm_bound=norm_bound,
    )


def heat_2d(n: int = 16, *, kappa_scale: float = 1.0) -> Model:
    """2-D heat on the unit square, Neumann, nodal ``log_kappa`` (variable coefficient).

    Five-point stencil with harmonic face means, cell-centred ``n x n`` grid;
    ``||A||_2 <= 8 n^2 max(kappa)``.
    """
    space, X, Y = _square_space(n)
    h2 = float(n) ** 2

    def matvec(u, params):
        K = jnp.exp(params["log_kappa"]).reshape(n, n)
        U = u.reshape(n, n)
        fx = _harmonic(K[:-1, :], K[1:, :]) * (U[1:, :] - U[:-1, :]) * h2
        fy = _harmonic(K[:, :-1], K[:, 1:]) * (U[:, 1:] - U[:, :-1]) * h2
        zx = jnp.zeros((1, n), u.dtype)
        zy = jnp.zeros((n, 1), u.dtype)
        out = (jnp.concatenate([fx, zx], 0) - jnp.concatenate([zx, fx], 0)) + (
            jnp.concatenate([fy, zy], 1) - jnp.concatenate([zy, fy], 1)
        )
        return out.reshape(-1)

    def norm_bound(params):
        return 8.0 * h2 * jnp.max(jnp.exp(params["log_kappa"]))

    log_kappa = np.log(kappa_scale) + 0.5 * np.sin(2 * np.pi * X) * np.cos(np.pi * Y)
    u0 = np.exp(-30.0 * ((X - 0.35) ** 2 + (Y - 0.6) ** 2))
    return Model(
        name="heat",
        space=space,
        matvec=matvec,
        params={"log_kappa": jnp.asarray(log_kappa.ravel())},
        u0=jnp.asarray(u0.ravel()),
        symmetric=True,
        norm_bound=norm_bound,
    )


def dense_operator(model: Model, params) -> np.ndarray:
    """``A(params)`` as a dense array (columns ``matvec(e_j)``); small models only."""
    import jax

    n = model.num_states
    eye = jnp.eye(n, dtype=model.u0.dtype)
    return np.asarray(jax.vmap(lambda e: model.matvec(e, params), out_axes=1)(eye))

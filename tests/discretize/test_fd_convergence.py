"""Manufactured solutions: the finite-difference operators converge with order 2 (L2 norm).

Exact solutions and coefficients are smooth functions; the continuous operator applied
to them is computed with JAX autodiff, and the discrete steady problems are solved with
the ``scipy.sparse`` export of the same matrix-free operators.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from pdeinv.discretize import (
    Dirichlet,
    Neumann,
    advection_matvec,
    advection_source,
    diffusion_matvec,
    diffusion_source,
    grid,
    stencil_to_sparse,
)


def u_exact(x):
    return jnp.sin(1.3 * x[0] + 0.4) * jnp.cos(0.9 * jnp.sum(x[1:]) - 0.2) + 0.5 * x[0] ** 2


def kappa_exact(x):
    return jnp.exp(0.4 * jnp.sin(2.0 * x[0]) + 0.3 * jnp.cos(jnp.sum(x)))


def div_kappa_grad(x):
    flux = lambda y: kappa_exact(y) * jax.grad(u_exact)(y)  # noqa: E731
    return jnp.trace(jax.jacfwd(flux)(x))


_COMPILED = {}


def _at(fn, points):
    """``fn`` at each point of ``points`` (shape ``(..., dim)``), as a numpy array."""
    if fn not in _COMPILED:
        _COMPILED[fn] = jax.jit(jax.vmap(fn))
    return np.asarray(_COMPILED[fn](jnp.asarray(points.reshape(-1, points.shape[-1]))))


_grad_u = jax.grad(u_exact)


def _outward_derivative(side):
    sign = 1.0 if side.endswith("max") else -1.0
    axis = "xyz".index(side[0])
    return lambda pts: (sign * _at(_grad_u, pts)[:, axis]).reshape(pts.shape[:-1])


def _dirichlet_data(pts):
    return _at(u_exact, pts).reshape(pts.shape[:-1])


def _l2_error(g, u_h):
    err = u_h - _at(u_exact, g.points)
    return np.sqrt(g.cell_volume * np.sum(err**2))


def _orders(errors):
    errors = np.asarray(errors)
    return np.log2(errors[:-1] / errors[1:])


def _bc(dim, kinds):
    sides = [f"{a}{e}" for a in "xyz"[:dim] for e in ("min", "max")]
    bc = {}
    for side, kind in zip(sides, kinds, strict=True):
        bc[side] = Dirichlet(_dirichlet_data) if kind == "D" else Neumann(_outward_derivative(side))
    return bc


def _solve_steady_diffusion(g, bc, *, mean, reaction=0.0):
    """Solve ``div(kappa grad u) - reaction u = f`` with f from the exact solution."""
    kappa = _at(kappa_exact, g.points)
    A = stencil_to_sparse(g, diffusion_matvec(g, bc, mean=mean), kappa, bc=bc)
    b = np.asarray(diffusion_source(g, bc, mean=mean)(kappa))
    f = _at(div_kappa_grad, g.points) - reaction * _at(u_exact, g.points)
    system = (A - reaction * sp.identity(g.num_nodes)).tocsc()
    return spla.spsolve(system, f - b)


@pytest.mark.parametrize(
    "dim, kinds, sizes, mean",
    [
        (1, "DD", (16, 32, 64), "harmonic"),
        (2, "DDDD", (12, 24, 48), "harmonic"),
        (2, "DNND", (12, 24, 48), "harmonic"),
        (2, "DNND", (12, 24, 48), "arithmetic"),
        pytest.param(3, "DDNDDD", (4, 8, 16), "harmonic", marks=pytest.mark.slow),
    ],
)
def test_diffusion_dirichlet_order_two(dim, kinds, sizes, mean):
    errors = []
    for n in sizes:
        g = grid((n,) * dim, lower=-0.3, upper=np.linspace(1.0, 1.4, dim))
        errors.append(_l2_error(g, _solve_steady_diffusion(g, _bc(dim, kinds), mean=mean)))
    orders = _orders(errors)
    assert np.all(orders > 1.85), (errors, orders)


@pytest.mark.parametrize("dim, sizes", [(1, (16, 32, 64)), (2, (12, 24, 48))])
def test_diffusion_neumann_order_two(dim, sizes):
    # Pure Neumann is singular; a reaction term -u makes the steady problem well posed.
    errors = []
    for n in sizes:
        g = grid((n,) * dim, lower=0.1, upper=1.2)
        u_h = _solve_steady_diffusion(g, _bc(dim, "N" * 2 * dim), mean="harmonic", reaction=1.0)
        errors.append(_l2_error(g, u_h))
    orders = _orders(errors)
    assert np.all(orders > 1.85), (errors, orders)


def _periodic_u(x):
    return jnp.sin(2 * jnp.pi * x[0]) * jnp.cos(2 * jnp.pi * x[-1]) + jnp.cos(2 * jnp.pi * x[0])


@pytest.mark.parametrize("field", [False, True], ids=["const", "field"])
def test_central_advection_periodic_order_two(field):
    def velocity_fn(x):
        return jnp.stack([1.0 + 0.5 * jnp.sin(2 * jnp.pi * x[1]), -0.7 + 0.2 * x[0]])

    errors = []
    for n in (16, 32, 64):
        g = grid((n, n))
        velocity = _at(velocity_fn, g.points) if field else np.array([1.0, -0.7])
        v_at = velocity_fn if field else (lambda x: jnp.array([1.0, -0.7]))  # noqa: E731
        exact = _at(lambda x, v_at=v_at: jnp.dot(v_at(x), jax.grad(_periodic_u)(x)), g.points)
        approx = advection_matvec(g, "periodic", scheme="central")(
            jnp.asarray(_at(_periodic_u, g.points)), jnp.asarray(velocity)
        )
        errors.append(np.sqrt(g.cell_volume * np.sum((approx - exact) ** 2)))
    orders = _orders(errors)
    assert np.all(orders > 1.9), (errors, orders)


@pytest.mark.parametrize("scheme, min_order", [("central", 1.85), ("upwind", 0.9)])
def test_steady_advection_diffusion_dirichlet(scheme, min_order):
    """``div(kappa grad u) - v . grad u = f`` with Dirichlet data: order 2 (central), 1 (upwind)."""
    velocity = np.array([0.8, -0.5])
    v = jnp.asarray(velocity)
    rhs_fn = lambda x: div_kappa_grad(x) - jnp.dot(v, _grad_u(x))  # noqa: E731
    errors = []
    for n in (16, 32, 64):
        g = grid((n, n))
        bc = _bc(2, "DDDD")
        kappa = _at(kappa_exact, g.points)
        diffusion = diffusion_matvec(g, bc)
        advection = advection_matvec(g, bc, scheme=scheme)

        def full(u, params, diffusion=diffusion, advection=advection):
            kappa, velocity = params
            return diffusion(u, kappa) - advection(u, velocity)

        A = stencil_to_sparse(g, full, (kappa, v), bc=bc).tocsc()
        b = diffusion_source(g, bc)(kappa) - advection_source(g, bc, scheme=scheme)(v)
        u_h = spla.spsolve(A, _at(rhs_fn, g.points) - np.asarray(b))
        errors.append(_l2_error(g, u_h))
    orders = _orders(errors)
    assert np.all(orders > min_order), (errors, orders)

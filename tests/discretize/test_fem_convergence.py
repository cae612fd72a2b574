"""P1 convergence on manufactured solutions: steady Poisson and lumped-mass heat (L2 order 2)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.linalg as spla

from pdeinv.discretize import (
    dirichlet_nodes,
    element_geometry,
    free_nodes,
    p1_boundary_load,
    p1_load_vector,
    p1_lumped_mass,
    p1_stiffness_matrix,
    p1_stiffness_matvec,
    read_mesh,
    structured_tetra_mesh,
    structured_triangle_mesh,
)

MESHES = pathlib.Path(__file__).resolve().parents[2] / "meshes"

# Quadrature in barycentric coordinates: Dunavant degree 4 (triangles), degree 2 (tetra).
_A, _B = 0.445948490915965, 0.091576213509771
TRI_POINTS = np.array(
    [
        [_A, _A, 1 - 2 * _A],
        [_A, 1 - 2 * _A, _A],
        [1 - 2 * _A, _A, _A],
        [_B, _B, 1 - 2 * _B],
        [_B, 1 - 2 * _B, _B],
        [1 - 2 * _B, _B, _B],
    ]
)
TRI_WEIGHTS = np.array([0.223381589678011] * 3 + [0.109951743655322] * 3)
_C, _D = 0.5854101966249685, 0.1381966011250105
TET_POINTS = np.array([[_C, _D, _D, _D], [_D, _C, _D, _D], [_D, _D, _C, _D], [_D, _D, _D, _C]])
TET_WEIGHTS = np.full(4, 0.25)


def l2_error(space, u_h, exact):
    """||u_h - exact||_{L2} by quadrature on every cell (u_h is the P1 function of nodal values)."""
    bary, weights = (TRI_POINTS, TRI_WEIGHTS) if space.dim == 2 else (TET_POINTS, TET_WEIGHTS)
    x_cell = space.points[space.cells]  # (c, d+1, d)
    x_q = np.einsum("qm,cmd->cqd", bary, x_cell)
    uh_q = np.einsum("qm,cm->cq", bary, np.asarray(u_h)[space.cells])
    err_q = uh_q - np.asarray(exact(x_q.reshape(-1, space.dim))).reshape(uh_q.shape)
    volumes = element_geometry(space).volumes
    return float(np.sqrt(np.sum(volumes[:, None] * weights * err_q**2)))


def order(h, errors):
    return np.polyfit(np.log(h), np.log(errors), 1)[0]


@jax.jit
def u_exact(x):
    x = jnp.asarray(x)
    s = jnp.prod(jnp.sin(jnp.pi * x[..., :2]), axis=-1)
    return s + x[..., 0] * x[..., -1] ** 2 + jnp.exp(0.5 * x[..., 1])


@jax.jit
def kappa_exact(x):
    x = jnp.asarray(x)
    return 1.0 + 0.5 * jnp.sin(2.0 * x[..., 0]) * x[..., 1] + 0.3 * x[..., -1] ** 2


@jax.jit
def source(x):
    """f = -div(kappa grad u) by automatic differentiation of the exact fields."""

    def flux(p):
        return kappa_exact(p) * jax.grad(u_exact)(p)

    def f_at(p):
        return -jnp.trace(jax.jacfwd(flux)(p))

    return jax.vmap(f_at)(x)


def poisson_error(space):
    """Solve -div(kappa grad u) = f, u = u_exact on the boundary; return the L2 error."""
    kappa = kappa_exact(space.points)
    fixed = dirichlet_nodes(space, "boundary")
    free = free_nodes(space, "boundary")
    K = p1_stiffness_matrix(space, kappa)
    g = np.zeros(space.num_nodes)
    g[fixed] = u_exact(space.points[fixed])
    rhs = np.asarray(p1_load_vector(space, source))[free] - (K @ g)[free]
    u_h = g.copy()
    u_h[free] = spla.spsolve(p1_stiffness_matrix(space, kappa, dirichlet="boundary").tocsc(), rhs)
    # the matrix-free operator gives the same residual
    matvec = jax.jit(p1_stiffness_matvec(space, dirichlet="boundary"))
    residual = matvec(u_h[free], kappa) - rhs
    assert np.max(np.abs(residual)) < 1e-10 * np.max(np.abs(rhs))
    return l2_error(space, u_h, u_exact)


def test_poisson_triangles_order_2():
    sizes = [8, 16, 32, 64]
    errors = [poisson_error(structured_triangle_mesh(n, n)) for n in sizes]
    slope = order(1.0 / np.array(sizes), errors)
    assert slope >= 1.9, (errors, slope)
    assert errors[-1] < 1e-3


def test_poisson_tetra_order_2():
    sizes = [5, 10, 20]
    errors = [poisson_error(structured_tetra_mesh(n, n, n)) for n in sizes]
    slope = order(1.0 / np.array(sizes), errors)
    assert slope >= 1.9, (errors, slope)


def test_poisson_on_committed_unstructured_mesh():
    """On the gmsh L-shape (h = 0.1, smooth exact solution) the error is of size h^2."""
    space = read_mesh(MESHES / "l_shape.msh")
    assert poisson_error(space) < 0.05


def heat_error(n, t_final=0.05):
    """u_t = lap u, u = 0 on the boundary, lumped mass, exact semi-discrete solution via eigh."""
    space = structured_triangle_mesh(n, n)
    free = free_nodes(space, "boundary")
    K = p1_stiffness_matrix(space, 1.0, dirichlet="boundary").toarray()
    mass = p1_lumped_mass(space)[free]

    def exact(x, t):
        return np.exp(-2 * np.pi**2 * t) * np.sin(np.pi * x[..., 0]) * np.sin(np.pi * x[..., 1])

    # symmetric form w = M_L^{1/2} u:  w' = -M_L^{-1/2} K M_L^{-1/2} w
    sym = K / np.sqrt(np.outer(mass, mass))
    lam, vec = np.linalg.eigh(sym)
    w0 = np.sqrt(mass) * exact(space.points[free], 0.0)
    w_t = vec @ (np.exp(-t_final * lam) * (vec.T @ w0))
    u_h = np.zeros(space.num_nodes)
    u_h[free] = w_t / np.sqrt(mass)
    return l2_error(space, u_h, lambda x: exact(x, t_final))


def test_lumped_mass_heat_order_2():
    sizes = [8, 16, 32]
    errors = [heat_error(n) for n in sizes]
    slope = order(1.0 / np.array(sizes), errors)
    assert slope >= 1.9, (errors, slope)


def test_neumann_heat_conserves_mass():
    """Pure Neumann: d/dt sum_i m_i u_i = -1^T K u = 0, so the total heat stays put."""
    space = read_mesh(MESHES / "unit_square.msh")
    rng = np.random.default_rng(0)
    kappa = np.exp(rng.standard_normal(space.num_nodes))
    mass = p1_lumped_mass(space)
    K = p1_stiffness_matrix(space, kappa).toarray()
    lam, vec = np.linalg.eigh(K / np.sqrt(np.outer(mass, mass)))
    u0 = rng.random(space.num_nodes)
    u_t = vec @ (np.exp(-0.1 * lam) * (vec.T @ (np.sqrt(mass) * u0))) / np.sqrt(mass)
    np.testing.assert_allclose(mass @ u_t, mass @ u0, rtol=1e-12)
    # and the solution tends to the mass-weighted mean
    assert np.ptp(u_t) < np.ptp(u0)


@pytest.mark.slow
def test_poisson_tetra_order_2_finer():
    sizes = [12, 24, 32]
    errors = [poisson_error(structured_tetra_mesh(n, n, n)) for n in sizes]
    assert order(1.0 / np.array(sizes), errors) >= 1.95


def mixed_bc_error(space, neumann_normals):
    """u = u_exact on the other sides, kappa du/dn = g on the sides in neumann_normals."""
    kappa = kappa_exact(space.points)
    neumann = sorted(neumann_normals)
    dirichlet = sorted(set(space.boundary) - set(neumann) - {"boundary"})
    fixed = dirichlet_nodes(space, dirichlet)
    free = free_nodes(space, dirichlet)
    b = np.asarray(p1_load_vector(space, source))
    flux = jax.jit(jax.vmap(lambda p: kappa_exact(p) * jax.grad(u_exact)(p)))(space.points)
    for side in neumann:
        g = np.asarray(flux) @ np.asarray(neumann_normals[side], dtype=float)
        b = b + np.asarray(p1_boundary_load(space, side, g))
    K = p1_stiffness_matrix(space, kappa)
    u_h = np.zeros(space.num_nodes)
    u_h[fixed] = u_exact(space.points[fixed])
    rhs = b[free] - (K @ u_h)[free]
    u_h[free] = spla.spsolve(p1_stiffness_matrix(space, kappa, dirichlet=dirichlet).tocsc(), rhs)
    return l2_error(space, u_h, u_exact)


def test_mixed_dirichlet_neumann_triangles_order_2():
    normals = {"right": (1, 0), "top": (0, 1)}
    sizes = [8, 16, 32]
    errors = [mixed_bc_error(structured_triangle_mesh(n, n), normals) for n in sizes]
    slope = order(1.0 / np.array(sizes), errors)
    assert slope >= 1.9, (errors, slope)


def test_mixed_dirichlet_neumann_tetra():
    normals = {"right": (1, 0, 0), "front": (0, 0, 1)}
    sizes = [4, 8]
    errors = [mixed_bc_error(structured_tetra_mesh(n, n, n), normals) for n in sizes]
    assert errors[1] < errors[0] / 3.3, errors  # order-2 rate (4x) up to pre-asymptotics

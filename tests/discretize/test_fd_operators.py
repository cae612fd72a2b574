"""Finite-difference grids and stencils: structure, transposes, derivatives, sparse export."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdeinv.discretize._fd import (
    advection_matvec,
    advection_norm_bound,
    advection_source,
    diffusion_matvec,
    diffusion_norm_bound,
    diffusion_source,
    reaction_matvec,
)
from pdeinv.discretize._fd_sparse import matvec_to_sparse, stencil_to_sparse
from pdeinv.discretize._grid import Dirichlet, Grid, Neumann, as_grid, boundary_conditions, grid
from pdeinv.discretize._space import Space

MIXED_2D = {"x": "periodic", "ymin": Dirichlet(), "ymax": "neumann"}
CASES = [
    ((7,), "dirichlet"),
    ((7,), "neumann"),
    ((6, 5), "dirichlet"),
    ((6, 5), "neumann"),
    ((6, 5), "periodic"),
    ((4, 5), MIXED_2D),
    ((4, 3, 5), {"x": "dirichlet", "y": "periodic", "z": "neumann"}),
]


def _case_id(case):
    shape, bc = case
    return f"{len(shape)}d-{bc if isinstance(bc, str) else 'mixed'}"


def _kappa(g, seed=0):
    return jnp.exp(0.5 * jax.random.normal(jax.random.PRNGKey(seed), (g.num_nodes,)))


def _velocity_field(g, seed=1):
    return jax.random.normal(jax.random.PRNGKey(seed), (g.num_nodes, g.dim))


# ----------------------------------------------------------------------------- grid


def test_grid_geometry():
    g = grid((4, 2), lower=(0.0, -1.0), upper=(2.0, 1.0))
    assert isinstance(g, Grid) and isinstance(g, Space)
    assert g.spacing == (0.5, 1.0)
    np.testing.assert_allclose(g.points[:3], [[0.25, -0.5], [0.25, 0.5], [0.75, -0.5]])
    assert g.cells.shape == (3, 4) and g.cell_type == "quad"
    np.testing.assert_array_equal(g.boundary["xmin"], [0, 1])
    np.testing.assert_array_equal(g.boundary["ymax"], [1, 3, 5, 7])
    np.testing.assert_allclose(g.face_points("xmax")[:, 0], 2.0)
    assert grid(5).cell_type == "line" and grid((2, 2, 2)).cells.shape == (1, 8)
    # A plain Space with a shape is understood as the same cell-centred grid.
    plain = Space(g.points, g.cells, "quad", shape=g.shape)
    assert as_grid(plain).spacing == g.spacing and as_grid(plain).lower == g.lower


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shape": (1, 4)}, "at least 2"),
        ({"shape": (2, 2, 2, 2)}, "1, 2 or 3"),
        ({"shape": (4,), "lower": 1.0, "upper": 0.0}, "upper must exceed"),
        ({"shape": (4, 4), "lower": (0.0, 0.0, 0.0)}, "lower"),
    ],
)
def test_grid_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        grid(**kwargs)


def test_boundary_condition_errors():
    g = grid((4, 4))
    with pytest.raises(ValueError, match="must be one of"):
        boundary_conditions(g, "robin")
    with pytest.raises(ValueError, match="both sides"):
        boundary_conditions(g, {"xmin": "periodic", "default": "neumann"})
    with pytest.raises(ValueError, match="no condition for side"):
        boundary_conditions(g, {"x": "neumann"})
    with pytest.raises(ValueError, match="unknown side 'lft'; did you mean 'left'"):
        boundary_conditions(g, {"lft": "neumann", "default": "neumann"})
    with pytest.raises(ValueError, match="face shape"):
        boundary_conditions(g, Dirichlet(np.ones(3)))
    with pytest.raises(ValueError, match="mean"):
        diffusion_matvec(g, mean="geometric")
    with pytest.raises(ValueError, match="scheme"):
        advection_matvec(g, scheme="weno")
    with pytest.raises(ValueError, match="velocity"):
        advection_matvec(g)(jnp.ones(16), jnp.ones(3))
    with pytest.raises(TypeError, match="structured grid"):
        diffusion_matvec(Space(np.zeros((3, 2)), np.zeros((1, 3)), "triangle"))


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize(
    "case, mean",
    [(case, "harmonic") for case in CASES] + [(CASES[3], "arithmetic"), (CASES[5], "arithmetic")],
    ids=lambda x: x if isinstance(x, str) else _case_id(x),
)
def test_diffusion_symmetric_negative_semidefinite(case, mean):
    shape, bc = case
    g = grid(shape, 0.0, np.linspace(1.0, 2.0, len(shape)))
    kappa = _kappa(g)
    matvec = diffusion_matvec(g, bc, mean=mean)
    A = stencil_to_sparse(g, matvec, kappa, bc=bc)
    dense = matvec_to_sparse(matvec, kappa, g.num_nodes, batch_size=13).toarray()
    np.testing.assert_allclose(A.toarray(), dense, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dense, dense.T, rtol=0, atol=1e-12 * abs(dense).max())
    eig = np.linalg.eigvalsh(dense)
    assert eig.max() <= 1e-10 * abs(eig).max()
    # Gershgorin bound: exactly the largest absolute row sum, hence >= ||A||_2.
    bound = float(diffusion_norm_bound(g, bc, mean=mean)(kappa))
    np.testing.assert_allclose(bound, abs(dense).sum(axis=1).max(), rtol=1e-12)
    assert bound >= abs(eig).max()


@pytest.mark.parametrize("shape", [(9,), (6, 7), (3, 4, 5)])
def test_neumann_and_periodic_conserve_mass(shape):
    g = grid(shape)
    kappa = _kappa(g)
    for bc in ["neumann", "periodic"]:
        A = stencil_to_sparse(g, diffusion_matvec(g, bc), kappa, bc=bc).toarray()
        np.testing.assert_allclose(A.sum(axis=0), 0.0, atol=1e-11 * abs(A).max())


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("scheme", ["upwind", "central"])
@pytest.mark.parametrize("field", [False, True], ids=["const", "field"])
def test_advection_sparse_export_and_norm_bound(case, scheme, field):
    shape, bc = case
    g = grid(shape)
    velocity = _velocity_field(g) if field else jnp.linspace(-1.0, 2.0, g.dim)
    matvec = advection_matvec(g, bc, scheme=scheme)
    A = stencil_to_sparse(g, matvec, velocity, bc=bc).toarray()
    dense = matvec_to_sparse(matvec, velocity, g.num_nodes).toarray()
    np.testing.assert_allclose(A, dense, rtol=0, atol=1e-12)
    assert float(advection_norm_bound(g, bc, scheme=scheme)(velocity)) >= np.linalg.norm(dense, 2)
    if scheme == "central" and bc == "periodic" and not field:
        np.testing.assert_allclose(dense, -dense.T, atol=1e-12)  # skew-symmetric


def test_stencil_export_large_periodic_grid_probing():
    # Periodic sizes not divisible by 3 need a different colouring; check several.
    for n in (2, 4, 5):
        g = grid((n, 3))
        bc = "periodic"
        matvec = diffusion_matvec(g, bc)
        kappa = _kappa(g)
        A = stencil_to_sparse(g, matvec, kappa, bc=bc).toarray()
        dense = matvec_to_sparse(matvec, kappa, g.num_nodes).toarray()
        np.testing.assert_allclose(A, dense, atol=1e-12)


# ----------------------------------------------------------------------------- transposes and VJPs


def _operators(g, bc):
    """(name, matvec, coefficient) for every stencil."""
    return [
        ("diffusion-harmonic", diffusion_matvec(g, bc), _kappa(g)),
        ("diffusion-arithmetic", diffusion_matvec(g, bc, mean="arithmetic"), _kappa(g)),
        ("upwind-const", advection_matvec(g, bc), jnp.linspace(-1.0, 1.5, g.dim)),
        ("upwind-field", advection_matvec(g, bc), _velocity_field(g)),
        ("central-field", advection_matvec(g, bc, scheme="central"), _velocity_field(g)),
        ("reaction", reaction_matvec(g), _kappa(g)),
    ]


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_adjoint_dot_product(case):
    shape, bc = case
    g = grid(shape)
    key_x, key_y = jax.random.split(jax.random.PRNGKey(3))
    x = jax.random.normal(key_x, (g.num_nodes,))
    y = jax.random.normal(key_y, (g.num_nodes,))
    for name, matvec, coef in _operators(g, bc):

        @jax.jit
        def both(x, y, coef, matvec=matvec):
            apply = lambda v: matvec(v, coef)  # noqa: E731
            (transpose_y,) = jax.linear_transpose(apply, x)(y)
            return jnp.vdot(apply(x), y), jnp.vdot(x, transpose_y)

        lhs, rhs = both(x, y, coef)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12 * abs(lhs), err_msg=name)


@pytest.mark.parametrize("case", CASES[1:6:2], ids=_case_id)
def test_matvec_vjp_wrt_coefficient_matches_finite_differences(case):
    shape, bc = case
    g = grid(shape)
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    u = jax.random.normal(keys[0], (g.num_nodes,))
    w = jax.random.normal(keys[1], (g.num_nodes,))
    for name, matvec, coef in _operators(g, bc):
        direction = jax.random.normal(keys[2], jnp.shape(coef))
        loss = jax.jit(lambda c, matvec=matvec: jnp.vdot(w, matvec(u, c)))
        if name.startswith("upwind"):
            coef = coef + 0.3 * jnp.sign(coef)  # stay away from the kink of max(v, 0)
        grad = jax.jit(jax.grad(loss))(coef)
        eps = 1e-6
        fd = (loss(coef + eps * direction) - loss(coef - eps * direction)) / (2 * eps)
        np.testing.assert_allclose(jnp.vdot(grad, direction), fd, rtol=1e-7, err_msg=name)


def test_sources_carry_the_boundary_data():
    g = grid((5, 6))
    kappa = _kappa(g)
    # A constant field equal to its Dirichlet data is steady: A u + b = 0, v.grad u = 0.
    u_const = jnp.full(g.num_nodes, 1.5)
    bc = {"x": Dirichlet(1.5), "y": "neumann"}
    total = diffusion_matvec(g, bc)(u_const, kappa) + diffusion_source(g, bc)(kappa)
    np.testing.assert_allclose(total, 0.0, atol=1e-12)
    velocity = jnp.array([0.7, -0.4])
    for scheme in ["upwind", "central"]:
        adv = advection_matvec(g, bc, scheme=scheme)(u_const, velocity)
        adv = adv + advection_source(g, bc, scheme=scheme)(velocity)
        np.testing.assert_allclose(adv, 0.0, atol=1e-12)
    # The source is linear in the data and differentiable in kappa.
    data = lambda x: x[..., 1] ** 2  # noqa: E731
    bc1 = {"xmin": Dirichlet(data), "xmax": Neumann(data), "y": "periodic"}
    bc2 = {
        "xmin": Dirichlet(lambda x: 2 * data(x)),
        "xmax": Neumann(lambda x: 2 * data(x)),
        "y": "periodic",
    }
    np.testing.assert_allclose(diffusion_source(g, bc2)(kappa), 2 * diffusion_source(g, bc1)(kappa))
    grad = jax.grad(lambda k: diffusion_source(g, bc1)(k).sum())(kappa)
    assert jnp.all(jnp.isfinite(grad)) and jnp.any(grad != 0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_matvec_keeps_dtype(dtype):
    g = grid((8, 8))
    u = jnp.ones(g.num_nodes, dtype)
    kappa = jnp.ones(g.num_nodes, dtype)
    assert diffusion_matvec(g)(u, kappa).dtype == dtype
    assert advection_matvec(g)(u, jnp.ones(2, dtype)).dtype == dtype


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_matvec_on_1024_squared_grid(dtype):
    # Matrix-free at scale: a dense matrix would need 8 TB; the stencil needs a few arrays.
    g = grid((1024, 1024))
    u = jnp.cos(jnp.linspace(0.0, 30.0, g.num_nodes, dtype=dtype))
    kappa = 1.5 + jnp.sin(jnp.linspace(0.0, 7.0, g.num_nodes, dtype=dtype))
    out = diffusion_matvec(g, "neumann")(u, kappa)
    assert out.dtype == dtype and out.shape == (g.num_nodes,)
    assert bool(jnp.all(jnp.isfinite(out)))
    # Mass conservation survives at scale (relative to the size of the terms).
    scale = float(jnp.sum(jnp.abs(out)))
    assert (
        abs(float(jnp.sum(out.astype(jnp.float64))))
        < (1e-5 if dtype == jnp.float32 else 1e-12) * scale
    )

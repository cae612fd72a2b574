"""P1 operators: structure, agreement with scipy, derivatives, dtypes, bad input."""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdeinv.discretize import (
    dirichlet_nodes,
    element_geometry,
    free_nodes,
    p1_boundary_load,
    p1_boundary_mass_matrix,
    p1_load_vector,
    p1_lumped_mass,
    p1_mass_matrix,
    p1_stiffness_matrix,
    p1_stiffness_matvec,
    p1_stiffness_norm_bound,
    read_mesh,
    structured_tetra_mesh,
    structured_triangle_mesh,
    tagged_facets,
)

MESHES = pathlib.Path(__file__).resolve().parents[2] / "meshes"

SPACES = {
    "tri": lambda: structured_triangle_mesh(5, 4, upper=(2.0, 1.0)),
    "tet": lambda: structured_tetra_mesh(3, 2, 2),
    "l_shape": lambda: read_mesh(MESHES / "l_shape.msh"),
    "cube": lambda: read_mesh(MESHES / "unit_cube.msh"),
}


# One space per module: compiled operators are cached per Space object (hashed by identity),
# so the tests below share them instead of compiling each again.
@pytest.fixture(params=sorted(SPACES), scope="module")
def space(request):
    return SPACES[request.param]()


def random_fields(space, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(space.num_nodes)
    kappa_node = np.exp(0.5 * rng.standard_normal(space.num_nodes))
    kappa_cell = np.exp(0.5 * rng.standard_normal(space.cells.shape[0]))
    return u, kappa_node, kappa_cell


def test_stiffness_is_symmetric_psd_with_constant_kernel(space):
    _, kappa, _ = random_fields(space)
    K = p1_stiffness_matrix(space, kappa).toarray()
    np.testing.assert_allclose(K, K.T, atol=1e-13 * np.abs(K).max())
    np.testing.assert_allclose(K @ np.ones(space.num_nodes), 0.0, atol=1e-12 * np.abs(K).max())
    if space.num_nodes <= 300:  # dense spectrum on the small meshes only
        eig = np.linalg.eigvalsh(K)
        assert eig[0] > -1e-11 * eig[-1]
        assert eig[1] > 1e-8 * eig[-1]  # connected mesh: only the constants in the kernel
    # positive semi-definite: K + eps I and the Dirichlet block K_ff have Cholesky factors
    np.linalg.cholesky(K + 1e-10 * np.abs(K).max() * np.eye(space.num_nodes))
    np.linalg.cholesky(p1_stiffness_matrix(space, kappa, dirichlet="boundary").toarray())


def test_matvec_equals_scipy_matrix(space):
    u, kappa_node, kappa_cell = random_fields(space)
    matvec = jax.jit(p1_stiffness_matvec(space))
    for kappa in (kappa_node, kappa_cell, 2.5):
        expected = p1_stiffness_matrix(space, kappa) @ u
        np.testing.assert_allclose(matvec(u, kappa), expected, rtol=1e-12, atol=1e-12)


def test_node_kappa_means_cell_mean(space):
    u, kappa_node, _ = random_fields(space)
    matvec = p1_stiffness_matvec(space, kappa_location="node")
    cell_matvec = p1_stiffness_matvec(space, kappa_location="cell")
    kappa_cell = kappa_node[space.cells].mean(axis=1)
    expected = cell_matvec(u, kappa_cell)
    # nodal kappa is folded into the edge weights (a different rounding order), so
    # entries that cancel to ~0 only agree to a few ulps of the largest entry
    atol = 1e-14 * float(jnp.abs(expected).max())
    np.testing.assert_allclose(matvec(u, kappa_node), expected, rtol=1e-13, atol=atol)


@pytest.mark.parametrize("dirichlet", ["boundary", "named", "indices"])
def test_dirichlet_restriction(space, dirichlet):
    u, kappa, _ = random_fields(space)
    names = sorted(k for k in space.boundary if k != "boundary")
    spec = {"boundary": "boundary", "named": names[:2], "indices": np.array([0, 3, 1])}[dirichlet]
    free = free_nodes(space, spec)
    fixed = dirichlet_nodes(space, spec)
    assert len(free) + len(fixed) == space.num_nodes
    assert np.intersect1d(free, fixed).size == 0
    matvec = p1_stiffness_matvec(space, dirichlet=spec)
    K = p1_stiffness_matrix(space, kappa)
    expected = (K @ np.where(np.isin(np.arange(space.num_nodes), free), u, 0.0))[free]
    np.testing.assert_allclose(matvec(u[free], kappa), expected, rtol=1e-12, atol=1e-12)
    Kff = p1_stiffness_matrix(space, kappa, dirichlet=spec)
    np.testing.assert_allclose(Kff @ u[free], expected, rtol=1e-12, atol=1e-12)


def test_adjoint_dot_product(space):
    u, kappa, _ = random_fields(space)
    v = np.random.default_rng(1).standard_normal(space.num_nodes)
    for spec in (None, "boundary"):
        free = free_nodes(space, spec)
        matvec = p1_stiffness_matvec(space, dirichlet=spec)
        apply = functools.partial(matvec, kappa=kappa)
        (transpose_v,) = jax.linear_transpose(apply, u[free])(v[free])
        ku = matvec(u[free], kappa)
        lhs = jnp.dot(ku, v[free])
        rhs = jnp.dot(u[free], transpose_v)
        scale = jnp.linalg.norm(ku) * jnp.linalg.norm(v[free])  # round-off of the dot products
        np.testing.assert_allclose(lhs, rhs, rtol=0, atol=1e-13 * scale)
        np.testing.assert_allclose(transpose_v, matvec(v[free], kappa), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("location", ["node", "cell"])
def test_kappa_vjp_against_central_differences(space, location):
    u, kappa_node, kappa_cell = random_fields(space)
    kappa = kappa_node if location == "node" else kappa_cell
    rng = np.random.default_rng(2)
    cotangent = rng.standard_normal(space.num_nodes)
    direction = rng.standard_normal(kappa.shape)
    matvec = p1_stiffness_matvec(space, kappa_location=location)
    _, vjp = jax.vjp(lambda k: matvec(u, k), kappa)
    (grad,) = vjp(cotangent)
    eps = 1e-6
    plus = np.dot(cotangent, matvec(u, kappa + eps * direction))
    minus = np.dot(cotangent, matvec(u, kappa - eps * direction))
    np.testing.assert_allclose(np.dot(grad, direction), (plus - minus) / (2 * eps), rtol=1e-7)
    # grad of log-kappa parameterisation goes through as well
    g = jax.grad(lambda m: jnp.dot(cotangent, matvec(u, jnp.exp(m))))(jnp.log(kappa))
    np.testing.assert_allclose(g, grad * kappa, rtol=1e-10, atol=1e-12)


def test_float32_and_float64(space):
    u, kappa, _ = random_fields(space)
    matvec = jax.jit(p1_stiffness_matvec(space))
    y64 = matvec(jnp.asarray(u, jnp.float64), jnp.asarray(kappa, jnp.float64))
    y32 = matvec(jnp.asarray(u, jnp.float32), jnp.asarray(kappa, jnp.float32))
    assert y64.dtype == jnp.float64 and y32.dtype == jnp.float32
    # float64 kappa with float32 state still gives the state's dtype
    assert matvec(jnp.asarray(u, jnp.float32), kappa).dtype == jnp.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5 * np.abs(y64).max())
    b32 = p1_load_vector(space, jnp.asarray(u, jnp.float32))
    assert b32.dtype == jnp.float32


def test_mass_matrices(space):
    measure = element_geometry(space).volumes.sum()
    M = p1_mass_matrix(space)
    lumped = p1_lumped_mass(space)
    assert lumped.shape == (space.num_nodes,) and np.all(lumped > 0)
    np.testing.assert_allclose(lumped, M @ np.ones(space.num_nodes), rtol=1e-13)
    np.testing.assert_allclose(lumped.sum(), measure, rtol=1e-13)
    assert np.linalg.eigvalsh(M.toarray())[0] > 0
    # mass of a linear function integrates it exactly: int x dx = 1^T M x
    x = space.points[:, 0]
    centroid_integral = (element_geometry(space).volumes * x[space.cells].mean(axis=1)).sum()
    np.testing.assert_allclose(np.ones(space.num_nodes) @ M @ x, centroid_integral, rtol=1e-12)
    # load vector of nodal values is M f, and accepts a callable
    np.testing.assert_allclose(p1_load_vector(space, x), M @ x, rtol=1e-12, atol=1e-15)
    b = p1_load_vector(space, lambda p: p[:, 0])
    np.testing.assert_allclose(b, M @ x, rtol=1e-12, atol=1e-15)
    free = free_nodes(space, "boundary")
    Md = p1_mass_matrix(space, dirichlet="boundary")
    np.testing.assert_allclose(Md.toarray(), M.toarray()[np.ix_(free, free)])


def test_norm_bound_is_an_upper_bound(space):
    _, kappa, _ = random_fields(space)
    K = p1_stiffness_matrix(space, kappa).toarray()
    lumped = p1_lumped_mass(space)
    scaled = K / np.sqrt(np.outer(lumped, lumped))
    for mass, matrix in ((None, K), (lumped, scaled)):
        exact = np.linalg.eigvalsh(matrix)[-1]
        bound = float(p1_stiffness_norm_bound(space, kappa, mass))
        assert exact <= bound <= 3.0 * exact


def test_heat_similarity_transform_is_symmetric(space):
    """M_L^{-1/2} K M_L^{-1/2} (Lanczos-ready heat operator) is symmetric, spectrum of M_L^-1 K."""
    _, kappa, _ = random_fields(space)
    if space.num_nodes > 300:
        pytest.skip("dense eigenvalues on the small meshes only")
    K = p1_stiffness_matrix(space, kappa).toarray()
    lumped = p1_lumped_mass(space)
    S = K / np.sqrt(np.outer(lumped, lumped))
    np.testing.assert_allclose(S, S.T, atol=1e-12 * np.abs(S).max())
    eig_general = np.sort(np.linalg.eigvals(K / lumped[:, None]).real)
    np.testing.assert_allclose(np.linalg.eigvalsh(S), eig_general, atol=1e-9 * eig_general[-1])


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


def test_wrong_kappa_shape_names_kappa():
    space = structured_triangle_mesh(3, 3)
    matvec = p1_stiffness_matvec(space)
    u = np.zeros(space.num_nodes)
    with pytest.raises(ValueError, match=r"kappa must have shape .*\(16,\).*\(18,\).*got \(7,\)"):
        matvec(u, np.ones(7))
    with pytest.raises(ValueError, match="kappa"):
        matvec(u, np.ones((16, 1)))
    with pytest.raises(ValueError, match=r"kappa must have shape \(num_cells,\)"):
        p1_stiffness_matvec(space, kappa_location="cell")(u, np.ones(16))
    with pytest.raises(ValueError, match="kappa"):
        p1_stiffness_matrix(space, np.ones(5))
    with pytest.raises(ValueError, match=r"u must have shape \(16,\)"):
        matvec(np.zeros(5), 1.0)
    with pytest.raises(ValueError, match=r"u must have shape \(4,\) \(free nodes\)"):
        p1_stiffness_matvec(space, dirichlet="boundary")(u, 1.0)


def test_bad_options_are_named():
    space = structured_triangle_mesh(3, 3)
    with pytest.raises(ValueError, match="kappa_location must be 'auto', 'node' or 'cell'"):
        p1_stiffness_matvec(space, kappa_location="edge")
    with pytest.raises(ValueError, match=r"unknown boundary name\(s\) \['inlet'\].*'left'"):
        p1_stiffness_matvec(space, dirichlet=["left", "inlet"])
    with pytest.raises(ValueError, match="node indices must lie in"):
        free_nodes(space, np.array([0, 99]))
    with pytest.raises(ValueError, match="dirichlet must be"):
        free_nodes(space, [0.5, 1.5])
    with pytest.raises(ValueError, match="f must have shape"):
        p1_load_vector(space, np.ones(3))
    with pytest.raises(TypeError, match="Space"):
        p1_stiffness_matvec(np.zeros((3, 2)))


def test_unsupported_space_and_ambiguous_kappa():
    from pdeinv.discretize import Space

    quads = Space(points=np.zeros((4, 2)), cells=np.array([[0, 1, 2, 3]]), cell_type="quad")
    with pytest.raises(ValueError, match="cell_type must be one of.*tetra.*triangle.*'quad'"):
        p1_stiffness_matvec(quads)
    # two triangles on 4 nodes would be unambiguous; 3 nodes and 3 cells are not
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    cells = np.array([[0, 1, 2], [1, 3, 2], [1, 4, 3], [0, 4, 3], [0, 2, 4]])
    ambiguous = Space(points=points, cells=cells, cell_type="triangle")
    with pytest.raises(ValueError, match="ambiguous; pass kappa_location"):
        p1_stiffness_matvec(ambiguous)
    degenerate = Space(
        points=np.array([[0.0, 0], [1, 0], [2, 0]]), cells=[[0, 1, 2]], cell_type="triangle"
    )
    with pytest.raises(ValueError, match="degenerate"):
        p1_lumped_mass(degenerate)


@pytest.mark.parametrize(
    "name, parts, measure",
    [
        ("unit_square", "boundary", 4.0),
        ("unit_square", ["left", "top"], 2.0),
        ("disk_with_hole", "outer", 2 * np.pi),
        ("disk_with_hole", "inner", 2 * np.pi * 0.3),
        ("unit_cube", "front", 1.0),
        ("unit_cube", "boundary", 6.0),
        ("l_shape", "reentrant", 2.0),
    ],
)
def test_boundary_integrals(name, parts, measure):
    space = read_mesh(MESHES / f"{name}.msh")
    B = p1_boundary_mass_matrix(space, parts)
    ones = np.ones(space.num_nodes)
    np.testing.assert_allclose(ones @ B @ ones, measure, rtol=2e-3)
    np.testing.assert_allclose(B.toarray(), B.toarray().T)
    b = p1_boundary_load(space, parts, 1.0)
    np.testing.assert_allclose(b, B @ ones, rtol=1e-12, atol=1e-15)
    # a linear g is integrated exactly: int_Gamma x ds
    x = space.points[:, 0]
    integral = p1_boundary_load(space, parts, x).sum()
    np.testing.assert_allclose(integral, ones @ B @ x, rtol=1e-12, atol=1e-12)
    outside = np.setdiff1d(np.arange(space.num_nodes), dirichlet_nodes(space, parts))
    assert np.all(np.asarray(b)[outside] == 0)


def test_tagged_facets_and_boundary_load_errors():
    space = structured_triangle_mesh(3, 2)
    facets = tagged_facets(space, "left")
    assert facets.shape == (2, 2)
    np.testing.assert_allclose(space.points[facets, 0], 0.0)
    with pytest.raises(ValueError, match=r"unknown boundary name\(s\) \['inlet'\]"):
        tagged_facets(space, ["inlet"])
    with pytest.raises(ValueError, match="g must be"):
        p1_boundary_load(space, "left", np.ones(3))


def test_vmap_over_states_and_vjp_batches():
    """The two-sided adjoint batches matvec VJPs over Krylov vectors: vmap must work."""
    space = structured_tetra_mesh(2, 2, 3)
    u, kappa, _ = random_fields(space)
    matvec = p1_stiffness_matvec(space, dirichlet="left")
    free = free_nodes(space, "left")
    states = np.stack([u[free], 2 * u[free] + 1, -u[free]])
    batched = jax.vmap(matvec, in_axes=(0, None))(states, kappa)
    for row, state in zip(batched, states, strict=True):
        np.testing.assert_allclose(row, matvec(state, kappa), rtol=1e-13, atol=1e-13)

    def kappa_vjp(state, cotangent):
        return jax.vjp(lambda k: matvec(state, k), kappa)[1](cotangent)[0]

    grads = jax.vmap(kappa_vjp)(states, states[::-1])
    np.testing.assert_allclose(grads[1], kappa_vjp(states[1], states[1]), rtol=1e-12)


@pytest.mark.parametrize("location", ["node", "cell"])
def test_vmap_and_grad_equal_scipy_assembly(space, location):
    """Batched matvecs and kappa gradients of the gather layout against assembled element data."""
    from pdeinv.discretize._fem import _local_stiffness

    spec = "boundary" if "boundary" in space.boundary else None
    free = free_nodes(space, spec)
    u, kappa_node, kappa_cell = random_fields(space, seed=3)
    kappa = kappa_node if location == "node" else kappa_cell
    matvec = jax.jit(p1_stiffness_matvec(space, kappa_location=location, dirichlet=spec))
    matrix = p1_stiffness_matrix(space, kappa, kappa_location=location, dirichlet=spec)
    rng = np.random.default_rng(4)
    states = rng.standard_normal((4, free.size))
    batched = jax.vmap(matvec, in_axes=(0, None))(states, kappa)
    expected = (matrix @ states.T).T
    np.testing.assert_allclose(batched, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    # d/dkappa_T <v, K u> = v_T . S_T u_T (zero-extended u, v), chained to nodes as a mean
    u_full, v_full = np.zeros(space.num_nodes), np.zeros(space.num_nodes)
    u_full[free], v_full[free] = states[0], states[1]
    local = _local_stiffness(space)
    cell_grad = np.einsum("ci,cij,cj->c", v_full[space.cells], local, u_full[space.cells])
    if location == "node":
        m = space.cells.shape[1]
        expected_grad = np.bincount(
            space.cells.ravel(), np.repeat(cell_grad / m, m), minlength=space.num_nodes
        )
    else:
        expected_grad = cell_grad
    grad = jax.grad(lambda k: jnp.dot(states[1], matvec(states[0], k)))(jnp.asarray(kappa))
    scale = np.abs(expected_grad).max()
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-11, atol=1e-12 * scale)
    grads = jax.vmap(jax.grad(lambda k, a, b: jnp.dot(b, matvec(a, k))), in_axes=(None, 0, 0))(
        jnp.asarray(kappa), states[:2], states[1:3]
    )
    np.testing.assert_allclose(grads[0], expected_grad, rtol=1e-11, atol=1e-12 * scale)
    # forward mode in kappa agrees with the gradient (custom JVP: element form for d kappa)
    direction = rng.standard_normal(np.shape(kappa))
    _, tangent = jax.jvp(lambda k: matvec(states[0], k), (jnp.asarray(kappa),), (direction,))
    np.testing.assert_allclose(
        jnp.dot(states[1], tangent), np.dot(expected_grad, direction), rtol=1e-10
    )

"""Model operators: symmetry, conservation, norm bounds, transposes, parameter derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdeinv.discretize import (
    Dirichlet,
    grid,
    matvec_to_sparse,
    p1_lumped_mass,
    structured_tetra_mesh,
    structured_triangle_mesh,
)
from pdeinv.models import (
    Model,
    advection_diffusion_fd,
    gaussian_bump,
    heat_fd,
    heat_p1,
    smooth_random_field,
    sum_of_sines,
    wave_fd,
)


def _rough(space, seed):
    return smooth_random_field(space, seed, length_scale=0.25, amplitude=0.5)


def _models():
    g2 = grid((6, 5))
    g3 = grid((4, 3, 3))
    tri = structured_triangle_mesh(5, 4)
    tet = structured_tetra_mesh(2, 2, 2)
    return {
        "heat-fd-neumann": heat_fd(g2, _rough(g2, 0), gaussian_bump(g2)),
        "heat-fd-3d-mixed": heat_fd(
            g3, _rough(g3, 1), gaussian_bump(g3), bc={"x": "dirichlet", "default": "periodic"}
        ),
        "heat-p1-neumann": heat_p1(tri, _rough(tri, 2), gaussian_bump(tri)),
        "heat-p1-dirichlet": heat_p1(tri, _rough(tri, 3), gaussian_bump(tri), dirichlet="top"),
        "heat-p1-tet": heat_p1(tet, _rough(tet, 4), gaussian_bump(tet), dirichlet="boundary"),
        "wave-div": wave_fd(g2, _rough(g2, 5), gaussian_bump(g2)),
        "wave-nondiv": wave_fd(g2, _rough(g2, 6), gaussian_bump(g2), form="nondivergence"),
        "advdiff-upwind": advection_diffusion_fd(
            g2, _rough(g2, 7), [1.0, -2.0], gaussian_bump(g2), bc="dirichlet", reaction=0.5
        ),
        "advdiff-central-field": advection_diffusion_fd(
            g2, _rough(g2, 8), jnp.ones((g2.num_nodes, 2)), gaussian_bump(g2), scheme="central"
        ),
    }


MODELS = _models()


def _matrix(model):
    return matvec_to_sparse(model.matvec, model.params, model.num_states).toarray()


@pytest.mark.parametrize("name", list(MODELS))
def test_norm_bound_and_symmetry_flag(name):
    model = MODELS[name]
    A = _matrix(model)
    assert float(model.norm_estimate(model.params)) >= np.linalg.norm(A, 2) * (1 - 1e-12)
    if model.symmetric:
        np.testing.assert_allclose(A, A.T, atol=1e-12 * abs(A).max())
        assert np.linalg.eigvalsh(A).max() <= 1e-10 * abs(A).max()
    else:
        assert abs(A - A.T).max() > 1e-6 * abs(A).max()


def test_neumann_heat_conserves_mass():
    A = _matrix(MODELS["heat-fd-neumann"])
    np.testing.assert_allclose(A.sum(axis=0), 0.0, atol=1e-12 * abs(A).max())
    # P1 in w = M^{1/2} u: total heat 1^T M u = (M^{1/2} 1)^T w is conserved.
    model = MODELS["heat-p1-neumann"]
    sqrt_mass = np.sqrt(p1_lumped_mass(model.space))
    A = _matrix(model)
    np.testing.assert_allclose(sqrt_mass @ A, 0.0, atol=1e-12 * abs(A).max())


SLOW_VJP = {"heat-fd-3d-mixed", "heat-p1-tet", "advdiff-central-field", "wave-nondiv"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_VJP else n for n in MODELS],
)
def test_adjoint_dot_product_and_parameter_vjp(name):
    model = MODELS[name]
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(keys[0], (model.num_states,))
    y = jax.random.normal(keys[1], (model.num_states,))

    @jax.jit
    def dots(x, y, params):
        (transpose_y,) = jax.linear_transpose(lambda v: model.matvec(v, params), x)(y)
        return jnp.vdot(model.matvec(x, params), y), jnp.vdot(x, transpose_y)

    lhs, rhs = dots(x, y, model.params)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)

    loss = jax.jit(lambda params: jnp.vdot(y, model.matvec(x, params)))
    grad = jax.grad(loss)(model.params)
    leaves, treedef = jax.tree_util.tree_flatten(model.params)
    direction = treedef.unflatten(
        [
            jax.random.normal(k, leaf.shape)
            for k, leaf in zip(keys[2 : 2 + len(leaves)], leaves, strict=True)
        ]
    )
    eps = 1e-6
    shifted = [
        jax.tree_util.tree_map(lambda p, d, s=s: p + s * eps * d, model.params, direction)
        for s in (1, -1)
    ]
    fd = (loss(shifted[0]) - loss(shifted[1])) / (2 * eps)
    directional = sum(
        jnp.vdot(g, d)
        for g, d in zip(
            jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(direction), strict=True
        )
    )
    np.testing.assert_allclose(directional, fd, rtol=1e-6)


@pytest.mark.parametrize("name", list(MODELS))
def test_observe_and_state_from_field_are_inverse(name):
    model = MODELS[name]
    field = model.observe(model.u0)
    assert field.shape == (model.space.num_nodes,)
    np.testing.assert_allclose(model.state_from_field(field)[: model.num_states], model.u0)
    batch = jnp.stack([model.u0, 2 * model.u0])
    assert model.observe(batch).shape == (2, model.space.num_nodes)
    assert isinstance(model, Model) and model.rhs(0.0, model.u0, model.params).shape == (
        model.num_states,
    )


def test_heat_p1_dirichlet_nodes_observed_as_zero():
    model = MODELS["heat-p1-dirichlet"]
    top = model.space.boundary["top"]
    assert model.num_states == model.space.num_nodes - top.size
    np.testing.assert_array_equal(model.observe(model.u0)[top], 0.0)


def test_wave_state_layout():
    g = grid((4, 4))
    v0 = sum_of_sines(g, ((1, 2),))
    model = wave_fd(g, 0.0, gaussian_bump(g), v0)
    np.testing.assert_allclose(model.u0[g.num_nodes :], v0)
    # u' = v: the first block of A [u; v] is v.
    np.testing.assert_allclose(model.matvec(model.u0, model.params)[: g.num_nodes], v0)


def test_builder_errors():
    g = grid((4, 4))
    with pytest.raises(ValueError, match="u0"):
        heat_fd(g, 0.0, jnp.ones(5))
    with pytest.raises(ValueError, match="form"):
        wave_fd(g, 0.0, jnp.ones(16), form="second-order")
    with pytest.raises(ValueError, match="velocity"):
        advection_diffusion_fd(g, 0.0, [1.0, 2.0, 3.0], jnp.ones(16))
    with pytest.raises(ValueError, match="log_kappa"):
        heat_fd(g, jnp.ones(3), jnp.ones(16))
    with pytest.raises(ValueError, match="dirichlet"):
        heat_p1(structured_triangle_mesh(2, 2), 0.0, 1.0, dirichlet="nowhere")
    model = heat_fd(g, 0.0, lambda x: x[:, 0], bc={"x": Dirichlet(1.0), "y": "neumann"})
    assert model.source is not None and model.u0.shape == (16,)


def test_initial_conditions():
    g = grid((20, 10), upper=(2.0, 1.0))
    bump = gaussian_bump(g, width=0.2)
    assert bump.shape == (200,) and float(bump.max()) <= 1.0
    np.testing.assert_allclose(g.points[int(jnp.argmax(bump))], [0.95, 0.45])
    sines = sum_of_sines(g, ((1, 1), (2, 1)), amplitudes=[1.0, 0.5])
    assert sines.shape == (200,) and float(jnp.abs(sines).max()) <= 1.5
    a = smooth_random_field(g, 0, length_scale=0.3, mean=1.0)
    b = smooth_random_field(g, jax.random.PRNGKey(0), length_scale=0.3, mean=1.0)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, smooth_random_field(g, 1, length_scale=0.3, mean=1.0))
    # Smooth: neighbour differences are O(h / length_scale) (unit amplitude).
    field = g.to_grid(np.asarray(smooth_random_field(g, 2, length_scale=0.5)))
    assert np.abs(np.diff(field, axis=0)).max() < 3 * 0.1 / 0.5
    mesh = structured_triangle_mesh(4, 4)
    assert smooth_random_field(mesh, 3).shape == (mesh.num_nodes,)
    with pytest.raises(ValueError, match="width"):
        gaussian_bump(g, width=0.0)
    with pytest.raises(ValueError, match="length_scale"):
        smooth_random_field(g, 0, length_scale=-1.0)

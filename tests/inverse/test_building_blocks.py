"""Fields, geometry, parameterisations, observations, regularisers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdeinv.discretize import Space
from pdeinv.inverse import (
    BUILTIN_FIELDS,
    CoarseGrid,
    FieldSpec,
    FullField,
    H1Seminorm,
    NodalField,
    ParameterMap,
    PiecewiseConstant,
    PointSensors,
    Tikhonov,
    TotalVariation,
    add_noise,
    evaluate_expression,
    grid_space,
    make_field,
    sensor_layout,
)


def triangle_mesh(n=6):
    grid = grid_space((n, n), (0.0, 0.0), (1.0, 1.0))
    from pdeinv.inverse._geometry import simplex_split

    return Space(grid.points, simplex_split(grid), "triangle")


@pytest.fixture(params=["grid", "mesh"])
def space(request):
    return (
        grid_space((7, 5), (0.0, 0.0), (2.0, 1.0)) if request.param == "grid" else triangle_mesh()
    )


def test_expression_evaluates_math():
    pts = np.array([[0.0, 0.0], [0.5, 1.0]])
    got = evaluate_expression("1 + x*y + sin(pi*x) + (y > 0.5)", pts)
    np.testing.assert_allclose(got, [1.0, 1.0 + 0.5 + 1.0 + 1.0])


@pytest.mark.parametrize(
    "bad",
    ["__import__('os').system('true')", "x.real", "open('f')", "x[0]", "lambda: 1", "'a'"],
)
def test_expression_rejects_code(bad):
    with pytest.raises(ValueError, match="not allowed|cannot parse"):
        evaluate_expression(bad, np.zeros((2, 2)))


def test_builtin_fields_are_positive_and_seeded(space):
    for kind in BUILTIN_FIELDS:
        f = make_field(kind, space.points, FieldSpec(), seed=3)
        assert f.shape == (space.num_nodes,)
        assert np.all(np.isfinite(f))
        if kind != "bumps":
            assert np.all(f > 0)
    a = make_field("blobs", space.points, seed=1)
    np.testing.assert_array_equal(a, make_field("blobs", space.points, seed=1))
    assert not np.allclose(a, make_field("blobs", space.points, seed=2))
    inc = make_field("inclusion", space.points, FieldSpec(contrast=3.0, smooth_amplitude=0.0))
    assert inc.max() > 2.0 and inc.min() == pytest.approx(1.0, abs=1e-3)


def test_linear_interpolation_and_gradient_exact_for_linear_fields(space):
    f = 1.0 + 2.0 * space.points[:, 0] - 3.0 * space.points[:, 1]
    query = np.array([[0.33, 0.41], [0.9, 0.77], [0.05, 0.5]])
    sensors = PointSensors.at(space, query, "linear")
    np.testing.assert_allclose(sensors(jnp.asarray(f)), 1 + 2 * query[:, 0] - 3 * query[:, 1])
    nearest = PointSensors.at(space, query, "nearest")
    assert nearest.index.shape == (3, 1)
    area = np.prod(space.points.max(0) - space.points.min(0))
    h1 = H1Seminorm(space)(jnp.asarray(f))
    assert float(h1) == pytest.approx(0.5 * 13.0 * area)
    tv = TotalVariation(space, 1e-8)(jnp.asarray(f))
    assert float(tv) == pytest.approx(np.sqrt(13.0) * area, rel=1e-6)
    tik = Tikhonov(space, mean=1.0)(jnp.ones(space.num_nodes) * 3.0)
    assert float(tik) == pytest.approx(0.5 * 4.0 * area)


def test_h1_has_no_checkerboard_null_space():
    space = grid_space((6, 6), (0, 0), (1, 1))
    i, j = np.unravel_index(np.arange(36), (6, 6))
    checker = jnp.asarray((-1.0) ** (i + j))
    assert float(H1Seminorm(space)(checker)) > 1.0


def test_parameterizations(space):
    coarse = CoarseGrid.build(space, (3, 3))
    assert coarse.num_params == 9
    lin = lambda p: 0.5 + p[:, 0] - 0.25 * p[:, 1]  # noqa: E731
    np.testing.assert_allclose(
        coarse.field(jnp.asarray(lin(coarse.coarse.points))), lin(space.points)
    )
    regions = PiecewiseConstant.boxes(space, (2, 2))
    assert regions.num_params == 4
    field = regions.field(jnp.arange(4.0))
    assert set(np.unique(field).tolist()) == {0.0, 1.0, 2.0, 3.0}
    with pytest.raises(ValueError, match="regions"):
        PiecewiseConstant.boxes(space, (2,))

    pmap = ParameterMap(
        NodalField(space.num_nodes), "log_kappa", {"other": 1.0}, (("velocity", 2),)
    )
    m = jnp.asarray(pmap.initial(0.5, {"velocity": [1.0, -1.0]}))
    params = pmap.to_params(m)
    assert params["other"] == 1.0
    np.testing.assert_allclose(params["log_kappa"], 0.5)
    np.testing.assert_allclose(params["velocity"], [1.0, -1.0])
    assert pmap.size == space.num_nodes + 2


def test_sensor_layout_and_full_field(space):
    pts = sensor_layout(space, 16, "grid")
    assert pts.shape == (16, 2)
    rnd = sensor_layout(space, 10, "random", seed=4)
    np.testing.assert_array_equal(rnd, sensor_layout(space, 10, "random", seed=4))
    full = FullField(space)
    assert full.num_observations == space.num_nodes


def test_noise_is_seeded_at_relative_level():
    clean = np.sin(np.linspace(0, 10, 20000))
    data, sigma = add_noise(clean, 0.05, seed=1)
    assert sigma == pytest.approx(0.05 * np.sqrt(np.mean(clean**2)))
    assert np.std(data - clean) == pytest.approx(sigma, rel=0.03)
    np.testing.assert_array_equal(data, add_noise(clean, 0.05, seed=1)[0])
    with pytest.raises(ValueError, match="noise.level"):
        add_noise(clean, -1.0, seed=0)


def test_regularizer_gradients_match_finite_differences(space):
    rng = np.random.default_rng(0)
    m = jnp.asarray(rng.standard_normal(space.num_nodes))
    d = jnp.asarray(rng.standard_normal(space.num_nodes))
    for reg in (Tikhonov(space, 0.3), H1Seminorm(space), TotalVariation(space, 0.1)):
        g = jax.grad(reg)(m)
        eps = 1e-6
        fd = (reg(m + eps * d) - reg(m - eps * d)) / (2 * eps)
        assert float(g @ d) == pytest.approx(float(fd), rel=1e-6)

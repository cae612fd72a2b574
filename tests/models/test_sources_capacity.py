"""Heat with capacity, point/volume sources switched in time, and boundary data (grid and P1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from pdeinv.discretize import grid, matvec_to_sparse, structured_triangle_mesh
from pdeinv.models import (
    PointSource,
    VolumeSource,
    heat_fd,
    heat_p1,
    simulate,
    simulate_sources,
)
from pdeinv.models._sources import source_loads

SOLVER = {"tol": 1e-10, "krylov_dim": 30}


def dense(model):
    params = model.params
    A = matvec_to_sparse(model.matvec, params, model.num_states).toarray()
    return A, params


def reference(model, times, pieces):
    """Exact affine solution by scipy.linalg.expm of the augmented matrix per interval.

    ``pieces``: list of (start, stop, b) with b the source of the interval (state coords).
    """
    A, _ = dense(model)
    n = A.shape[0]
    u = np.asarray(model.u0, dtype=float)
    out = []
    for a, b_end, b in pieces:
        aug = np.zeros((n + 1, n + 1))
        aug[:n, :n] = A
        aug[:n, n] = b
        for t in times:
            if a < t <= b_end or (a == 0 and t == 0):
                out.append((scipy.linalg.expm((t - a) * aug) @ np.append(u, 1.0))[:n])
        u = (scipy.linalg.expm((b_end - a) * aug) @ np.append(u, 1.0))[:n]
    return np.array(out)


def test_capacity_rescales_time_and_keeps_the_operator_symmetric():
    g = grid((6, 5))
    log_kappa = np.log(1.0 + g.points[:, 0])
    u0 = np.sin(3 * g.points[:, 0]) + g.points[:, 1]
    plain = heat_fd(g, log_kappa, u0, bc="dirichlet")
    slow = heat_fd(g, log_kappa, u0, bc="dirichlet", capacity=4.0)
    u_plain = plain.observe(simulate(plain, plain.params, jnp.array([0.05]), **SOLVER))
    u_slow = slow.observe(simulate(slow, slow.params, jnp.array([0.2]), **SOLVER))
    np.testing.assert_allclose(u_slow, u_plain, rtol=1e-8, atol=1e-10)

    varying = heat_fd(g, log_kappa, u0, capacity=lambda x: 1.0 + x[:, 0] * x[:, 1])
    A, params = dense(varying)
    np.testing.assert_allclose(A, A.T, atol=1e-12)
    assert varying.symmetric
    assert float(varying.norm_estimate(params)) >= np.abs(np.linalg.eigvalsh(A)).max()
    np.testing.assert_allclose(varying.observe(varying.u0), u0)
    with pytest.raises(ValueError, match="capacity must be finite and > 0"):
        heat_fd(g, log_kappa, u0, capacity=-1.0)


@pytest.mark.slow
def test_p1_capacity_and_sources_match_the_dense_reference():
    mesh = structured_triangle_mesh(5, 4)
    u0 = np.cos(np.pi * mesh.points[:, 0])
    capacity = 1.0 + mesh.points[:, 1]
    model = heat_p1(
        mesh, 0.2 * mesh.points[:, 0], u0, boundary={"right": {"dirichlet": 0.5}},
        capacity=capacity,
        sources=[PointSource((0.3, 0.55), 2.0), PointSource((0.7, 0.2), -1.0, 0.05, 0.15)],
    )  # fmt: skip
    A, params = dense(model)
    np.testing.assert_allclose(A, A.T, atol=1e-12)
    always = np.asarray(model.source(params))
    switched = np.asarray(model.timed_sources[0].vector(params))
    times = np.array([0.03, 0.05, 0.1, 0.2])
    expected = reference(
        model, times, [(0, 0.05, always), (0.05, 0.15, always + switched), (0.15, 0.2, always)]
    )
    states = simulate_sources(model, params, times, **SOLVER)
    np.testing.assert_allclose(states, expected, rtol=1e-7, atol=1e-9)
    u = model.observe(states)
    np.testing.assert_allclose(u[:, mesh.boundary["right"]], 0.5)  # Dirichlet data kept


def test_source_switched_on_and_off_matches_dense_reference():
    # homogeneous conditions: before and after the pulse the fast homogeneous path runs
    g = grid((6, 5))
    u0 = np.sin(np.pi * g.points[:, 0])
    model = heat_fd(
        g, 0.2 * g.points[:, 1], u0, bc="dirichlet",
        sources=[PointSource((0.3, 0.5), -2.0, 0.02, 0.05),
                 VolumeSource(lambda x: x[:, 0], 4.0, 0.02, 0.05)],
    )  # fmt: skip
    params = model.params
    assert model.source is None and len(model.timed_sources) == 1
    pulse = np.asarray(model.timed_sources[0].vector(params))
    zero = np.zeros_like(pulse)
    times = np.array([0.01, 0.03, 0.05, 0.08])
    expected = reference(model, times, [(0, 0.02, zero), (0.02, 0.05, pulse), (0.05, 0.08, zero)])
    states = simulate_sources(model, params, times, **SOLVER)
    np.testing.assert_allclose(states, expected, rtol=1e-7, atol=1e-9)
    y = jnp.zeros(model.num_states)  # diffrax's vector field switches at the same times
    for t, b in ((0.01, zero), (0.02, pulse), (0.049, pulse), (0.05, zero)):
        np.testing.assert_allclose(model.rhs(t, y, params), b, atol=1e-12)


def test_volume_and_point_loads_integrate_to_the_rate():
    mesh = structured_triangle_mesh(4, 3, upper=(2.0, 1.0))
    loads = source_loads(
        mesh, [VolumeSource(lambda x: x[:, 0], 3.0), PointSource((1.5, 0.5), -2.0, 1.0)],
        kind="load",
    )  # fmt: skip
    assert set(loads) == {(0.0, None), (1.0, None)}
    # int 3 x dx over [0, 2] x [0, 1] = 6 (lumped quadrature is exact for linear fields)
    np.testing.assert_allclose(loads[0.0, None].sum(), 6.0, rtol=1e-12)
    np.testing.assert_allclose(loads[1.0, None].sum(), -2.0, rtol=1e-12)
    g = grid((4, 4), upper=(2.0, 1.0))
    density = source_loads(g, [VolumeSource(2.0, 0.5)], kind="density")[0.0, None]
    np.testing.assert_allclose(density, 1.0)


@pytest.mark.slow
def test_timed_point_source_on_a_grid_matches_dense_reference_and_rhs():
    g = grid((7, 6))
    model = heat_fd(
        g, 0.0, 0.0, bc={"left": {"dirichlet": 1.0}, "default": "neumann"},
        sources=[PointSource((0.5, 0.5), -3.0, start=0.02, stop=0.06),
                 VolumeSource(lambda x: x[:, 1], 0.5, stop=0.04)],
    )  # fmt: skip
    params = model.params
    boundary = np.asarray(model.source(params))
    by_start = {ts.start: np.asarray(ts.vector(params)) for ts in model.timed_sources}
    point, volume = by_start[0.02], by_start[0.0]
    pieces = [
        (0.0, 0.02, boundary + volume),
        (0.02, 0.04, boundary + volume + point),
        (0.04, 0.06, boundary + point),
        (0.06, 0.1, boundary),
    ]
    times = np.array([0.0, 0.01, 0.04, 0.05, 0.1])
    states = simulate_sources(model, params, times, **SOLVER)
    np.testing.assert_allclose(states, reference(model, times, pieces), rtol=1e-7, atol=1e-9)
    # the vector field seen by diffrax switches at the same times
    y = jnp.zeros(model.num_states)
    for t, b in ((0.01, pieces[0][2]), (0.03, pieces[1][2]), (0.07, boundary)):
        np.testing.assert_allclose(model.rhs(t, y, params), b, atol=1e-12)
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda t: simulate_sources(model, params, t, **SOLVER))(jnp.asarray(times))


@pytest.mark.slow
def test_gradient_through_switch_times_matches_finite_differences():
    g = grid((6, 6))
    model = heat_fd(
        g, 0.0, 0.0, bc="dirichlet", capacity=2.0,
        sources=[PointSource((0.4, 0.6), 5.0, start=0.0, stop=0.03)],
    )  # fmt: skip
    times = np.array([0.02, 0.05])
    direction = jnp.asarray(np.cos(3 * g.points[:, 0]))

    @jax.jit
    def loss(log_kappa):
        states = simulate_sources(model, {"log_kappa": log_kappa}, times, **SOLVER)
        return jnp.sum(model.observe(states) ** 2)

    m0 = jnp.asarray(0.1 * g.points[:, 1])
    grad = jax.jit(jax.grad(loss))(m0)
    eps = 1e-5
    fd = (loss(m0 + eps * direction) - loss(m0 - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(grad @ direction, fd, rtol=1e-5)


def test_neumann_and_dirichlet_data_give_the_linear_steady_state():
    # u'' = 0, du/dn = g at x = 0 (outward normal -x), u(1) = c  =>  u = c + g (1 - x).
    # Both discretisations reproduce linear functions exactly, so the exact solution is a
    # discrete steady state: A u + b = 0 (time integration with b is tested above).
    g_flux, c = 0.7, 0.5
    g = grid((6, 3))
    fd = heat_fd(
        g, np.log(2.0), 0.0, capacity=3.0,
        bc={"left": {"neumann": g_flux}, "right": {"dirichlet": c}, "default": "neumann"},
    )  # fmt: skip
    u = c + g_flux * (1 - g.points[:, 0])
    np.testing.assert_allclose(fd.rhs(0.0, fd.state_from_field(u), fd.params), 0.0, atol=1e-12)
    assert np.abs(fd.rhs(0.0, fd.state_from_field(u + 0.1), fd.params)).max() > 0.1

    mesh = structured_triangle_mesh(5, 3)
    p1 = heat_p1(
        mesh, np.log(2.0), 0.0, capacity=3.0,
        boundary={"left": {"neumann": g_flux}, "right": {"dirichlet": c}},
    )  # fmt: skip
    u = c + g_flux * (1 - mesh.points[:, 0])
    w = p1.state_from_field(u)
    np.testing.assert_allclose(p1.rhs(0.0, w, p1.params), 0.0, atol=1e-12)
    np.testing.assert_allclose(p1.observe(w), u, atol=1e-14)  # Dirichlet values kept
    assert np.abs(p1.rhs(0.0, p1.state_from_field(u + 0.1), p1.params)).max() > 0.1


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"location": (0.5, 0.5), "rate": float("inf")}, "rate must be a finite number"),
        ({"location": (0.5, 0.5), "rate": 1.0, "start": 0.2, "stop": 0.1}, "stop must be > start"),
        ({"location": (0.5, 0.5), "rate": 1.0, "start": -1.0}, "start must be >= 0"),
    ],
)
def test_bad_sources(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        PointSource(**kwargs)


def test_source_outside_the_domain_is_named():
    with pytest.raises(ValueError, match=r"sources\[1\]: location .* outside the grid box"):
        heat_fd(grid((4, 4)), 0.0, 0.0, sources=[PointSource((0.5, 0.5), 1.0),
                                                PointSource((2.0, 0.5), 1.0)])  # fmt: skip

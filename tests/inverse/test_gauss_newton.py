"""Gauss–Newton Hessian–vector products of the inverse problems against dense references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_problem import rk4

from pdeinv.discretize import grid
from pdeinv.inverse import (
    FullField,
    H1Seminorm,
    InverseProblem,
    MultiExperimentProblem,
    NodalField,
    ParameterMap,
    PointSensors,
    grid_space,
    make_field,
)
from pdeinv.models import Model, heat_fd

N = 10
DT = 2e-3  # RK4 is stable for kappa <= 3.4 on this grid


def tiny_heat(n=N):
    """1-D heat ``u_t = (kappa u_x)_x`` on ``n`` cells, no-flux ends."""
    space = grid_space((n,), (0.5 / n,), (1 - 0.5 / n,))
    h = 1.0 / n

    def matvec(u, params):
        kappa = jnp.exp(params["log_kappa"])
        face = 0.5 * (kappa[1:] + kappa[:-1]) * (u[1:] - u[:-1]) / h**2
        return jnp.pad(face, (0, 1)) - jnp.pad(face, (1, 0))

    u0 = jnp.asarray(np.cos(3 * np.pi * space.points[:, 0]) + 0.5)
    return Model("heat", space, matvec, {"log_kappa": jnp.zeros(n)}, u0, symmetric=True)


rk4_forward = rk4(DT)


@functools.lru_cache(maxsize=8)  # one problem (and its compiled functions) per module
def tiny_problem(*, weight=0.3, sensors=True, at_truth=False, forward=rk4_forward):
    model = tiny_heat()
    space = model.space
    true = {"log_kappa": jnp.asarray(0.8 * np.exp(-30 * (space.points[:, 0] - 0.6) ** 2))}
    times = np.array([0.01, 0.02])
    obs = PointSensors.at(space, space.points[::2] + 0.02) if sensors else FullField(space)
    clean = np.asarray(obs(forward(model, true, times)))
    rng = np.random.default_rng(1)
    data = clean if at_truth else clean + 0.05 * rng.standard_normal(clean.shape)
    sigma = 0.05 * (1.0 + rng.random(clean.shape))  # one sigma per datum
    pmap = ParameterMap(NodalField(space.num_nodes), "log_kappa", dict(model.params))
    problem = InverseProblem(
        model, times, pmap, obs, data, sigma, H1Seminorm(space), weight, forward=forward
    )
    return problem, np.asarray(true["log_kappa"])


def dense_gauss_newton(problem, m, weight):
    """``JᵀΓ⁻¹J + w ∇²R`` from the dense reverse-mode Jacobian of the predictions."""
    jac = jax.jit(jax.jacrev(problem.predict))(m).reshape(-1, m.size)
    inv_var = 1.0 / np.broadcast_to(np.asarray(problem.sigma), problem.data.shape).reshape(-1) ** 2
    hessian = jax.jit(jax.hessian(problem.regularization))(m)
    return jac.T @ (inv_var[:, None] * jac) + weight * hessian


def test_gauss_newton_hvp_matches_dense_jacobian():
    problem, _ = tiny_problem()
    m = jnp.asarray(0.2 * np.sin(np.arange(N)))
    dm = jnp.asarray(np.cos(1.7 * np.arange(N)))
    dense = dense_gauss_newton(problem, m, problem.weight)
    hv = problem.gauss_newton_hvp(m, dm)
    np.testing.assert_allclose(hv, dense @ dm, rtol=1e-10, atol=1e-10 * np.abs(dense @ dm).max())
    # A batch of directions is one linearisation, vmapped; each row as alone.
    batch = jnp.stack([dm, jnp.roll(dm, 3), jnp.ones_like(dm)])
    np.testing.assert_allclose(
        problem.gauss_newton_hvp(m, batch), batch @ dense.T, rtol=1e-10, atol=1e-9
    )
    # The misfit part alone, and the weight override.
    misfit_only = dense - problem.weight * jax.hessian(problem.regularization)(m)
    np.testing.assert_allclose(
        problem.misfit_gauss_newton_hvp(m, batch), batch @ misfit_only.T, rtol=1e-10, atol=1e-9
    )
    np.testing.assert_allclose(
        problem.gauss_newton_hvp(m, dm, weight=0.0), misfit_only @ dm, rtol=1e-10, atol=1e-9
    )


def test_operator_value_and_gradient_match_the_objective():
    problem, _ = tiny_problem()
    m = jnp.asarray(0.1 * np.cos(np.arange(N)))
    operator = problem.gauss_newton_operator(m)
    value, misfit = problem.objective(m)
    grad = jax.jit(jax.grad(lambda x: problem.objective(x)[0]))(m)
    assert float(operator.objective) == pytest.approx(float(value), rel=1e-12)
    assert float(operator.misfit) == pytest.approx(float(misfit), rel=1e-12)
    np.testing.assert_allclose(operator.gradient, grad, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="weight"):
        problem.gauss_newton_operator(m, weight=-1.0)
    with pytest.raises(ValueError, match="batch"):
        operator.apply(jnp.zeros((1, 2, N)))


@pytest.mark.slow  # the linear toy below checks the same identity in the default suite
def test_gauss_newton_is_the_misfit_hessian_at_zero_residual():
    # Noise-free data at the true parameters: the second-order residual term vanishes.
    problem, truth = tiny_problem(at_truth=True, weight=0.0)
    m = jnp.asarray(truth)
    exact = jax.jit(jax.hessian(problem.misfit))(m)
    gn = problem.misfit_gauss_newton_hvp(m, jnp.eye(m.size))
    np.testing.assert_allclose(gn, exact, rtol=1e-8, atol=1e-8 * np.abs(exact).max())


def test_gauss_newton_is_the_misfit_hessian_of_a_linear_model():
    # Predictions linear in m: the misfit is quadratic and JᵀΓ⁻¹J its exact Hessian,
    # with the noise (per-datum sigma) and a nonzero residual.
    rng = np.random.default_rng(0)
    matrix = jnp.asarray(rng.standard_normal((3, N, N)))

    def linear_forward(model, params, times, **_):
        return jnp.einsum("tij,j->ti", matrix[: len(times)], params["log_kappa"])

    problem, _ = tiny_problem(forward=linear_forward, weight=0.7)
    m = jnp.asarray(rng.standard_normal(N))
    exact = jax.hessian(lambda x: problem.objective(x)[0])(m)
    np.testing.assert_allclose(problem.gauss_newton_hvp(m, jnp.eye(N)), exact, rtol=1e-10,
                               atol=1e-10 * np.abs(exact).max())  # fmt: skip


def test_multi_experiment_residual_and_solve_costs():
    # Runs without forward mode: the residual the Gauss-Newton methods differentiate.
    space = grid((4, 4))
    model = heat_fd(space, 0.0, make_field("bumps", space.points))
    initial = np.stack([make_field("bumps", space.points), np.ones(space.num_nodes)])
    obs = PointSensors.at(space, space.points[::3])
    pmap = ParameterMap(NodalField(space.num_nodes), "log_kappa", dict(model.params))
    data = np.full((2, 2, obs.num_observations), 0.3)
    sigma = np.linspace(0.05, 0.2, obs.num_observations)  # per sensor, broadcast
    problem = MultiExperimentProblem(
        model, np.array([0.01, 0.02]), pmap, obs, initial, data, sigma, H1Seminorm(space), 0.2
    )
    m = jnp.asarray(0.1 * np.sin(np.arange(space.num_nodes)))
    residual, misfit = jax.jit(lambda m: (problem.weighted_residual(m), problem.misfit(m)))(m)
    assert residual.shape == data.shape
    # The misfit sums its own (masked, batched) residual: the two must agree.
    assert float(misfit) == pytest.approx(0.5 * float(jnp.sum(residual**2)), rel=1e-12)
    costs = problem.pde_solve_costs()
    assert costs["value_and_grad"] == {"forward": 2, "adjoint": 2}
    assert costs["hvp"] == {"tangent": 2, "adjoint": 2}


@pytest.mark.slow  # ~38 s; the RK4 tests check the operator, tests/expm the JVP itself
def test_multi_experiment_gauss_newton_is_the_hessian_at_zero_residual():
    # Through pdeinv.expm_multiply (forward mode): data = predictions at m, so the
    # Gauss-Newton Hessian is the Hessian of the objective; the reference is a central
    # difference of the reverse-mode gradient (no forward mode in it).
    space = grid((5, 5))
    model = heat_fd(space, 0.0, make_field("bumps", space.points))
    initial = np.stack(
        [make_field("bumps", space.points), 1.0 + np.cos(2 * np.pi * space.points[:, 0])]
    )
    times = np.array([0.01, 0.02])
    obs = PointSensors.at(space, space.points[::3])
    pmap = ParameterMap(NodalField(space.num_nodes), "log_kappa", dict(model.params))
    m = jnp.asarray(0.2 * np.sin(np.arange(space.num_nodes)))
    dm = jnp.asarray(np.cos(np.arange(space.num_nodes)))

    def build(data):
        return MultiExperimentProblem(
            model, times, pmap, obs, initial, data, 0.1, H1Seminorm(space), 0.2,
            solver={"tol": 1e-12},
        )  # fmt: skip

    shape = (2, len(times), obs.num_observations)
    problem = build(np.asarray(build(np.zeros(shape)).predict(m)))
    operator = problem.gauss_newton_operator(m)
    grad = jax.jit(jax.grad(lambda x: problem.objective(x)[0]))
    eps = 1e-4
    reference = (grad(m + eps * dm) - grad(m - eps * dm)) / (2 * eps)
    hv = operator.apply(dm)
    np.testing.assert_allclose(hv, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())
    np.testing.assert_allclose(operator.gradient, grad(m), rtol=1e-8, atol=1e-10)
    # A batch is the same products, vmapped.
    batch = jnp.stack([dm, -2.0 * dm])
    np.testing.assert_allclose(operator.apply(batch)[1], -2.0 * hv, rtol=1e-10, atol=1e-12)
    assert problem.pde_solve_costs()["hvp"] == {"tangent": 2, "adjoint": 2}


def expm_problem():
    """``tiny_problem`` solved by ``expm_multiply`` (several Krylov steps) at tol 1e-10."""
    import dataclasses

    from pdeinv.inverse._problem import _default_forward

    problem, _ = tiny_problem()
    return dataclasses.replace(
        problem, forward=_default_forward, solver={"tol": 1e-10, "krylov_dim": 6}
    )

"""Objective, optimisers and the Morozov sweep on a small heat problem with a dense forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdeinv.inverse import (
    LBFGSB,
    Adam,
    FullField,
    H1Seminorm,
    InverseProblem,
    NodalField,
    ParameterMap,
    PointSensors,
    add_noise,
    fit,
    fit_morozov,
    grid_space,
    make_field,
    minimize,
    relative_error,
)
from pdeinv.models import Model

N = 8


def heat_model(n=N):
    space = grid_space((n, n), (0.5 / n, 0.5 / n), (1 - 0.5 / n, 1 - 0.5 / n))
    h = 1.0 / n

    def matvec(u, params):
        kappa = jnp.exp(params["log_kappa"]).reshape(n, n)
        U = u.reshape(n, n)
        Up = jnp.pad(U, 1, mode="edge")
        Kp = jnp.pad(kappa, 1, mode="edge")
        out = jnp.zeros_like(U)
        for axis in (0, 1):
            for shift in (1, -1):
                nb = jnp.roll(Up, -shift, axis=axis)[1:-1, 1:-1]
                kn = jnp.roll(Kp, -shift, axis=axis)[1:-1, 1:-1]
                out = out + 0.5 * (kappa + kn) * (nb - U)
        return out.reshape(-1) / h**2

    u0 = jnp.asarray(make_field("bumps", space.points))
    params = {"log_kappa": jnp.zeros(n * n)}
    return Model("heat", space, matvec, params, u0, symmetric=True)


DT = 1e-4  # RK4 step: stable for kappa <= e^3 on this grid (the bounds below)


def rk4(dt):
    """Fixed-step RK4 ``forward(model, params, times)``: a cheap, differentiable stand-in
    for expm_multiply on small problems (``dt`` must resolve the stiffest mode)."""

    def forward(model, params, times, **_):
        f = lambda u: model.matvec(u, params)  # noqa: E731

        def step(u, _):
            k1 = f(u)
            k2 = f(u + 0.5 * dt * k1)
            k3 = f(u + 0.5 * dt * k2)
            k4 = f(u + dt * k3)
            return u + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

        states, u, t_now = [], model.u0, 0.0
        for t in np.asarray(times, dtype=float):
            u, _ = jax.lax.scan(step, u, None, length=int(round((t - t_now) / dt)))
            states.append(u)
            t_now = t
        return jnp.stack(states)

    return forward


dense_forward = rk4(DT)


def make_problem(level=0.0, weight=1e-4, sensors=False):
    model = heat_model()
    space = model.space
    true_kappa = make_field("inclusion", space.points)
    true = {"log_kappa": jnp.log(jnp.asarray(true_kappa))}
    times = np.array([0.005, 0.01, 0.02])
    obs = (
        PointSensors.at(space, space.points[::3] + 0.01, "linear") if sensors else FullField(space)
    )
    clean = np.asarray(obs(dense_forward(model, true, times)))
    data, sigma = add_noise(clean, level, seed=0)
    if level == 0.0:
        sigma = 1e-2 * sigma
    pmap = ParameterMap(NodalField(space.num_nodes), "log_kappa", dict(model.params))
    problem = InverseProblem(
        model, times, pmap, obs, data, sigma, H1Seminorm(space), weight, forward=dense_forward
    )
    return problem, true_kappa, pmap.initial(0.0)


def test_objective_gradient_matches_finite_differences():
    problem, _, x0 = make_problem(level=0.01, weight=1e-2, sensors=True)
    x = jnp.asarray(x0) + 0.1 * jnp.sin(jnp.arange(x0.size))
    d = jnp.cos(3.0 * jnp.arange(x0.size))
    f = jax.jit(lambda m: problem.objective(m)[0])
    g = jax.jit(jax.grad(f))(x)
    eps = 1e-5
    fd = (f(x + eps * d) - f(x - eps * d)) / (2 * eps)
    assert float(g @ d) == pytest.approx(float(fd), rel=1e-6)


def test_lbfgsb_recovers_kappa_and_records_history():
    problem, true_kappa, x0 = make_problem(level=0.0, weight=1e-5)
    seen = []
    result = fit(problem, x0, LBFGSB(max_iter=150, bounds=(-3.0, 3.0)), callback=seen.append)
    kappa = np.exp(np.asarray(problem.parameters.field(jnp.asarray(result.x))))
    initial_error = relative_error(np.ones_like(true_kappa), true_kappa)
    assert relative_error(kappa, true_kappa) < 0.25 * initial_error
    assert result.iterations > 5
    assert len(result.history["objective"]) == result.iterations + 1 == len(seen)
    assert seen[0].iteration == 0 and seen[-1].iteration == result.iterations
    assert result.history["objective"][-1] < 1e-2 * result.history["objective"][0]
    assert np.all(np.isfinite(result.history["grad_norm"]))


def test_morozov_stops_at_noise_level():
    problem, _, x0 = make_problem(level=0.02, weight=0.0)
    outcome = fit_morozov(
        problem, x0, [1.0, 1e-1, 1e-2, 1e-3, 1e-4], LBFGSB(max_iter=60, bounds=(-3.0, 3.0))
    )
    assert outcome.target == pytest.approx(problem.num_observations / 2)
    assert outcome.misfits[-1] <= outcome.target or len(outcome.weights) == 5
    # Larger weights fit worse: the misfit falls along the sweep.
    assert np.all(np.diff(outcome.misfits) <= 1e-9 * outcome.misfits[0])
    assert outcome.weight == outcome.weights[-1]


def test_minimize_quadratic_lbfgsb_bounds_and_adam():
    target = jnp.array([1.0, -2.0, 3.0])

    def objective(x):
        value = 0.5 * jnp.sum((x - target) ** 2)
        return value, value

    res = minimize(objective, jnp.zeros(3), LBFGSB(gtol=1e-10))
    np.testing.assert_allclose(res.x, target, atol=1e-6)
    assert res.success and res.status == 0
    res = minimize(objective, jnp.zeros(3), LBFGSB(bounds=(-1.0, 1.0)))
    np.testing.assert_allclose(res.x, [1.0, -1.0, 1.0], atol=1e-8)
    res = minimize(objective, jnp.zeros(3), Adam(learning_rate=0.1, max_iter=2000, gtol=1e-6))
    np.testing.assert_allclose(res.x, target, atol=1e-4)
    assert res.status == 0
    with pytest.raises(TypeError, match="LBFGSB or Adam"):
        minimize(objective, jnp.zeros(3), "sgd")


def test_problem_validates_inputs():
    problem, _, _ = make_problem()
    with pytest.raises(ValueError, match="data must have shape"):
        InverseProblem(
            problem.model, problem.times, problem.parameters, problem.observation,
            problem.data[:, :3], 1.0, problem.regularizer,
        )  # fmt: skip
    with pytest.raises(ValueError, match="times must be finite, > 0 and increasing"):
        InverseProblem(
            problem.model, [0.02, 0.01, 0.03], problem.parameters, problem.observation,
            problem.data, 1.0, problem.regularizer,
        )  # fmt: skip

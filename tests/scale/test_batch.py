"""Batched (vmap) expm_multiply and several experiments: equal to separate solves."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdeinv import inverse, models
from pdeinv.discretize import grid
from pdeinv.expm import expm_multiply, expm_multiply_info
from pdeinv.inverse._experiments import MultiExperimentProblem, simulate_experiments

TOL = 1e-10
TIMES = jnp.asarray([0.002, 0.01, 0.03])


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture(scope="module")
def heat():
    space = grid((10, 10))
    x, y = space.points.T
    model = models.heat_fd(space, 0.4 * np.sin(3 * x) * np.cos(2 * y), 0.0)
    rng = np.random.default_rng(0)
    # Experiments that need very different step counts: a constant (in the kernel of
    # the Neumann operator: one step), a smooth bump, rough noise, a scaled copy.
    initial = np.stack(
        [
            np.ones(space.num_nodes),
            np.asarray(models.gaussian_bump(space, width=0.2)),
            rng.standard_normal(space.num_nodes),
            1e3 * rng.standard_normal(space.num_nodes),
        ]
    )
    return model, jnp.asarray(initial)


def solve(model, u0, params):
    return expm_multiply_info(
        model.matvec, u0, params, TIMES, tol=TOL, method="lanczos", krylov_dim=12
    )


def test_vmap_keeps_per_experiment_step_control(heat):
    model, initial = heat
    ys, stats = jax.vmap(lambda u0: solve(model, u0, model.params))(initial)
    separate = [solve(model, u0, model.params) for u0 in initial]
    steps = [int(s.num_steps) for _, s in separate]
    assert len(set(steps)) >= 2, steps  # the experiments really differ
    np.testing.assert_array_equal(np.asarray(stats.num_steps), steps)
    np.testing.assert_array_equal(
        np.asarray(stats.num_rejected), [int(s.num_rejected) for _, s in separate]
    )
    for e, (y, _) in enumerate(separate):
        assert rel(ys[e], y) <= 1e-12


def test_vmap_gradients_equal_separate(heat):
    model, initial = heat
    weights = jnp.asarray(np.random.default_rng(1).standard_normal((len(TIMES), model.num_states)))

    def loss(params, u0):
        y = expm_multiply(model.matvec, u0, params, TIMES, tol=TOL, method="lanczos", krylov_dim=12)
        return jnp.sum(weights * y) + 0.5 * jnp.sum(y**2)

    def total(params, initial):
        return jnp.sum(jax.vmap(loss, in_axes=(None, 0))(params, initial))

    g_params, g_initial = jax.grad(total, argnums=(0, 1))(model.params, initial)
    separate = [jax.grad(loss, argnums=(0, 1))(model.params, u0) for u0 in initial]
    g_sum = sum(np.asarray(g["log_kappa"]) for g, _ in separate)
    assert rel(g_params["log_kappa"], g_sum) <= 1e-12
    for e, (_, g_u0) in enumerate(separate):
        assert rel(g_initial[e], g_u0) <= 1e-12


def test_batch_size_chunks_equal_vmap(heat):
    model, initial = heat
    full = simulate_experiments(
        model, model.params, TIMES, initial, batch_size=len(initial), tol=TOL
    )
    chunked = simulate_experiments(model, model.params, TIMES, initial, batch_size=3, tol=TOL)
    assert full.shape == (len(initial), len(TIMES), model.num_states)
    assert rel(chunked, full) <= 1e-13
    with pytest.raises(ValueError, match="initial_states"):
        simulate_experiments(model, model.params, TIMES, initial[:, :5])


def _forward_from(u0, model, params, times, **solver):
    return models.simulate(model, params, times, u0=u0, **solver)


def _problems(model, initial, sigma):
    space = model.space
    params = inverse.ParameterMap(
        inverse.NodalField(space.num_nodes), "log_kappa", dict(model.params)
    )
    observation = inverse.PointSensors.at(space, inverse.sensor_layout(space, 9))
    times = np.asarray(TIMES)
    data = np.random.default_rng(2).standard_normal((len(initial), len(times), 9))
    common = dict(
        times=times, parameters=params, observation=observation,
        regularizer=inverse.make_regularizer("h1", space), weight=0.3, solver={"tol": TOL},
    )  # fmt: skip
    multi = MultiExperimentProblem(
        model=model, initial_states=initial, data=data, sigma=sigma, **common
    )
    # One model for all (the compiled solver is cached per matvec); the initial state
    # of experiment e enters through the forward function.
    singles = [
        inverse.InverseProblem(
            model=model,
            data=data[e],
            sigma=np.broadcast_to(sigma, data.shape)[e],
            forward=functools.partial(_forward_from, u0),
            **common,
        )  # fmt: skip
        for e, u0 in enumerate(initial)
    ]
    return multi, singles


@pytest.mark.slow  # ~26 s; test_vmap_gradients_equal_separate covers batching by default
def test_objective_sums_single_experiments(heat):
    sigma = np.array([0.5, 1.0, 2.0])[:, None]  # per time, broadcast over experiments
    model, initial = heat
    multi, singles = _problems(model, initial, sigma)
    x = jnp.asarray(0.1 * np.cos(np.arange(model.space.num_nodes)))
    (value, misfit), grad = jax.value_and_grad(multi.objective, has_aux=True)(x)
    misfits = [p.misfit(x) for p in singles]
    assert abs(misfit - sum(misfits)) <= 1e-12 * abs(misfit)
    reg = 0.3 * singles[0].regularization(x)
    assert abs(value - (sum(misfits) + reg)) <= 1e-12 * abs(value)
    grads = [jax.grad(lambda x, p=p: p.misfit(x))(x) for p in singles]
    grad_ref = sum(grads) + jax.grad(lambda x: 0.3 * singles[0].regularization(x))(x)
    assert rel(grad, grad_ref) <= 1e-12
    assert multi.predict(x).shape == (len(initial), len(TIMES), 9)


# ~18 s: fit() hands any problem's objective to minimize(); by default the
# multi-experiment objective and gradient are checked against a dense reference
# in tests/scale/test_float32.py::test_multi_experiment_objective_in_float32 and
# fit() on a problem in tests/inverse/test_problem.py.
@pytest.mark.slow
def test_fit_accepts_multi_experiment_problem(heat):
    model, initial = heat
    multi, _ = _problems(model, initial, 0.5)
    x0 = jnp.zeros(model.space.num_nodes)
    result = inverse.fit(multi, x0, inverse.LBFGSB(max_iter=3))
    assert result.fun < float(multi.objective(x0)[0])


def test_bad_shapes_name_the_argument(heat):
    model, initial = heat
    multi, _ = _problems(model, initial, 0.5)
    assert multi.device_layout()["experiments_per_device"] == [len(initial)]
    fields = {f.name: getattr(multi, f.name) for f in multi.__dataclass_fields__.values()}
    with pytest.raises(ValueError, match="data must have shape"):
        MultiExperimentProblem(**{**fields, "data": multi.data[:2]})
    with pytest.raises(ValueError, match="initial_states"):
        MultiExperimentProblem(**{**fields, "initial_states": initial[:, :-1]})
    with pytest.raises(ValueError, match="sigma"):
        MultiExperimentProblem(**{**fields, "sigma": np.ones(5)})
    with pytest.raises(ValueError, match="batch_size"):
        MultiExperimentProblem(**{**fields, "batch_size": 0})

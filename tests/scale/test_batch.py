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
from pdeinv.krylov._batching import per_element

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


# ~25 s under load; by default the sum over a batch with shared params is
# test_gradient_of_a_batch_with_shared_params_sums_the_per_element_gradients in
# tests/expm/test_forward_mode.py, and per-experiment values, gradients and step
# counts are test_vmap_equals_loop_for_value_gradient_and_jvp.
@pytest.mark.slow
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


def _smooth_states(space, count, dtype):
    """``count`` initial states of growing roughness; row ``e`` depends on ``e`` only."""
    x, y = space.points.T
    rows = [
        np.cos((1 + e % 5) * np.pi * x) * np.cos((e // 5 % 4) * np.pi * y)
        + 0.1 * (e % 3) * np.random.default_rng(e).standard_normal(space.num_nodes)
        for e in range(count)
    ]
    return jnp.asarray(np.stack(rows), dtype)


def _value_gradient_tangent(model, dtype, batching):
    """``one(u0) -> (loss, d loss/d log_kappa, JVP of the states, (steps, rejected))``."""
    tol = 1e-10 if dtype == jnp.float64 else 1e-5
    params = jax.tree.map(lambda p: jnp.asarray(p, dtype), model.params)
    direction = jax.tree.map(lambda p: jnp.cos(jnp.arange(p.size, dtype=dtype)), params)
    times = TIMES.astype(dtype)
    weights = jnp.sin(jnp.arange(len(TIMES) * model.num_states, dtype=dtype)).reshape(3, -1)

    def one(u0):
        def solve(params):
            return expm_multiply_info(
                model.matvec, u0, params, times, tol=tol, method="lanczos", krylov_dim=12,
                checkpoint="states", batching=batching,
            )  # fmt: skip

        def loss(params):
            y, stats = solve(params)
            return jnp.sum(weights * y) + 0.5 * jnp.sum(y**2), (stats.num_steps, stats.num_rejected)

        (value, steps), grad = jax.value_and_grad(loss, has_aux=True)(params)
        _, tangent = jax.jvp(lambda p: solve(p)[0], (params,), (direction,))
        return value, grad["log_kappa"], tangent, steps

    return one


_LOOPED = {}  # (dtype, experiment) -> results of the single-experiment function


@pytest.mark.parametrize(
    "size, dtype, batching",
    [
        # A batch of 1 is the degenerate map (~14 s more compilation): slow;
        # 3 and 64 cover the rule in the default run.
        pytest.param(1, jnp.float64, "auto", marks=pytest.mark.slow),
        (3, jnp.float64, "auto"),
        (64, jnp.float64, "auto"),
        # ~10 s each (two more compilations): float32, and the lockstep rule that
        # GPUs run (on CPU it must give the same numbers).
        pytest.param(3, jnp.float32, "auto", marks=pytest.mark.slow),
        pytest.param(3, jnp.float64, "lockstep", marks=pytest.mark.slow),
    ],
)
def test_vmap_equals_loop_for_value_gradient_and_jvp(heat, size, dtype, batching):
    # One jitted vmap of value, parameter gradient, JVP and step count against the
    # same single-experiment function (compiled once per dtype) called in a loop.
    model, _ = heat
    initial = _smooth_states(model.space, size, dtype)
    batched = jax.jit(jax.vmap(_value_gradient_tangent(model, dtype, batching)))(initial)
    single = None
    for e in range(size):
        if (dtype, e) not in _LOOPED:
            single = single or jax.jit(_value_gradient_tangent(model, dtype, "auto"))
            _LOOPED[dtype, e] = single(initial[e])
    # "auto" runs each element's own program: the same numbers as the loop.  Lockstep
    # runs the batched kernels (other reduction orders), so a step-size decision at
    # the tolerance's edge may flip (measured: 3 rejected steps against 2 for one
    # element); the results then agree to the tolerance (1e-10), not to rounding.
    exact = batching != "lockstep"
    close = (1e-12 if exact else 1e-8) if dtype == jnp.float64 else 1e-5
    for e in range(size):
        value, grad, tangent, steps = jax.tree.map(lambda x, e=e: x[e], batched)
        reference = _LOOPED[dtype, e]
        if exact:
            assert [int(s) for s in steps] == [int(s) for s in reference[3]]  # accepted, rejected
        assert abs(value - reference[0]) <= close * abs(reference[0])
        assert rel(grad, reference[1]) <= close
        assert rel(tangent, reference[2]) <= close
    if size > 3:  # the experiments really differ
        assert len({int(_LOOPED[dtype, e][3][0]) for e in range(size)}) >= 2


def _count_iterations(batching):
    """``f(n) -> n`` by a while loop of ``n`` iterations, and a counter of body calls."""
    calls = []

    def f(n):
        def body(i):
            jax.debug.callback(lambda i: calls.append(np.size(i)), i)
            return i + 1

        return jax.lax.while_loop(lambda i: i < n, body, jnp.zeros_like(n))

    return per_element(f, batching), calls


@pytest.mark.parametrize(
    "batching, expected_calls", [("auto", 6), ("sequential", 6), ("lockstep", 9)]
)
def test_batching_policy_runs_elements_one_after_another_on_cpu(batching, expected_calls):
    # Loops of 1, 2 and 3 iterations: one after another the body runs 1 + 2 + 3
    # times; in lockstep 3 times for all 3 elements (the finished ones masked; the
    # callback itself is called once per element).
    f, calls = _count_iterations(batching)
    out = jax.jit(jax.vmap(f))(jnp.arange(1, 4))
    jax.effects_barrier()
    np.testing.assert_array_equal(out, [1, 2, 3])
    assert jax.default_backend() != "cpu" or len(calls) == expected_calls
    # Forward mode keeps the policy (Hessian-vector products differentiate the sweeps).
    g = per_element(lambda x: x * jnp.sin(x), batching)
    xs = jnp.linspace(0.1, 1.0, 5)
    tangents = jax.vmap(lambda x: jax.jvp(g, (x,), (jnp.ones_like(x),))[1])(xs)
    np.testing.assert_allclose(tangents, jnp.sin(xs) + xs * jnp.cos(xs), rtol=1e-12)
    _, lin = jax.linearize(lambda x: jax.vmap(g)(x), xs)
    np.testing.assert_allclose(lin(jnp.ones_like(xs)), tangents, rtol=1e-12)


def test_batching_policy_is_checked(heat):
    model, initial = heat
    with pytest.raises(ValueError, match="batching must be one of"):
        expm_multiply(model.matvec, initial[0], model.params, TIMES, batching="loop")


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


@pytest.mark.slow  # ~26 s; test_vmap_equals_loop_for_value_gradient_and_jvp covers batching
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

"""Reference diffrax solves: values against dense exponentials, gradients against
finite differences, matrix-free implicit solves, step statistics, failures."""

import dataclasses

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl
from jax.extend import core as jcore

from pdeinv import reference
from pdeinv.reference import _toy

TIMES = np.array([0.0, 0.01, 0.05])


def _dense_states(model, params, times):
    A = _toy.dense_operator(model, params)
    u0 = np.asarray(model.u0)
    if model.source is None:
        return np.stack([sl.expm(t * A) @ u0 for t in times])
    n = u0.size
    b = np.asarray(model.source(params))
    A_aug = np.zeros((n + 1, n + 1))
    A_aug[:n, :n] = A
    A_aug[:n, n] = b
    v = np.append(u0, 1.0)
    return np.stack([(sl.expm(t * A_aug) @ v)[:n] for t in times])


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


MODELS = {
    "heat": lambda: _toy.heat_1d(24),
    "advection_diffusion": lambda: _toy.advection_diffusion_1d(24),
    "affine_heat": lambda: _toy.heat_1d(24, source=True),
}


EXPLICIT_CASES = [
    ("heat", "tsit5"),
    ("advection_diffusion", "tsit5"),
    ("affine_heat", "tsit5"),
    ("heat", "dopri5"),
    ("advection_diffusion", "dopri8"),
    pytest.param("heat", "dopri8", marks=pytest.mark.slow),
    pytest.param("affine_heat", "dopri5", marks=pytest.mark.slow),
    pytest.param("advection_diffusion", "dopri5", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, solver", EXPLICIT_CASES)
def test_explicit_adaptive_matches_dense_expm(name, solver):
    model = MODELS[name]()
    solution = reference.solve(model, model.params, TIMES, solver=solver, rtol=1e-11, atol=1e-13)
    states = solution.states
    assert isinstance(solution, reference.ReferenceSolution) and int(solution.result) == 0
    assert states.shape == (TIMES.size, model.num_states)
    assert _rel(states, _dense_states(model, model.params, TIMES)) < 1e-8


@pytest.mark.parametrize(
    "name", ["advection_diffusion", pytest.param("heat", marks=pytest.mark.slow)]
)
def test_implicit_matches_dense_expm(name):
    model = MODELS[name]()
    states = reference.solve(
        model, model.params, TIMES, solver="kvaerno5", rtol=1e-10, atol=1e-12
    ).states
    assert _rel(states, _dense_states(model, model.params, TIMES)) < 1e-7


@pytest.mark.parametrize(
    "name", ["advection_diffusion", pytest.param("heat", marks=pytest.mark.slow), "affine_heat"]
)
def test_fixed_step_at_stability_limit(name):
    model = MODELS[name]()
    solution = reference.solve(model, model.params, TIMES, solver="tsit5", fixed_step=True)
    assert int(solution.result) == 0
    dt = float(reference.stability_step(model, model.params, "tsit5"))
    assert int(solution.num_steps) == int(np.ceil(TIMES[-1] / dt))
    # Stable (no blow-up) and reasonably accurate at the stability limit.
    assert _rel(solution.states, _dense_states(model, model.params, TIMES)) < 1e-4


def _stability_radius(solver, angles):
    """Smallest |z| along the given rays where |R(z)| > 1 + 1e-6 (bisection-free scan)."""
    tab = {"tsit5": dfx.Tsit5, "dopri5": dfx.Dopri5, "dopri8": dfx.Dopri8}[solver].tableau
    s = len(tab.c) + 1
    A = np.zeros((s, s))
    for i, row in enumerate(tab.a_lower):
        A[i + 1, : len(row)] = row
    b = np.asarray(tab.b_sol)
    radii = np.linspace(1e-3, 8.0, 8000)
    # R(z) = 1 + z b^T (I - z A)^{-1} 1 with A strictly lower triangular: the
    # Neumann series terminates, R(z) = 1 + sum_k z^(k+1) b^T A^k 1.
    coeffs, power = [], np.ones(s)
    for _ in range(s):
        coeffs.append(b @ power)
        power = A @ power
    out = []
    for angle in angles:
        z = radii * np.exp(1j * angle)
        R = 1 + sum(c * z ** (k + 1) for k, c in enumerate(coeffs))
        out.append(radii[np.argmax(np.abs(R) > 1 + 1e-6)])
    return min(out)


@pytest.mark.parametrize("solver", ["tsit5", "dopri5", "dopri8"])
def test_stability_constants_match_butcher_tableau(solver):
    constants = reference.STABILITY_CONSTANTS[solver]
    assert _stability_radius(solver, [np.pi]) == pytest.approx(constants["real"], abs=2e-3)
    half_disc = _stability_radius(solver, np.linspace(np.pi / 2, np.pi, 31))
    assert half_disc == pytest.approx(constants["half_disc"], abs=2e-3)


@pytest.mark.parametrize(
    "solver, fixed_step", [("tsit5", False), ("dopri8", False), ("dopri5", True)]
)
def test_rhs_evaluation_count_matches_counting_matvec(solver, fixed_step):
    model = _toy.heat_1d(16)
    times = np.array([0.02, 0.05])  # rtol 1e-8 here gives rejected steps too

    def run(m):
        return reference.solve(
            m, m.params, times, solver=solver, rtol=1e-8, atol=1e-10, fixed_step=fixed_step
        ).states

    solution = reference.solve(
        model, model.params, times, solver=solver, rtol=1e-8, atol=1e-10, fixed_step=fixed_step
    )
    assert reference.count_matvecs(run, model) == int(solution.num_rhs_evaluations)


def _avals(jaxpr, acc):
    for eqn in jaxpr.eqns:
        acc.update(tuple(getattr(v.aval, "shape", ())) for v in eqn.outvars)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                if isinstance(sub, jcore.ClosedJaxpr):
                    _avals(sub.jaxpr, acc)
                elif isinstance(sub, jcore.Jaxpr):
                    _avals(sub, acc)
    return acc


def _square_shapes(closed_jaxpr, n):
    """Shapes of intermediate values with at least two axes of length >= n."""
    return sorted(s for s in _avals(closed_jaxpr.jaxpr, set()) if sum(d >= n for d in s) >= 2)


def test_implicit_solver_is_matrix_free():
    n = 37  # distinctive size; Krylov buffers are (n, restart + 1) with restart 30 < n
    model = _toy.heat_1d(n)
    times = np.array([0.02, 0.05])

    def loss(params):
        return jnp.sum(
            reference.solve(model, params, times, solver="kvaerno5", rtol=1e-8, atol=1e-10).states
            ** 2
        )

    forward = jax.make_jaxpr(lambda p: reference.solve(model, p, times, solver="kvaerno5").states)
    assert _square_shapes(forward(model.params), n) == []
    assert _square_shapes(jax.make_jaxpr(jax.grad(loss))(model.params), n) == []

    # Positive control: diffrax's default Kvaerno5 (LU on the assembled Jacobian)
    # does show an (n, n) array, so the check above can fail.
    def dense_default(p):
        return dfx.diffeqsolve(
            dfx.ODETerm(lambda t, y, args: model.rhs(t, y, args)),
            dfx.Kvaerno5(),
            0.0,
            0.05,
            None,
            model.u0,
            p,
            stepsize_controller=dfx.PIDController(rtol=1e-6, atol=1e-8),
        ).ys

    assert (n, n) in _square_shapes(jax.make_jaxpr(dense_default)(model.params), n)


def test_implicit_dense_adjoint_is_refused():
    model = _toy.heat_1d(8)
    with pytest.raises(ValueError, match="backsolve"):
        reference.solve(
            model, model.params, TIMES, solver="kvaerno5", adjoint="recursive_checkpoint"
        )


def _directional_fd(f, params, direction, eps=1e-6):
    plus = jax.tree.map(lambda p, d: p + eps * d, params, direction)
    minus = jax.tree.map(lambda p, d: p - eps * d, params, direction)
    return (f(plus) - f(minus)) / (2 * eps)


def _random_like(tree, seed=0):
    leaves, treedef = jax.tree.flatten(tree)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [jnp.asarray(rng.normal(size=np.shape(x))) for x in leaves])


@pytest.mark.parametrize(
    "name, solver, adjoint, fixed_step",
    [
        # ~7 s; affine_heat below takes the same solver and adjoint (plus a source)
        pytest.param("heat", "tsit5", "recursive_checkpoint", False, marks=pytest.mark.slow),
        pytest.param("heat", "tsit5", "recursive_checkpoint", True, marks=pytest.mark.slow),
        ("advection_diffusion", "dopri5", "backsolve", False),
        pytest.param(
            "affine_heat", "dopri8", "recursive_checkpoint", False, marks=pytest.mark.slow
        ),
        ("affine_heat", "tsit5", "recursive_checkpoint", False),
    ],
)
def test_gradient_matches_finite_differences(name, solver, adjoint, fixed_step):
    model = MODELS[name]()
    times = np.array([0.01, 0.03])
    target = 0.5 * _dense_states(model, model.params, times)

    def loss(params):
        states = reference.solve(
            model,
            params,
            times,
            solver=solver,
            adjoint=adjoint,
            fixed_step=fixed_step,
            rtol=1e-10,
            atol=1e-12,
        ).states
        return 0.5 * jnp.sum((states - target) ** 2)

    grad = jax.jit(jax.grad(loss))(model.params)
    direction = _random_like(model.params)
    pairs = zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True)
    exact = sum(float(jnp.vdot(g, d)) for g, d in pairs)
    fd = float(_directional_fd(jax.jit(loss), model.params, direction))
    assert exact == pytest.approx(fd, rel=1e-5)


def test_gradient_with_respect_to_initial_state():
    model = _toy.advection_diffusion_1d(16)
    times = np.array([0.02])

    def loss(u0):
        return jnp.sum(reference.solve(model, model.params, times, u0=u0).states ** 2)

    grad = jax.grad(loss)(model.u0)
    A = _toy.dense_operator(model, model.params)
    E = sl.expm(times[0] * A)
    expected = 2 * E.T @ (E @ np.asarray(model.u0))
    assert _rel(grad, expected) < 1e-8


@pytest.mark.slow
def test_implicit_backsolve_gradient_matches_finite_differences():
    model = _toy.heat_1d(16)
    times = np.array([0.02, 0.05])

    def loss(params):
        return jnp.sum(
            reference.solve(model, params, times, solver="kvaerno5", rtol=1e-9, atol=1e-11).states
            ** 2
        )

    grad = jax.jit(jax.grad(loss))(model.params)
    direction = _random_like(model.params)
    exact = float(jnp.vdot(grad["log_kappa"], direction["log_kappa"]))
    fd = float(_directional_fd(jax.jit(loss), model.params, direction))
    assert exact == pytest.approx(fd, rel=1e-4)


# ~8 s; by default test_explicit_adaptive_matches_dense_expm checks reference.solve and
# tests/models/test_models_forward.py::test_forward_solution_matches_diffrax checks
# simulate (expm_multiply), each against an independent reference, on the same models
@pytest.mark.slow
def test_agrees_with_expm_multiply():
    from pdeinv.models import simulate

    pytest.importorskip("pdeinv.expm._expm")
    for name in ["advection_diffusion", "affine_heat"]:
        model = MODELS[name]()
        times = np.array([0.01, 0.05])
        ours = reference.solve(
            model, model.params, times, solver="dopri8", rtol=1e-12, atol=1e-14
        ).states
        krylov = simulate(model, model.params, times, tol=1e-11)
        assert _rel(ours, krylov) < 1e-8, name


def test_max_steps_is_reported_and_raised():
    model = _toy.heat_1d(16)
    solution = reference.solve(model, model.params, TIMES, max_steps=3, throw=False)
    assert int(solution.result) != 0
    assert "maximum number" in reference.describe_result(solution.result).lower()
    with pytest.raises(reference.ReferenceSolveError, match="maximum number"):
        reference.solve(model, model.params, TIMES, max_steps=3)
    with pytest.raises(Exception, match="max_steps"):
        jax.jit(lambda p: reference.solve(model, p, TIMES, max_steps=3).states)(model.params)


def test_non_finite_state_is_a_failure():
    model = _toy.heat_1d(16)
    bad = {"log_kappa": model.params["log_kappa"].at[3].set(jnp.nan)}
    solution = reference.solve(model, bad, TIMES, fixed_step=False, max_steps=50, throw=False)
    assert int(solution.result) != 0
    with pytest.raises(reference.ReferenceSolveError):
        reference.solve(model, bad, TIMES, max_steps=50)


def test_time_zero_only():
    model = _toy.heat_1d(8)
    states = reference.solve(model, model.params, np.array([0.0, 0.0])).states
    np.testing.assert_array_equal(np.asarray(states), np.stack([model.u0, model.u0]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"solver": "euler"}, "solver must be one of"),
        ({"adjoint": "magic"}, "adjoint must be one of"),
        ({"solver": "kvaerno5", "fixed_step": True}, "fixed_step"),
        ({"rtol": 0.0}, "rtol"),
        ({"max_steps": 0}, "max_steps"),
        ({"times": np.array([0.1, 0.05])}, "non-decreasing"),
        ({"times": np.array([-0.1])}, ">= 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    model = _toy.heat_1d(8)
    times = kwargs.pop("times", TIMES)
    with pytest.raises(ValueError, match=match):
        reference.solve(model, model.params, times, **kwargs)


def test_stability_step_uses_half_disc_for_nonsymmetric():
    model = _toy.advection_diffusion_1d(16)
    sym = dataclasses.replace(model, symmetric=True)
    ratio = reference.stability_step(model, model.params) / reference.stability_step(
        sym, model.params
    )
    c = reference.STABILITY_CONSTANTS["tsit5"]
    assert float(ratio) == pytest.approx(c["half_disc"] / c["real"])

"""Steihaug CG on analytic quadratics, Newton–CG on Rosenbrock (with bounds), failed trial
points, interrupts, PDE-solve counting, a Gauss–Newton fit, and newton_cg through the CLI."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from test_gauss_newton import N, tiny_problem

from pdeinv.inverse import LBFGSB, CurvaturePairs, NewtonCG, fit, minimize, steihaug_cg


def quadratic(h):
    h = np.asarray(h, dtype=float)
    return lambda v: h @ v


def test_steihaug_solves_a_positive_definite_system():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 6))
    h = a @ a.T + 0.5 * np.eye(6)
    g = rng.standard_normal(6)
    out = steihaug_cg(quadratic(h), g, rtol=1e-12, max_iter=50)
    assert out.reason == "converged" and out.iterations <= 6 + 2
    np.testing.assert_allclose(out.step, -np.linalg.solve(h, g), rtol=1e-9)
    # A loose tolerance stops early with the residual it promised.
    loose = steihaug_cg(quadratic(h), g, rtol=0.5, max_iter=50)
    assert loose.iterations < out.iterations
    assert np.linalg.norm(h @ loose.step + g) <= 0.5 * np.linalg.norm(g) + 1e-12


def test_preconditioned_steihaug_needs_fewer_products():
    # A badly scaled diagonal-plus-low-rank matrix: Jacobi preconditioning clusters it.
    rng = np.random.default_rng(1)
    scale = np.logspace(0, 4, 40)
    u = rng.standard_normal((40, 2))
    h = np.diag(scale) + np.sqrt(scale)[:, None] * (u @ u.T) * np.sqrt(scale)[None, :]
    g = rng.standard_normal(40)
    plain = steihaug_cg(quadratic(h), g, rtol=1e-10, max_iter=200)
    jacobi = steihaug_cg(quadratic(h), g, rtol=1e-10, max_iter=200,
                         precondition=lambda r: r / np.diag(h))  # fmt: skip
    assert jacobi.reason == "converged" and jacobi.iterations < plain.iterations / 3
    np.testing.assert_allclose(jacobi.step, -np.linalg.solve(h, g), rtol=1e-7)


def test_recycled_curvature_pairs_precondition_the_next_system():
    # The pairs of one full CG run span the space: their L-BFGS inverse is H^-1
    # exactly on it, and the next system (same H) converges in one product.
    rng = np.random.default_rng(2)
    a = rng.standard_normal((8, 8))
    h = a @ a.T + 0.1 * np.eye(8)
    pairs = []
    first = steihaug_cg(quadratic(h), rng.standard_normal(8), rtol=1e-13, max_iter=50, pairs=pairs)
    assert first.reason == "converged" and len(pairs) == first.iterations
    memory = CurvaturePairs(memory=first.iterations)
    memory.extend(pairs)
    g = rng.standard_normal(8)
    np.testing.assert_allclose(memory(g), np.linalg.solve(h, g), rtol=1e-6)
    second = steihaug_cg(quadratic(h), g, rtol=1e-8, max_iter=50, precondition=memory)
    assert second.iterations == 1
    # The memory keeps the newest pairs only, and skips pairs of non-positive curvature.
    small = CurvaturePairs(memory=3)
    small.extend([*pairs, (np.ones(8), -np.ones(8))])
    assert len(small.pairs) == 3
    np.testing.assert_array_equal(small.pairs[-1][0], pairs[-1][0])


def test_steihaug_negative_curvature():
    h = np.diag([2.0, -1.0])
    # The first direction -g has negative curvature: steepest descent, or to the boundary.
    g = np.array([0.0, 1.0])
    out = steihaug_cg(quadratic(h), g, rtol=1e-10, max_iter=10)
    assert out.reason == "negative_curvature" and out.iterations == 1
    np.testing.assert_allclose(out.step, -g)
    out = steihaug_cg(quadratic(h), g, rtol=1e-10, max_iter=10, radius=3.0)
    np.testing.assert_allclose(out.step, [0.0, -3.0])
    # Negative curvature on the second direction: keep the first CG iterate (no radius),
    # which is the minimiser of q along -g: -(g.g / g.H.g) g.
    g = np.array([1.0, 0.1])
    out = steihaug_cg(quadratic(h), g, rtol=1e-12, max_iter=10)
    assert out.reason == "negative_curvature" and out.iterations == 2
    np.testing.assert_allclose(out.step, -(g @ g) / (g @ h @ g) * g)
    # With a radius the step follows the negative-curvature direction to the boundary.
    out = steihaug_cg(quadratic(h), g, rtol=1e-12, max_iter=10, radius=5.0)
    assert out.reason == "negative_curvature"
    assert np.linalg.norm(out.step) == pytest.approx(5.0)
    q = lambda p: g @ p + 0.5 * p @ h @ p  # noqa: E731
    assert q(out.step) < q(-(g @ g) / (g @ h @ g) * g)


def test_steihaug_stops_on_the_trust_region_boundary():
    h = np.diag([1.0, 10.0])
    g = np.array([1.0, 1.0])
    # Radius below the first CG step: the step is -radius g/|g| (Cauchy direction).
    out = steihaug_cg(quadratic(h), g, rtol=1e-12, max_iter=10, radius=0.05)
    assert out.reason == "boundary" and out.iterations == 1
    np.testing.assert_allclose(out.step, -0.05 * g / np.linalg.norm(g))
    # A radius between the first iterate and the Newton step (|p_N| = 1.005).
    out = steihaug_cg(quadratic(h), g, rtol=1e-12, max_iter=10, radius=0.5)
    assert out.reason == "boundary" and out.iterations == 2
    assert np.linalg.norm(out.step) == pytest.approx(0.5)
    # A radius larger than the Newton step does not bind.
    out = steihaug_cg(quadratic(h), g, rtol=1e-12, max_iter=10, radius=2.0)
    assert out.reason == "converged"
    np.testing.assert_allclose(out.step, [-1.0, -0.1])
    zero = steihaug_cg(quadratic(h), np.zeros(2), rtol=0.1, max_iter=10)
    assert zero.iterations == 0 and not np.any(zero.step)


def rosenbrock(x):
    value = jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
    return value, value


def reference_minimum(bounds):
    out = scipy.optimize.minimize(
        lambda x: float(rosenbrock(jnp.asarray(x))[0]),
        np.array([-1.2, 1.0]),
        jac=lambda x: np.asarray(jax.grad(lambda y: rosenbrock(y)[0])(jnp.asarray(x))),
        method="L-BFGS-B",
        bounds=bounds,
        options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 1000},
    )
    return out.x


@pytest.mark.parametrize(
    ("bounds", "radius"),
    [
        pytest.param(None, None, marks=pytest.mark.slow),
        (((-2.0, 0.8), (-1.0, 2.0)), None),
        (((-2.0, 2.0), (-1.0, 0.5)), 1.0),
        pytest.param(None, 1.0, marks=pytest.mark.slow),
        pytest.param(((-2.0, 0.8), (-1.0, 2.0)), 1.0, marks=pytest.mark.slow),
    ],
    ids=[
        "unbounded",
        "x_bound",
        "y_bound_trust_radius",
        "unbounded_trust_radius",
        "x_bound_trust_radius",
    ],
)
def test_newton_cg_on_rosenbrock_with_bounds(bounds, radius):
    seen = []
    options = NewtonCG(max_iter=150, gtol=1e-9, ftol=0.0, bounds=bounds, trust_radius=radius)
    result = minimize(rosenbrock, jnp.array([-1.2, 1.0]), options, callback=seen.append)
    assert result.status == 0, result.message
    np.testing.assert_allclose(result.x, reference_minimum(bounds), atol=1e-6)
    if bounds is not None:
        lo, hi = np.array(bounds).T
        history_x_ok = all(np.isfinite(row.objective) for row in seen)
        assert history_x_ok and np.all(result.x >= lo) and np.all(result.x <= hi)
    assert len(seen) == result.iterations + 1 == len(result.history["objective"])
    assert np.all(np.diff(result.history["objective"]) <= 0)  # monotone (Armijo)
    assert np.all(result.history["cg_iterations"][1:] >= 1)
    assert result.pde_solves is None  # no cost model given


def test_newton_cg_steps_back_from_points_that_cannot_be_evaluated():
    # A quadratic with its minimum at 3, undefined (NaN) beyond 1.5: the Newton step
    # from 0 lands in the NaN region and must be backtracked; the bound is 1.4.
    def objective(x):
        value = jnp.sum((x - 3.0) ** 2)
        value = jnp.where(jnp.any(x > 1.5), jnp.nan, value)
        return value, value

    result = minimize(objective, jnp.zeros(2), NewtonCG(bounds=(-5.0, 1.4), max_iter=30))
    assert result.status == 0, result.message
    np.testing.assert_allclose(result.x, [1.4, 1.4], atol=1e-8)
    with pytest.raises(RuntimeError, match="not finite at the starting point"):
        minimize(objective, jnp.full(2, 2.0), NewtonCG())


def _failing_product(v):
    import equinox as eqx

    return eqx.error_if(v, jnp.any(jnp.isfinite(v)), "tangent solve gave up")


def test_newton_cg_takes_a_gradient_step_when_a_product_fails():
    from jax.tree_util import Partial

    from pdeinv.inverse._newton import Linearization

    target = jnp.array([1.0, -2.0])

    @jax.jit
    def linearize(x):
        value = 0.5 * jnp.sum((x - target) ** 2)
        return Linearization(value, value, x - target, Partial(_failing_product))

    result = minimize(lambda x: (0.0, 0.0), jnp.zeros(2), NewtonCG(), linearize=linearize)
    assert result.status == 0, result.message
    np.testing.assert_allclose(result.x, target, atol=1e-12)


def test_newton_cg_interrupt_and_options_validation():
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 4

    costs = {"linearize": {"forward": 1}, "hvp": {"tangent": 1}}
    result = minimize(rosenbrock, jnp.array([-1.2, 1.0]), NewtonCG(), stop=stop, solve_costs=costs)
    assert result.status == 3 and np.isfinite(result.fun)
    # Every linearisation made counts, as in a finished run (not the history's rows).
    assert (
        result.num_evaluations == result.pde_solves["forward"] >= len(result.history["objective"])
    )
    with pytest.raises(ValueError, match="forcing_max"):
        NewtonCG(forcing_max=1.5)
    with pytest.raises(ValueError, match="max_cg"):
        NewtonCG(max_cg=0)


def test_solve_counts_follow_the_calls():
    costs = {
        "value_and_grad": {"forward": 2, "adjoint": 2},
        "linearize": {"forward": 2, "adjoint": 2},
        "hvp": {"tangent": 2, "adjoint": 2},
    }
    result = minimize(rosenbrock, jnp.array([-1.2, 1.0]), NewtonCG(), solve_costs=costs)
    products = int(result.history["cg_iterations"].sum())
    linearizations = result.num_evaluations
    assert result.pde_solves == {
        "forward": 2 * linearizations,
        "adjoint": 2 * linearizations + 2 * products,
        "tangent": 2 * products,
        "total": 4 * linearizations + 4 * products,
    }
    assert result.history["pde_solves"][-1] <= result.pde_solves["total"]
    assert np.all(np.diff(result.history["pde_solves"]) > 0)
    lbfgs = minimize(rosenbrock, jnp.array([-1.2, 1.0]), LBFGSB(), solve_costs=costs)
    assert lbfgs.pde_solves["total"] == 4 * lbfgs.num_evaluations
    assert lbfgs.pde_solves["tangent"] == 0


def test_gauss_newton_fit_matches_lbfgsb():
    problem, _ = tiny_problem()
    x0 = jnp.zeros(N)
    lbfgsb = LBFGSB(max_iter=300, gtol=1e-10, ftol=0.0, bounds=(-3, 3))
    reference = fit(problem, x0, lbfgsb, weight=0.05)
    seen = []
    options = NewtonCG(max_iter=40, gtol=1e-8, bounds=(-3, 3))
    result = fit(problem, x0, options, weight=0.05, callback=seen.append)
    assert result.status == 0, result.message
    assert result.fun == pytest.approx(reference.fun, rel=1e-7)
    np.testing.assert_allclose(result.x, reference.x, atol=1e-4)
    # J^T is the transpose of the linearisation here: one forward solve per Newton step.
    assert result.pde_solves["forward"] == result.num_evaluations
    assert result.pde_solves["tangent"] == int(result.history["cg_iterations"].sum())
    assert seen[-1].pde_solves == result.pde_solves["total"]
    assert reference.pde_solves["total"] == 2 * reference.num_evaluations


def test_pde_solves_of_a_fit_add_up_stages_and_resumes():
    from types import SimpleNamespace

    from pdeinv.cli._fit import _pde_solves

    def result(forward, adjoint, tangent=0):
        solves = {"forward": forward, "adjoint": adjoint, "tangent": tangent}
        return SimpleNamespace(pde_solves={**solves, "total": forward + adjoint + tangent})

    single = SimpleNamespace(result=result(3, 3), morozov=None, evidence=None)
    assert _pde_solves(single, None) == {
        "pde_solves": 6, "pde_solves_by_kind": {"forward": 3, "adjoint": 3, "tangent": 0}
    }  # fmt: skip
    sweep = SimpleNamespace(
        result=result(2, 5, 4),
        morozov=SimpleNamespace(results=(result(3, 3), result(2, 5, 4))),
        evidence=None,
    )
    previous = {"metrics": {"pde_solves_by_kind": {"forward": 1, "adjoint": 1, "tangent": 0}}}
    out = _pde_solves(sweep, previous)
    assert out["pde_solves_by_kind"] == {"forward": 6, "adjoint": 9, "tangent": 4}
    assert out["pde_solves"] == 19
    # An evidence sweep counts every weight's fit.
    evidence = SimpleNamespace(
        result=result(1, 1), morozov=None, evidence=SimpleNamespace(results=(result(2, 2),) * 3)
    )
    assert _pde_solves(evidence, None)["pde_solves"] == 12


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("lbfgsb", marks=pytest.mark.slow),  # a whole CLI fit (~15 s idle)
        pytest.param("newton_cg", marks=pytest.mark.slow),
    ],
)
def test_cli_fit_writes_pde_solves(tmp_path, capsys, method):
    from pdeinv.cli._main import main

    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model: {pde: heat, grid: [6, 6], initial_condition: bumps}\n"
        "truth: {field: inclusion, contrast: 2.0}\n"
        "observations: {kind: full, times: [0.01, 0.02]}\n"
        "noise: {level: 0.01}\n"
        "regularization: {kind: h1, weight: 1.0}\n"
        f"optimizer: {{method: {method}, max_iter: 8, ftol: 1.0e-9, max_cg: 20}}\n"
        "check: {enabled: false}\n"
        "output: {vtu: false, figures: false}\n"
    )
    code = main(["fit", str(config), "--out", str(tmp_path / "run")])
    assert code == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] in ("converged", "max_iter")
    parts = metrics["pde_solves_by_kind"]
    assert metrics["pde_solves"] == sum(parts.values()) > 0
    history = np.load(tmp_path / "run" / "result.npz")
    assert history["history_pde_solves"][-1] <= metrics["pde_solves"]
    err = capsys.readouterr().err
    assert "solves" in err
    if method == "lbfgsb":  # one forward and one adjoint solve per evaluation
        assert parts == {"forward": metrics["num_evaluations"],
                         "adjoint": metrics["num_evaluations"], "tangent": 0}  # fmt: skip
    else:
        assert parts["tangent"] > 0 and "cg " in err
        assert history["history_cg_iterations"][1:].min() >= 1


def test_steihaug_stops_once_an_iteration_gains_little():
    # Ill-conditioned SPD system: CG's model decrease per iteration, ½ α rᵀz, falls
    # below min_decrease long before the tight residual tolerance is met.
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    h = q @ np.diag(np.logspace(0, 4, 60)) @ q.T
    g = rng.standard_normal(60)

    def model(p):
        return float(g @ p + 0.5 * p @ h @ p)

    full = steihaug_cg(quadratic(h), g, rtol=1e-12, max_iter=500)
    assert full.reason == "converged"
    tol = 1e-3 * abs(model(full.step))
    out = steihaug_cg(quadratic(h), g, rtol=1e-12, max_iter=500, min_decrease=tol)
    assert out.reason == "small_decrease" and out.iterations < full.iterations / 2
    # It stops at the first iteration that lowered the model by at most tol.
    values = [model(steihaug_cg(quadratic(h), g, rtol=1e-12, max_iter=k).step)
              for k in range(1, out.iterations + 1)]  # fmt: skip
    gains = -np.diff([0.0, *values])
    assert np.all(gains[:-1] > tol) and 0 <= gains[-1] <= tol * (1 + 1e-9)
    np.testing.assert_allclose(model(out.step), values[-1], rtol=1e-12)


def test_newton_cg_ftol_ends_cg_runs(monkeypatch):
    # Each CG run gets min_decrease = ftol * max(|f|, 1); with a loose ftol on an
    # ill-conditioned quadratic some runs end on it, and the fit still converges.
    from pdeinv.inverse import _newton

    runs = []

    def recording(hvp, g, **kwargs):
        out = steihaug_cg(hvp, g, **kwargs)
        runs.append((kwargs["min_decrease"], out.reason))
        return out

    monkeypatch.setattr(_newton, "steihaug_cg", recording)
    rng = np.random.default_rng(6)
    q, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    h = jnp.asarray(q @ np.diag(np.logspace(0, 4, 40)) @ q.T)
    target = jnp.asarray(rng.standard_normal(40))

    def objective(x):
        value = 0.5 * (x - target) @ h @ (x - target) + 1.0
        return value, value

    seen = []
    result = minimize(objective, jnp.zeros(40), NewtonCG(ftol=1e-3, gtol=1e-10, max_cg=200),
                      callback=seen.append)  # fmt: skip
    assert result.status == 0 and result.fun <= 1.0 + 1e-2  # the minimum is 1
    values = [row.objective for row in seen]
    assert [m for m, _ in runs] == pytest.approx([1e-3 * max(abs(v), 1.0) for v in values[:-1]])
    assert "small_decrease" in [reason for _, reason in runs]
    runs.clear()
    minimize(objective, jnp.zeros(40), NewtonCG(ftol=0.0, gtol=1e-10, max_cg=200))
    assert {m for m, _ in runs} == {0.0} and "small_decrease" not in [r for _, r in runs]


def test_newton_cg_products_follow_the_forcing_term():
    """Products at a looser tol (one compilation); Newton–CG's at ``product_tol * η_k``.

    One problem for both parts: they share the compiled linearisation.
    """
    from test_gauss_newton import expm_problem

    problem = expm_problem()
    m = jnp.asarray(0.2 * np.sin(np.arange(N)))
    dm = jnp.asarray(np.cos(1.7 * np.arange(N)))
    # The products at the solver's tol 1e-10 are the reference (they match dense
    # Jacobians: test_gauss_newton.py).
    tight = problem.gauss_newton_operator(m, weight=0.05).apply(dm)
    loose = problem.gauss_newton_operator(m, weight=0.05, tol=1e-4).apply(dm)
    error = np.linalg.norm(loose - tight) / np.linalg.norm(tight)
    assert 1e-8 < error < 1e-2  # looser, and within 100 tol
    as_array = problem.gauss_newton_operator(m, weight=0.05, tol=jnp.asarray(1e-4)).apply(dm)
    np.testing.assert_array_equal(as_array, loose)
    for bad in (0.0, 1.5, True, "1e-4", float("nan"), jnp.ones(2)):
        with pytest.raises(ValueError, match="tol"):
            problem.gauss_newton_operator(m, tol=bad)
    tols = []
    linearize_at = problem._linearize_at

    def spy(m, tol, weight):
        tols.append(tol)
        return linearize_at(m, tol, weight)

    problem.__dict__["_linearize_at"] = spy
    x0 = jnp.zeros(N)
    options = NewtonCG(max_iter=40, gtol=1e-8, bounds=(-3, 3))
    loose = fit(problem, x0, options, weight=0.05)
    tight = fit(problem, x0, dataclasses.replace(options, product_tol=None), weight=0.05)
    assert loose.status == 0 and tight.status == 0, (loose.message, tight.message)
    assert loose.fun == pytest.approx(tight.fun, rel=1e-9)
    np.testing.assert_allclose(loose.x, tight.x, atol=1e-5)
    # One looser linearisation per Newton step, at 1e-3 times a forcing term <= 0.5.
    assert len(tols) == loose.iterations
    assert all(1e-10 < tol <= 0.5e-3 for tol in tols) and tols[0] == 0.5e-3
    # Each looser linearisation is one more forward (and adjoint) solve, counted.
    assert loose.pde_solves["forward"] == loose.num_evaluations
    assert tight.pde_solves["forward"] == tight.num_evaluations
    trials = loose.num_evaluations - len(tols)
    assert loose.pde_solves["adjoint"] == trials + len(tols) + loose.pde_solves["tangent"]
    assert problem._linearize_jit._cache_size() == 1  # the tol is traced
    for bad in (0.0, 1.5, True, "1e-3"):
        with pytest.raises(ValueError, match="product_tol"):
            NewtonCG(product_tol=bad)

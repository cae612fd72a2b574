"""float32: expm_multiply value and gradient at tol 1e-5 against dense float64 references.

Measured on this problem (2-D heat 12x12, T ||A|| ~ 170; the table in docs/scale.md):
float32 value error 1.7e-6 (Lanczos) / 2.4e-6 (Arnoldi), parameter gradient 5.3e-5 /
6.8e-5, start-vector gradient 1.2e-6 / 1.6e-6; float64 at the same tol 1.2e-6, 1.3e-5,
5.6e-8.  The bound asserted is 10 tol.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from pdeinv import inverse, models
from pdeinv.discretize import grid
from pdeinv.expm import expm_multiply
from pdeinv.inverse._experiments import MultiExperimentProblem

TOL = 1e-5
T = 0.1


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture(scope="module")
def reference():
    """Model, weights and dense float64 value/gradients of L = w^T exp(T A) u0."""
    space = grid((12, 12))
    x, y = space.points.T
    model = models.heat_fd(
        space, 0.5 * np.sin(3 * x) * np.cos(2 * y), models.gaussian_bump(space, width=0.15)
    )
    n = model.num_states

    def dense(params):
        eye = jnp.eye(n, dtype=params["log_kappa"].dtype)
        return jax.vmap(lambda e: model.matvec(e, params), in_axes=1, out_axes=1)(eye)

    a = np.asarray(dense(model.params))
    v = np.asarray(model.u0)
    w = np.random.default_rng(1).standard_normal(n)
    value = scipy.linalg.expm(T * a) @ v
    grad_v = scipy.linalg.expm(T * a.T) @ w
    # d(w^T e^{TA} v) = <L(TA^T, w v^T), T dA>, pulled back to log_kappa by a VJP.
    frechet = T * scipy.linalg.expm_frechet(T * a.T, np.outer(w, v), compute_expm=False)
    _, vjp = jax.vjp(dense, model.params)
    grad_p = np.asarray(vjp(jnp.asarray(frechet))[0]["log_kappa"])
    return model, w, value, grad_v, grad_p


@pytest.mark.parametrize(
    ("dtype", "method"),
    [
        ("float32", "lanczos"),
        pytest.param("float32", "arnoldi", marks=pytest.mark.slow),  # ~10 s; lanczos by default
        pytest.param("float64", "lanczos", marks=pytest.mark.slow),  # the comparison row
    ],
)
def test_float32_value_and_gradient_at_tol_1e5(reference, dtype, method):
    # `pytest tests/scale/test_float32.py -s` prints the errors (the table in docs/scale.md).
    model, w, value, grad_v, grad_p = reference
    f32 = jnp.dtype(dtype)
    params = {"log_kappa": model.params["log_kappa"].astype(f32)}
    v = model.u0.astype(f32)

    def loss(v, params):
        y = expm_multiply(model.matvec, v, params, T, tol=TOL, method=method)
        return jnp.dot(jnp.asarray(w, f32), y)

    y = expm_multiply(model.matvec, v, params, T, tol=TOL, method=method)
    g_v, g_p = jax.grad(loss, argnums=(0, 1))(v, params)
    assert y.dtype == g_v.dtype == g_p["log_kappa"].dtype == f32
    errors = rel(y, value), rel(g_p["log_kappa"], grad_p), rel(g_v, grad_v)
    print(f"| {dtype}, {method} | " + " | ".join(f"{e:.1e}" for e in errors) + " |")
    assert max(errors) <= 10 * TOL


def test_multi_experiment_objective_in_float32(reference):
    model, *_ = reference
    space = model.space
    f32 = jnp.float32
    model32 = models.heat_fd(space, model.params["log_kappa"].astype(f32), model.u0.astype(f32))
    initial = jnp.stack([model32.u0, models.gaussian_bump(space, (0.3, 0.7), 0.1).astype(f32)])
    parameters = inverse.ParameterMap(
        inverse.NodalField(space.num_nodes), "log_kappa", dict(model32.params)
    )
    times = np.array([0.02, T])
    problem = MultiExperimentProblem(
        model=model32, times=times, parameters=parameters,
        observation=inverse.FullField(space), initial_states=initial,
        data=np.zeros((2, 2, space.num_nodes)), sigma=1.0,
        regularizer=inverse.make_regularizer("none", space), solver={"tol": TOL},
    )  # fmt: skip
    x32 = model32.params["log_kappa"]
    (value, misfit), grad = jax.value_and_grad(problem.objective, has_aux=True)(x32)
    assert value.dtype == grad.dtype == f32
    # Against the dense float64 solution of both experiments (data = 0: J = 0.5 ||u||^2).
    a = np.asarray(
        jax.vmap(lambda e: model.matvec(e, model.params), in_axes=1, out_axes=1)(
            jnp.eye(model.num_states)
        )
    )
    states = [scipy.linalg.expm(t * a) @ np.asarray(u0, float) for u0 in initial for t in times]
    expected = 0.5 * sum(float(s @ s) for s in states)
    assert abs(float(value) - expected) <= 10 * TOL * expected

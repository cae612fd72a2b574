"""The wave model's skew (velocity-stress) form against dense expm and the first-order form."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl

from pdeinv import discretize, models, reference
from pdeinv.discretize._fd import face_gradient, padded_face_gradient

FACE_CASES = [
    ((7,), "periodic", "arithmetic"),
    ((6, 5), "neumann", "harmonic"),
    ((6, 5), {"xmin": "dirichlet", "default": "neumann"}, "arithmetic"),
    ((4, 3, 5), "dirichlet", "harmonic"),
    ((4, 3, 5), {"x": "periodic", "default": "dirichlet"}, "harmonic"),
]


@pytest.mark.parametrize("shape, bc, mean", FACE_CASES)
def test_face_gradients_are_square_roots_of_the_diffusion_operator(shape, bc, mean):
    """Flat and padded layouts: G^T G = -L, and the transposes are transposes."""
    g = discretize.grid(shape)
    grad = face_gradient(g, bc, mean=mean)
    padded = padded_face_gradient(g, bc, mean=mean)
    diffusion = discretize.diffusion_matvec(g, bc, mean=mean)
    rng = np.random.default_rng(0)
    kappa = jnp.asarray(np.exp(rng.standard_normal(g.num_nodes)))
    u = jnp.asarray(rng.standard_normal(g.num_nodes))
    lu = diffusion(u, kappa)
    f = jnp.asarray(rng.standard_normal(grad.num_faces))
    np.testing.assert_allclose(grad.divergence(grad.gradient(u, kappa), kappa), -lu, atol=1e-12)
    assert float(f @ grad.gradient(u, kappa)) == pytest.approx(
        float(u @ grad.divergence(f, kappa)), abs=1e-11
    )
    w = padded.weights(kappa)
    gu = [w[a] * d for a, d in enumerate(padded.difference(padded.pad(u)))]
    gtgu = padded.mask * padded.difference_transpose([w[a] * gu[a] for a in range(g.dim)])
    np.testing.assert_allclose(padded.unpad(gtgu), -lu, atol=1e-11)
    assert float(jnp.sum(jnp.abs(gtgu) * (1 - padded.mask))) == 0.0
    # one nonzero weight per flux-carrying face of the flat layout
    assert int(jnp.sum(w != 0)) == grad.num_faces
    f = jnp.asarray(rng.standard_normal((g.dim, *padded.shape)))
    x = padded.pad(u)
    lhs = sum(float(jnp.sum(f[a] * d)) for a, d in enumerate(padded.difference(x)))
    rhs = float(jnp.sum(x * padded.difference_transpose(f)))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_face_gradient_refuses_boundary_data():
    g = discretize.grid((5, 5))
    with pytest.raises(ValueError, match="homogeneous"):
        face_gradient(g, {"xmin": discretize.Dirichlet(1.0), "default": "neumann"})


def _wave(form, bc, n=9, **kwargs):
    g = discretize.grid((n, n))
    x = g.points
    u0 = np.exp(-((x[:, 0] - 0.4) ** 2 + (x[:, 1] - 0.55) ** 2) / 0.02)
    log_c = 0.3 * np.sin(3 * x[:, 0]) * np.cos(2 * x[:, 1])
    return models.wave_fd(g, log_c, u0, bc=bc, form=form, **kwargs)


def _dense(model, params):
    eye = jnp.eye(model.num_states)
    return np.asarray(jax.vmap(lambda e: model.matvec(e, params))(eye)).T


@pytest.mark.parametrize(
    "form, bc",
    [
        ("nondivergence", "neumann"),  # the seed paper's case study
        pytest.param("divergence", "dirichlet", marks=pytest.mark.slow),  # ~10 s
        pytest.param("divergence", "neumann", marks=pytest.mark.slow),
        pytest.param("nondivergence", "dirichlet", marks=pytest.mark.slow),
    ],
)
def test_skew_form_matches_dense_expm_and_frechet(form, bc):
    model = _wave(form, bc)
    assert model.krylov_form is not None and model.krylov_form.method == "skew-lanczos"
    params = model.params
    times = jnp.asarray([0.3, 1.0])
    tol = 1e-8
    states = models.simulate(model, params, times, tol=tol)
    a = _dense(model, params)
    u0 = np.asarray(model.u0)
    for t, state in zip(times, states, strict=True):
        ref = sl.expm(float(t) * a) @ u0
        assert np.linalg.norm(state - ref) <= 100 * tol * np.linalg.norm(u0)

    n = model.space.num_nodes
    w = np.random.default_rng(1).standard_normal(n)

    def loss(p):
        return jnp.dot(w, model.observe(models.simulate(model, p, 1.0, tol=tol)))

    grad = jax.grad(loss)(params)["log_c"]
    node = 17
    direction = {"log_c": jnp.zeros(n).at[node].set(1.0)}
    da = np.asarray(
        jax.vmap(lambda e: jax.jvp(lambda p: model.matvec(e, p), (params,), (direction,))[1])(
            jnp.eye(model.num_states)
        )
    ).T
    _, frechet = sl.expm_frechet(a, da)
    expected = np.concatenate([w, np.zeros(n)]) @ frechet @ u0
    assert abs(float(grad[node]) - expected) <= 100 * tol * max(1.0, abs(expected))


def test_formulation_choice_and_errors():
    assert _wave("divergence", "neumann", formulation="first-order").krylov_form is None
    g = discretize.grid((6, 6))
    moving = models.wave_fd(g, 0.0, np.ones(36), v0=np.ones(36))
    assert moving.krylov_form is None  # auto: a moving start needs the first-order form
    with pytest.raises(ValueError, match="formulation='skew'"):
        models.wave_fd(g, 0.0, np.ones(36), v0=np.ones(36), formulation="skew")
    with pytest.raises(ValueError, match="formulation must be"):
        models.wave_fd(g, 0.0, np.ones(36), formulation="velocity")
    model = _wave("divergence", "neumann", n=6)
    state = model.u0.at[-1].set(1.0)  # nonzero initial velocity in the skew form
    with pytest.raises(Exception, match="initial velocity must be zero"):
        jax.block_until_ready(models.simulate(model, model.params, 0.5, u0=state))


@pytest.mark.slow
def test_skew_and_first_order_forms_agree_with_statistics():
    model = _wave("nondivergence", "neumann", n=12)
    first_order = dataclasses.replace(model, krylov_form=None)
    times = jnp.asarray([0.5, 1.0])
    skew, stats = models.simulate_info(model, model.params, times, tol=1e-9)
    arnoldi = models.simulate(first_order, model.params, times, tol=1e-9)
    np.testing.assert_allclose(skew, arnoldi, atol=1e-7 * float(jnp.max(jnp.abs(arnoldi))))
    assert int(stats.num_matvecs) > 0


def test_fixed_step_reference_uses_the_spectral_radius():
    model = _wave("divergence", "neumann", n=8)
    norm = float(model.norm_estimate(model.params))
    assert float(model.spectral_radius_estimate(model.params)) == pytest.approx(np.sqrt(norm))
    times = jnp.asarray([0.5])
    solution = reference.solve(model, model.params, times, solver="tsit5", fixed_step=True)
    assert int(solution.result) == 0
    ref = sl.expm(0.5 * _dense(model, model.params)) @ np.asarray(model.u0)
    assert np.linalg.norm(solution.states[0] - ref) < 1e-3 * np.linalg.norm(ref)


@pytest.mark.parametrize(
    "form",
    ["divergence", pytest.param("nondivergence", marks=pytest.mark.slow)],  # ~15 s each
)
def test_float32_model_stays_float32_with_x64_enabled(form):
    """A float32 wave next to float64 code (x64 on, as in the tests and the CLI):
    the skew solve and its gradient stay float32 (a float64 constant in the face
    weights and complex128 phases in the small skew exponential promoted them,
    and the solve refused the operator)."""
    model = _wave(form, "neumann", n=6)
    model32 = _wave(form, "neumann", n=6)
    model32 = dataclasses.replace(model32, u0=model32.u0.astype(jnp.float32))
    params32 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), model.params)
    times = jnp.asarray([0.5, 1.0], jnp.float32)
    states = models.simulate(model32, params32, times, tol=1e-5)
    assert states.dtype == jnp.float32
    reference_states = models.simulate(model, model.params, times, tol=1e-10)
    scale = float(jnp.max(jnp.abs(reference_states)))
    np.testing.assert_allclose(states, reference_states, atol=1e-3 * scale)

    def loss(p):
        return jnp.sum(model32.observe(models.simulate(model32, p, 1.0, tol=1e-5)) ** 2)

    grad = jax.grad(loss)(params32)["log_c"]
    assert grad.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(grad)))

"""method="affine-lanczos": symmetric A with a source, against dense expm / expm_frechet."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl

import pdeinv
from pdeinv import discretize, models


def _operator(n, seed=0):
    """A(p) = -(B diag(exp(p)) B^T) / n (symmetric NSD), b(p) = exp(p) * c."""
    rng = np.random.default_rng(seed)
    b_mat = rng.standard_normal((n, n))
    c = rng.standard_normal(n)

    def matvec(x, p):
        return -(b_mat @ (jnp.exp(p) * (b_mat.T @ x))) / n

    def source(p):
        return jnp.exp(p) * c

    def dense(p):
        p = np.asarray(p)
        a = -(b_mat * np.exp(p)) @ b_mat.T / n
        aug = np.zeros((n + 1, n + 1))
        aug[:n, :n], aug[:n, n] = a, np.exp(p) * c
        return aug

    return pdeinv.augment_affine(matvec, source), dense, jnp.asarray(0.2 * rng.standard_normal(n))


def test_values_and_gradients_match_dense():
    n, t, tol = 25, 0.7, 1e-8
    matvec, dense, p = _operator(n)
    rng = np.random.default_rng(1)
    u0, w = rng.standard_normal((2, n))
    v = np.concatenate([u0, [1.0]])
    times = np.array([0.2, t])
    ys = pdeinv.expm_multiply(matvec, v, p, times, method="affine-lanczos", tol=tol)
    for s, y in zip(times, ys, strict=True):
        ref = sl.expm(s * dense(p)) @ v
        assert np.linalg.norm(y - ref) <= 100 * tol * np.linalg.norm(ref)

    def loss(p, u0):
        v = jnp.concatenate([u0, jnp.ones(1)])
        y = pdeinv.expm_multiply(matvec, v, p, t, method="affine-lanczos", tol=tol)
        return jnp.dot(w, y[:n])

    g_p, g_u = jax.grad(loss, argnums=(0, 1))(p, jnp.asarray(u0))
    aug = dense(p)
    w_aug = np.concatenate([w, [0.0]])
    np.testing.assert_allclose(g_u, (sl.expm(t * aug).T @ w_aug)[:n], atol=100 * tol)
    eps = 1e-6
    for i in (0, 7):
        e = np.zeros(n)
        e[i] = eps
        da = (dense(np.asarray(p) + e) - dense(np.asarray(p) - e)) / (2 * eps)
        _, frechet = sl.expm_frechet(t * aug, t * da)
        expected = w_aug @ frechet @ v
        assert abs(float(g_p[i]) - expected) <= 100 * tol * max(1.0, abs(expected))


def test_operator_with_a_last_row_is_refused():
    n = 6
    matvec, _, p = _operator(n)
    with pytest.raises(ValueError, match="zero last row"):
        pdeinv.expm_multiply(
            lambda x, p: matvec(x, p) + x[-1], np.ones(n + 1), p, 1.0, method="affine-lanczos"
        )
    with pytest.raises(ValueError, match="krylov_dim must be >= 2"):
        pdeinv.expm_multiply(matvec, np.ones(n + 1), p, 1.0, method="affine-lanczos", krylov_dim=1)
    with pytest.raises(ValueError, match="not available"):
        pdeinv.expm_multiply(
            matvec, np.ones(n + 1), p, 1.0, method="affine-lanczos", reorthogonalize=True
        )


def test_simulate_keeps_the_symmetric_path_for_heat_with_boundary_data():
    g = discretize.grid((10, 10))
    x = g.points
    model = models.heat_fd(
        g,
        0.3 * np.sin(3 * x[:, 0]),
        np.exp(-((x[:, 0] - 0.4) ** 2 + (x[:, 1] - 0.5) ** 2) / 0.02),
        bc={"xmin": discretize.Dirichlet(1.0), "default": "neumann"},
    )
    assert model.source is not None and model.symmetric
    times = jnp.asarray([0.01, 0.05])
    states = models.simulate(model, model.params, times, tol=1e-10)
    arnoldi = models.simulate(model, model.params, times, tol=1e-10, method="arnoldi")
    np.testing.assert_allclose(states, arnoldi, atol=1e-8)
    with pytest.raises(ValueError, match="skew-lanczos"):
        models.simulate(model, model.params, times, method="skew-lanczos")

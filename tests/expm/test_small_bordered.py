"""Small-matrix functions of the bordered (affine Lanczos) projection, against references.

``exp_divided_difference`` against 60-digit decimal arithmetic; the bordered
propagator, the two-sided quadrature block and the trajectory samples against
the general (Padé) path and dense ``scipy.linalg.expm``; the whole affine solve
on a stiff problem with every checkpoint policy against ``expm_frechet``.
"""

from decimal import Decimal, localcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl

import pdeinv
from pdeinv.expm._small import (
    KrylovPropagator,
    exp_divided_difference,
    trajectory_samples,
    two_sided_block,
)


def _reference(x, y):
    """exp[x, y, 0] in 60-digit decimal arithmetic (no cancellation at that precision)."""
    with localcontext() as ctx:
        ctx.prec = 60
        a, b, zero = Decimal(float(x)), Decimal(float(y)), Decimal(0)

        def first(p, q):
            return (p.exp() - q.exp()) / (p - q) if p != q else p.exp()

        if a == b == zero:
            return 0.5
        if a == zero:
            a, b = b, a
        if a == b:
            return float((a.exp() - first(a, zero)) / a)
        return float((first(a, b) - first(b, zero)) / a)


def test_exp_divided_difference_is_accurate_everywhere():
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            -(10 ** rng.uniform(-12, 5, 300)),
            10 ** rng.uniform(-12, 2, 40),
            [0.0, -0.1, -0.1000001, -0.0999999, -1e5],
        ]
    )
    x = rng.choice(values, 1500)
    y = rng.choice(values, 1500)
    y[:100] = x[:100] * (1 + 1e-9 * rng.standard_normal(100))  # nearly coincident
    y[100:150] = x[100:150]  # coincident
    got = np.asarray(exp_divided_difference(jnp.asarray(x), jnp.asarray(y)))
    expected = np.array([_reference(a, b) for a, b in zip(x, y, strict=True)])
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-13)
    # phi_2(x) = exp[x, 0, 0] and the symmetric argument order
    xs = jnp.asarray([-300.0, -1.0, -1e-6, 0.0, 2.0])
    phi2 = np.array([(np.expm1(v) - v) / v**2 if v else 0.5 for v in np.asarray(xs)])
    np.testing.assert_allclose(exp_divided_difference(xs, jnp.zeros_like(xs)), phi2, rtol=1e-9)
    np.testing.assert_array_equal(exp_divided_difference(x, y), exp_divided_difference(y, x))


def _bordered(k, size, rng):
    t = np.diag(-rng.uniform(0, 300, k - 1))
    off = rng.uniform(1, 100, k - 2)
    t += np.diag(off, 1) + np.diag(off, -1)
    h = np.zeros((k, k))
    h[1:, 1:] = t
    h[1, 0] = 3.7
    h[size:, :] = 0.0
    h[:, size:] = 0.0
    return h


@pytest.mark.parametrize(
    "size",
    [12, 1, pytest.param(7, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)],
)
def test_bordered_propagator_matches_the_general_path(size):
    rng = np.random.default_rng(size)
    k = 12
    h = _bordered(k, size, rng)
    bordered = KrylovPropagator(jnp.asarray(h), 1.5, 0.5, symmetric=False, bordered=True, size=size)
    general = KrylovPropagator(jnp.asarray(h), 1.5, 0.5, symmetric=False, size=size)
    for s in (1e-3, 0.05, 0.3):
        coef, err = bordered.coefficients(s)
        coef_g, err_g = general.coefficients(s)
        np.testing.assert_allclose(coef, sl.expm(s * h)[:, 0], atol=1e-14)
        np.testing.assert_allclose(err, err_g, rtol=1e-9, atol=1e-22)
        np.testing.assert_allclose(bordered.exp_times(s), coef, atol=1e-15)
    tb = np.diag(-rng.uniform(0, 300, 9)) + np.diag(rng.uniform(1, 50, 8), 1)
    tb = np.triu(tb) + np.triu(tb, 1).T
    backward = KrylovPropagator(jnp.asarray(tb), 2.0, 0.1, symmetric=True)
    backward_g = KrylovPropagator(jnp.asarray(tb), 2.0, 0.1, symmetric=False)
    c = jnp.asarray(rng.standard_normal(k)).at[size:].set(0.0)
    for sigma in (1e-3, 0.05):
        m, lam = two_sided_block(bordered, backward, c, sigma)
        m_g, lam_g = two_sided_block(general, backward_g, c, sigma)
        np.testing.assert_allclose(m, m_g, atol=1e-14 * np.abs(m_g).max())
        np.testing.assert_allclose(lam, lam_g, atol=1e-15)
    np.testing.assert_allclose(
        trajectory_samples(bordered, 0.2), trajectory_samples(general, 0.2), atol=1e-11
    )


def _stiff_affine(n=80):
    """1-D heat ``(kappa u_x)_x`` with u = 1 at the left end (a source term), Neumann at the
    right, in flux form (symmetric); ``kappa = exp(p)`` per cell, harmonic-free arithmetic
    face averages; t ||A|| about 2e3."""
    h = 1.0 / n

    def faces(p):
        kappa = jnp.exp(p)
        inner = 0.5 * (kappa[1:] + kappa[:-1])  # faces 1..n-1
        return kappa[0], inner

    def matvec(u, p):
        left_face, inner = faces(p)
        flux = inner * (u[1:] - u[:-1])  # into cell i from i+1
        div = jnp.concatenate([flux, jnp.zeros(1)]) - jnp.concatenate([jnp.zeros(1), flux])
        return (div - jnp.zeros(n).at[0].set(2 * left_face * u[0])) / h**2

    def source(p):
        left_face, _ = faces(p)
        return jnp.zeros(n).at[0].set(2 * left_face) / h**2

    def dense(p):
        left_face, inner = (np.asarray(x) for x in faces(jnp.asarray(p)))
        a = np.zeros((n, n))
        for i, k in enumerate(inner):
            a[i, i] -= k
            a[i + 1, i + 1] -= k
            a[i, i + 1] += k
            a[i + 1, i] += k
        a[0, 0] -= 2 * left_face
        aug = np.zeros((n + 1, n + 1))
        aug[:n, :n] = a / h**2
        aug[0, n] = 2 * left_face / h**2
        return aug

    x = (np.arange(n) + 0.5) * h
    p = jnp.asarray(0.3 * np.sin(2 * np.pi * x))
    return pdeinv.augment_affine(matvec, source), dense, p, np.exp(-40 * (x - 0.6) ** 2)


@pytest.mark.parametrize(
    "checkpoint", ["trajectory", pytest.param("states", marks=pytest.mark.slow)]
)
def test_stiff_affine_gradient_matches_expm_frechet(checkpoint):
    matvec, dense, p, u0 = _stiff_affine()
    n, t, tol = u0.shape[0], 0.08, 1e-8
    v = np.concatenate([u0, [1.0]])
    w = np.random.default_rng(3).standard_normal(n)  # a rough cotangent

    def loss(p):
        y = pdeinv.expm_multiply(
            matvec,
            v,
            p,
            t,
            method="affine-lanczos",
            tol=tol,
            krylov_dim=20,
            checkpoint=checkpoint,
        )
        return jnp.dot(w, y[:n])

    aug = dense(p)
    assert np.allclose(aug[:n, :n], aug[:n, :n].T)
    assert t * np.abs(aug).sum(axis=1).max() > 1e3
    value, grad = jax.value_and_grad(loss)(p)
    w_aug = np.concatenate([w, [0.0]])
    expected_value = w_aug @ sl.expm(t * aug) @ v
    assert abs(float(value) - expected_value) <= 100 * tol * np.linalg.norm(w) * np.linalg.norm(v)
    eps = 1e-6
    expected = np.empty(n)
    for i in range(n):
        e = np.zeros(n)
        e[i] = eps
        da = (dense(np.asarray(p) + e) - dense(np.asarray(p) - e)) / (2 * eps)
        expected[i] = w_aug @ sl.expm_frechet(t * aug, t * da, compute_expm=False) @ v
    assert np.linalg.norm(grad - expected) <= 100 * tol * np.linalg.norm(expected)


@pytest.mark.slow
def test_affine_hessian_vector_product_matches_differences_of_the_gradient():
    """Forward over reverse through the bordered process: a Taylor test of the gradient."""
    matvec, _, p, u0 = _stiff_affine(40)
    n, t = u0.shape[0], 0.08
    v = np.concatenate([u0, [1.0]])
    w = np.random.default_rng(3).standard_normal(n)

    def loss(p):
        y = pdeinv.expm_multiply(matvec, v, p, t, method="affine-lanczos", tol=1e-10, krylov_dim=20)
        return jnp.dot(w, y[:n]) + 0.5 * jnp.sum(y[:n] ** 2)

    grad = jax.jit(jax.grad(loss))
    d = jnp.asarray(np.random.default_rng(4).standard_normal(n))
    hvp = jax.jvp(grad, (p,), (d,))[1]
    errors = []
    for eps in (1e-2, 1e-3):
        difference = (grad(p + eps * d) - grad(p - eps * d)) / (2 * eps)
        errors.append(float(jnp.linalg.norm(hvp - difference) / jnp.linalg.norm(hvp)))
    # central differences converge as eps^2 to the true product: the ratio is 100
    assert 80 < errors[0] / errors[1] < 120
    assert errors[1] < 1e-5

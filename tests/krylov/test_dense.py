"""Small dense exponentials against scipy (values and the Fréchet-derivative VJP)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl

from pdeinv.krylov._dense import expm_small as _expm_small_eager
from pdeinv.krylov._dense import expm_sym_tridiag_e1

# One compilation per shape instead of op-by-op dispatch keeps this file fast.
expm_small = jax.jit(_expm_small_eager)


def _rel(a, b):
    return np.linalg.norm(np.asarray(a) - b) / max(np.linalg.norm(b), 1e-300)


def _stiff_symmetric(rng, k, largest):
    """Negative definite with spectrum log-spread in [-largest, -0.1]: O(1) exp."""
    q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    lam = -np.logspace(-1, np.log10(largest), k)
    return (q * lam) @ q.T


def _stiff_hessenberg(rng, k, largest):
    """Nonsymmetric stiff upper Hessenberg P D P^-1 (P well conditioned) and its
    exact exponential P exp(D) P^-1, which is O(1): the slow modes survive."""
    p = np.eye(k) + 0.3 * rng.standard_normal((k, k)) / np.sqrt(k)
    lam = -np.logspace(-1, np.log10(largest), k)
    p_inv = np.linalg.inv(p)
    x = (p * lam) @ p_inv
    h, z = sl.hessenberg(x, calc_q=True)
    ref = z.T @ ((p * np.exp(lam)) @ p_inv) @ z
    return h, ref


def _stiff_cases(rng, k, largest):
    s = _stiff_symmetric(rng, k, largest)
    w, u = np.linalg.eigh(s)
    yield s, (u * np.exp(w)) @ u.T
    yield _stiff_hessenberg(rng, k, largest)


@pytest.mark.parametrize("largest", [1e-3, 1.0, 10.0, 1e3, 1e5, 1e8])
@pytest.mark.parametrize("k", [1, 5, 30])
def test_expm_small_stiff_matches_exact(largest, k):
    rng = np.random.default_rng(k)
    for x, ref in _stiff_cases(rng, k, largest):
        # Rounding X perturbs eigenvalues by eps ||X||: that much error is inherent.
        tol = 1e-12 + 1e-14 * np.abs(x).sum(0).max()
        assert _rel(expm_small(jnp.asarray(x)), ref) < tol, (largest, k)


@pytest.mark.parametrize("norm", [0.0, 1e-8, 0.5, 5.0, 10.6, 50.0])
def test_expm_small_general_matches_scipy(norm):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 12))
    x *= norm / max(np.abs(x).sum(0).max(), 1e-300)
    assert _rel(expm_small(jnp.asarray(x)), sl.expm(x)) < 1e-12


def test_expm_small_exp_pm_10_6_entrywise():
    # docs/design.md#small-matrix-exponentials: jax.scipy.linalg.expm loses 7 digits here.
    x = np.diag([10.6, -10.6])
    got = np.diag(np.asarray(expm_small(jnp.asarray(x))))
    np.testing.assert_allclose(got, np.exp([10.6, -10.6]), rtol=1e-13)
    rot = sl.expm(np.array([[0.0, 0.3], [-0.3, 0.0]]))
    y = rot @ x @ rot.T
    np.testing.assert_allclose(np.asarray(expm_small(jnp.asarray(y))), sl.expm(y), rtol=1e-12)


def test_expm_small_nonnormal_and_nearly_defective():
    # Jordan-like block with a tiny perturbation: eigenvalues nearly coincide.
    k = 8
    x = -2.0 * np.eye(k) + np.diag(np.full(k - 1, 30.0), 1)
    x[-1, 0] = 1e-12
    assert _rel(expm_small(jnp.asarray(x)), sl.expm(x)) < 1e-10
    # Strongly nonnormal upper triangular.
    rng = np.random.default_rng(3)
    y = np.triu(rng.standard_normal((10, 10)) * 50) - 100 * np.eye(10)
    assert _rel(expm_small(jnp.asarray(y)), sl.expm(y)) < 1e-9


def test_expm_small_large_norm_no_nan_and_jit_vmap():
    rng = np.random.default_rng(4)
    cases = [_stiff_hessenberg(rng, 10, s) for s in (1.0, 1e4, 1e6, 1e8)]
    xs = np.stack([x for x, _ in cases])
    got = jax.jit(jax.vmap(expm_small))(jnp.asarray(xs))
    assert np.all(np.isfinite(np.asarray(got)))
    for g, (x, ref) in zip(got, cases, strict=True):
        assert _rel(g, ref) < 1e-12 + 1e-14 * np.abs(x).sum(0).max()


def test_expm_small_float32():
    rng = np.random.default_rng(5)
    for largest in (1.0, 1e2, 1e3):
        x = _stiff_symmetric(rng, 10, largest).astype(np.float32)
        got = expm_small(jnp.asarray(x))
        assert got.dtype == jnp.float32
        tol = 1e-5 + 3e-7 * np.abs(x).sum(0).max()
        assert _rel(got, sl.expm(x.astype(np.float64))) < tol


@pytest.mark.parametrize("scale", [1e-3, 1.0, 20.0, 1e4])
def test_expm_small_vjp_is_frechet(scale):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((7, 7))
    x *= scale / np.abs(x).sum(0).max()
    if scale > 100:  # stiff: keep exp(x) O(1)
        x = _stiff_hessenberg(rng, 7, scale)[0]
    g = rng.standard_normal((7, 7)) * 1e3
    _, vjp = jax.vjp(expm_small, jnp.asarray(x))
    got = jax.jit(vjp)(jnp.asarray(g))[0]
    ref = sl.expm_frechet(x.T, g, compute_expm=False)
    assert _rel(got, ref) < 1e-9
    assert _rel(vjp(jnp.zeros((7, 7)))[0], np.zeros((7, 7))) == 0


def test_expm_small_grad_vs_finite_differences():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 5))
    w = rng.standard_normal((5, 5))
    d = rng.standard_normal((5, 5))

    def f(x):
        return jnp.sum(w * expm_small(x))

    g = jax.jit(jax.grad(f))(jnp.asarray(x))
    h = 1e-6
    fd = (f(jnp.asarray(x + h * d)) - f(jnp.asarray(x - h * d))) / (2 * h)
    np.testing.assert_allclose(np.sum(np.asarray(g) * d), fd, rtol=1e-8)


def test_expm_small_rejects_bad_input():
    with pytest.raises(ValueError, match="`x`"):
        _expm_small_eager(jnp.zeros((3, 4)))
    with pytest.raises(TypeError, match="`x`"):
        _expm_small_eager(jnp.zeros((3, 3), dtype=jnp.int32))


def _tridiag(a, b):
    return np.diag(a) + np.diag(b, 1) + np.diag(b, -1)


@pytest.mark.parametrize("t", [1e-3, 1.0, 1e3, 1e6])
def test_expm_sym_tridiag_e1_matches_scipy(t):
    rng = np.random.default_rng(8)
    k = 12
    alpha = -np.abs(rng.standard_normal(k)) * np.logspace(-1, 1, k)
    beta = rng.standard_normal(k - 1) * 0.1
    ref = sl.expm(t * _tridiag(alpha, beta))[:, 0]
    got = np.asarray(expm_sym_tridiag_e1(alpha, beta, t))
    assert np.linalg.norm(got - ref) <= 1e-11 * max(np.linalg.norm(ref), 1e-300) + 1e-300


def test_expm_sym_tridiag_e1_zero_offdiagonal_exact():
    alpha = np.array([-1.0, 2.0, 0.0, 0.0])
    got = np.asarray(expm_sym_tridiag_e1(alpha, np.zeros(3), 1.5))
    np.testing.assert_array_equal(got, [np.exp(-1.5), 0.0, 0.0, 0.0])


def test_expm_sym_tridiag_e1_gradient():
    rng = np.random.default_rng(9)
    k = 6
    alpha, beta, t = rng.standard_normal(k), rng.standard_normal(k - 1), 0.7
    w = rng.standard_normal(k)

    def f(alpha, beta, t):
        return jnp.dot(w, expm_sym_tridiag_e1(alpha, beta, t))

    def f_ref(alpha, beta, t):
        return w @ sl.expm(t * _tridiag(alpha, beta))[:, 0]

    ga, gb, gt = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(alpha, beta, t)
    h = 1e-6
    for grad, which in ((ga, 0), (gb, 1)):
        base = [alpha, beta]
        d = rng.standard_normal(base[which].shape)
        plus = list(base)
        minus = list(base)
        plus[which] = base[which] + h * d
        minus[which] = base[which] - h * d
        fd = (f_ref(*plus, t) - f_ref(*minus, t)) / (2 * h)
        np.testing.assert_allclose(np.dot(grad, d), fd, rtol=1e-7)
    fd_t = (f_ref(alpha, beta, t + h) - f_ref(alpha, beta, t - h)) / (2 * h)
    np.testing.assert_allclose(gt, fd_t, rtol=1e-7)


def test_expm_sym_tridiag_e1_gradient_finite_with_repeated_eigenvalues():
    # The zero block a Krylov breakdown leaves: eigh's own derivative is NaN here.
    alpha = jnp.array([-1.0, 0.5, 0.0, 0.0, 0.0])
    beta = jnp.array([0.3, 0.0, 0.0, 0.0])
    ga, gb = jax.jit(
        jax.grad(lambda a, b: jnp.sum(expm_sym_tridiag_e1(a, b, 1.0)), argnums=(0, 1))
    )(alpha, beta)
    assert np.all(np.isfinite(ga)) and np.all(np.isfinite(gb))
    # Compare with the dense Fréchet derivative.
    x = _tridiag(np.asarray(alpha), np.asarray(beta))
    e1 = np.eye(5)[:, [0]]
    ybar = np.ones((5, 1))
    tbar = sl.expm_frechet(x.T, ybar @ e1.T, compute_expm=False)
    np.testing.assert_allclose(ga, np.diag(tbar), atol=1e-13)
    np.testing.assert_allclose(gb, np.diag(tbar, 1) + np.diag(tbar, -1), atol=1e-13)

"""expm_multiply(method="skew-lanczos") against dense expm / expm_frechet."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl

import pdeinv
from pdeinv.expm._small import KrylovPropagator, two_sided_block


def _skew_operator(n, seed=0):
    """A(p) = p_0 S_0 + diag(exp(p_1)) S_1 diag(exp(p_1)): skew for every p."""
    rng = np.random.default_rng(seed)
    b0, b1 = rng.standard_normal((2, n, n))
    s0, s1 = b0 - b0.T, np.triu(b1, 1) - np.triu(b1, 1).T

    def matvec(x, p):
        d = jnp.exp(p["d"])
        return p["a"] * (s0 @ x) + d * (s1 @ (d * x))

    def dense(p):
        d = np.exp(np.asarray(p["d"]))
        return float(p["a"]) * s0 + d[:, None] * s1 * d[None, :]

    params = {"a": jnp.asarray(1.0), "d": jnp.asarray(0.1 * rng.standard_normal(n))}
    return matvec, dense, params


@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_values_at_several_times_match_dense_expm(scale):
    n = 40
    matvec, dense, params = _skew_operator(n)
    params = {**params, "a": jnp.asarray(scale)}
    v = np.random.default_rng(1).standard_normal(n)
    times = np.array([0.1, 0.5, 1.0])
    tol = 1e-8
    ys = pdeinv.expm_multiply(matvec, v, params, times, method="skew-lanczos", tol=tol)
    a = dense(params)
    for t, y in zip(times, ys, strict=True):
        ref = sl.expm(t * a) @ v
        assert np.linalg.norm(y - ref) <= 100 * tol * np.linalg.norm(v)
    # exp(tA) is orthogonal: the norm is conserved.
    np.testing.assert_allclose(np.linalg.norm(ys, axis=1), np.linalg.norm(v), rtol=1e-6)


@pytest.mark.parametrize("tol", [1e-5, pytest.param(1e-9, marks=pytest.mark.slow)])
def test_gradients_match_expm_frechet(tol):
    n, t = 30, 2.0
    matvec, dense, params = _skew_operator(n, seed=2)
    rng = np.random.default_rng(3)
    v, w = rng.standard_normal((2, n))

    def loss(p, v):
        y = pdeinv.expm_multiply(matvec, v, p, t, method="skew-lanczos", tol=tol)
        return jnp.dot(w, y)

    g_p, g_v = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(v))
    a = dense(params)
    np.testing.assert_allclose(g_v, sl.expm(t * a).T @ w, atol=100 * tol * np.linalg.norm(w))
    # d/dp via directional Frechet derivatives of dense matrices.
    eps = 1e-6
    for name, direction in [("a", 1.0), ("d", np.eye(n)[4])]:
        plus = {**params, name: params[name] + eps * direction}
        minus = {**params, name: params[name] - eps * direction}
        da = (dense(plus) - dense(minus)) / (2 * eps)
        _, frechet = sl.expm_frechet(t * a, t * da)
        expected = w @ frechet @ v
        got = g_p[name] if name == "a" else g_p[name] @ direction
        assert abs(got - expected) <= 100 * tol * max(1.0, abs(expected))


def test_matches_arnoldi_under_jit_and_vmap():
    n = 25
    matvec, _, params = _skew_operator(n, seed=4)
    vs = jnp.asarray(np.random.default_rng(5).standard_normal((3, n)))

    @jax.jit
    def run(vs):
        def one(v, method):
            return pdeinv.expm_multiply(matvec, v, params, 1.5, method=method, tol=1e-10)

        return jax.vmap(lambda v: one(v, "skew-lanczos"))(vs), jax.vmap(
            lambda v: one(v, "arnoldi")
        )(vs)

    skew, arnoldi = run(vs)
    np.testing.assert_allclose(skew, arnoldi, atol=1e-8)


def test_non_skew_operator_is_refused():
    n = 20
    matvec, _, params = _skew_operator(n)
    v = np.random.default_rng(6).standard_normal(n)

    def shifted(x, p):
        return matvec(x, p) + 0.5 * x

    with pytest.raises(ValueError, match="skew-symmetric"):
        pdeinv.expm_multiply(shifted, v, params, 1.0, method="skew-lanczos")
    # Traced parameters: the forward sweep measures x^T A x on its Krylov vectors.
    with pytest.raises(Exception, match="skew-symmetric"):
        jax.jit(lambda p: pdeinv.expm_multiply(shifted, v, p, 1.0, method="skew-lanczos"))(
            params
        ).block_until_ready()


def test_operator_skew_only_where_the_state_lives_is_refused_by_the_adjoint():
    """Skew on the block holding ``v``, symmetric on the other: the forward sweep
    sees only the skew block, but the cotangent reaches the symmetric one, where
    ``A^T = -A`` is false.  The adjoint sweep must refuse, not return a wrong
    gradient (it did: 57 % error in ``grad_v``)."""
    rng = np.random.default_rng(0)
    n, half = 30, 15
    b = rng.standard_normal((n, n))
    a = np.zeros((n, n))
    a[:half, :half] = (b - b.T)[:half, :half] / 10
    a[half:, half:] = (b + b.T)[half:, half:] / 10
    v = np.concatenate([rng.standard_normal(half), np.zeros(n - half)])
    w = jnp.asarray(rng.standard_normal(n))

    def loss(p, v):
        y = pdeinv.expm_multiply(lambda x, p: p @ x, v, p, 1.0, method="skew-lanczos")
        return jnp.dot(w, y)

    # The value alone is right: the state never leaves the skew block.
    y = jax.jit(lambda p: loss(p, v))(jnp.asarray(a))
    np.testing.assert_allclose(y, w @ sl.expm(a) @ v, rtol=1e-8)
    with pytest.raises(Exception, match="adjoint sweep"):
        jax.block_until_ready(jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(a), v))


def test_adjoint_stops_early_in_forward_steps_cut_short_by_an_output():
    """Krylov-size control of the adjoint on an oscillatory problem.

    Each output interval takes a full forward step and a short one that ends at
    the output.  Every adjoint sub-step reaches its forward step's start, so
    the adjoint's step-size suggestion stays ``inf``; the adjoint used to build
    its full space in every step then (764 matvec calls for value and
    gradient).  With its one early-stop test per short step it makes exactly
    740 (the count is deterministic for this seed; testing at every chunk from
    the forward's size on made 716, but cost more than it saved on small
    grids).  The gradient stays right: ``d/dp exp(t p S) v = t S exp(t p S) v``.
    """
    n = 300
    rng = np.random.default_rng(0)
    b = rng.standard_normal((n, n))
    s = (b - b.T) / np.sqrt(n)
    calls = [0]

    def bump(_):
        calls[0] += 1

    def matvec(x, p):
        jax.debug.callback(bump, x[0])
        return p * (s @ x)

    v, w = rng.standard_normal(n), rng.standard_normal((4, n))
    times = 5.0 * np.arange(1, 5)
    options = dict(method="skew-lanczos", tol=1e-8, krylov_dim=30)

    def loss(p):
        return jnp.sum(w * pdeinv.expm_multiply(matvec, v, p, times, **options))

    _, stats = pdeinv.expm_multiply_info(matvec, v, 1.0, times, **options)
    assert int(stats.num_steps) == 8  # a full and a short step per output
    jax.effects_barrier()
    calls[0] = 0
    grad = jax.grad(loss)(1.0)
    jax.effects_barrier()
    assert calls[0] <= 740
    ref = sum(wi @ (t * s @ sl.expm(t * s) @ v) for wi, t in zip(w, times, strict=True))
    np.testing.assert_allclose(grad, ref, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reorthogonalize": True}, "reorthogonalize"),
        ({"gradient": "discrete"}, "discrete"),
    ],
)
def test_unsupported_options(kwargs, match):
    matvec, _, params = _skew_operator(10)
    with pytest.raises(ValueError, match=match):
        pdeinv.expm_multiply(matvec, np.ones(10), params, 1.0, method="skew-lanczos", **kwargs)


def test_skew_small_matrix_functions_match_dense():
    """exp(sH) e1, the error-estimate row and the two-sided block via the real eigenbasis."""
    k = 8
    rng = np.random.default_rng(7)
    b_f, b_b = rng.uniform(0.5, 3.0, (2, k - 1))
    h_f = np.diag(b_f, -1) - np.diag(b_f, 1)
    h_b = np.diag(b_b, -1) - np.diag(b_b, 1)
    prop_f = KrylovPropagator(jnp.asarray(h_f), 2.0, 0.5, symmetric=False, skew=True)
    prop_b = KrylovPropagator(jnp.asarray(h_b), 1.5, 0.0, symmetric=False, skew=True)
    general_f = KrylovPropagator(jnp.asarray(h_f), 2.0, 0.5, symmetric=False)
    general_b = KrylovPropagator(jnp.asarray(h_b), 1.5, 0.0, symmetric=False)
    for s in (0.01, 9.0):
        coef, err = prop_f.coefficients(s)
        ref_coef, ref_err = general_f.coefficients(s)
        np.testing.assert_allclose(coef, sl.expm(s * h_f)[:, 0], atol=1e-12)
        np.testing.assert_allclose(err, ref_err, rtol=1e-9, atol=1e-15)
        c = jnp.asarray(rng.standard_normal(k))
        m, lam = two_sided_block(prop_f, prop_b, c, s)
        m_ref, lam_ref = two_sided_block(general_f, general_b, c, s)
        np.testing.assert_allclose(m, m_ref, atol=1e-11)
        np.testing.assert_allclose(lam, lam_ref, atol=1e-12)

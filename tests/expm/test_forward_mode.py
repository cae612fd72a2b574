"""Forward mode of expm_multiply: jax.jvp / jacfwd / linearize against dense references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from test_expm import advdiff_matvec, dense_matrix, diffusion_matvec, diffusion_problem

from pdeinv.expm import expm_multiply


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


def direction(params, seed):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda x: jnp.asarray(rng.standard_normal(np.shape(x))), params)


def dense_tangent(matvec, params, v, ts, dv, dparams):
    """``d/de exp(t A(p + e dp)) (v + e dv)`` for each t: expm and expm_frechet."""
    n = v.shape[0]
    a, e = jax.jvp(lambda p: dense_matrix(matvec, p, n), (params,), (dparams,))
    a, e = np.asarray(a), np.asarray(e)
    rows = []
    for t in np.atleast_1d(ts):
        frechet = scipy.linalg.expm_frechet(t * a, t * e, compute_expm=False)
        rows.append(scipy.linalg.expm(t * a) @ np.asarray(dv) + frechet @ np.asarray(v))
    return np.stack(rows)


CASES = [
    # (matvec, method, stiffness t||A||, n)
    (diffusion_matvec, "lanczos", 1e2, 24),
    (diffusion_matvec, "lanczos", 1e4, 24),
    pytest.param(advdiff_matvec, "arnoldi", 1e2, 24, marks=pytest.mark.slow),  # ~15 s
    (advdiff_matvec, "arnoldi", 1e4, 24),
    # n = 200 > krylov_dim: the block solve's incomplete orthogonalisation is exercised.
    (diffusion_matvec, "lanczos", 1e3, 200),
    pytest.param(diffusion_matvec, "lanczos", 1e4, 200, marks=pytest.mark.slow),
    # n below krylov_dim: the forward solve's dimension is capped at n, the block's at
    # 2n (capped at n as well, it could not take a step and ran out of max_steps).
    (diffusion_matvec, "lanczos", 1e3, 2),
    (diffusion_matvec, "lanczos", 1e3, 3),
]
# At looser tol: the block solve's error control measured the whole [tangent; alpha u]
# state, so the decayed tangent at late times was off by 2,200 tol (lanczos, 1e-5), 870
# tol (1e-6) and 3,000 tol (arnoldi, 1e-5); it now also holds the tangent half to tol
# (_step._weighted_scale).
LOOSE = [
    (diffusion_matvec, "lanczos", 1e4, 24, 1e-5),
    (diffusion_matvec, "lanczos", 1e4, 24, 1e-6),
    pytest.param(advdiff_matvec, "arnoldi", 1e4, 24, 1e-5, marks=pytest.mark.slow),
]


def _at(tol, case):
    """A ``CASES`` row (a tuple or a ``pytest.param``) with ``tol`` appended."""
    if hasattr(case, "marks"):
        return pytest.param(*case.values, tol, marks=case.marks)
    return (*case, tol)


@pytest.mark.parametrize("matvec, method, stiffness, n, tol", [_at(1e-8, c) for c in CASES] + LOOSE)
def test_tangent_matches_expm_frechet_at_several_times(matvec, method, stiffness, n, tol):
    params, v = diffusion_problem(n, stiffness, seed=3)
    if matvec is advdiff_matvec:
        params = dict(params, velocity=jnp.asarray(0.7))
    dparams, dv = direction(params, 4), jnp.asarray(np.random.default_rng(5).standard_normal(n))
    ts = jnp.asarray([0.01, 0.3, 1.0])

    def f(v, p):
        return expm_multiply(matvec, v, p, ts, tol=tol, method=method)

    ys, dys = jax.jvp(f, (v, params), (dv, dparams))
    ref = dense_tangent(matvec, params, v, ts, dv, dparams)
    for i in range(len(ts)):
        assert rel(dys[i], ref[i]) <= 100 * tol, (i, rel(dys[i], ref[i]) / tol)


def test_tangent_of_an_affine_symmetric_problem_matches_expm_frechet():
    """affine-lanczos: the tangent of the bordered operator against the dense one."""
    from test_affine_lanczos import _operator

    n, tol = 120, 1e-8
    matvec, dense, p = _operator(n, seed=4)
    rng = np.random.default_rng(5)
    v = jnp.asarray(np.concatenate([rng.standard_normal(n), [1.0]]))
    dp = jnp.asarray(rng.standard_normal(n))
    dv = jnp.asarray(np.concatenate([rng.standard_normal(n), [0.0]]))
    t = 2.0

    def f(v, p):
        return expm_multiply(matvec, v, p, t, tol=tol, method="affine-lanczos")

    _, dy = jax.jvp(f, (v, p), (dv, dp))
    eps = 1e-6  # central difference of the dense operator: error ~1e-10, far below 100 tol
    da = dense(np.asarray(p) + eps * np.asarray(dp)) - dense(np.asarray(p) - eps * np.asarray(dp))
    da /= 2 * eps
    aug = dense(p)
    ref = scipy.linalg.expm(t * aug) @ np.asarray(dv) + scipy.linalg.expm_frechet(
        t * aug, t * da, compute_expm=False
    ) @ np.asarray(v)
    assert rel(dy, ref) <= 100 * tol, rel(dy, ref)
    # The last entry of v is the affine constant: reverse mode holds it fixed,
    # and forward mode must too (a tangent there used to give jacfwd != jacrev).
    dv_last = dv.at[-1].set(0.7)
    _, dy_last = jax.jvp(f, (v, p), (dv_last, dp))
    np.testing.assert_allclose(dy_last, dy, rtol=0, atol=1e-14 * float(jnp.max(jnp.abs(dy))))


@pytest.mark.slow  # ~40 s; the dot-product test checks forward against reverse by default
def test_jacfwd_equals_dense_jacobian_and_jacrev():
    n, tol = 16, 1e-9
    params, v = diffusion_problem(n, 50.0, seed=6)

    def f(p):
        return expm_multiply(diffusion_matvec, v, p, 1.0, tol=tol, method="lanczos")

    jf = jax.jacfwd(f)(params)
    jr = jax.jacrev(f)(params)
    # Dense Jacobian column by column from expm_frechet.
    leaves, treedef = jax.tree_util.tree_flatten(params)
    for index, leaf in enumerate(leaves):
        size = int(np.size(leaf))
        for k in range(size):
            basis = [jnp.zeros_like(x) for x in leaves]
            basis[index] = jnp.zeros(size).at[k].set(1.0).reshape(np.shape(leaf))
            dp = jax.tree_util.tree_unflatten(treedef, basis)
            ref = dense_tangent(diffusion_matvec, params, v, 1.0, jnp.zeros(n), dp)[0]
            col_f = np.asarray(jax.tree_util.tree_leaves(jf)[index]).reshape(n, size)[:, k]
            col_r = np.asarray(jax.tree_util.tree_leaves(jr)[index]).reshape(n, size)[:, k]
            scale = max(np.linalg.norm(ref), 1e-3 * np.linalg.norm(v))
            assert np.linalg.norm(col_f - ref) <= 100 * tol * scale
            assert np.linalg.norm(col_f - col_r) <= 100 * tol * scale


@pytest.mark.parametrize(
    "method",
    ["lanczos", pytest.param("arnoldi", marks=pytest.mark.slow)],  # ~40 s each
)
def test_dot_product_test_forward_against_reverse(method):
    # |<J d, w> - <d, J^T w>| <= 100 tol |<J d, w>|, J the derivative w.r.t. (v, params, t).
    n, tol = 20, 1e-8
    params, v = diffusion_problem(n, 300.0, seed=8)
    matvec = diffusion_matvec if method == "lanczos" else advdiff_matvec
    if method == "arnoldi":
        params = dict(params, velocity=jnp.asarray(0.5))
    ts = jnp.asarray([0.2, 1.0])
    options = dict(tol=tol, method=method)

    def f(v, p, ts):
        return expm_multiply(matvec, v, p, ts, **options)

    rng = np.random.default_rng(9)
    d = (jnp.asarray(rng.standard_normal(n)), direction(params, 10), jnp.asarray([0.3, -0.2]))
    w = jnp.asarray(rng.standard_normal((2, n)))
    _, jd = jax.jvp(f, (v, params, ts), d)
    _, vjp = jax.vjp(f, v, params, ts)
    jtw = vjp(w)
    lhs = float(jnp.sum(jd * w))
    pairs = zip(jax.tree.leaves(d), jax.tree.leaves(jtw), strict=True)
    rhs = sum(float(jnp.vdot(a, b)) for a, b in pairs)
    assert abs(lhs - rhs) <= 100 * tol * abs(lhs)


@pytest.mark.slow  # ~13-23 s of compilation; the default tests cover the rule
def test_time_tangent_is_a_times_the_state():
    n = 12
    params, v = diffusion_problem(n, 20.0, seed=11)
    a = np.asarray(dense_matrix(diffusion_matvec, params, n))
    f = lambda t: expm_multiply(diffusion_matvec, v, params, t, tol=1e-10, method="lanczos")  # noqa: E731
    y, dy = jax.jvp(f, (jnp.asarray(0.4),), (jnp.asarray(2.0),))
    assert rel(dy, 2.0 * a @ np.asarray(y)) <= 1e-8


@pytest.mark.slow  # ~13-23 s of compilation; the default tests cover the rule
def test_skew_lanczos_tangent_matches_expm_frechet():
    from test_expm_skew import _skew_operator

    matvec, dense, params = _skew_operator(20, seed=2)
    v = jnp.asarray(np.random.default_rng(3).standard_normal(20))
    dparams, tol = direction(params, 4), 1e-8
    f = lambda p: expm_multiply(matvec, v, p, 3.0, tol=tol, method="skew-lanczos")  # noqa: E731
    _, dy = jax.jvp(f, (params,), (dparams,))
    a, e = jax.jvp(lambda p: dense_matrix(matvec, p, 20), (params,), (dparams,))
    ref = scipy.linalg.expm_frechet(3.0 * np.asarray(a), 3.0 * np.asarray(e), compute_expm=False)
    assert rel(dy, ref @ np.asarray(v)) <= 100 * tol


def test_linearize_jit_and_vmap_agree_with_jvp():
    n, tol = 16, 1e-8
    params, v = diffusion_problem(n, 100.0, seed=12)

    def f(p):
        return expm_multiply(diffusion_matvec, v, p, 1.0, tol=tol, method="lanczos")

    dps = [direction(params, s) for s in (13, 14, 15)]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *dps)
    batched = jax.jit(jax.vmap(lambda dp: jax.jvp(f, (params,), (dp,))[1]))(stacked)
    _, lin = jax.linearize(f, params)
    ref = dense_tangent(diffusion_matvec, params, v, 1.0, jnp.zeros(n), dps[0])[0]
    assert rel(batched[0], ref) <= 100 * tol
    for i, dp in enumerate(dps):
        assert rel(lin(dp), batched[i]) <= 1e-10


@pytest.mark.slow  # ~13-23 s of compilation; the default tests cover the rule
def test_float32_forward_mode_runs_and_is_accurate_to_float32():
    n = 16
    params, v = diffusion_problem(n, 30.0, seed=16)
    p32 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
    v32 = jnp.asarray(v, jnp.float32)
    dp32 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), direction(params, 17))
    f = lambda p: expm_multiply(diffusion_matvec, v32, p, 1.0, tol=1e-5, method="lanczos")  # noqa: E731
    _, dy = jax.jvp(f, (p32,), (dp32,))
    assert dy.dtype == jnp.float32
    ref = dense_tangent(diffusion_matvec, params, v, 1.0, jnp.zeros(n), direction(params, 17))[0]
    assert rel(dy, ref) <= 1e-3


@pytest.mark.slow  # ~13-23 s of compilation; the default tests cover the rule
def test_forward_over_reverse_hessian_vector_product_for_lanczos():
    # jax.jvp of jax.grad differentiates the reverse sweep: checked against the
    # exact second derivative of w^T exp(p A0) v in the scalar p.
    n = 10
    rng = np.random.default_rng(18)
    b = rng.standard_normal((n, n))
    a0 = -(b @ b.T) / n
    v, w = jnp.asarray(rng.standard_normal(n)), rng.standard_normal(n)

    def loss(p):
        y = expm_multiply(lambda x, p: p * (a0 @ x), v, p, 1.0, tol=1e-10, method="lanczos")
        return jnp.dot(w, y)

    _, hv = jax.jvp(jax.grad(loss), (jnp.asarray(1.0),), (jnp.asarray(1.0),))
    exact = w @ a0 @ a0 @ scipy.linalg.expm(a0) @ np.asarray(v)
    assert abs(float(hv) - exact) <= 1e-7 * abs(exact)


def dense_second_derivatives(mats, p, v, w, t):
    """``d^2/dp_i dp_j w^T exp(t sum_k p_k A_k) v``: second Fréchet derivatives, dense.

    The (1, 3) block of ``exp`` of the 3 x 3 block matrix with ``t A`` on the
    diagonal and ``t A_i``, ``t A_j`` above it is the mixed second derivative in
    the order (i, j); the Hessian is its symmetrisation.
    """
    n = v.shape[0]
    a = sum(pk * mk for pk, mk in zip(p, mats, strict=True))
    z = np.zeros((n, n))
    h = np.zeros((len(mats), len(mats)))
    for i, ei in enumerate(mats):
        for j, ej in enumerate(mats):
            block = np.block([[t * a, t * ei, z], [z, t * a, t * ej], [z, z, t * a]])
            h[i, j] = w @ scipy.linalg.expm(block)[:n, 2 * n :] @ v
    return h + h.T


def hessian_of_two_matrix_loss(mats, p0, v, w, t, **options):
    """``jax.hessian`` of ``w^T exp(t (p_0 A_0 + p_1 A_1)) v`` at ``p0``, by expm_multiply."""
    a1, a2 = (jnp.asarray(m) for m in mats)

    def loss(p):
        y = expm_multiply(
            lambda x, p: p[0] * (a1 @ x) + p[1] * (a2 @ x), jnp.asarray(v), p, t, **options
        )
        return jnp.dot(jnp.asarray(w), y)

    return np.asarray(jax.hessian(loss)(jnp.asarray(p0)))


def two_coefficient_heat(n):
    """A stiff 1-D diffusion operator split in two coefficients (left/right halves)."""
    lap = (-2 * np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1)) * n**2 / 4
    half = np.diag((np.arange(n) < n // 2).astype(float))
    left = 0.5 * (half @ lap + lap @ half)
    return [left, lap - left]


def test_eigh_small_tangent_is_finite_and_exact_at_repeated_eigenvalues():
    # A broken-down Lanczos projection is zero-padded: repeated zero eigenvalues.
    # jax's eigh rule gives 0/0 there; spectral functions must still get their
    # exact derivative (checked against expm_frechet).
    from pdeinv.krylov._common import eigh_small

    rng = np.random.default_rng(30)
    b = rng.standard_normal((4, 4))
    t4 = -(b @ b.T)
    h = np.zeros((7, 7))
    h[:4, :4] = t4
    dh = np.zeros((7, 7))
    db = rng.standard_normal((4, 4))
    dh[:4, :4] = db + db.T

    def exp_e1(x):
        lam, q = eigh_small(x)
        return q @ (jnp.exp(lam) * q[0, :])

    _, tangent = jax.jvp(exp_e1, (jnp.asarray(h),), (jnp.asarray(dh),))
    exact = scipy.linalg.expm_frechet(h, dh, compute_expm=False)[:, 0]
    assert np.all(np.isfinite(tangent))
    assert rel(tangent, exact) <= 1e-12


@pytest.mark.slow  # ~40 s per checkpoint policy (compiling forward over reverse)
@pytest.mark.parametrize("checkpoint", ["trajectory", "states", "bases"])
def test_hessian_of_a_stiff_problem_matches_the_dense_second_derivative(checkpoint):
    # jax.hessian (forward over reverse) at t||A|| ~ 3e3, tol 1e-6 .. 1e-10: the
    # adjoint sweep's own JVP rule takes every quadrature sum in full (its SVD
    # truncation and the trajectory basis represent M, not dM).
    n, t = 40, 2.0
    mats = two_coefficient_heat(n)
    rng = np.random.default_rng(31)
    v, w = rng.standard_normal(n), rng.standard_normal(n)
    p0 = np.array([1.0, 0.7])
    exact = dense_second_derivatives(mats, p0, v, w, t)
    for tol in (1e-6, 1e-10):
        hess = hessian_of_two_matrix_loss(
            mats, p0, v, w, t, tol=tol, method="lanczos", checkpoint=checkpoint
        )
        assert np.abs(hess - exact).max() <= 100 * tol * np.abs(exact).max()


@pytest.mark.slow  # ~20 s of compilation
def test_hessian_vector_product_after_a_krylov_breakdown_is_finite_and_exact():
    # v = ones on a 1-D Dirichlet Laplacian of size 6 spans a 3-dimensional Krylov
    # space: the Lanczos process breaks down and pads its projection with zeros
    # (this gave NaN before the breakdown-safe eigh rule).
    n = 6
    lap = -2 * np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1)
    w = np.random.default_rng(32).standard_normal(n)
    a0 = jnp.asarray(lap)

    def loss(p):
        y = expm_multiply(lambda x, p: p * (a0 @ x), jnp.ones(n), p, 1.0, method="lanczos")
        return jnp.dot(jnp.asarray(w), y)

    _, hv = jax.jvp(jax.grad(loss), (1.0,), (1.0,))
    exact = w @ lap @ lap @ scipy.linalg.expm(lap) @ np.ones(n)
    assert abs(float(hv) - exact) <= 1e-6 * abs(exact)


@pytest.mark.slow  # ~30 s of compilation
def test_hessian_of_a_skew_problem_matches_the_dense_second_derivative():
    n = 30
    rng = np.random.default_rng(33)
    shift = np.diag(np.ones(n - 1), 1) * 40.0
    block = np.zeros((n, n))
    block[:10, 10:20] = rng.standard_normal((10, 10))
    mats = [shift - shift.T, block - block.T]
    v, w = rng.standard_normal(n), rng.standard_normal(n)
    p0 = np.array([1.0, 0.5])
    exact = dense_second_derivatives(mats, p0, v, w, 1.0)
    hess = hessian_of_two_matrix_loss(mats, p0, v, w, 1.0, tol=1e-8, method="skew-lanczos")
    assert np.abs(hess - exact).max() <= 1e-6 * np.abs(exact).max()


def test_second_derivatives_of_arnoldi_are_refused_with_a_clear_error():
    params, v = diffusion_problem(8, 10.0, seed=34)
    f = lambda p: jnp.sum(expm_multiply(diffusion_matvec, v, p, 1.0, method="arnoldi") ** 2)  # noqa: E731
    with pytest.raises(NotImplementedError, match="second derivatives"):
        jax.jvp(jax.grad(f), (params,), (params,))


def test_discrete_gradient_has_reverse_mode_only():
    params, v = diffusion_problem(8, 10.0, seed=20)
    f = lambda p: expm_multiply(  # noqa: E731
        diffusion_matvec, v, p, 1.0, method="lanczos", gradient="discrete"
    )
    with pytest.raises(NotImplementedError, match="reverse mode only"):
        jax.jvp(f, (params,), (params,))


def test_forward_over_forward_is_refused_with_a_clear_error():
    params, v = diffusion_problem(8, 10.0, seed=19)
    f = lambda p: expm_multiply(diffusion_matvec, v, p, 1.0, method="lanczos")  # noqa: E731
    with pytest.raises(NotImplementedError, match="forward mode over forward mode"):
        jax.jacfwd(jax.jacfwd(f))(params)


def test_gradient_of_a_batch_with_shared_params_sums_the_per_element_gradients():
    # jax.grad(jax.vmap(f, in_axes=(0, None))): the tangent primitive is batched
    # while params are not (the multi-experiment objective); reverse mode must sum.
    n = 12
    params, _ = diffusion_problem(n, 50.0, seed=21)
    vs = jnp.asarray(np.random.default_rng(22).standard_normal((3, n)))
    f = lambda v, p: expm_multiply(diffusion_matvec, v, p, 1.0, tol=1e-8, method="lanczos")  # noqa: E731
    batched = jax.grad(lambda p: jnp.sum(jax.vmap(f, in_axes=(0, None))(vs, p) ** 2))(params)
    single = jax.jit(jax.grad(lambda p, v: jnp.sum(f(v, p) ** 2)))  # one compilation
    looped = [single(params, v) for v in vs]
    total = jax.tree_util.tree_map(lambda *g: sum(g), *looped)
    for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(total), strict=True):
        assert rel(a, b) <= 1e-10

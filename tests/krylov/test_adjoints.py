"""Custom VJPs of arnoldi/lanczos and the Krylov f(A)v approximations:
against autodiff through the unrolled loop, finite differences, a Taylor test
and dense scipy values."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl

from pdeinv.krylov import arnoldi, expm_krylov, funm_krylov, lanczos
from pdeinv.krylov._arnoldi import arnoldi_iteration
from pdeinv.krylov._lanczos import lanczos_iteration


def _matvec_general(x, p):
    return p["a"] @ x + p["d"] * x


def _matvec_symmetric(x, p):
    # A(params) symmetric for every params, as lanczos requires.
    return (p["a"] + p["a"].T) @ x + p["d"] * x


def _problem(n, seed):
    rng = np.random.default_rng(seed)
    params = {
        "a": jnp.asarray(rng.standard_normal((n, n)) / np.sqrt(4 * n)),
        "d": jnp.asarray(rng.standard_normal(n)),
    }
    return params, jnp.asarray(rng.standard_normal(n)), rng


def _loss_weights(rng, n, k):
    return [jnp.asarray(rng.standard_normal(s)) for s in [(n, k), (k, k), (n,), ()]]


def _loss(weights, decomposition):
    # Touches every output so every cotangent path of the adjoint is exercised.
    q, h, r, beta, _ = decomposition
    w_q, w_h, w_r, w_beta = weights
    return jnp.sum(w_q * jnp.sin(q)) + jnp.sum(w_h * h**2) + jnp.dot(w_r, r) + w_beta * beta


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _both_gradients(method, reorth, symmetric, k, v, params, weights):
    matvec = _matvec_symmetric if symmetric else _matvec_general
    public, raw = (
        (arnoldi, arnoldi_iteration) if method == "arnoldi" else (lanczos, lanczos_iteration)
    )

    def custom(v, params):
        return _loss(weights, public(matvec, v, params, k, reorthogonalize=reorth))

    def unrolled(v, params):
        dec = raw(lambda x: matvec(x, params), v, k, reorthogonalize=reorth)
        return _loss(weights, dec._replace(basis=dec.basis.T))  # raw: (k, n) rows

    grad_custom = jax.grad(custom, argnums=(0, 1))(v, params)
    grad_unrolled = jax.grad(unrolled, argnums=(0, 1))(v, params)
    return grad_custom, grad_unrolled


def _assert_trees_close(got, ref, rtol):
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
        g, r = np.asarray(g), np.asarray(r)
        assert np.all(np.isfinite(g))
        assert np.linalg.norm(g - r) <= rtol * np.linalg.norm(r), np.linalg.norm(
            g - r
        ) / np.linalg.norm(r)


_slow = pytest.mark.slow
ADJOINT_CASES = [
    # method, reorthogonalize, symmetric A, n, krylov_dim
    ("arnoldi", True, False, 8, 8),
    pytest.param("arnoldi", True, False, 20, 7, marks=_slow),
    ("arnoldi", True, True, 30, 30),
    ("arnoldi", False, False, 15, 6),
    pytest.param("arnoldi", True, False, 12, 1, marks=_slow),
    ("lanczos", False, True, 8, 8),
    ("lanczos", False, True, 30, 10),
    pytest.param("lanczos", False, True, 12, 1, marks=_slow),
    pytest.param("lanczos", True, True, 30, 30, marks=_slow),
    ("lanczos", True, True, 20, 9),
]


@pytest.mark.parametrize(("method", "reorth", "symmetric", "n", "k"), ADJOINT_CASES)
def test_custom_vjp_matches_unrolled_autodiff(method, reorth, symmetric, n, k):
    params, v, rng = _problem(n, seed=n + k)
    weights = _loss_weights(rng, n, k)
    got, ref = _both_gradients(method, reorth, symmetric, k, v, params, weights)
    _assert_trees_close(got, ref, rtol=1e-10)


@pytest.mark.parametrize("method", ["arnoldi", "lanczos"])
def test_custom_vjp_after_breakdown(method):
    # Eigenvector start (breakdown after 1 step) and a rank-2 operator (after 3).
    n, k = 12, 5
    params, _, rng = _problem(n, seed=4)
    a_sym = np.asarray(params["a"] + params["a"].T) + np.diag(np.asarray(params["d"]))
    _, eigvecs = np.linalg.eigh(a_sym)
    weights = _loss_weights(rng, n, k)
    got, ref = _both_gradients(
        method, method == "arnoldi", True, k, jnp.asarray(eigvecs[:, 2]), params, weights
    )
    _assert_trees_close(got, ref, rtol=1e-10)

    u = rng.standard_normal((n, 2))
    low_rank = {"a": jnp.asarray(0.5 * u @ np.diag([1.0, -2.0]) @ u.T), "d": jnp.zeros(n)}
    v = jnp.asarray(rng.standard_normal(n))
    assert int(lanczos(_matvec_symmetric, v, low_rank, k).num_steps) == 3
    got, ref = _both_gradients(method, method == "arnoldi", True, k, v, low_rank, weights)
    _assert_trees_close(got, ref, rtol=1e-10)


@pytest.mark.parametrize("method", ["arnoldi", "lanczos"])
def test_zero_start_vector_gradient_is_zero_not_nan(method):
    params, _, rng = _problem(6, seed=5)
    weights = _loss_weights(rng, 6, 3)
    got, _ = _both_gradients(method, False, True, 3, jnp.zeros(6), params, weights)
    for leaf in jax.tree.leaves(got):
        assert np.all(np.asarray(leaf) == 0)


@functools.cache  # the two tests below share one compiled objective and gradient
def _expm_objective(method, k):
    matvec = _matvec_symmetric if method == "lanczos" else _matvec_general

    def objective(v, params, target):
        y = expm_krylov(matvec, v, params, 0.5, krylov_dim=k, method=method)
        return 0.5 * jnp.sum((y - target) ** 2)

    return jax.jit(objective), jax.jit(jax.grad(objective, argnums=(0, 1)))


def _directional_derivative(method, seed):
    """The objective, a move ``h -> (v + h dv, params + h dp)`` and the gradient's slope on it."""
    n, k = 16, 6
    params, v, rng = _problem(n, seed=seed)
    target = jnp.asarray(rng.standard_normal(n))
    objective, gradient = _expm_objective(method, k)
    g_v, g_p = gradient(v, params, target)
    dv = jnp.asarray(rng.standard_normal(n))
    dp = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape)), params)
    slope = jnp.dot(g_v, dv) + sum(
        jnp.sum(g * d) for g, d in zip(jax.tree.leaves(g_p), jax.tree.leaves(dp), strict=True)
    )

    def at(h):
        return objective(v + h * dv, jax.tree.map(functools.partial(_axpy, h), dp, params), target)

    return at, slope


def _axpy(h, d, x):
    return x + h * d


@pytest.mark.parametrize("method", ["arnoldi", "lanczos"])
def test_gradient_vs_central_finite_differences(method):
    at, slope = _directional_derivative(method, seed=6)
    h = 1e-5
    np.testing.assert_allclose(slope, (at(h) - at(-h)) / (2 * h), rtol=1e-7)


@pytest.mark.parametrize("method", ["arnoldi", "lanczos"])
def test_taylor_remainder_is_second_order(method):
    at, slope = _directional_derivative(method, seed=7)
    j0 = at(0.0)
    steps = 1e-2 * 0.5 ** np.arange(5)
    values = [at(h) for h in steps]
    remainders = [abs(float(jh - j0 - h * slope)) for h, jh in zip(steps, values, strict=True)]
    orders = np.log(np.array(remainders[:-1]) / np.array(remainders[1:])) / np.log(2)
    assert np.min(orders) >= 1.9, orders
    # A wrong gradient leaves a first-order remainder: the test can fail.
    wrong = [abs(float(jh - j0 - h * 1.01 * slope)) for h, jh in zip(steps, values, strict=True)]
    assert np.log(wrong[-2] / wrong[-1]) / np.log(2) < 1.5


@functools.partial(jax.jit, static_argnames=("matvec", "krylov_dim", "method", "reorth", "f"))
def _expm_krylov_jit(matvec, v, params, t, krylov_dim, method="arnoldi", reorth=None, f=None):
    if f is not None:
        return funm_krylov(matvec, v, params, krylov_dim=krylov_dim, f=f, method=method)
    return expm_krylov(
        matvec, v, params, t, krylov_dim=krylov_dim, method=method, reorthogonalize=reorth
    )


def _dense(matvec, params, n):
    return np.asarray(jax.vmap(lambda e: matvec(e, params), out_axes=1)(jnp.eye(n)))


@pytest.mark.parametrize("method", ["arnoldi", "lanczos"])
def test_expm_krylov_values_vs_scipy(method):
    n = 20
    params, v, _ = _problem(n, seed=8)
    matvec = _matvec_symmetric if method == "lanczos" else _matvec_general
    ref = sl.expm(0.7 * _dense(matvec, params, n)) @ np.asarray(v)
    full = _expm_krylov_jit(matvec, v, params, 0.7, n, method, True)
    np.testing.assert_allclose(full, ref, rtol=1e-11, atol=1e-12 * np.linalg.norm(ref))
    errors = []
    for k in (4, 12):
        y = _expm_krylov_jit(matvec, v, params, 0.7, k, method)
        errors.append(np.linalg.norm(np.asarray(y) - ref) / np.linalg.norm(ref))
    assert errors[0] > errors[1] and errors[1] < 1e-7


def _square_plus_identity(h):
    return h @ h + jnp.eye(h.shape[0], dtype=h.dtype)


def test_funm_krylov_callable_and_time_derivative():
    n = 14
    params, v, _ = _problem(n, seed=9)
    a = _dense(_matvec_general, params, n)
    y_exp = _expm_krylov_jit(_matvec_general, v, params, 1.0, n, f="exp")
    np.testing.assert_allclose(y_exp, sl.expm(a) @ np.asarray(v), rtol=1e-11)
    # f(x) = x^2 + 1 is reproduced exactly once k >= 3: checks the callable path.
    y_poly = _expm_krylov_jit(_matvec_general, v, params, 1.0, 3, f=_square_plus_identity)
    np.testing.assert_allclose(y_poly, a @ (a @ np.asarray(v)) + np.asarray(v), rtol=1e-12)
    # d/dt sum(exp(tA)v) = sum(A exp(tA)v)
    grad_t = jax.jit(
        jax.grad(lambda t: jnp.sum(_expm_krylov_jit(_matvec_general, v, params, t, n)))
    )(0.3)
    np.testing.assert_allclose(grad_t, np.sum(a @ sl.expm(0.3 * a) @ np.asarray(v)), rtol=1e-10)


def test_closure_captured_arrays_are_differentiated():
    n, k = 10, 4
    params, v, _ = _problem(n, seed=10)

    def both(d):
        via_closure = funm_krylov(lambda x, p: p @ x + d * x, v, params["a"], krylov_dim=k)
        via_params = funm_krylov(
            lambda x, p: p[0] @ x + p[1] * x, v, (params["a"], d), krylov_dim=k
        )
        return jnp.sum(via_closure), jnp.sum(via_params)

    g_closure, g_params = jax.jit(jax.jacrev(both))(params["d"])
    np.testing.assert_allclose(g_closure, g_params, rtol=1e-12)
    assert np.linalg.norm(g_closure) > 0


def test_jit_and_vmap_of_public_api():
    n, k = 10, 4
    params, v, _ = _problem(n, seed=11)
    vs = jnp.stack([v, 2 * v, -v])
    batched = jax.jit(jax.vmap(lambda v: lanczos(_matvec_symmetric, v, params, k)))(vs)
    np.testing.assert_allclose(batched.norm, np.array([1, 2, 1]) * np.linalg.norm(v), rtol=1e-14)
    grads = jax.jit(
        jax.vmap(
            jax.grad(
                lambda v: jnp.sum(
                    expm_krylov(_matvec_symmetric, v, params, krylov_dim=k, method="lanczos")
                )
            )
        )
    )(vs)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)


def test_float32_keeps_dtype():
    params, v, _ = _problem(12, seed=12)
    params32 = jax.tree.map(lambda x: x.astype(jnp.float32), params)
    y = expm_krylov(
        _matvec_symmetric, v.astype(jnp.float32), params32, krylov_dim=5, method="lanczos"
    )
    assert y.dtype == jnp.float32
    dec = arnoldi(_matvec_general, v.astype(jnp.float32), params32, 5)
    assert dec.basis.dtype == dec.small.dtype == jnp.float32


@pytest.mark.parametrize("function", [arnoldi, lanczos])
def test_bad_inputs_raise_naming_the_argument(function):
    params, v, _ = _problem(6, seed=13)
    with pytest.raises(ValueError, match="krylov_dim"):
        function(_matvec_general, v, params, 0)
    with pytest.raises(ValueError, match="krylov_dim"):
        function(_matvec_general, v, params, 7)
    with pytest.raises(TypeError, match="krylov_dim"):
        function(_matvec_general, v, params, 2.5)
    with pytest.raises(ValueError, match="`v`"):
        function(_matvec_general, jnp.ones((6, 1)), params, 2)
    with pytest.raises(TypeError, match="`v`"):
        function(_matvec_general, jnp.ones(6, dtype=jnp.int32), params, 2)
    with pytest.raises(ValueError, match="`v`.*non-finite"):
        function(_matvec_general, v.at[2].set(jnp.nan), params, 2)
    with pytest.raises(ValueError, match="matvec"):
        function(lambda x, p: jnp.concatenate([x, x]), v, params, 2)
    with pytest.raises(TypeError, match="matvec"):
        function(lambda x, p: x.astype(jnp.float32), v, params, 2)
    with pytest.raises(Exception, match="non-finite"):
        jax.jit(lambda v: function(_matvec_general, v, params, 2).basis)(
            v.at[0].set(jnp.inf)
        ).block_until_ready()


def test_funm_bad_options():
    params, v, _ = _problem(6, seed=14)
    with pytest.raises(ValueError, match="method"):
        funm_krylov(_matvec_general, v, params, krylov_dim=2, method="gmres")
    with pytest.raises(ValueError, match="`f`"):
        funm_krylov(_matvec_general, v, params, krylov_dim=2, f="sin")
    with pytest.raises(ValueError, match="f\\(H\\)"):
        funm_krylov(_matvec_general, v, params, krylov_dim=2, f=lambda h: h[0])
    with pytest.raises(ValueError, match="`t`"):
        expm_krylov(_matvec_general, v, params, jnp.ones(2), krylov_dim=2)


def test_integer_params_leaf_and_chunked_params_vjp():
    # krylov_dim = 32 takes the chunked path of the params VJP (chunks of 16);
    # an integer leaf must get a float0 cotangent, not break the chunk sums.
    n, k = 40, 32
    params, v, _ = _problem(n, seed=15)
    params = {**params, "shift": jnp.asarray(2, jnp.int32)}

    def matvec(x, p):
        return _matvec_symmetric(x, p) + p["shift"].astype(x.dtype) * x

    def objective(p, reorth):
        dec = lanczos(matvec, v, p, k, reorthogonalize=reorth)
        return jnp.sum(jnp.sin(dec.basis)) + jnp.sum(dec.small**2)

    def unrolled(p):
        dec = lanczos_iteration(lambda x: matvec(x, p), v, k, reorthogonalize=True)
        return jnp.sum(jnp.sin(dec.basis)) + jnp.sum(dec.small**2)

    grad = jax.jit(jax.grad(objective, allow_int=True), static_argnums=1)
    got = grad(params, True)
    ref = jax.jit(jax.grad(unrolled, allow_int=True))(params)
    assert got["shift"].dtype == jax.dtypes.float0
    for name in ("a", "d"):
        _assert_trees_close(got[name], ref[name], rtol=1e-10)


@pytest.mark.parametrize("block", [1, 3, 8])
@pytest.mark.parametrize("count", [0, 1, 5, 7])
def test_low_rank_params_cotangent_matches_the_dense_sum(block, count):
    """``sum_{r < count} d<right_r V_b, A (left_r V_f)>/dparams`` for every block size,
    against the closed form for ``A = a + diag(d)``: ``da = sum_r w_r u_r^T``,
    ``dd = sum_r w_r * u_r`` with ``u_r = left_r V_f``, ``w_r = right_r V_b``."""
    from pdeinv.krylov._common import params_cotangent, params_cotangent_low_rank

    n, k, m = 12, 6, 7
    params, _, rng = _problem(n, 3)
    left, right = rng.standard_normal((m, k)), rng.standard_normal((m, k))
    basis, basis_adjoint = rng.standard_normal((k, n)), rng.standard_normal((k, n))
    got = jax.jit(lambda *a: params_cotangent_low_rank(_matvec_general, params, *a, block=block))(
        left, basis, right, basis_adjoint, count
    )
    u, w = left[:count] @ basis, right[:count] @ basis_adjoint
    np.testing.assert_allclose(got["a"], w.T @ u, atol=1e-12)
    np.testing.assert_allclose(got["d"], np.sum(w * u, axis=0), atol=1e-12)
    # the one-row-at-a-time scan of params_cotangent gives the same sum
    if count:
        full = params_cotangent(_matvec_general, params, jnp.asarray(u), jnp.asarray(w))
        np.testing.assert_allclose(full["a"], w.T @ u, atol=1e-12)
        np.testing.assert_allclose(full["d"], np.sum(w * u, axis=0), atol=1e-12)

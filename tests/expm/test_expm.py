"""expm_multiply: values and gradients against dense scipy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from pdeinv.expm import expm_multiply, expm_multiply_info


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


# ---------------------------------------------------------------- test operators


def diffusion_matvec(u, params):
    """1-D -d/dx(kappa du/dx), homogeneous Dirichlet, kappa = exp(m) on n+1 faces."""
    kappa = jnp.exp(params["log_kappa"])
    up = jnp.pad(u, 1)
    flux = kappa * (up[1:] - up[:-1])
    return (flux[1:] - flux[:-1]) * params["scale"]


def advdiff_matvec(u, params):
    """Diffusion plus central advection with velocity params['velocity'] (nonsymmetric)."""
    up = jnp.pad(u, 1)
    advection = params["velocity"] * (up[2:] - up[:-2]) / 2
    return diffusion_matvec(u, params) - advection * jnp.sqrt(params["scale"])


def dense_matrix(matvec, params, n):
    return jax.vmap(lambda e: matvec(e, params), in_axes=1, out_axes=1)(jnp.eye(n))


def reference(matvec, params, v, t, w):
    """Dense value y = exp(tA)v and gradients of L = w^T y w.r.t. v and params."""
    n = v.shape[0]
    a = np.asarray(dense_matrix(matvec, params, n))
    y = scipy.linalg.expm(t * a) @ np.asarray(v)
    grad_v = scipy.linalg.expm(t * a.T) @ np.asarray(w)
    # d(w^T e^{tA} v) = <L(tA^T, w v^T), t dA>.
    g = t * scipy.linalg.expm_frechet(t * a.T, np.outer(w, v), compute_expm=False)
    _, vjp = jax.vjp(lambda p: dense_matrix(matvec, p, n), params)
    (grad_p,) = vjp(jnp.asarray(g))
    return y, grad_v, grad_p


def check_against_reference(matvec, params, v, t, method, tol, factor=100.0):
    n = v.shape[0]
    w = jnp.asarray(np.random.default_rng(1).standard_normal(n))

    def loss(v, params):
        return jnp.dot(w, expm_multiply(matvec, v, params, t, tol=tol, method=method))

    y = expm_multiply(matvec, v, params, t, tol=tol, method=method)
    grad_v, grad_p = jax.grad(loss, argnums=(0, 1))(v, params)
    y_ref, grad_v_ref, grad_p_ref = reference(matvec, params, v, t, w)
    assert rel(y, y_ref) < factor * tol
    assert rel(grad_v, grad_v_ref) < factor * tol
    for key in params:
        assert rel(grad_p[key], grad_p_ref[key]) < factor * tol, key


def diffusion_problem(n, stiffness, seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "log_kappa": jnp.asarray(0.5 * rng.standard_normal(n + 1)),
        "scale": jnp.asarray(1.0),
    }
    norm = np.linalg.norm(np.asarray(dense_matrix(diffusion_matvec, params, n)), 2)
    params["scale"] = jnp.asarray(stiffness / norm)  # so that ||A|| = stiffness at t = 1
    x = np.linspace(0, 1, n)
    v = jnp.asarray(np.sin(np.pi * x) + 0.3 * rng.standard_normal(n))
    return params, v


# ---------------------------------------------------------------- accuracy


@pytest.mark.parametrize("stiffness", [1.0, 1e2, 1e5])
@pytest.mark.parametrize("tol", [1e-10, 1e-6, 1e-3])
def test_symmetric_diffusion_lanczos(stiffness, tol):
    params, v = diffusion_problem(40, stiffness)
    check_against_reference(diffusion_matvec, params, v, 1.0, "lanczos", tol)


@pytest.mark.parametrize("stiffness", [1.0, 1e3])
@pytest.mark.parametrize(
    "tol",
    [pytest.param(1e-10, marks=pytest.mark.slow), 1e-5],  # ~11 s: lanczos covers 1e-10
)
def test_symmetric_diffusion_arnoldi(stiffness, tol):
    params, v = diffusion_problem(40, stiffness, seed=2)
    check_against_reference(diffusion_matvec, params, v, 1.0, "arnoldi", tol)


@pytest.mark.parametrize("stiffness", [10.0, 1e3])
@pytest.mark.parametrize(
    "tol",
    [pytest.param(1e-10, marks=pytest.mark.slow), 1e-6, 1e-3],  # 1e-10: ~15 s each
)
def test_nonsymmetric_advection_diffusion(stiffness, tol):
    params, v = diffusion_problem(50, stiffness, seed=3)
    params["velocity"] = jnp.asarray(3.0)
    check_against_reference(advdiff_matvec, params, v, 0.7, "arnoldi", tol)


def dense_matvec(v, params):
    return params["a"] @ v


@pytest.mark.parametrize("norm", [0.1, 3.0, 30.0, 300.0])
def test_dense_random_matrices(norm):
    # Shapes and norms in the spirit of SciPy's own expm_multiply tests.
    rng = np.random.default_rng(int(norm * 10))
    n = 25
    a = rng.standard_normal((n, n))
    a *= norm / np.linalg.norm(a, 1)
    a -= 0.5 * norm * np.eye(n)  # keep exp(A) representable for the larger norms
    v = jnp.asarray(rng.standard_normal(n))
    check_against_reference(dense_matvec, {"a": jnp.asarray(a)}, v, 1.0, "arnoldi", 1e-8)


def test_several_output_times_match_separate_calls():
    params, v = diffusion_problem(30, 1e3)
    ts = jnp.asarray([0.0, 0.01, 0.01, 0.3, 1.0])
    ys = expm_multiply(diffusion_matvec, v, params, ts, tol=1e-10, method="lanczos")
    a = np.asarray(dense_matrix(diffusion_matvec, params, 30))
    for i, t in enumerate(np.asarray(ts)):
        assert rel(ys[i], scipy.linalg.expm(t * a) @ np.asarray(v)) < 1e-8
    # Gradient of a loss on all outputs: against a sum of single-time references.
    w = jnp.asarray(np.random.default_rng(4).standard_normal((5, 30)))

    def loss(v, params):
        out = expm_multiply(diffusion_matvec, v, params, ts, tol=1e-10, method="lanczos")
        return jnp.sum(w * out)

    grad_v, grad_p = jax.grad(loss, argnums=(0, 1))(v, params)
    refs = [reference(diffusion_matvec, params, v, float(t), w[i]) for i, t in enumerate(ts)]
    assert rel(grad_v, sum(r[1] for r in refs)) < 1e-8
    assert rel(grad_p["log_kappa"], sum(r[2]["log_kappa"] for r in refs)) < 1e-8


def test_gradient_with_respect_to_time():
    params, v = diffusion_problem(40, 10.0)  # n = 40: its value solves are compiled already
    f = lambda t: jnp.sum(expm_multiply(diffusion_matvec, v, params, t, tol=1e-12) ** 2)
    h = 1e-5
    fd = (f(0.5 + h) - f(0.5 - h)) / (2 * h)
    assert rel(jax.grad(f)(0.5), fd) < 1e-6


def test_zero_vector_and_zero_time():
    # n = 40 like test_symmetric_diffusion_*: the same compiled solves serve both.
    params, v = diffusion_problem(40, 10.0)
    w = jnp.asarray(np.random.default_rng(5).standard_normal(40))
    zero = jnp.zeros(40)
    y = expm_multiply(diffusion_matvec, zero, params, 1.0, method="lanczos")
    assert np.all(np.asarray(y) == 0)
    # The gradient w.r.t. v at v = 0 is still exp(tA^T) w: the adjoint sweep must run.
    loss = lambda v, p: jnp.dot(w, expm_multiply(diffusion_matvec, v, p, 1.0, tol=1e-10))
    grad_v, grad_p = jax.grad(loss, argnums=(0, 1))(zero, params)
    _, grad_v_ref, _ = reference(diffusion_matvec, params, zero, 1.0, w)
    assert rel(grad_v, grad_v_ref) < 1e-8
    assert np.all(np.isfinite(grad_p["log_kappa"])) and np.all(grad_p["log_kappa"] == 0)
    # t = 0: identity, gradient w.r.t. v is w, w.r.t. params zero.
    assert rel(expm_multiply(diffusion_matvec, v, params, 0.0), v) == 0
    grad_v, grad_p = jax.grad(
        lambda v, p: jnp.dot(w, expm_multiply(diffusion_matvec, v, p, 0.0)), argnums=(0, 1)
    )(v, params)
    assert rel(grad_v, w) == 0 and np.all(grad_p["log_kappa"] == 0)


def test_eigenvector_start_is_exact_happy_breakdown():
    n = 30
    a = np.diag(-np.arange(1.0, n + 1))
    v = np.zeros(n)
    v[3] = 2.0
    y = expm_multiply(dense_matvec, jnp.asarray(v), {"a": jnp.asarray(a)}, 2.0, tol=1e-12)
    assert rel(y, np.exp(-8.0) * v) < 1e-13


# ---------------------------------------------------------------- derivatives


def test_gradient_matches_finite_differences_and_taylor():
    # n = 50 like test_nonsymmetric_advection_diffusion: its value solves are compiled.
    params, v = diffusion_problem(50, 300.0, seed=7)
    params["velocity"] = jnp.asarray(1.5)
    data = jnp.asarray(np.random.default_rng(8).standard_normal(50))

    def loss(m):
        p = dict(params, log_kappa=m)
        y = expm_multiply(advdiff_matvec, v, p, 0.5, tol=1e-13)
        return 0.5 * jnp.sum((y - data) ** 2)

    m0 = params["log_kappa"]
    grad = jax.grad(loss)(m0)
    direction = jnp.asarray(np.random.default_rng(9).standard_normal(m0.shape))
    # h balances truncation (h^2) against the step-size controller's tol / h noise.
    h = 1e-4
    fd = (loss(m0 + h * direction) - loss(m0 - h * direction)) / (2 * h)
    assert abs(jnp.dot(grad, direction) - fd) < 1e-6 * abs(fd)
    # Taylor test: |L(m + h d) - L(m) - h <g, d>| = O(h^2).
    hs = np.array([1e-1, 5e-2, 2.5e-2, 1.25e-2])
    rem = [abs(loss(m0 + h * direction) - loss(m0) - h * jnp.dot(grad, direction)) for h in hs]
    orders = np.diff(np.log(rem)) / np.diff(np.log(hs))
    assert np.all(orders > 1.9), orders


def test_transpose_matvec_dot_product():
    from pdeinv.krylov._common import transpose_matvec

    params, _ = diffusion_problem(30, 10.0)
    params["velocity"] = jnp.asarray(2.0)
    rng = np.random.default_rng(10)
    x, y = (jnp.asarray(rng.standard_normal(30)) for _ in range(2))
    at = transpose_matvec(advdiff_matvec, params, x)
    lhs = jnp.dot(advdiff_matvec(x, params), y)
    assert abs(lhs - jnp.dot(x, at(y))) < 1e-12 * abs(lhs)


def test_discrete_adjoint_option_on_a_mild_problem():
    params, v = diffusion_problem(20, 5.0)
    w = jnp.asarray(np.random.default_rng(11).standard_normal(20))
    loss = lambda v, p: jnp.dot(
        w, expm_multiply(diffusion_matvec, v, p, 1.0, tol=1e-12, gradient="discrete")
    )
    grad_v, grad_p = jax.grad(loss, argnums=(0, 1))(v, params)
    _, grad_v_ref, grad_p_ref = reference(diffusion_matvec, params, v, 1.0, w)
    assert rel(grad_v, grad_v_ref) < 1e-8
    assert rel(grad_p["log_kappa"], grad_p_ref["log_kappa"]) < 1e-8


# ---------------------------------------------------------------- transformations


def test_jit_vmap_and_closure():
    params, v = diffusion_problem(20, 50.0)
    vs = jnp.stack([v, 2 * v, jnp.roll(v, 3)])
    f = jax.jit(lambda v, p: expm_multiply(diffusion_matvec, v, p, 0.3, method="lanczos"))
    batched = jax.vmap(f, in_axes=(0, None))(vs, params)
    for i in range(3):
        assert rel(batched[i], f(vs[i], params)) < 1e-12

    # A matvec that closes over a differentiated value gets its gradient too.
    def loss(scale):
        mv = lambda u, p: scale * diffusion_matvec(u, p)
        return jnp.sum(expm_multiply(mv, v, params, 0.3, tol=1e-12) ** 2)

    h = 1e-6
    fd = (loss(1.0 + h) - loss(1.0 - h)) / (2 * h)
    assert rel(jax.grad(loss)(1.0), fd) < 1e-6


@pytest.mark.parametrize("method", ["lanczos", pytest.param("arnoldi", marks=pytest.mark.slow)])
def test_integer_leaf_in_params(method):
    """An integer leaf of ``params`` gets a ``float0`` cotangent; the float leaves
    their gradient (the two-sided sweep failed adding float0 to its integer zero)."""
    params, v = diffusion_problem(8, 10.0)
    both = {"f": params, "k": jnp.asarray(2, jnp.int32)}

    def mv(u, p):
        return diffusion_matvec(u, p["f"]) * p["k"].astype(u.dtype)

    w = jnp.linspace(-1.0, 1.0, 8)
    _, vjp = jax.vjp(lambda p: expm_multiply(mv, v, p, 0.5, method=method), both)
    (cotangent,) = vjp(w)
    assert cotangent["k"].dtype == jax.dtypes.float0
    # k = 2 doubles A: exp(0.5 (2 A)) v = exp(A) v, the same function of the float leaves.
    plain = jax.vjp(lambda p: expm_multiply(diffusion_matvec, v, p, 1.0, method=method), params)
    (expected,) = plain[1](w)
    for key in params:
        assert rel(cotangent["f"][key], expected[key]) < 1e-6


@pytest.mark.slow  # ~20 s; tests/scale/test_float32.py checks float32 values and gradients
def test_float32_smoke():
    params, v = diffusion_problem(30, 100.0)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    y = expm_multiply(diffusion_matvec, v.astype(jnp.float32), p32, 1.0, tol=1e-5, method="lanczos")
    assert y.dtype == jnp.float32
    y_ref, *_ = reference(diffusion_matvec, params, v, 1.0, np.zeros(30))
    assert rel(y, y_ref) < 1e-4
    g = jax.grad(
        lambda p: jnp.sum(
            expm_multiply(diffusion_matvec, v.astype(jnp.float32), p, 1.0, tol=1e-5) ** 2
        )
    )(p32)
    assert g["log_kappa"].dtype == jnp.float32 and np.all(np.isfinite(g["log_kappa"]))


def test_statistics():
    params, v = diffusion_problem(40, 1e3)
    y, stats = expm_multiply_info(diffusion_matvec, v, params, 1.0, tol=1e-8, krylov_dim=20)
    assert int(stats.num_steps) >= 1
    # Krylov-size control may end a step cut short by the final time early.
    assert int(stats.num_matvecs) <= 20 * int(stats.num_steps)
    assert int(stats.num_matvecs) > 20 * (int(stats.num_steps) - 1)
    assert 0 <= float(stats.error_estimate) < 1e-6


@pytest.mark.parametrize(
    "method",
    # arnoldi: ~12 s; the size control is the same code for both processes
    ["lanczos", pytest.param("arnoldi", marks=pytest.mark.slow)],
)
def test_krylov_size_control_saves_matvecs_at_output_times(method):
    # Steps clipped to one of many output times need smaller Krylov spaces; the
    # values and the gradient must stay as accurate as the tolerance says.
    params, v = diffusion_problem(40, 1e3, seed=5)
    times = jnp.linspace(0.05, 1.0, 12)
    w = jnp.asarray(np.random.default_rng(6).standard_normal((12, 40)))
    tol = 1e-8
    ys, stats = expm_multiply_info(diffusion_matvec, v, params, times, tol=tol, method=method)
    assert int(stats.num_matvecs) < 0.8 * 30 * int(stats.num_steps)
    a = np.asarray(dense_matrix(diffusion_matvec, params, 40))
    for i, t in enumerate(np.asarray(times)):
        assert rel(ys[i], scipy.linalg.expm(t * a) @ np.asarray(v)) < 100 * tol

    def loss(p):
        return jnp.sum(w * expm_multiply(diffusion_matvec, v, p, times, tol=tol, method=method))

    grad = jax.grad(loss)(params)["log_kappa"]
    grad_ref = sum(
        np.asarray(reference(diffusion_matvec, params, v, float(t), w[i])[2]["log_kappa"])
        for i, t in enumerate(np.asarray(times))
    )
    assert rel(grad, grad_ref) < 100 * tol


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tol=0.0), "tol"),
        (dict(tol=-1.0), "tol"),
        (dict(tol=float("nan")), "tol"),
        (dict(tol=True), "tol"),
        (dict(tol="1e-6"), "tol"),
        (dict(tol=jnp.ones(2)), "tol"),
        (dict(tol=None), "tol"),
        (dict(tol=10**400), "tol"),
        (dict(method="magnus"), "method"),
        (dict(gradient="bogus"), "gradient"),
        (dict(krylov_dim=0), "krylov_dim"),
        (dict(max_steps=0), "max_steps"),
        (dict(t=-1.0), "t"),
        (dict(t=jnp.asarray([0.0, 1.0, 0.5])), "non-decreasing"),
        (dict(t=jnp.nan), "t"),
    ],
)
def test_bad_arguments(kwargs, match):
    params, v = diffusion_problem(10, 1.0)
    t = kwargs.pop("t", 1.0)
    with pytest.raises(ValueError, match=match):
        expm_multiply(diffusion_matvec, v, params, t, **kwargs)


def test_traced_tol_is_one_compilation_and_sets_the_accuracy():
    """``tol`` may be traced: one compiled solve serves every accuracy, checked at run time."""
    params, v = diffusion_problem(40, 1e3)
    a = jax.jacfwd(lambda x: diffusion_matvec(x, params))(jnp.zeros(40))
    expected = scipy.linalg.expm(np.asarray(a)) @ np.asarray(v)
    traces = []

    @jax.jit
    def solve(tol):
        traces.append(1)
        return expm_multiply(diffusion_matvec, v, params, 1.0, tol=tol, method="lanczos",
                             krylov_dim=8)  # fmt: skip

    errors = [rel(solve(jnp.asarray(tol)), expected) for tol in (1e-3, 1e-6, 1e-10)]
    assert len(traces) == 1
    assert errors[0] < 1e-3 and errors[1] < 1e-6 and errors[2] < 1e-10
    # The traced value, not a constant folded in at trace time, sets the accuracy.
    assert errors[0] > 1e3 * errors[1] > 1e6 * errors[2]
    with pytest.raises(Exception, match="tol must be > 0"):
        jax.block_until_ready(solve(jnp.asarray(-1.0)))


def test_operator_probes_run_under_a_callers_jit_and_tol_is_checked_in_the_solves_dtype():
    """Concrete ``v`` and operator closed over by a ``jit`` of ``tol`` alone: still probed.

    The skew and affine probes used to call ``float`` on staged values there and
    ended in a ConcretizationTypeError instead of a solve (or of their ValueError).
    """
    rng = np.random.default_rng(0)
    n = 12
    a = jnp.asarray(rng.standard_normal((n, n)))
    v = jnp.asarray(rng.standard_normal(n))
    plain = lambda x, p: p @ x  # noqa: E731
    with pytest.raises(ValueError, match="skew-symmetric"):
        jax.jit(lambda tol: expm_multiply(plain, v, a, 1.0, tol=tol, method="skew-lanczos"))(1e-6)
    not_augmented = lambda w, p: jnp.concatenate([p @ w[:-1], w[-1:]])  # noqa: E731
    state = jnp.concatenate([v, jnp.ones(1)])
    with pytest.raises(ValueError, match="zero last row"):
        jax.jit(
            lambda tol: expm_multiply(
                not_augmented, state, a, 1.0, tol=tol, method="affine-lanczos"
            )  # fmt: skip
        )(1e-6)
    # 1e-50 is 0 and 1e300 is inf in float32: refused, not solved at a tol of 0 or inf.
    for tol in (1e-50, 1e300):
        with pytest.raises(ValueError, match="float32"):
            expm_multiply(plain, v.astype(jnp.float32), a.astype(jnp.float32), 1.0, tol=tol)


def test_symmetric_methods_refuse_a_nonsymmetric_operator():
    """'lanczos' and 'affine-lanczos' on a nonsymmetric A: an error, not a wrong answer.

    The operator is upper triangular plus a shift, so the value happened to come out
    right for 'affine-lanczos' while its gradient was 130 % off (an acceptance probe).
    """
    from pdeinv.expm import augment_affine

    rng = np.random.default_rng(0)
    n = 30
    a = jnp.asarray(-0.1 * np.eye(n) + 0.5 * np.triu(rng.standard_normal((n, n)), 1))
    u0 = jnp.asarray(rng.standard_normal(n))
    b = jnp.asarray(rng.standard_normal(n))
    plain = lambda x, p: p @ x  # noqa: E731
    affine = augment_affine(plain, lambda p: b)
    with pytest.raises(Exception, match="needs a symmetric operator"):
        expm_multiply(plain, u0, a, 1.0, method="lanczos")
    with pytest.raises(Exception, match="needs a symmetric operator"):
        state = jnp.concatenate([u0, jnp.ones(1)])
        loss = (
            lambda u: jnp.sum(  # noqa: E731
                expm_multiply(affine, u, a, 1.0, method="affine-lanczos", krylov_dim=12)[:n]
            )
        )
        jax.block_until_ready(jax.jit(jax.grad(loss))(state))
    # A symmetric operator with its source passes (and stays right).
    sym = (a + a.T) / 2
    y = expm_multiply(affine, jnp.concatenate([u0, jnp.ones(1)]), sym, 1.0, method="affine-lanczos")
    aug = np.zeros((n + 1, n + 1))
    aug[:n, :n], aug[:n, n] = sym, b
    expected = scipy.linalg.expm(aug) @ np.concatenate([u0, [1.0]])
    assert rel(y, expected) < 1e-7


def test_bad_vectors():
    params, v = diffusion_problem(10, 1.0)
    with pytest.raises(ValueError, match="v"):
        expm_multiply(diffusion_matvec, v.at[2].set(jnp.nan), params)
    with pytest.raises(ValueError, match="1-D"):
        expm_multiply(diffusion_matvec, jnp.ones((2, 5)), params)
    with pytest.raises(ValueError, match="shape"):
        expm_multiply(lambda u, p: jnp.concatenate([u, u]), v, params)


def test_step_budget_raises():
    params, v = diffusion_problem(40, 1e4)
    with pytest.raises(Exception, match="max_steps"):
        jax.block_until_ready(
            expm_multiply(diffusion_matvec, v, params, 1.0, krylov_dim=4, max_steps=2, tol=1e-10)
        )


def test_two_sided_gradient_accurate_where_discrete_adjoint_is_not():
    # docs/design.md#the-discrete-adjoint: for a stiff operator the exact derivative of the Krylov
    # approximation can be far from the derivative of exp(tA)v although the value
    # is converged.  The default (two-sided) rule must stay within ~100 tol.
    params, v = diffusion_problem(60, 1e5, seed=3)
    w = jnp.asarray(np.random.default_rng(1).standard_normal(60))
    _, _, grad_ref = reference(diffusion_matvec, params, v, 1.0, w)
    errors = {}
    for rule in ("two-sided", "discrete"):
        loss = lambda p, rule=rule: jnp.dot(
            w,
            expm_multiply(
                diffusion_matvec,
                v,
                p,
                1.0,
                tol=1e-6,
                method="lanczos",
                krylov_dim=20,
                gradient=rule,
            ),
        )
        errors[rule] = rel(jax.grad(loss)(params)["log_kappa"], grad_ref["log_kappa"])
    assert errors["two-sided"] < 1e-4
    assert errors["discrete"] > 10 * errors["two-sided"]


@pytest.mark.parametrize(
    "method",
    # arnoldi: ~12 s; the policy's code path is the same for both processes
    ["lanczos", pytest.param("arnoldi", marks=pytest.mark.slow)],
)
def test_bases_checkpoint_policy_gives_the_same_gradient(method):
    params, v = diffusion_problem(30, 1e3, seed=12)
    w = jnp.asarray(np.random.default_rng(13).standard_normal(30))

    def loss(p, checkpoint):
        y = expm_multiply(
            diffusion_matvec, v, p, 1.0, tol=1e-9, method=method, checkpoint=checkpoint
        )
        return jnp.dot(w, y)

    g_states = jax.grad(loss)(params, "states")
    g_bases = jax.grad(loss)(params, "bases")
    assert rel(g_bases["log_kappa"], g_states["log_kappa"]) < 1e-12
    with pytest.raises(ValueError, match="checkpoint"):
        loss(params, "everything")


def _matvec_counter():
    calls = {"n": 0}

    def count(_):
        calls["n"] += 1

    def matvec(u, params):
        jax.debug.callback(count, u[0])
        return diffusion_matvec(u, params)

    return matvec, calls


@pytest.mark.parametrize(
    "method",
    ["lanczos", pytest.param("arnoldi", marks=pytest.mark.slow)],  # arnoldi: ~18 s
)
def test_trajectory_policy_matches_rebuilt_bases_with_fewer_matvecs(method):
    # The default policy replaces each step's rebuilt Krylov basis by a stored
    # trajectory basis where the a posteriori check allows: the gradient stays
    # that of the "states" policy to well within tol, and the backward sweep
    # needs fewer products with A.
    params, v = diffusion_problem(40, 1e4, seed=31)
    w = jnp.asarray(np.random.default_rng(32).standard_normal(40))
    tol = 1e-8
    matvec, calls = _matvec_counter()

    def loss(p, checkpoint):
        y = expm_multiply(matvec, v, p, 1.0, tol=tol, method=method, checkpoint=checkpoint)
        return jnp.dot(w, y)

    counts, grads = {}, {}
    for policy in ("states", "trajectory"):
        calls["n"] = 0
        grads[policy] = jax.grad(loss)(params, policy)["log_kappa"]
        counts[policy] = calls["n"]
    grad_ref = reference(diffusion_matvec, params, v, 1.0, w)[2]["log_kappa"]
    assert rel(grads["trajectory"], grad_ref) < 100 * tol
    assert rel(grads["trajectory"], grads["states"]) < tol
    assert counts["trajectory"] < counts["states"]


@pytest.mark.slow  # ~35 s: forced fallbacks compile several extra programs
def test_trajectory_check_falls_back_to_the_rebuilt_basis():
    # With 2-vector trajectory bases most steps are marked invalid by the
    # forward sweep or fail the span check: those rebuild the forward basis,
    # and the gradient is still accurate.
    # With bases for only the first 2 steps, later steps take the states path.
    from pdeinv.expm._checkpoint import Trajectory

    params, v = diffusion_problem(40, 1e4, seed=33)
    w = jnp.asarray(np.random.default_rng(34).standard_normal(40))
    tol = 1e-8
    matvec, calls = _matvec_counter()
    _, stats = expm_multiply_info(diffusion_matvec, v, params, 1.0, tol=tol, method="lanczos")
    assert int(stats.num_steps) > 2

    def run(policy):
        calls["n"] = 0

        def loss(p):
            y = expm_multiply(matvec, v, p, 1.0, tol=tol, method="lanczos", checkpoint=policy)
            return jnp.dot(w, y)

        return jax.grad(loss)(params)["log_kappa"], calls["n"]

    full, full_count = run(Trajectory())
    narrow, narrow_count = run(Trajectory(rank=2))
    slot = (8 + 1) * 40 + 30 * (30 + 8 + 3)  # one step's storage, in float64 words
    mixed, mixed_count = run(Trajectory(budget_bytes=2 * slot * 8))
    _, _, grad_ref = reference(diffusion_matvec, params, v, 1.0, w)
    for g in (full, narrow, mixed):
        assert rel(g, grad_ref["log_kappa"]) < 100 * tol
    assert rel(narrow, full) < tol and rel(mixed, full) < tol
    assert narrow_count > full_count and mixed_count > full_count
    # Under vmap the fallback (a loop of at most one pass) runs per element.
    vs = jnp.stack([v, -0.5 * jnp.roll(v, 7)])

    def loss(v, p):
        y = expm_multiply(
            diffusion_matvec, v, p, 1.0, tol=tol, method="lanczos", checkpoint=Trajectory(rank=2)
        )
        return jnp.dot(w, y)

    batched = jax.vmap(jax.grad(loss, argnums=1), in_axes=(0, None))(vs, params)
    for i in range(2):
        single = jax.grad(loss, argnums=1)(vs[i], params)
        assert rel(batched["log_kappa"][i], single["log_kappa"]) < 1e-10


@pytest.mark.slow  # ~15 s; test_forward_mode's batched-gradient test covers vmap of grad
def test_vmap_of_grad_over_start_vectors():
    params, v = diffusion_problem(20, 100.0)
    vs = jnp.stack([v, jnp.roll(v, 5), -2 * v])
    w = jnp.asarray(np.random.default_rng(14).standard_normal(20))

    def loss(v, p):
        return jnp.dot(w, expm_multiply(diffusion_matvec, v, p, 0.5, tol=1e-10, method="lanczos"))

    batched = jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(0, None))(vs, params)
    for i in range(3):
        gv, gp = jax.grad(loss, argnums=(0, 1))(vs[i], params)
        assert rel(batched[0][i], gv) < 1e-10
        assert rel(batched[1]["log_kappa"][i], gp["log_kappa"]) < 1e-10


@pytest.mark.parametrize(
    ("method", "gradient"),
    [
        ("lanczos", "two-sided"),
        pytest.param("arnoldi", "two-sided", marks=pytest.mark.slow),  # ~15 s
        pytest.param("lanczos", "discrete", marks=pytest.mark.slow),
    ],
)
def test_thinned_checkpoints_give_the_same_gradient(method, gradient):
    # Small Krylov spaces force many steps (> checkpoints): the buffer is thinned
    # several times and the backward sweep replays the dropped states.
    params, v = diffusion_problem(30, 1e3, seed=21)
    times = jnp.asarray([0.1, 0.35, 1.0])
    w = jnp.asarray(np.random.default_rng(22).standard_normal((3, 30)))
    options = dict(tol=1e-8, method=method, krylov_dim=6, gradient=gradient, max_steps=200)

    def loss(v, p, checkpoints):
        return jnp.sum(
            w * expm_multiply(diffusion_matvec, v, p, times, checkpoints=checkpoints, **options)
        )

    _, stats = expm_multiply_info(diffusion_matvec, v, params, times, **options)
    assert int(stats.num_steps) > 4 * 4  # at least two thinnings of a 4-state buffer
    full = jax.grad(loss, argnums=(0, 1))(v, params, 200)
    thin = jax.grad(loss, argnums=(0, 1))(v, params, 3)  # rounded up to 4
    # The replayed steps agree with the original ones to rounding; the discrete
    # rule differentiates through the Krylov recurrences and amplifies that by a
    # factor that depends on how XLA fuses the VJP loop (measured 1.2e-11 and,
    # under vmap, 2.9e-10; 2.2e-9 once the VJP rows were materialised), so it
    # is held to the solve's tol; the two-sided one amplifies much less
    # (measured 3.4e-11 for Lanczos with jax 0.10.2, 1e-13 with earlier jax).
    same = 1e-10 if gradient == "two-sided" else 1e-8
    assert rel(thin[0], full[0]) < same
    assert rel(thin[1]["log_kappa"], full[1]["log_kappa"]) < same
    if method == "arnoldi":
        return
    # Under vmap (batched start vectors) the thinning and replay branches are selects.
    vs = jnp.stack([v, -0.5 * jnp.roll(v, 3)])
    batched = jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(0, None, None))(vs, params, 4)
    single = jax.grad(loss, argnums=(0, 1))(vs[1], params, 200)
    assert rel(batched[0][1], single[0]) < 100 * same
    assert rel(batched[1]["log_kappa"][1], single[1]["log_kappa"]) < 100 * same


@pytest.mark.parametrize("checkpoints", [0, -3, 2.5, True])
def test_bad_checkpoints(checkpoints):
    params, v = diffusion_problem(10, 1.0)
    with pytest.raises(ValueError, match="checkpoints"):
        expm_multiply(diffusion_matvec, v, params, checkpoints=checkpoints)


def test_trajectory_samples_match_dense_exponentials():
    # Both evaluation paths (eigenbasis; squaring a bordered exponential) give
    # exp(s H) e1 and s phi_1(s H) e1 at the documented times, for a stiff H.
    from pdeinv.expm._small import KrylovPropagator, trajectory_samples

    rng = np.random.default_rng(41)
    k, tau = 12, 0.7
    diag = -np.sort(np.abs(rng.standard_normal(k))) * np.logspace(0, 3, k)
    off = 0.5 * np.sqrt(np.abs(diag[1:] * diag[:-1]))
    h = np.diag(diag) + np.diag(off, 1) + np.diag(off, -1)
    fractions = np.concatenate([2.0 ** -np.arange(12, -1, -1), [3 / 8, 5 / 8, 7 / 8]])
    states, integrals = [], []
    for s in tau * fractions:
        bordered = np.zeros((k + 1, k + 1))
        bordered[:k, :k], bordered[0, k] = s * h, s
        e = scipy.linalg.expm(bordered)
        states.append(e[:k, 0])
        integrals.append(e[:k, k])
    expected = np.concatenate([np.array(states).T, np.array(integrals).T], axis=1)
    expected /= np.linalg.norm(expected, axis=0)
    for symmetric in (True, False):
        prop = KrylovPropagator(jnp.asarray(h), 1.0, 0.0, symmetric=symmetric)
        got = np.asarray(trajectory_samples(prop, tau))
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected)) < 1e-10, symmetric


@pytest.mark.parametrize(
    ("n", "dtype", "slots"),
    [
        (1000, jnp.float64, 32),
        (60_000, jnp.float64, 1),
        (60_000, jnp.float32, 3),
        (200_000, jnp.float64, 0),
    ],
)
def test_trajectory_buffers_stay_within_their_budget(n, dtype, slots):
    # At most `checkpoints` steps and 8 MiB of trajectory bases; none when one
    # step does not fit (the policy then works as "states").
    import pdeinv.expm._expm as core

    options = dict(
        tol=1e-6,
        method="lanczos",
        krylov_dim=30,
        gradient="two-sided",
        max_steps=500,
        reorthogonalize=None,
        checkpoint="trajectory",
        checkpoints=None,
        batching="auto",
    )
    v = jnp.ones(n, dtype)
    cfg = core._prepare(lambda u, p: -u, v, {}, 1.0, **options)[0]
    policy = cfg.checkpoint
    assert policy.slots == slots
    per_step = (policy.rank + 1) * n + 30 * (30 + policy.rank + 3)
    assert policy.slots * per_step * jnp.dtype(dtype).itemsize <= policy.budget_bytes


def test_a_batch_shares_the_trajectory_budget():
    # Under vmap (batching="auto": one solve after another on CPU) all records are
    # alive at once, so the batch shares the policy's budget: the first
    # budget / (batch * slot) steps of each solve get a trajectory basis.
    from pdeinv.expm._checkpoint import Trajectory

    n, k = 40, 30
    planned = Trajectory().plan(
        n=n, k=k, kept=32, itemsize=8, method="lanczos", gradient="two-sided"
    )
    slot = ((8 + 1) * n + k * (k + 8 + 3)) * 8
    assert (planned.slots, planned.slot_bytes) == (32, slot)
    assert planned.for_batch(1) == planned
    assert planned.for_batch(100_000).slots == 0
    budget = 5 * slot  # 2 steps each for a batch of 2, against 5 for one solve
    assert (
        Trajectory(budget_bytes=budget)
        .plan(n=n, k=k, kept=32, itemsize=8, method="lanczos", gradient="two-sided")
        .for_batch(2)
        .slots
        == 2
    )
    bytes_one = Trajectory(budget_bytes=budget).planned_bytes(
        n=n, k=k, max_steps=500, checkpoints=None, itemsize=8, method="lanczos"
    )
    bytes_two = Trajectory(budget_bytes=budget).planned_bytes(
        n=n, k=k, max_steps=500, checkpoints=None, itemsize=8, method="lanczos", batch=2
    )
    assert bytes_one["policy"] == 5 * slot and bytes_two["policy"] == 2 * slot
    assert bytes_one["states"] == bytes_two["states"]


@pytest.mark.slow  # ~35 s: three gradients compiled; the plan is checked by the test above
def test_batched_gradient_records_with_its_share_of_the_trajectory_budget():
    from pdeinv.expm._checkpoint import Trajectory

    n, k = 40, 30
    budget = 5 * ((8 + 1) * n + k * (k + 8 + 3)) * 8  # 5 steps, 2 each for a batch of 2
    # The batched gradient is the loop's with each solve given its share (2 steps):
    # the same records, so the same numbers and the same (more) basis rebuilds;
    # within tol of the full budget's.
    params, v = diffusion_problem(n, 1e4, seed=33)
    w = jnp.asarray(np.random.default_rng(34).standard_normal(n))
    vs = jnp.stack([v, -0.5 * jnp.roll(v, 7)])
    tol = 1e-8
    matvec, calls = _matvec_counter()

    def grad(v, budget):
        def loss(p):
            y = expm_multiply(
                matvec, v, p, 1.0, tol=tol, method="lanczos",
                checkpoint=Trajectory(budget_bytes=budget),
            )  # fmt: skip
            return jnp.dot(w, y)

        return jax.grad(loss)(params)["log_kappa"]

    def counted(fn, *args):
        calls["n"] = 0
        out = jax.block_until_ready(fn(*args))
        return out, calls["n"]

    batched, batched_calls = counted(jax.vmap(grad, in_axes=(0, None)), vs, budget)
    shared_calls = full_calls = 0
    for i in range(2):
        shared, count = counted(grad, vs[i], budget // 2)
        shared_calls += count
        full, count = counted(grad, vs[i], budget)
        full_calls += count
        assert rel(batched[i], shared) < 1e-13
        assert rel(batched[i], full) < tol
    assert batched_calls == shared_calls > full_calls

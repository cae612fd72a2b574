"""Raw Arnoldi/Lanczos iterations: relation, orthogonality, breakdown, values."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl

from pdeinv.krylov import _engine
from pdeinv.krylov._arnoldi import arnoldi_iteration, arnoldi_process
from pdeinv.krylov._dense import expm_small as _expm_small_eager
from pdeinv.krylov._lanczos import lanczos_iteration, lanczos_process

expm_small = jax.jit(_expm_small_eager)


def _problem(n, symmetric, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n)) / np.sqrt(n)
    if symmetric:
        a = a + a.T
    return a, rng.standard_normal(n)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _decompose(kind, a, v, k, reorthogonalize):
    iteration = arnoldi_iteration if kind == "arnoldi" else lanczos_iteration
    return iteration(lambda x: a @ x, v, k, reorthogonalize=reorthogonalize)


def _run(kind, a, v, k, reorthogonalize):
    """``[Q (n, k) columns, H, r, ||v||, num_steps]`` as numpy arrays."""
    out = _decompose(kind, jnp.asarray(a), jnp.asarray(v, dtype=jnp.float64), k, reorthogonalize)
    return [np.asarray(x) for x in out._replace(basis=out.basis.T)]


CASES = [
    ("arnoldi", False, True),
    ("arnoldi", False, False),
    ("arnoldi", True, True),
    ("lanczos", True, False),
    ("lanczos", True, True),
]


@pytest.mark.parametrize(("kind", "symmetric", "reorth"), CASES)
@pytest.mark.parametrize("k", [pytest.param(1, marks=pytest.mark.slow), 4, 12, 25])
def test_relation_orthogonality_and_expm(kind, symmetric, reorth, k):
    n = 25
    a, v = _problem(n, symmetric)
    q, h, r, beta, m = _run(kind, a, v, k, reorth)
    e_k = np.eye(k)[-1]
    assert m == k
    assert np.linalg.norm(a @ q - q @ h - np.outer(r, e_k)) < 1e-13 * np.linalg.norm(a)
    np.testing.assert_allclose(q[:, 0] * beta, v, rtol=1e-14)
    np.testing.assert_allclose(beta, np.linalg.norm(v), rtol=1e-14)
    if kind == "arnoldi":
        assert np.all(np.tril(h, -2) == 0)
    else:
        np.testing.assert_array_equal(h, h.T)
        assert np.all(np.tril(h, -2) == 0)
    # Three-term Lanczos loses global orthogonality for k near n; locally it holds.
    if kind == "arnoldi" or reorth or k <= 12:
        assert np.abs(q.T @ q - np.eye(k)).max() < 1e-12
    assert abs(q[:, -1] @ r) < 1e-12 * np.linalg.norm(a)
    if k == n:
        y = beta * q @ np.asarray(expm_small(jnp.asarray(h)))[:, 0]
        ref = sl.expm(a) @ v
        assert np.linalg.norm(y - ref) < 1e-12 * np.linalg.norm(ref)


def test_expm_converges_with_krylov_dim():
    a, v = _problem(40, symmetric=False, seed=1)
    ref = sl.expm(a) @ v
    errors = []
    for k in (4, 8, 16):
        q, h, _, beta, _ = _run("arnoldi", a, v, k, True)
        y = beta * q @ np.asarray(expm_small(jnp.asarray(h)))[:, 0]
        errors.append(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-8


@pytest.mark.parametrize(("kind", "symmetric", "reorth"), CASES)
def test_breakdown_eigenvector_start(kind, symmetric, reorth):
    a, _ = _problem(20, symmetric=True, seed=2)
    lam, u = np.linalg.eigh(a)
    q, h, r, beta, m = _run(kind, a, 3.0 * u[:, 5], 6, reorth)
    assert m == 1
    assert np.all(np.isfinite(q)) and np.all(np.isfinite(h))
    np.testing.assert_allclose(h[0, 0], lam[5], rtol=1e-13)
    assert np.all(h.ravel()[1:] == 0)
    assert np.all(q[:, 1:] == 0) and np.all(r == 0)
    np.testing.assert_allclose(beta, 3.0, rtol=1e-14)


@pytest.mark.parametrize(("kind", "reorth"), [("arnoldi", True), ("arnoldi", False)])
def test_breakdown_nilpotent(kind, reorth):
    # Down-shift: e_{n-4} -> e_{n-3} -> ... -> e_{n-1} -> 0, invariant after 4 steps.
    n = 12
    shift = np.diag(np.ones(n - 1), -1)
    q, h, r, _, m = _run(kind, shift, np.eye(n)[n - 4], 7, reorth)
    assert m == 4
    np.testing.assert_array_equal(h[:4, :4], np.diag(np.ones(3), -1))
    assert np.all(h[4:] == 0) and np.all(h[:, 4:] == 0)
    assert np.all(q[:, 4:] == 0) and np.all(r == 0)
    y = q @ np.asarray(expm_small(jnp.asarray(h)))[:, 0]
    np.testing.assert_allclose(y, sl.expm(shift) @ np.eye(n)[n - 4], atol=1e-15)


@pytest.mark.parametrize(("kind", "symmetric", "reorth"), CASES)
def test_breakdown_low_rank(kind, symmetric, reorth):
    # Rank-2 symmetric operator: K(A, v) = span(v, u1, u2) has dimension 3.
    rng = np.random.default_rng(3)
    u = rng.standard_normal((30, 2)) / np.sqrt(30)
    a = u @ np.diag([2.0, -1.0]) @ u.T
    v = rng.standard_normal(30)
    q, h, r, beta, m = _run(kind, a, v, 8, reorth)
    assert m == 3
    assert np.all(q[:, 3:] == 0) and np.all(h[3:] == 0) and np.all(r == 0)
    y = beta * q @ np.asarray(expm_small(jnp.asarray(h)))[:, 0]
    ref = sl.expm(a) @ v
    assert np.linalg.norm(y - ref) < 1e-12 * np.linalg.norm(ref)


@pytest.mark.parametrize("kind", ["arnoldi", "lanczos"])
def test_zero_start_vector(kind):
    a, _ = _problem(10, symmetric=True)
    q, h, r, beta, m = _run(kind, a, np.zeros(10), 4, kind == "arnoldi")
    assert beta == 0 and m == 0
    assert not np.any(q) and not np.any(h) and not np.any(r)
    iteration = arnoldi_iteration if kind == "arnoldi" else lanczos_iteration
    grad = jax.jit(
        jax.grad(lambda v: jnp.sum(iteration(lambda x: jnp.asarray(a) @ x, v, 4).basis))
    )(jnp.zeros(10))
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("kind", ["arnoldi", "lanczos"])
def test_dtype_kept_and_vmap(kind):
    a, v = _problem(16, symmetric=True)
    iteration = arnoldi_iteration if kind == "arnoldi" else lanczos_iteration
    a32 = jnp.asarray(a, dtype=jnp.float32)
    out = jax.jit(lambda v: iteration(lambda x: a32 @ x, v, 5))(jnp.asarray(v, dtype=jnp.float32))
    assert all(x.dtype == jnp.float32 for x in out[:4])
    vs = jnp.asarray(np.stack([v, 2 * v, np.zeros(16)]))
    batched = jax.jit(jax.vmap(lambda v: iteration(lambda x: jnp.asarray(a) @ x, v, 5)))(vs)
    np.testing.assert_allclose(batched.norm[1], 2 * batched.norm[0], rtol=1e-14)
    np.testing.assert_array_equal(batched.num_steps, [5, 5, 0])


@pytest.mark.parametrize(
    ("kind", "reorth"), [("arnoldi", True), ("lanczos", False), ("lanczos", True)]
)
def test_early_stop_equals_shorter_decomposition_zero_padded(kind, reorth):
    # pdeinv.expm picks the dimension per step: stopping after 3 of 6 steps must
    # give the 3-step decomposition, padded with zeros.
    a, v = _problem(15, symmetric=True, seed=5)
    process = arnoldi_process if kind == "arnoldi" else lanczos_process
    a = jnp.asarray(a)
    seen = []

    def stop(small, size, residual_norm):
        seen.append(small.shape)
        return size >= 3

    @jax.jit
    def short(v):
        return _engine.iterate_until(
            process(lambda x: a @ x, reorthogonalize=reorth), v, 6, 3, stop
        )

    (dec, skewness), size = short(jnp.asarray(v))
    got = [np.asarray(x) for x in dec._replace(basis=dec.basis.T)]
    ref = _run(kind, a, v, 3, reorth)
    assert size == 3 and skewness == 0 and seen == [(6, 6)]
    np.testing.assert_allclose(got[0][:, :3], ref[0], atol=1e-14)
    assert not np.any(got[0][:, 3:])
    np.testing.assert_allclose(got[1][:3, :3], ref[1], atol=1e-14)
    assert not np.any(got[1][3:]) and not np.any(got[1][:, 3:])
    np.testing.assert_allclose(got[2], ref[2], atol=1e-14)
    assert got[4] == 3


@pytest.mark.parametrize(
    ("kind", "reorth"), [("arnoldi", True), ("arnoldi", False), ("lanczos", True)]
)
def test_blocked_orthogonalisation_matches_full(monkeypatch, kind, reorth):
    # Large problems orthogonalise step j against the leading blocks of rows
    # only; force that path on a small problem and compare with the full products.
    a, v = _problem(40, symmetric=kind == "lanczos", seed=6)
    a, v, k = jnp.asarray(a), jnp.asarray(v), 24
    full = _run(kind, a, v, k, reorth)
    monkeypatch.setattr(_engine, "_BLOCK_MIN_N", 0)
    assert _engine.block_size(40, k) == 8
    process = arnoldi_process if kind == "arnoldi" else lanczos_process
    blocked = jax.jit(
        lambda v: _engine.iterate(process(lambda x: a @ x, reorthogonalize=reorth), v, k)[0]
    )
    dec = blocked(v)
    got = [np.asarray(x) for x in dec._replace(basis=dec.basis.T)]
    for x, y in zip(got, full, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
    q = got[0]
    assert np.abs(q.T @ q - np.eye(k)).max() < (1e-14 if reorth else 1e-10)
    # The chunked driver of the integrator takes the same path.
    until = jax.jit(
        lambda v: _engine.iterate_until(
            process(lambda x: a @ x, reorthogonalize=reorth),
            v,
            k,
            6,
            lambda h, size, r: size >= 18,
        )
    )
    (dec, _), size = until(v)
    assert size == 18
    np.testing.assert_allclose(np.asarray(dec.small)[:18, :18], full[1][:18, :18], atol=1e-12)
    np.testing.assert_allclose(np.asarray(dec.basis)[:18].T, full[0][:, :18], atol=1e-12)


@pytest.mark.parametrize("reorth", [False, True])
def test_incomplete_arnoldi_keeps_the_relation_with_a_banded_projection(reorth):
    """``window=2``: A Q = Q H + r e_k^T to rounding, H tridiagonal, Q locally orthonormal."""
    m, k = 30, 20
    rng = np.random.default_rng(7)
    s, e = rng.standard_normal((2, m, m))
    s, e = s + s.T, e + e.T
    # The tangent's block operator [[S, E], [0, S]] of a symmetric S and E.
    a = np.block([[s, e], [np.zeros_like(s), s]])
    v = rng.standard_normal(2 * m)
    process = arnoldi_process(lambda x: jnp.asarray(a) @ x, reorthogonalize=reorth, window=2)
    dec, _ = jax.jit(lambda v: _engine.iterate(process, v, k))(jnp.asarray(v))
    q, h, r = np.asarray(dec.basis).T, np.asarray(dec.small), np.asarray(dec.residual)
    assert int(dec.num_steps) == k
    assert np.linalg.norm(a @ q - q @ h - np.outer(r, np.eye(k)[-1])) < 1e-12 * np.linalg.norm(a)
    assert np.all(np.triu(h, 2) == 0) and np.all(np.tril(h, -2) == 0)
    gram = q.T @ q
    np.testing.assert_allclose(np.diag(gram), 1.0, rtol=1e-13)
    assert np.abs(np.diag(gram, 1)).max() < 1e-13
    assert abs(q[:, -1] @ r) < 1e-12 * np.linalg.norm(a)


def test_incomplete_arnoldi_with_a_window_of_k_is_full_arnoldi():
    a, v = _problem(30, symmetric=False, seed=3)
    k = 12
    full = _run("arnoldi", a, v, k, True)
    process = arnoldi_process(lambda x: jnp.asarray(a) @ x, reorthogonalize=True, window=k)
    dec, _ = jax.jit(lambda v: _engine.iterate(process, v, k))(jnp.asarray(v))
    np.testing.assert_allclose(np.asarray(dec.small), full[1], atol=1e-12)
    np.testing.assert_allclose(np.asarray(dec.basis).T, full[0], atol=1e-12)

"""Skew Lanczos: decomposition identities, skewness measurement, breakdown."""

import jax.numpy as jnp
import numpy as np
import pytest

from pdeinv.krylov._engine import iterate_until
from pdeinv.krylov._skew import skew_lanczos_iteration, skew_lanczos_process, skewness_tolerance


def _skew(n, seed=0):
    b = np.random.default_rng(seed).standard_normal((n, n))
    return b - b.T


def test_decomposition_relation_and_orthogonality():
    n, k = 60, 12
    a = _skew(n)
    v = np.random.default_rng(1).standard_normal(n)
    dec, skewness = skew_lanczos_iteration(lambda x: a @ x, jnp.asarray(v), k)
    q = np.asarray(dec.basis).T  # (n, k)
    h = np.asarray(dec.small)
    r = np.asarray(dec.residual)
    e_k = np.zeros(k)
    e_k[-1] = 1.0
    np.testing.assert_allclose(a @ q, q @ h + np.outer(r, e_k), atol=1e-12)
    np.testing.assert_allclose(q.T @ q, np.eye(k), atol=1e-10)
    np.testing.assert_allclose(h, -h.T, atol=0)  # exactly skew, zero diagonal
    np.testing.assert_allclose(q.T @ a @ q, h, atol=1e-10)
    assert float(dec.norm) == pytest.approx(np.linalg.norm(v))
    assert int(dec.num_steps) == k
    assert float(skewness) < 1e-14


def test_skewness_flags_a_symmetric_part():
    n = 50
    a = _skew(n) + 0.3 * np.eye(n)
    v = np.random.default_rng(2).standard_normal(n)
    _, skewness = skew_lanczos_iteration(lambda x: a @ x, jnp.asarray(v), 10)
    assert float(skewness) > 1e3 * skewness_tolerance(np.float64)


def test_happy_breakdown_is_exact_and_zero_start_gives_zeros():
    # A rotation in the plane of e0, e1 only: the space is invariant after 2 steps.
    n = 8
    a = np.zeros((n, n))
    a[1, 0], a[0, 1] = 2.0, -2.0
    dec, _ = skew_lanczos_iteration(lambda x: a @ x, jnp.eye(n)[0], 5)
    assert int(dec.num_steps) == 2
    assert np.all(np.isfinite(np.asarray(dec.small)))
    np.testing.assert_array_equal(np.asarray(dec.residual), 0.0)
    zero, skewness = skew_lanczos_iteration(lambda x: a @ x, jnp.zeros(n), 4)
    assert float(zero.norm) == 0 and int(zero.num_steps) == 0
    assert not np.any(np.asarray(zero.basis)) and float(skewness) == 0


def test_until_stops_early_and_matches_the_full_process():
    n, k = 80, 20
    a = _skew(n, seed=3)
    v = jnp.asarray(np.random.default_rng(4).standard_normal(n))
    full, _ = skew_lanczos_iteration(lambda x: a @ x, v, k)
    process = skew_lanczos_process(lambda x: a @ x)
    (short, _), size = iterate_until(process, v, k, 5, lambda h, size, res: size >= 10)
    assert int(size) == 10
    np.testing.assert_allclose(short.basis[:10], full.basis[:10], atol=1e-12)
    np.testing.assert_array_equal(np.asarray(short.basis[10:]), 0.0)
    np.testing.assert_allclose(short.small[:10, :10], full.small[:10, :10])
    np.testing.assert_array_equal(np.asarray(short.small[10:, :]), 0.0)

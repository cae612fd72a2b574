"""P1 stiffness matvec at scale: float32 and float64, no dense matrices (1e6 nodes is slow)."""

import resource

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdeinv.discretize import p1_stiffness_matrix, p1_stiffness_matvec, structured_triangle_mesh


def check_matvec_at_scale(n, dtype):
    space = structured_triangle_mesh(n - 1, n - 1)
    assert space.num_nodes == n * n
    matvec = jax.jit(p1_stiffness_matvec(space))
    rng = np.random.default_rng(0)
    u = rng.standard_normal(space.num_nodes)
    kappa = np.exp(0.3 * rng.standard_normal(space.num_nodes))
    y = matvec(jnp.asarray(u, dtype), jnp.asarray(kappa, dtype))
    assert y.dtype == dtype and y.shape == (space.num_nodes,)
    expected = p1_stiffness_matrix(space, kappa) @ u
    tol = 1e-12 if dtype == jnp.float64 else 2e-5
    np.testing.assert_allclose(y, expected, atol=tol * np.abs(expected).max())
    # constants are in the kernel
    ones = matvec(jnp.ones(space.num_nodes, dtype), jnp.asarray(kappa, dtype))
    assert float(jnp.abs(ones).max()) < 50 * tol * np.abs(expected).max()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_matvec_medium_mesh(dtype):
    check_matvec_at_scale(150, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_matvec_million_nodes(dtype):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    check_matvec_at_scale(1000, dtype)
    grown_gib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20
    # element data + scipy reference are a few GiB at most; a dense matrix would be 7 TiB
    assert grown_gib < 8

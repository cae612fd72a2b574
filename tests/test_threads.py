"""BLAS thread control (pdeinv._threads) and expm_multiply's warning about it."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import pdeinv
from pdeinv._threads import SLOW_KRYLOV_DIM, blas_threads


def _solve(k):
    a = -np.diag(np.linspace(0.1, 2.0, 80))
    return pdeinv.expm_multiply(lambda x, p: p * (a @ x), jnp.ones(80), 1.0, 1.0, krylov_dim=k)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1"])
def test_limit_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="limit must be an integer >= 1"):
        pdeinv.limit_blas_threads(bad)


def test_limit_is_a_context_manager_and_restores():
    assert blas_threads() == 1  # conftest limits the suite to one thread
    with pdeinv.limit_blas_threads(2):
        raised = blas_threads()
    assert blas_threads() == 1
    if raised == 1:
        pytest.skip("this BLAS cannot run 2 threads here")
    assert raised == 2


def test_warns_only_for_large_krylov_dim_with_threads():
    with pdeinv.limit_blas_threads(2):
        if blas_threads() == 1:
            pytest.skip("this BLAS cannot run 2 threads here")
        with pytest.warns(RuntimeWarning, match="limit_blas_threads"):
            _solve(SLOW_KRYLOV_DIM)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _solve(SLOW_KRYLOV_DIM - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _solve(SLOW_KRYLOV_DIM)

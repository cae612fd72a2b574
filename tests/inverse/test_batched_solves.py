"""Batched solves: ``jax.jacrev`` of a problem's predictions over 128 outputs ends.

jaxlib's CPU LAPACK kernels deadlocked on a ``vmap`` of 64 or more solves (see
:func:`pdeinv.krylov._common.one_at_a_time_on_cpu`).  A deadlock would hang the
test runner, so the computation runs in a subprocess with a timeout.
"""

import os
import subprocess
import sys
import textwrap

import pytest

# Measured 25-125 s on 2 cores shared with other jobs; a deadlock never ends.
# Without the fix the Arnoldi case (batched LU) hung every time; the Lanczos one
# (eigh) not always.
TIMEOUT_S = 400

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from pdeinv.discretize import grid
    from pdeinv.inverse import (FullField, H1Seminorm, InverseProblem, NodalField,
                                ParameterMap, make_field)
    from pdeinv.models import heat_fd

    space = grid((4, 4))
    model = heat_fd(space, 0.0, make_field("bumps", space.points))
    times = np.linspace(0.01, 0.08, 8)  # 8 times x 16 nodes = 128 outputs
    problem = InverseProblem(
        model, times, ParameterMap(NodalField(space.num_nodes), "log_kappa", model.params),
        FullField(space), np.zeros((8, space.num_nodes)), 0.01,
        H1Seminorm(space), solver=dict(method=METHOD, tol=1e-8, max_steps=50),
    )
    x = jnp.asarray(0.3 * np.sin(3 * space.points[:, 0]))
    predict = lambda m: jnp.ravel(problem.predict(m))
    jac = jax.jacrev(predict)(x)
    assert jac.shape == (128, 16), jac.shape
    assert np.all(np.isfinite(jac)) and np.linalg.norm(jac) > 0
    # Insulated (Neumann) heat conserves the sum of the nodal values whatever kappa
    # is, so at every time the rows of the Jacobian sum to zero (batched against
    # single gradients is tests/scale/test_batch.py's job).
    sums = jac.reshape(8, 16, 16).sum(axis=1)
    assert np.max(np.abs(sums)) < 1e-7 * np.max(np.abs(jac)), np.max(np.abs(sums))
    print("ok", flush=True)
    """
)


@pytest.mark.parametrize("method", ["arnoldi", pytest.param("lanczos", marks=pytest.mark.slow)])
def test_jacrev_over_128_outputs_ends(method):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT.replace("METHOD", repr(method))],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"jax.jacrev over 128 outputs did not finish in {TIMEOUT_S} s (deadlock?)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")

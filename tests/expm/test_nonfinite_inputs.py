"""Non-finite ``v``, ``params`` or ``t`` are refused before any solve, naming the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdeinv.cli._main import _one_line
from pdeinv.expm import expm_multiply

N = 12


def matvec(v, params):
    return params["kappa"] * (-2 * v + jnp.roll(v, 1) + jnp.roll(v, -1))


V = jnp.ones(N)
PARAMS = {"kappa": jnp.ones(N)}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((V.at[2].set(jnp.inf), PARAMS, 1.0), "`v` contains non-finite values"),
        (
            (V, {"kappa": PARAMS["kappa"].at[3].set(jnp.nan)}, 1.0),
            "`params['kappa']` contains 1 non-finite value(s) (NaN or inf) (first at index (3,))",
        ),
        ((V, PARAMS, jnp.array([0.1, jnp.nan])), "t: times must be finite"),
        ((V, PARAMS, np.inf), "t: times must be finite"),
    ],
)
def test_concrete_non_finite_is_a_one_line_value_error(args, expected):
    with pytest.raises(ValueError) as info:
        expm_multiply(matvec, *args)
    assert expected in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_non_finite_params_under_jit_is_a_runtime_error_with_the_message():
    bad = {"kappa": PARAMS["kappa"].at[0].set(jnp.nan)}
    solve = jax.jit(lambda v, p: expm_multiply(matvec, v, p, 0.5))
    with pytest.raises(jax.errors.JaxRuntimeError) as info:
        solve(V, bad).block_until_ready()
    # XLA puts its own first line on a callback error; the message is one line of
    # it, and the CLI's reporting picks exactly that line.
    message = "expm_multiply: `params['kappa']` contains non-finite values (NaN or inf)."
    assert message in str(info.value)
    assert _one_line(info.value) == message
    # Finite params still solve under the same compiled function.
    assert np.all(np.isfinite(solve(V, PARAMS)))

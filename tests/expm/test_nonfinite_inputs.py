"""Non-finite ``v``, ``params`` or ``t`` are refused before any solve, naming the argument."""

import equinox as eqx
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


def test_runtime_failure_outside_jit_is_one_line():
    """Checks that fire inside the solver while expm_multiply is on the stack: one line."""
    from pdeinv.expm._expm import ExpmRuntimeError

    wavy = jnp.sin(jnp.arange(N, dtype=V.dtype))  # not in the operator's null space
    with pytest.raises(ExpmRuntimeError) as info:  # the step budget, a concrete call
        expm_multiply(matvec, wavy, PARAMS, 50.0, max_steps=1, krylov_dim=4)
    assert str(info.value).startswith("expm_multiply: max_steps=1 reached before the final time")
    # Also once the same compiled solve has run: jaxlib's fast path then raised the
    # callback text as a 12-line ValueError (an acceptance probe, float32).
    wavy32, params32 = wavy.astype(jnp.float32), {"kappa": PARAMS["kappa"].astype(jnp.float32)}
    expm_multiply(matvec, wavy32, params32, 1e-6, max_steps=1, krylov_dim=4)  # one step: runs
    with pytest.raises(ExpmRuntimeError) as again:
        expm_multiply(matvec, wavy32, params32, 50.0, max_steps=1, krylov_dim=4)
    assert str(again.value) == str(info.value)
    # It is still what such failures always were, for except clauses written for them.
    assert isinstance(info.value, jax.errors.JaxRuntimeError)
    assert isinstance(info.value, eqx.EquinoxRuntimeError)
    # NaN params under jax.grad without jit: traced (checked at run time), eagerly run.
    bad = {"kappa": PARAMS["kappa"].at[1].set(jnp.nan)}
    with pytest.raises(ExpmRuntimeError) as info:
        jax.grad(lambda p: jnp.sum(expm_multiply(matvec, wavy, p, 0.5)))(bad)
    assert str(info.value) == (
        "expm_multiply: `params['kappa']` contains non-finite values (NaN or inf)."
    )


def test_non_finite_params_under_jit_is_a_runtime_error_with_the_message():
    bad = {"kappa": PARAMS["kappa"].at[0].set(jnp.nan)}
    solve = jax.jit(lambda v, p: expm_multiply(matvec, v, p, 0.5))
    with pytest.raises(jax.errors.JaxRuntimeError) as info:
        solve(V, bad).block_until_ready()
    # Under the caller's jit the check fires in the caller's compiled program, not
    # in expm_multiply: jaxlib's error then starts with its own callback banner
    # (made in C++; nothing in Python can change it) and the message is one line
    # of it, the one the CLI's reporting picks.
    message = "expm_multiply: `params['kappa']` contains non-finite values (NaN or inf)."
    assert message in str(info.value)
    assert _one_line(info.value) == message
    # Finite params still solve under the same compiled function.
    assert np.all(np.isfinite(solve(V, PARAMS)))

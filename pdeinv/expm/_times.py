"""Validation of output times, shared by every layer that takes a list of times.

The integrator, the reference solves, the comparison and the inverse problems all
accept times at which states are wanted; they differ only in whether ``t = 0`` and
repeated times are allowed. One function checks them and says what is wrong in the
same words everywhere.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def _requirement(positive: bool, strictly_increasing: bool) -> str:
    sign = "> 0" if positive else ">= 0"
    order = "increasing" if strictly_increasing else "non-decreasing"
    return f"finite, {sign} and {order}"


def check_times(
    times,
    *,
    name: str = "times",
    positive: bool = False,
    strictly_increasing: bool = False,
    traced: bool = False,
):
    """Validated times: a scalar or a non-empty 1-D array, finite, signed and ordered.

    Parameters
    ----------
    times
        A scalar or a 1-D array-like of times.
    name
        What the caller calls the argument (or the config key), for the messages.
    positive
        Require ``times > 0`` (observation times); otherwise ``times >= 0``.
    strictly_increasing
        Require ``t_0 < t_1 < ...``; otherwise ``t_0 <= t_1 <= ...`` (repeated
        output times allowed).
    traced
        What to do with traced (``jit``) times, whose values are unknown here:
        ``False`` (default) refuses them; ``True`` returns them as a 1-D JAX array
        checked at run time (``equinox.error_if``).

    Returns
    -------
    numpy.ndarray or jax.Array
        The times as a float 1-D array (a scalar becomes one entry): numpy for
        concrete times, JAX for traced ones (``traced=True``).

    Raises
    ------
    ValueError
        Naming ``name`` and the requirement that failed.
    """
    requirement = _requirement(positive, strictly_increasing)
    try:
        values = np.atleast_1d(np.asarray(times, dtype=float))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        if not traced:
            raise ValueError(f"{name} must be concrete numbers, not traced values") from None
        return _check_traced(times, name, positive, strictly_increasing, requirement)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numbers, got {times!r}") from err
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"{name} must be a scalar or a non-empty 1-D array, got shape {np.shape(times)}"
        )
    finite = np.all(np.isfinite(values))
    signed = np.all(values > 0) if positive else np.all(values >= 0)
    steps = np.diff(values)
    ordered = np.all(steps > 0) if strictly_increasing else np.all(steps >= 0)
    if not (finite and signed and ordered):
        raise ValueError(f"{name} must be {requirement}, got {values}")
    return values


def _check_traced(times, name, positive, strictly_increasing, requirement):
    values = jnp.atleast_1d(jnp.asarray(times))
    if values.ndim != 1 or values.shape[0] == 0:
        raise ValueError(
            f"{name} must be a scalar or a non-empty 1-D array, got shape {jnp.shape(times)}"
        )
    steps = jnp.diff(values)
    bad = ~jnp.all(jnp.isfinite(values))
    bad = bad | (jnp.any(values <= 0) if positive else jnp.any(values < 0))
    bad = bad | (jnp.any(steps <= 0) if strictly_increasing else jnp.any(steps < 0))
    return eqx.error_if(values, bad, f"{name} must be {requirement}")

"""check_times: the one validation of output/observation times."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdeinv.expm import check_times


def test_valid_times_come_back_as_a_float_array():
    out = check_times([0, 0.5, 0.5, 1])
    assert isinstance(out, np.ndarray) and out.dtype == float
    np.testing.assert_array_equal(out, [0.0, 0.5, 0.5, 1.0])
    np.testing.assert_array_equal(check_times(0.25), [0.25])


@pytest.mark.parametrize(
    "times, options, match",
    [
        ([0.1, 0.05], {}, r"times must be finite, >= 0 and non-decreasing"),
        ([-0.1], {}, r">= 0"),
        ([0.1, np.inf], {}, r"finite"),
        ([0.0, 0.1], {"positive": True}, r"> 0 and non-decreasing"),
        ([0.1, 0.1], {"strictly_increasing": True}, r">= 0 and increasing"),
        ([], {}, r"non-empty 1-D"),
        ([[0.1, 0.2]], {}, r"non-empty 1-D"),
        (["soon"], {}, r"must be numbers"),
    ],
)
def test_bad_times_are_refused_by_name(times, options, match):
    with pytest.raises(ValueError, match=match):
        check_times(times, **options)
    with pytest.raises(ValueError, match="^observation times"):
        check_times(times, name="observation times", **options)


def test_traced_times():
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda t: check_times(t))(jnp.array([0.1, 0.2]))
    checked = jax.jit(lambda t: check_times(t, positive=True, traced=True))
    np.testing.assert_allclose(checked(jnp.array([0.1, 0.2])), [0.1, 0.2])
    # On the CPU equinox's runtime error reaches Python as a ValueError from the callback.
    with pytest.raises(Exception, match="> 0 and non-decreasing"):
        checked(jnp.array([0.2, 0.1])).block_until_ready()

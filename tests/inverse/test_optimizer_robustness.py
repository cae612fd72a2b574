"""Optimisers step back from trial points that cannot be evaluated; stop and checkpoints.

The objective's forced failure is the same mechanism as a failed solve: an
``equinox.error_if`` runtime check inside the compiled objective (what
``expm_multiply`` raises when its step budget runs out).  A real solver failure
is exercised by the slow heat_large test in tests/cli/test_robustness.py.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

from pdeinv.inverse import LBFGSB, STATUS_NAMES, Adam, minimize

X0 = jnp.full(3, -3.0)


def objective(x):
    """``sum log cosh(3 (x - 1))``, minimum at 1; "the solve fails" where any x > 2.

    Flat far from the minimum, so quasi-Newton and Adam steps overshoot into
    the failing region.
    """
    x = eqx.error_if(
        x, jnp.any(x > 2.0), "expm_multiply: max_steps=5 reached before the final time"
    )
    value = jnp.sum(jnp.log(jnp.cosh(3.0 * (x - 1.0))))
    return value, value


class Counting:
    """Wraps the optimiser module's trial evaluation to count failed points."""

    def __init__(self, monkeypatch):
        import pdeinv.inverse._optimize as module

        self.failed = 0
        original = module._evaluate_trial

        def counting(evaluate, x, like):
            out = original(evaluate, x, like)
            self.failed += not out[3]
            return out

        monkeypatch.setattr(module, "_evaluate_trial", counting)


@pytest.mark.parametrize(
    "optimizer",
    [LBFGSB(bounds=(-5.0, 5.0)), LBFGSB(), Adam(learning_rate=2.0, max_iter=300)],
    ids=["lbfgsb-bounds", "lbfgsb", "adam"],
)
def test_failed_trial_points_make_the_optimiser_step_back(optimizer, monkeypatch):
    count = Counting(monkeypatch)
    result = minimize(objective, X0, optimizer)
    assert count.failed >= 1  # the failing region was hit ...
    assert result.status == 0, result.message  # ... and the fit still converged
    np.testing.assert_allclose(result.x, 1.0, atol=1e-4)
    assert np.all(np.isfinite(result.history["objective"]))


def test_failure_at_the_start_point_is_an_error_naming_the_solver_message():
    with pytest.raises(RuntimeError, match="fails at the starting point: expm_multiply: max_steps"):
        minimize(objective, jnp.full(3, 3.0), LBFGSB())


def test_stop_ends_within_one_evaluation_with_the_best_iterate():
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 4  # evaluations 1-4 run, the 5th is refused

    seen = []
    result = minimize(objective, X0, LBFGSB(), stop=stop, checkpoint=lambda x, h: seen.append(x))
    assert result.status == 3 and STATUS_NAMES[result.status] == "interrupted"
    assert len(calls) == 5
    history = result.history["objective"]
    assert result.fun == pytest.approx(history.min())
    assert float(objective(jnp.asarray(result.x))[0]) == pytest.approx(result.fun)
    # One checkpoint per recorded iterate, each the best so far.
    assert len(seen) == len(history)
    np.testing.assert_allclose(seen[-1], result.x)


def test_stop_before_any_evaluation_returns_the_start():
    result = minimize(objective, X0, Adam(), stop=lambda: True)
    assert result.status == 3
    np.testing.assert_allclose(result.x, X0)
    assert result.history["objective"].size == 0

"""The initial state as the unknown: ``u(t; m) = exp(t A) u0(m)``, a model linear in ``m``.

A :class:`~pdeinv.inverse.ParameterMap` with ``field_name = INITIAL_CONDITION``
puts the nodal initial field into the parameter pytree; :func:`initial_condition_forward`
(the ``forward`` of an :class:`~pdeinv.inverse.InverseProblem`) takes it out again
and starts the solve from it.  The coefficients stay at the model's values.
"""

from __future__ import annotations

INITIAL_CONDITION = "initial_condition"


def initial_condition_forward(model, params, times, **solver):
    """States at ``times`` started from ``params[INITIAL_CONDITION]`` (a nodal field).

    The field goes through :meth:`Model.state_from_field`; the remaining
    parameters are the model's.  Sources, if any, make the map affine.
    """
    from ..models import simulate_sources

    params = dict(params)
    field = params.pop(INITIAL_CONDITION)
    u0 = model.state_from_field(field)
    return simulate_sources(model, params, times, u0=u0, **solver)

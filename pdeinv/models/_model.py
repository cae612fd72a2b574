"""The model contract: a semi-discrete linear PDE u' = A(params) u (+ b(params))."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from ..discretize._space import Space

PyTree = Any


@dataclasses.dataclass(frozen=True, eq=False)
class KrylovForm:
    """The model's ODE in other variables, where ``A`` has structure a Krylov method exploits.

    With coefficients ``w = coefficients(params)`` and ``x = to_form(state, w)``
    the ODE ``state' = A state`` becomes ``x' = A_form x`` with
    ``A_form = matvec(., w)``, for which ``method`` (an
    :func:`~pdeinv.expm_multiply` method, e.g. ``"skew-lanczos"``) applies.
    :func:`~pdeinv.models.simulate` solves in these variables and maps back with
    ``from_form``.  The coefficients are computed once per solve (not once per
    matvec) and differentiated by JAX outside the integrator; both maps are
    cheap, linear in the state and differentiable.

    Parameters
    ----------
    matvec
        ``matvec(x, w) -> A_form(w) @ x``.
    method
        The :func:`~pdeinv.expm_multiply` method for ``A_form``.
    coefficients
        ``coefficients(params) -> w``, a pytree of arrays.
    to_form
        ``to_form(state, w) -> x`` for one state of shape ``(n_state,)``.
    from_form
        ``from_form(xs, w) -> states`` for ``xs`` of shape ``(..., n_form)``.
    """

    matvec: Callable[[Any, PyTree], Any]
    method: str
    coefficients: Callable[[PyTree], PyTree]
    to_form: Callable[[Any, PyTree], Any]
    from_form: Callable[[Any, PyTree], Any]


@dataclasses.dataclass(frozen=True, eq=False)
class TimedSource:
    """A source term in state coordinates that is on for ``start <= t < stop``.

    Parameters
    ----------
    vector
        ``vector(params) -> (n_state,)`` contribution to ``b(params)`` while on.
    start
        Switch-on time ``>= 0``.
    stop
        Switch-off time ``> start``, or ``None`` (on until the end).
    """

    vector: Callable[[PyTree], Any]
    start: float = 0.0
    stop: float | None = None

    def active(self, t):
        """Whether the source is on at time ``t`` (traceable)."""
        on = t >= self.start
        if self.stop is not None:
            on = on & (t < self.stop)
        return on


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A semi-discrete linear PDE ``u'(t) = A(params) u(t) + b(params)``.

    Parameters
    ----------
    name
        Short name (``"heat"``, ``"wave"``, ``"advection_diffusion"``).
    space
        Grid or mesh the physical fields live on.
    matvec
        ``matvec(state, params) -> A(params) @ state``, JAX-traceable and linear in ``state``.
    params
        Parameter pytree the model was built with (e.g. ``{"log_kappa": (num_nodes,)}``).
    u0
        Initial state, shape ``(n_state,)``.
    symmetric
        Whether ``A(params)`` is symmetric in the Euclidean inner product (then
        Lanczos applies).
    source
        ``source(params) -> b(params)`` for affine systems, or ``None``.
    norm_bound
        ``norm_bound(params) -> upper bound of ||A(params)||_2`` (Gershgorin is fine).
    spectral_bound
        ``spectral_bound(params) -> upper bound of the spectral radius of
        A(params)``, where it is much smaller than ``||A||_2`` and governs the
        stability of explicit methods (the wave: ``sqrt(||L||)`` against
        ``||L||``); ``None`` uses ``norm_bound``.
    krylov_form
        Optional :class:`KrylovForm`: the same ODE in variables where ``A`` has
        a structure (e.g. skew symmetry) that :func:`~pdeinv.models.simulate`
        exploits; ``None`` solves in the state variables.
    observe_fn, state_from_field_fn
        Maps between the state vector and the physical nodal field (identity
        when ``None``).  For the first-order wave system the field is the
        displacement; for a mass-lumped P1 model it undoes the ``M^{1/2}`` scaling.
    timed_sources
        Sources switched on and off in time, :class:`TimedSource` entries: each adds
        its ``vector(params)`` to ``b`` while ``start <= t < stop``.  ``source``
        holds only the always-on part; solve such models with
        :func:`pdeinv.models.simulate_sources`, which restarts at every switch time.
    """

    name: str
    space: Space
    matvec: Callable[[Any, PyTree], Any]
    params: PyTree
    u0: Any
    symmetric: bool
    source: Callable[[PyTree], Any] | None = None
    norm_bound: Callable[[PyTree], Any] | None = None
    spectral_bound: Callable[[PyTree], Any] | None = None
    observe_fn: Callable[[Any], Any] | None = None
    state_from_field_fn: Callable[[Any], Any] | None = None
    krylov_form: KrylovForm | None = None
    timed_sources: tuple[TimedSource, ...] = ()

    @property
    def num_states(self) -> int:
        return int(self.u0.shape[0])

    def norm_estimate(self, params: PyTree) -> Any:
        """Upper bound of ``||A(params)||_2`` (used for step-size and stability limits)."""
        if self.norm_bound is None:
            raise NotImplementedError(f"model {self.name!r} has no norm bound")
        return self.norm_bound(params)

    def spectral_radius_estimate(self, params: PyTree) -> Any:
        """Upper bound of the spectral radius of ``A(params)`` (see ``spectral_bound``)."""
        if self.spectral_bound is None:
            return self.norm_estimate(params)
        return self.spectral_bound(params)

    def rhs(self, t, y, params: PyTree):
        """Vector field ``A(params) y + b(params)`` in diffrax's ``(t, y, args)`` form."""
        dy = self.matvec(y, params)
        if self.source is not None:
            dy = dy + self.source(params)
        for timed in self.timed_sources:
            active = timed.active(t)
            dy = dy + jnp.where(active, 1.0, 0.0).astype(dy.dtype) * timed.vector(params)
        return dy

    def observe(self, states):
        """Physical nodal field(s) of state(s) with shape ``(..., n_state)``."""
        return states if self.observe_fn is None else self.observe_fn(states)

    def state_from_field(self, field):
        """State vector whose physical field is ``field`` (inverse of :meth:`observe`)."""
        field = jnp.asarray(field)
        return field if self.state_from_field_fn is None else self.state_from_field_fn(field)

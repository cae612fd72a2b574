"""Point and volume sources, switched on and off in time, and the solve that restarts there.

A source adds ``q(x, t)`` to the right-hand side of ``S u_t = div(K grad u) + q``:

* :class:`PointSource` ``q = rate * delta(x - location)`` (a well, a heater): discretised
  by :func:`pdeinv.discretize.grid_point_source` (grids) or
  :func:`pdeinv.discretize.p1_point_load` (meshes);
* :class:`VolumeSource` ``q = rate * field(x)`` (recharge, distributed heating).

Both are constant while ``start <= t < stop``.  Positive rates inject (raise ``u``),
negative rates extract (a pumping well).  A model carries its always-on sources in
``Model.source`` and the others in ``Model.timed_sources``; :func:`simulate_sources`
solves such a model interval by interval between the switch times, each interval an
ordinary affine (or homogeneous) :func:`~pdeinv.models.simulate` started from the end
state of the previous one, so the exponential integrator never steps across a jump of
the source.  Every piece is differentiable, so is the chain.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from ._model import Model, TimedSource


def _check_times(start, stop, where):
    if not isinstance(start, (int, float)) or isinstance(start, bool) or not math.isfinite(start):
        raise ValueError(f"{where}: start must be a finite number, got {start!r}")
    if start < 0:
        raise ValueError(f"{where}: start must be >= 0, got {start!r}")
    if stop is not None:
        if not isinstance(stop, (int, float)) or isinstance(stop, bool) or not math.isfinite(stop):
            raise ValueError(f"{where}: stop must be a finite number or null, got {stop!r}")
        if stop <= start:
            raise ValueError(f"{where}: stop must be > start = {start!r}, got {stop!r}")


def _check_rate(rate, where):
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
        raise ValueError(f"{where}: rate must be a finite number, got {rate!r}")


@dataclasses.dataclass(frozen=True)
class PointSource:
    """Point source ``rate * delta(x - location)`` on for ``start <= t < stop``.

    Parameters
    ----------
    location
        Coordinates ``(dim,)`` inside the domain.
    rate
        Injected amount per unit time (``> 0`` injection, ``< 0`` extraction); in 2-D
        groundwater flow a volume rate [m^3/s] when ``u`` is the head [m].
    start, stop
        Switch-on time ``>= 0`` and switch-off time ``> start`` (``None``: never off).
    """

    location: Sequence[float]
    rate: float
    start: float = 0.0
    stop: float | None = None

    def __post_init__(self):
        _check_rate(self.rate, "point source")
        _check_times(self.start, self.stop, "point source")
        object.__setattr__(self, "location", tuple(float(v) for v in self.location))


@dataclasses.dataclass(frozen=True)
class VolumeSource:
    """Distributed source ``rate * field(x)`` (a density) on for ``start <= t < stop``.

    Parameters
    ----------
    field
        Nodal values ``(num_nodes,)``, a scalar, or a callable of the ``(num_nodes, dim)``
        points.
    rate
        Factor applied to ``field``.
    start, stop
        As for :class:`PointSource`.
    """

    field: Any
    rate: float = 1.0
    start: float = 0.0
    stop: float | None = None

    def __post_init__(self):
        _check_rate(self.rate, "volume source")
        _check_times(self.start, self.stop, "volume source")


def source_loads(space, sources, *, kind: str) -> dict:
    """Discrete right-hand sides of ``sources``, grouped by their ``(start, stop)``.

    Parameters
    ----------
    space
        Grid (``kind="density"``: nodal source densities, point sources by
        :func:`~pdeinv.discretize.grid_point_source`) or P1 mesh (``kind="load"``: load
        vectors ``int q phi_i dx`` with the lumped mass for volume sources and
        :func:`~pdeinv.discretize.p1_point_load` for point sources).
    sources
        :class:`PointSource` / :class:`VolumeSource` objects.

    Returns
    -------
    dict
        ``{(start, stop): (num_nodes,) float64 array}``; ``(0.0, None)`` is always on.
    """
    from ..discretize import grid_point_source, p1_lumped_mass, p1_point_load
    from ._common import nodal_field

    groups: dict = {}
    lumped = p1_lumped_mass(space) if kind == "load" else None
    for i, src in enumerate(sources):
        if isinstance(src, PointSource):
            try:
                unit = grid_point_source(space, src.location) if kind == "density" else None
                if kind == "load":
                    unit = p1_point_load(space, src.location)
            except ValueError as err:
                raise ValueError(f"sources[{i}]: {err}") from None
            vector = src.rate * unit
        elif isinstance(src, VolumeSource):
            density = src.rate * np.asarray(nodal_field(src.field, space, "field"), dtype=float)
            if not np.all(np.isfinite(density)):
                raise ValueError(f"sources[{i}]: field is not finite at every node")
            vector = density if kind == "density" else lumped * density
        else:
            raise TypeError(
                f"sources[{i}] must be a PointSource or VolumeSource, got {type(src).__name__}"
            )
        key = (float(src.start), None if src.stop is None else float(src.stop))
        if key[0] == 0.0 and key[1] is None:
            key = (0.0, None)
        groups[key] = groups.get(key, 0.0) + vector
    return groups


def switch_times(model: Model) -> np.ndarray:
    """Sorted distinct times where a timed source of ``model`` switches, ``> 0``."""
    times = set()
    for timed in model.timed_sources:
        times.add(float(timed.start))
        if timed.stop is not None:
            times.add(float(timed.stop))
    return np.array(sorted(t for t in times if t > 0.0))


def _source_during(model: Model, active: list[TimedSource]) -> Callable | None:
    if not active:
        return model.source
    base = model.source

    def source(params):
        b = sum(timed.vector(params) for timed in active)
        return b if base is None else b + base(params)

    return source


def simulate_sources(model: Model, params, times, *, u0=None, **expm_kwargs):
    """:func:`~pdeinv.models.simulate` for models with sources that switch in time.

    Splits ``[0, times[-1]]`` at the switch times of ``model.timed_sources``; on each
    interval the source is constant and the affine system is solved exactly by
    :func:`~pdeinv.models.simulate` from the end state of the previous interval
    (intervals where nothing is on use the homogeneous, e.g. Lanczos, path).  Models
    without timed sources go straight to :func:`~pdeinv.models.simulate`.

    Parameters
    ----------
    model, params, u0, **expm_kwargs
        As for :func:`~pdeinv.models.simulate`.
    times
        Scalar or 1-D non-decreasing times ``>= 0``; must be concrete (NumPy or a
        non-traced array) when the model has timed sources, since they decide the
        intervals.

    Returns
    -------
    Array
        ``(n_state,)`` for a scalar time, else ``(len(times), n_state)``;
        differentiable with respect to ``params`` and ``u0``.
    """
    from ._simulate import simulate

    if not model.timed_sources:
        return simulate(model, params, times, u0=u0, **expm_kwargs)
    try:
        t = np.asarray(times, dtype=float)
    except Exception:  # a tracer: the switch structure must be static
        raise TypeError(
            "simulate_sources: times must be concrete (not traced) for a model with sources "
            "that switch on or off; close over them instead of passing them through jit"
        ) from None
    dtype = jnp.asarray(times).dtype
    scalar = t.ndim == 0
    t = np.atleast_1d(t)
    if t.ndim != 1 or np.any(t < 0) or np.any(np.diff(t) < 0):
        raise ValueError(f"times must be a non-decreasing 1-D array of times >= 0, got {t}")
    end = float(t[-1])
    edges = [0.0, *[s for s in switch_times(model) if s < end], end]
    state = model.u0 if u0 is None else jnp.asarray(u0)
    pieces = []
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        last = k == len(edges) - 2
        inside = (t >= a) & (t <= b) if k == 0 else (t > a) & (t <= b)
        local = t[inside] - a
        if not last:
            local = np.append(local, b - a)
        if local.size == 0:
            continue
        active = [
            ts for ts in model.timed_sources if ts.start <= a and (ts.stop is None or ts.stop > a)
        ]
        piece_model = dataclasses.replace(
            model, source=_source_during(model, active), timed_sources=()
        )
        states = simulate(piece_model, params, jnp.asarray(local, dtype), u0=state, **expm_kwargs)
        if not last:
            state = states[-1]
            states = states[:-1]
        pieces.append(states)
    out = jnp.concatenate(pieces, axis=0)
    return out[0] if scalar else out

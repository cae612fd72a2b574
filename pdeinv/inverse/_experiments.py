"""Several experiments (initial states with their own data) sharing one set of parameters.

The objective sums the misfits of the experiments,

    J(m) = sum_e 1/2 || (B obs(u_e(t_i; m)) - d_e,i) / sigma ||^2 + w R(field(m)),
    u_e(t; m) = exp(t A(params(m))) u0_e,

and the forward solves are batched: :func:`jax.vmap` of
:func:`pdeinv.models.simulate` over the initial states.  ``expm_multiply``'s
adaptive stepping is a ``lax.while_loop``; under ``vmap`` every experiment keeps
its own step size, step count and error estimate (finished experiments are
masked, not stepped), so batched results equal separate calls to rounding.
With an :class:`~pdeinv.inverse.ExperimentSharding` the experiments are split
across devices with :func:`jax.shard_map` and the misfit is ``psum``-ed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec

from ..expm import check_times
from ..models._model import Model
from ._parameterization import ParameterMap
from ._problem import RegularizedObjective
from ._sharding import EXPERIMENT_AXIS, ExperimentSharding


def simulate_experiments(model: Model, params, times, initial_states, *, batch_size=None, **solver):
    """States of several experiments, ``(num_experiments, len(times), n_state)``.

    Parameters
    ----------
    model
        The semi-discrete PDE.
    params
        Parameter pytree shared by all experiments.
    times
        1-D non-decreasing observation times.
    initial_states
        ``(num_experiments, n_state)`` initial states (state vectors, see
        :meth:`Model.state_from_field`).
    batch_size
        Experiments solved at once: ``vmap`` over chunks of ``batch_size``, the
        chunks one after the other (:func:`jax.lax.map`); ``batch_size >=
        num_experiments`` is one ``vmap`` over all.  ``None`` (default): see
        :func:`default_batch_size`.  Memory of the gradient checkpoints grows
        with the batch, not with the number of experiments.
    **solver
        Options of :func:`pdeinv.expm_multiply` (``tol``, ``krylov_dim``, ...).
    """
    from ..models import simulate_sources as simulate

    initial_states = jnp.asarray(initial_states)
    if initial_states.ndim != 2 or initial_states.shape[1] != model.num_states:
        raise ValueError(
            f"initial_states must have shape (num_experiments, {model.num_states}), "
            f"got {tuple(initial_states.shape)}"
        )

    def one(u0):
        return simulate(model, params, times, u0=u0, **solver)

    if batch_size is None:
        batch_size = default_batch_size(initial_states.shape[0])
    if batch_size >= initial_states.shape[0]:
        return jax.vmap(one)(initial_states)
    return lax.map(one, initial_states, batch_size=int(batch_size))


def default_batch_size(num_experiments: int, platform: str | None = None) -> int:
    """Experiments per ``vmap`` batch when none is given.

    All of them on accelerators.  On CPU one at a time: batching gains little
    there (the small LAPACK calls of a batched solve run one matrix at a time,
    see :func:`pdeinv.krylov._common.one_at_a_time_on_cpu`, which also removed
    the deadlock of batched LAPACK calls that once made this default
    necessary).  Pass ``batch_size`` explicitly to batch on CPU anyway.
    """
    platform = jax.default_backend() if platform is None else platform
    return 1 if platform == "cpu" else int(num_experiments)


@dataclasses.dataclass(frozen=True, eq=False)
class MultiExperimentProblem(RegularizedObjective):
    r"""Recover parameters ``m`` from several experiments at once.

    Same interface as :class:`~pdeinv.inverse.InverseProblem` (``objective``,
    ``misfit``, ``states``, ``predict``, and :func:`~pdeinv.inverse.fit` /
    :func:`~pdeinv.inverse.fit_morozov` accept it), with an experiment axis in
    front of the states, predictions and data.

    Parameters
    ----------
    model
        The semi-discrete PDE; its ``u0`` is not used (see ``initial_states``).
    times
        Observation times shared by the experiments, ``(num_times,)``, increasing, ``> 0``.
    parameters
        Map from the optimisation vector to the model parameters.
    observation
        ``observation(fields) -> values`` on the physical nodal field.
    initial_states
        ``(num_experiments, n_state)``: the initial state of each experiment.
    data
        ``(num_experiments, num_times, num_observations)``.
    sigma
        Noise standard deviation: scalar, or broadcastable to ``data``.
    regularizer, weight
        Regulariser of the nodal log-coefficient field and its weight ``>= 0``.
    solver
        Keyword arguments of :func:`pdeinv.expm_multiply`.
    sharding
        ``None`` (one device, plain ``vmap``) or an
        :class:`~pdeinv.inverse.ExperimentSharding` splitting the experiments
        across its devices (padded to a multiple of the device count; padding
        experiments carry zero weight).
    batch_size
        Experiments solved at once (``vmap``) per device; ``None``: all of them on
        accelerators, one at a time on CPU (see :func:`default_batch_size`).
        Smaller values bound memory (checkpoints of ``batch_size`` solves).
    """

    model: Model
    times: np.ndarray
    parameters: ParameterMap
    observation: Callable
    initial_states: np.ndarray
    data: np.ndarray
    sigma: float | np.ndarray
    regularizer: Callable
    weight: float = 0.0
    solver: dict = dataclasses.field(default_factory=dict)
    sharding: ExperimentSharding | None = None
    batch_size: int | None = None

    def __post_init__(self):
        times = check_times(
            self.times, name="observation times", positive=True, strictly_increasing=True
        )
        object.__setattr__(self, "times", times)
        initial = jnp.asarray(self.initial_states)
        if initial.ndim != 2 or initial.shape[1] != self.model.num_states or initial.shape[0] < 1:
            raise ValueError(
                f"initial_states must have shape (num_experiments, {self.model.num_states}), "
                f"got {tuple(initial.shape)}"
            )
        data = np.asarray(self.data)
        expected = (initial.shape[0], len(times), self.observation.num_observations)
        if data.shape != expected:
            raise ValueError(
                f"data must have shape {expected} (experiments, times, observations), "
                f"got {data.shape}"
            )
        if self.weight < 0:
            raise ValueError(f"regularization weight must be >= 0, got {self.weight}")
        sigma = np.asarray(self.sigma, dtype=float)
        if np.any(sigma <= 0):
            raise ValueError("noise standard deviation sigma must be > 0")
        try:
            np.broadcast_shapes(sigma.shape, data.shape)
        except ValueError:
            raise ValueError(
                f"sigma must be a scalar or broadcastable to the data {data.shape}, "
                f"got shape {sigma.shape}"
            ) from None
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")

    @property
    def num_experiments(self) -> int:
        return int(np.shape(self.initial_states)[0])

    @property
    def num_observations(self) -> int:
        return int(np.asarray(self.data).size)

    @property
    def dtype(self):
        return jnp.asarray(self.initial_states).dtype

    # -- device placement ---------------------------------------------------------

    @functools.cached_property
    def _batched_arrays(self):
        """``(initial_states, data, inv_sigma, mask)``, padded and placed on the devices."""
        # Concrete arrays even when first asked for inside a jit trace (cached).
        with jax.ensure_compile_time_eval():
            return self._place_arrays()

    def _place_arrays(self):
        dtype = self.dtype
        num = self.num_experiments
        padded = num if self.sharding is None else self.sharding.padded_count(num)
        # Padding repeats the last experiment (a valid solve) with zero weight.
        take = np.minimum(np.arange(padded), num - 1)
        initial = jnp.asarray(self.initial_states, dtype)[take]
        data = jnp.asarray(np.asarray(self.data)[take], dtype)
        mask = jnp.asarray(np.arange(padded) < num, dtype)
        sigma = np.asarray(self.sigma, dtype=float)
        if sigma.ndim == 0:
            inv_sigma = jnp.asarray(1.0 / sigma, dtype)
        else:
            inv_sigma = jnp.asarray(1.0 / np.broadcast_to(sigma, np.shape(self.data))[take], dtype)
        arrays = (initial, data, inv_sigma, mask)
        if self.sharding is not None:
            batch, replicated = self.sharding.batch_sharding(), self.sharding.replicated()
            arrays = tuple(jax.device_put(a, batch if a.ndim else replicated) for a in arrays)
        return arrays

    def _specs(self, arrays):
        return tuple(PartitionSpec(EXPERIMENT_AXIS) if a.ndim else PartitionSpec() for a in arrays)

    # -- forward and misfit -------------------------------------------------------

    def _local_states(self, m, initial):
        params = self.parameters.to_params(m)
        times = jnp.asarray(self.times, m.dtype)
        return simulate_experiments(
            self.model, params, times, initial.astype(m.dtype), batch_size=self.batch_size,
            **self.solver,
        )  # fmt: skip

    def _local_misfit(self, m, initial, data, inv_sigma, mask):
        states = self._local_states(m, initial)
        predicted = self.observation(self.model.observe(states))
        residual = (predicted - data.astype(m.dtype)) * inv_sigma.astype(m.dtype)
        per_experiment = jnp.sum(residual**2, axis=(1, 2))
        return 0.5 * jnp.sum(mask.astype(m.dtype) * per_experiment)

    def _local_residual(self, m, initial, data, inv_sigma, mask):
        states = self._local_states(m, initial)
        predicted = self.observation(self.model.observe(states))
        residual = (predicted - data.astype(m.dtype)) * inv_sigma.astype(m.dtype)
        return residual * mask.astype(m.dtype)[:, None, None]  # padding: zero weight

    def states(self, m):
        """States at the observation times, ``(num_experiments, num_times, n_state)``."""
        m = jnp.asarray(m)
        initial = self._batched_arrays[0]
        if self.sharding is None:
            return self._local_states(m, initial)
        spec = PartitionSpec(EXPERIMENT_AXIS)
        states = jax.shard_map(
            self._local_states,
            mesh=self.sharding.mesh,
            in_specs=(PartitionSpec(), spec),
            out_specs=spec,
            check_vma=False,
        )(m, initial)
        return states[: self.num_experiments]

    def predict(self, m):
        """Predicted observations ``(num_experiments, num_times, num_observations)``."""
        return self.observation(self.model.observe(self.states(m)))

    def misfit(self, m):
        """``sum_e 0.5 * ||(predict_e(m) - data_e) / sigma||^2``."""
        m = jnp.asarray(m)
        arrays = self._batched_arrays
        if self.sharding is None:
            return self._local_misfit(m, *arrays)

        def summed(m, *local):
            return lax.psum(self._local_misfit(m, *local), EXPERIMENT_AXIS)

        return jax.shard_map(
            summed,
            mesh=self.sharding.mesh,
            in_specs=(PartitionSpec(), *self._specs(arrays)),
            out_specs=PartitionSpec(),
            check_vma=False,
        )(m, *arrays)

    def weighted_residual(self, m):
        """``(predict(m) - data) / sigma``, ``(num_experiments, num_times, num_observations)``.

        ``misfit(m) = 0.5 * ||weighted_residual(m)||^2``; the Gauss–Newton
        methods (:meth:`gauss_newton_operator`, :meth:`gauss_newton_hvp`,
        :meth:`misfit_gauss_newton_hvp`) differentiate it in forward and reverse mode.
        """
        m = jnp.asarray(m)
        arrays = self._batched_arrays
        if self.sharding is None:
            return self._local_residual(m, *arrays)
        spec = PartitionSpec(EXPERIMENT_AXIS)
        residual = jax.shard_map(
            self._local_residual,
            mesh=self.sharding.mesh,
            in_specs=(PartitionSpec(), *self._specs(arrays)),
            out_specs=spec,
            check_vma=False,
        )(m, *arrays)
        return residual[: self.num_experiments]

    @property
    def num_solves(self) -> int:
        """PDE solves of one forward evaluation: one per experiment, padding included."""
        if self.sharding is None:
            return self.num_experiments
        return int(self.sharding.padded_count(self.num_experiments))

    def device_layout(self) -> dict:
        """How the experiments are placed (for ``metrics.json``)."""
        if self.sharding is None:
            device = jax.devices()[0]
            return {
                "count": 1,
                "platform": device.platform,
                "device_kind": getattr(device, "device_kind", ""),
                "mesh_shape": None,
                "num_experiments": self.num_experiments,
                "padded_experiments": self.num_experiments,
                "experiments_per_device": [self.num_experiments],
                "sharded": "none (one device)",
                "batch_size": self._effective_batch_size(self.num_experiments),
            }
        layout = self.sharding.describe(self.num_experiments)
        per_device = layout["padded_experiments"] // layout["count"]
        return {**layout, "batch_size": self._effective_batch_size(per_device)}

    def _effective_batch_size(self, local_count: int) -> int:
        if self.batch_size is not None:
            return int(min(self.batch_size, local_count))
        platform = None if self.sharding is None else self.sharding.devices[0].platform
        return min(default_batch_size(local_count, platform), local_count)

"""From the sections of a resolved config to the objects of a run, and from a finished fit
to a run folder.

The wiring lives here (which builder, which regulariser, which optimiser); the
computation is done by :mod:`pdeinv.models`, :mod:`pdeinv.inverse`,
:mod:`pdeinv.reference` and :mod:`pdeinv.report`.  Every builder takes the typed
sections (:mod:`pdeinv.cli._sections`) it reads, never the config dict.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import inverse, report
from ..models._model import Model
from ._config import ConfigError, dump_config
from ._sections import (
    ModelSection,
    ObservationsSection,
    OptimizerSection,
    ParameterizationSection,
    RegularizationSection,
    RunConfig,
    SolverSection,
    SourceSpec,
    TruthSection,
)

# Which model parameter holds the nodal log-coefficient, and how to call it.
_FIELD_PARAM = {"heat": "log_kappa", "advection_diffusion": "log_kappa", "wave": "log_c"}
_COEFFICIENT = {"heat": "kappa", "advection_diffusion": "kappa", "wave": "c"}


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
    """Everything a fit needs, built from the sections of a resolved config."""

    config: RunConfig
    model: Model
    coefficient: str  # "kappa" or "c"
    true_field: np.ndarray | None  # coefficient values (not log) on the nodes
    true_params: dict | None
    clean_data: np.ndarray | None
    problem: inverse.InverseProblem
    x0: np.ndarray
    optimizer: Any
    observation_kind: str
    build_time_s: float
    device_layout: dict | None = None  # devices and how experiments are split over them
    log_field: bool = True  # the unknown field is log(coefficient); False: the initial state
    prior_center: np.ndarray | None = None  # centre of the uncertainty prior's nugget term

    @property
    def space(self):
        return self.model.space

    @property
    def dtype(self):
        return self.x0.dtype


@dataclasses.dataclass(frozen=True)
class FieldMaker:
    """Evaluates a field name or expression on nodes (``truth`` shapes, ``seed``).

    Called as ``fields(key, expression, points, positive=...)``; errors are
    :class:`ConfigError` naming the YAML ``key``.
    """

    truth: TruthSection
    seed: int

    def __call__(self, key: str, expression: str, points, *, positive: bool) -> np.ndarray:
        try:
            values = inverse.make_field(expression, points, _field_spec(self.truth), seed=self.seed)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None
        if not np.all(np.isfinite(values)):
            raise ConfigError(f"{key} = {expression!r} is not finite at every node")
        if positive and np.any(values <= 0):
            raise ConfigError(f"{key} = {expression!r} must be positive at every node")
        return values


def solver_options(solver: SolverSection) -> dict:
    """Keyword arguments for :func:`pdeinv.models.simulate` from ``solver``."""
    options = {
        "tol": solver.tol,
        "krylov_dim": solver.krylov_dim,
        "max_steps": solver.max_steps,
        "checkpoint": solver.checkpoint,
    }
    if solver.method != "auto":
        options["method"] = solver.method
    return options


def build_space(model: ModelSection):
    """The grid or the mesh of ``model``."""
    from ..discretize import grid, read_mesh

    if model.mesh is not None:
        return read_mesh(model.mesh)
    return grid(model.grid, lower=model.lower, upper=model.upper)


def build_model(
    section: ModelSection,
    space,
    params: dict,
    u0_field: np.ndarray,
    dtype,
    *,
    sources: tuple[SourceSpec, ...],
    fields: FieldMaker,
) -> Model:
    """The model of ``section`` on ``space`` with parameter values ``params``.

    ``sources`` and ``fields`` (which evaluates a capacity or a volume source
    expression) matter for heat only.
    """
    from .. import models

    bc = _boundary(section, space)
    u0 = jnp.asarray(u0_field, dtype)
    params = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    if section.pde == "heat":
        heat_options = {
            "capacity": _capacity(section, space, fields),
            "sources": _sources(sources, space, fields),
        }
        try:
            if section.mesh is not None:
                boundary = None if bc == "neumann" else bc
                return models.heat_p1(
                    space, params["log_kappa"], u0, boundary=boundary, **heat_options
                )
            return models.heat_fd(space, params["log_kappa"], u0, bc=bc, **heat_options)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if section.pde == "wave":
        return models.wave_fd(space, params["log_c"], u0, bc=bc, form=section.wave_form)
    return models.advection_diffusion_fd(space, params["log_kappa"], params["velocity"], u0, bc=bc)


def _boundary(section: ModelSection, space):
    """``model.boundary`` checked against the sides of the grid or the tags of the mesh."""
    from ..discretize import boundary_conditions, mesh_boundary_conditions

    bc = section.boundary
    try:
        if section.mesh is not None:
            mesh_boundary_conditions(space, bc)
            return bc
        return boundary_conditions(space, bc)
    except ValueError as err:
        raise ConfigError(f"model.boundary: {err}") from None


def _capacity(section: ModelSection, space, fields: FieldMaker):
    """Nodal capacity of ``model.capacity``, or ``None`` for the default 1."""
    capacity = section.capacity
    if isinstance(capacity, float):
        return None if capacity == 1.0 else capacity
    return fields("model.capacity", capacity, space.points, positive=True)


def _sources(sources: tuple[SourceSpec, ...], space, fields: FieldMaker) -> list:
    """``sources`` as :class:`~pdeinv.models.PointSource` / ``VolumeSource`` objects."""
    from ..models import PointSource, VolumeSource

    out = []
    for i, src in enumerate(sources):
        times = {"start": src.start, "stop": src.stop}
        if src.location is not None:
            if len(src.location) != space.dim:
                raise ConfigError(
                    f"sources[{i}].location must have {space.dim} coordinates, got "
                    f"{list(src.location)}"
                )
            out.append(PointSource(list(src.location), src.rate, **times))
        else:
            field = fields(f"sources[{i}].field", src.field, space.points, positive=False)
            out.append(VolumeSource(field, src.rate, **times))
    return out


def _field_spec(truth: TruthSection) -> inverse.FieldSpec:
    return inverse.FieldSpec(
        background=truth.background,
        contrast=truth.contrast,
        center=truth.center,
        radius=truth.radius,
        smooth_amplitude=truth.smooth_amplitude,
        num_features=truth.num_features,
    )


def _observation(obs: ObservationsSection, seed: int, space, sensors_from_file=None):
    """``(kind, observation operator)`` of ``observations`` (or the data file's sensors)."""
    sensors = obs.sensors
    if sensors_from_file is not None:
        return "sensors", inverse.PointSensors.at(space, sensors_from_file, sensors.interpolation)
    if obs.kind == "full":
        return "full", inverse.FullField(space)
    if sensors.points is not None:
        points = np.asarray(sensors.points, dtype=float)
        if points.shape[1] != space.dim:
            raise ConfigError(
                f"observations.sensors.points must have {space.dim} coordinates per point"
            )
    else:
        points = inverse.sensor_layout(space, sensors.count, sensors.layout, seed=seed)
    return "sensors", inverse.PointSensors.at(space, points, sensors.interpolation)


def _parameterization(par: ParameterizationSection, space):
    try:
        if par.kind == "nodal":
            return inverse.NodalField(space.num_nodes)
        if par.kind == "regions":
            return inverse.PiecewiseConstant.boxes(space, list(par.regions))
        return inverse.CoarseGrid.build(space, list(par.coarse_grid))
    except ValueError as err:
        raise ConfigError(f"parameterization: {err}") from None


def _load_data_file(path: str, space):
    if path.lower().endswith(".csv"):
        try:
            data = inverse.read_sensor_csv(path, space)
        except (OSError, ValueError) as err:
            raise ConfigError(f"data.file: {err}") from None
        return data.times, data.values, data.sensors, data.sigma, None
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in ("times", "observations") if k not in npz.files]
        if missing:
            raise ConfigError(f"data.file {path} lacks the key(s) {', '.join(missing)}")
        content = {k: np.asarray(npz[k]) for k in npz.files}
    times = np.atleast_1d(content["times"]).astype(float)
    observations = np.asarray(content["observations"], dtype=float)
    if observations.ndim != 2 or observations.shape[0] != len(times):
        raise ConfigError(
            f"data.file: observations must have shape (len(times), M) = ({len(times)}, M), "
            f"got {observations.shape}"
        )
    sensors = content.get("sensors")
    if sensors is None and observations.shape[1] != space.num_nodes:
        raise ConfigError(
            f"data.file: without 'sensors', observations need one column per node "
            f"({space.num_nodes}), got {observations.shape[1]}"
        )
    truth = content.get("truth")
    if truth is not None and truth.shape != (space.num_nodes,):
        raise ConfigError(f"data.file: truth must have shape ({space.num_nodes},)")
    sigma = content.get("sigma")
    for name, values in (("times", times), ("observations", observations),
                         ("sigma", sigma), ("sensors", sensors), ("truth", truth)):  # fmt: skip
        if values is not None:
            _check_finite_data(name, values)
    if sigma is not None and np.any(np.asarray(sigma, dtype=float) <= 0):
        raise ConfigError("data.file: sigma must be > 0 everywhere (it divides the misfit)")
    if truth is not None and np.any(np.asarray(truth, dtype=float) <= 0):
        raise ConfigError("data.file: truth (the coefficient) must be > 0 at every node")
    return times, observations, sensors, sigma, truth


def _check_finite_data(name: str, values) -> None:
    """ConfigError naming the array, the count and the first non-finite entry."""
    try:
        values = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"data.file: {name} must hold numbers") from None
    bad = ~np.isfinite(values)
    count = int(bad.sum())
    if not count:
        return
    where = ""
    if values.ndim:
        first = np.unravel_index(int(np.argmax(bad)), values.shape)
        labels = {
            "observations": ("time index", "column"),
            "sigma": ("time index", "column"),
            "sensors": ("sensor", "coordinate"),
        }.get(name, ("index",))
        where = ", ".join(f"{label} {i}" for label, i in zip(labels, first, strict=False))
        where = f" (first at {where})"
    plural = "value" if count == 1 else "values"
    verb = "holds" if name == "sigma" else "hold"
    raise ConfigError(f"data.file: {name} {verb} {count} non-finite {plural}{where}")


@dataclasses.dataclass(frozen=True)
class _Measured:
    """What the data source gives before the model exists (``data.source``)."""

    times: np.ndarray
    true_field: np.ndarray | None  # the coefficient, synthetic or the file's `truth`
    observations: np.ndarray | None = None  # data.file only, as the remaining fields
    sensors: np.ndarray | None = None
    sigma: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _Data:
    """The data a problem fits, with the truth behind synthetic data."""

    data: np.ndarray
    sigma: Any
    clean: np.ndarray | None
    true_params: dict | None


def build_experiment(config: RunConfig, *, devices=None) -> Experiment:
    """Space, model, data and inverse problem of the sections of a resolved config.

    With several experiments (``experiments``) the problem is a
    :class:`~pdeinv.inverse.MultiExperimentProblem`, split over ``devices``
    (``None``: all JAX devices, or a count).
    """
    from ._scale import device_mesh

    start = time.perf_counter()
    dtype = jnp.float64 if config.precision == "float64" else jnp.float32
    fields = FieldMaker(config.truth, config.seed)
    try:
        space = build_space(config.model)
    except (OSError, ValueError) as err:
        raise ConfigError(f"model: {err}") from None
    initial_fields = _initial_fields(config, space, fields)
    measured, build_params = _measure(config, space, fields)
    # The model's own u0 is the first experiment's.
    model = build_model(
        config.model, space, build_params, initial_fields[0], dtype,
        sources=config.sources, fields=fields,
    )  # fmt: skip
    initial_states = _initial_states(model, initial_fields, dtype)
    sharding, device_layout = device_mesh(devices, len(initial_fields))
    observation_kind, observation = _observation(
        config.observations, config.seed, space, measured.sensors
    )
    solver = solver_options(config.solver)
    data = _make_data(
        config, model, build_params, measured, observation, solver, initial_states, dtype
    )
    parameters, initial_extra = _parameter_map(config, space, model)
    regularizer, prior_log = _regularizer(config, space)
    problem = _problem(
        config, model, measured.times, parameters, observation, data, regularizer, solver,
        initial_states, sharding,
    )  # fmt: skip
    linear = config.parameterization.kind == "initial_condition"  # the unknown is u(0)
    start_value = 0.0 if linear else np.log(config.parameterization.initial_value)
    synthetic = config.data.source == "synthetic"
    return Experiment(
        config=config,
        model=model,
        coefficient=inverse.INITIAL_CONDITION if linear else _COEFFICIENT[config.model.pde],
        true_field=(initial_fields[0] if synthetic else None) if linear else measured.true_field,
        true_params=data.true_params,
        clean_data=data.clean,
        problem=problem,
        x0=parameters.initial(start_value, initial_extra, dtype=np.dtype(dtype)),
        optimizer=build_optimizer(config.optimizer, parameters, bounded=not linear),
        observation_kind=observation_kind,
        build_time_s=time.perf_counter() - start,
        device_layout=device_layout,
        log_field=not linear,
        prior_center=parameters.initial(prior_log, initial_extra, dtype=float),
    )


def _initial_fields(config: RunConfig, space, fields: FieldMaker) -> list[np.ndarray]:
    """Nodal initial condition of every experiment (``experiments``, ``model``)."""
    from ._scale import initial_condition_fields

    # Checked even where experiments replace it: a bad expression is an error either way.
    fields("model.initial_condition", config.model.initial_condition, space.points,
           positive=False)  # fmt: skip
    return initial_condition_fields(
        config.experiments, config.model.initial_condition, config.seed, space, fields
    )


def _true_velocity(config: RunConfig, space) -> np.ndarray | None:
    """``truth.velocity`` of an advection–diffusion model (else ``None``)."""
    if config.model.pde != "advection_diffusion":
        return None
    velocity = np.asarray(config.truth.velocity, dtype=float)
    if velocity.size != space.dim:
        raise ConfigError(f"truth.velocity must have {space.dim} entries")
    return velocity


def _initial_states(model, initial_fields, dtype):
    """The stacked initial states of several experiments, ``None`` for one."""
    if len(initial_fields) == 1:
        return None
    return jnp.stack([model.state_from_field(jnp.asarray(f, dtype)) for f in initial_fields])


def _measure(config: RunConfig, space, fields: FieldMaker) -> tuple[_Measured, dict]:
    """What the data source gives (``truth`` or ``data.file``) and the model's parameters."""
    true_velocity = _true_velocity(config, space)
    if config.data.source == "synthetic":
        true_field = fields("truth.field", config.truth.field, space.points, positive=True)
        measured = _Measured(np.asarray(config.observations.times, dtype=float), true_field)
    else:
        times, observations, sensors, sigma, true_field = _load_data_file(config.data.file, space)
        measured = _Measured(times, true_field, observations, sensors, sigma)
    return measured, _model_params(config, space, true_field, true_velocity)


def _model_params(config: RunConfig, space, true_field, true_velocity) -> dict:
    """Parameters the model is built with: the truth's, else the optimiser's start."""
    if true_field is None:
        true_field = np.full(space.num_nodes, config.parameterization.initial_value)
    params = {_FIELD_PARAM[config.model.pde]: np.log(true_field)}
    if true_velocity is not None:
        params["velocity"] = true_velocity
    return params


def _make_data(
    config: RunConfig, model, params, measured, observation, solver, initial_states, dtype
) -> _Data:
    """Synthetic data (simulated at ``params`` + ``noise``) or the data file's, with sigma."""
    if config.data.source != "synthetic":
        data = measured.observations
        if measured.sigma is not None:
            sigma = np.asarray(measured.sigma, dtype=float)
        else:
            rms = float(np.sqrt(np.mean(data**2))) or 1.0
            sigma = max(config.noise.level, 1e-3) * rms
        return _Data(data, sigma, None, None)
    from ..models import simulate_sources

    true_params = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    true_params = {**model.params, **true_params}
    times = measured.times
    if initial_states is not None:
        from ..inverse._experiments import simulate_experiments

        states = simulate_experiments(
            model, true_params, jnp.asarray(times, dtype), initial_states,
            batch_size=config.experiments.batch_size, **solver,
        )  # fmt: skip
    else:
        states = simulate_sources(model, true_params, np.asarray(times, dtype), **solver)
    clean = np.asarray(observation(model.observe(states)), dtype=float)
    data, sigma = inverse.add_noise(clean, config.noise.level, seed=config.seed)
    return _Data(data, sigma, clean, true_params)


def _parameter_map(config: RunConfig, space, model) -> tuple[inverse.ParameterMap, dict]:
    """The unknowns (``parameterization``) and the start values of their extra parameters."""
    par = config.parameterization
    if par.kind == "initial_condition":
        # The initial state is the unknown (a linear problem); the coefficient is the truth's.
        parameters = inverse.ParameterMap(
            inverse.NodalField(space.num_nodes), inverse.INITIAL_CONDITION, dict(model.params)
        )
        return parameters, {}
    extras, initial_extra = (), {}
    if config.model.pde == "advection_diffusion" and par.fit_velocity:
        extras = (("velocity", space.dim),)
        initial_velocity = np.asarray(par.initial_velocity, dtype=float)
        if initial_velocity.size != space.dim:
            raise ConfigError(f"parameterization.initial_velocity must have {space.dim} entries")
        initial_extra["velocity"] = initial_velocity
    parameters = inverse.ParameterMap(
        _parameterization(par, space), _FIELD_PARAM[config.model.pde], dict(model.params), extras
    )
    return parameters, initial_extra


def _regularizer(config: RunConfig, space):
    """``(regulariser, prior mean of the unknown field)`` of ``regularization``."""
    reg: RegularizationSection = config.regularization
    prior = reg.prior_mean if reg.prior_mean is not None else config.parameterization.initial_value
    initial_condition = config.parameterization.kind == "initial_condition"
    prior_log = 0.0 if initial_condition else float(np.log(prior))
    try:
        regularizer = inverse.make_regularizer(
            reg.kind, space, mean=prior_log, epsilon=reg.tv_epsilon,
            correlation_length=reg.correlation_length, variance=reg.prior_variance,
        )  # fmt: skip
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return regularizer, prior_log


def _problem(config: RunConfig, model, times, parameters, observation, data: _Data,
             regularizer, solver, initial_states, sharding):  # fmt: skip
    """The inverse problem: one experiment, several (``initial_states``), or the initial state."""
    problem_class, options = inverse.InverseProblem, {}
    if config.parameterization.kind == "initial_condition":
        options = {"forward": inverse.initial_condition_forward}
    if initial_states is not None:
        from ..inverse._experiments import MultiExperimentProblem

        problem_class = MultiExperimentProblem
        options = dict(
            initial_states=initial_states, sharding=sharding,
            batch_size=config.experiments.batch_size,
        )  # fmt: skip
    return problem_class(
        model=model,
        times=times,
        parameters=parameters,
        observation=observation,
        data=np.asarray(data.data),
        sigma=data.sigma,
        regularizer=regularizer,
        weight=config.regularization.weight,
        solver=solver,
        **options,
    )


def build_optimizer(opt: OptimizerSection, parameters, *, bounded: bool = True):
    """The optimiser of ``optimizer``; ``log_bounds`` bound the field unknowns if ``bounded``."""
    lo, hi = opt.log_bounds if bounded else (None, None)
    bounds = ((lo, hi),) * parameters.num_field_params + ((None, None),) * (
        parameters.size - parameters.num_field_params
    )
    if opt.method == "lbfgsb":
        return inverse.LBFGSB(max_iter=opt.max_iter, gtol=opt.gtol, ftol=opt.ftol, bounds=bounds)
    if opt.method == "newton_cg":
        return inverse.NewtonCG(
            max_iter=opt.max_iter,
            gtol=opt.gtol,
            ftol=opt.ftol,
            max_cg=opt.max_cg,
            forcing_max=opt.forcing_max,
            memory=opt.cg_memory,
            product_tol=opt.product_tol,
            trust_radius=opt.trust_radius,
            bounds=bounds,
        )
    return inverse.Adam(
        learning_rate=opt.learning_rate, max_iter=opt.max_iter, gtol=opt.gtol, ftol=opt.ftol
    )


@dataclasses.dataclass
class FitOutcome:
    result: inverse.OptimizeResult
    weight: float
    morozov: inverse.MorozovResult | None
    recovered_field: np.ndarray
    recovered_params: dict
    states: np.ndarray
    predictions: np.ndarray
    history: dict
    stage_starts: np.ndarray
    fit_time_s: float
    evidence: Any = None  # inverse.EvidenceResult of choose_weight = evidence


def fit_experiment(
    experiment: Experiment,
    *,
    callback=None,
    on_weight=None,
    stop=None,
    checkpoint=None,
    x0=None,
    previous_history=None,
) -> FitOutcome:
    """Run the optimiser (fixed weight or Morozov sweep) and evaluate the fit.

    ``stop`` and ``checkpoint`` go to :func:`pdeinv.inverse.minimize`.  ``x0``
    (default the experiment's start) and ``previous_history`` continue a
    resumed run: the new history is appended to the previous one.
    """
    from ._robust import join_histories

    config = experiment.config
    problem = experiment.problem
    start = time.perf_counter()
    reg = config.regularization
    x0 = experiment.x0 if x0 is None else x0
    morozov = evidence = None
    if reg.choose_weight == "morozov":
        morozov = inverse.fit_morozov(
            problem,
            x0,
            reg.morozov_weights,
            experiment.optimizer,
            tau=reg.morozov_tau,
            callback=callback,
            on_weight=on_weight,
            stop=stop,
            checkpoint=checkpoint,
        )
        result, weight = morozov.result, morozov.weight
        histories = [r.history for r in morozov.results]
    elif reg.choose_weight == "evidence":
        from ._uncertainty import posterior_options

        weights = reg.evidence_weights or reg.morozov_weights
        try:
            evidence = inverse.fit_evidence(
                problem, x0, weights, experiment.optimizer,
                posterior_options=posterior_options(experiment), callback=callback,
                on_weight=on_weight, stop=stop, checkpoint=checkpoint,
            )  # fmt: skip
        except ValueError as err:
            raise ConfigError(str(err)) from None
        result, weight = evidence.result, evidence.weight
        histories = [r.history for r in evidence.results]
    else:
        result = inverse.fit(
            problem, x0, experiment.optimizer, callback=callback, stop=stop,
            checkpoint=checkpoint,
        )  # fmt: skip
        weight = problem.weight
        histories = [result.history]
    fit_time = time.perf_counter() - start
    history = {k: np.concatenate([h[k] for h in histories]) for k in histories[0]}
    stage_starts = np.cumsum([0] + [len(h["objective"]) for h in histories[:-1]])
    if previous_history:
        offset = len(next(iter(previous_history.values()))) - 1
        history = join_histories(previous_history, history)
        stage_starts = stage_starts + offset
        stage_starts[0] = 0
    x = jnp.asarray(result.x)
    params = problem.parameters.to_params(x)
    states = np.asarray(problem.states(x))
    predictions = np.asarray(problem.observation(experiment.model.observe(jnp.asarray(states))))
    recovered_field = field_values(experiment, problem.parameters.field(x))
    return FitOutcome(
        result=result,
        weight=weight,
        morozov=morozov,
        recovered_field=recovered_field,
        recovered_params={k: np.asarray(v) for k, v in params.items()},
        states=states,
        predictions=predictions,
        history=history,
        stage_starts=stage_starts,
        fit_time_s=fit_time,
        evidence=evidence,
    )


def field_values(experiment: Experiment, field) -> np.ndarray:
    """Nodal values of the unknown field: ``exp`` of a log-coefficient, else as is."""
    field = np.asarray(field, dtype=float)
    return np.exp(field) if experiment.log_field else field


def solve_model_and_params(experiment: Experiment, params: dict):
    """``(model, params)`` to re-simulate a fit: the recovered initial state becomes ``u0``."""
    params = dict(params)
    model = experiment.model
    if inverse.INITIAL_CONDITION in params:
        field = jnp.asarray(params.pop(inverse.INITIAL_CONDITION), model.u0.dtype)
        model = dataclasses.replace(model, u0=model.state_from_field(field))
    return model, params


def expm_statistics(model: Model, params, times, solver: dict) -> dict:
    """Steps, matvecs, ... and time of one forward solve (via expm_multiply_info)."""
    from ..models import simulate_info

    options = dict(solver)
    params = {k: jnp.asarray(p) for k, p in params.items()}
    run = jax.jit(lambda p: simulate_info(model, p, jnp.asarray(times), **options))
    jax.block_until_ready(run(params))
    start = time.perf_counter()
    _, stats = jax.block_until_ready(run(params))
    elapsed = time.perf_counter() - start
    out = {name: np.asarray(value).item() for name, value in stats._asdict().items()}
    out["forward_time_s"] = elapsed
    out["method"] = _method_used(model, options)
    out["krylov_dim"] = options["krylov_dim"]
    out["tol"] = options["tol"]
    return out


def _method_used(model: Model, options: dict) -> str:
    """The Krylov method :func:`pdeinv.models.simulate_info` picks for ``model``."""
    if model.source is not None:
        return "affine-lanczos" if model.symmetric else "arnoldi"
    if "method" in options:
        return options["method"]
    if model.krylov_form is not None:
        return model.krylov_form.method
    return "lanczos" if model.symmetric else "arnoldi"


def check_with_diffrax(experiment: Experiment, outcome: FitOutcome) -> tuple[float, float]:
    """``diffrax_check`` at the recovered parameters and the seconds it took."""
    check = experiment.config.check
    start = time.perf_counter()
    model, params = solve_model_and_params(experiment, outcome.recovered_params)
    params = {k: jnp.asarray(v) for k, v in params.items()}
    value = inverse.diffrax_check(
        model,
        params,
        experiment.problem.times,
        # Several experiments: check the first (the model's u0 is its initial state).
        outcome.states if outcome.states.ndim == 2 else outcome.states[0],
        solver=check.solver,
        rtol=check.rtol,
        atol=check.atol,
    )
    return value, time.perf_counter() - start


def _space_arrays(space) -> dict:
    return {
        "points": space.points,
        "cells": space.cells,
        "cell_type": np.asarray(space.cell_type),
        "grid_shape": np.asarray(space.shape if space.shape is not None else (), dtype=np.int64),
    }


def _environment() -> dict:
    device = jax.devices()[0]
    return {
        "jax_version": jax.__version__,
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def fit_metrics(experiment, outcome, *, diffrax_check, check_time_s, statistics, wall_time_s):
    problem = experiment.problem
    name = experiment.coefficient
    result = outcome.result
    data = np.asarray(problem.data)
    metrics: dict[str, Any] = {"coefficient": name}
    if experiment.true_field is not None:
        error = inverse.relative_error(outcome.recovered_field, experiment.true_field)
        metrics[f"{name}_relative_error"] = error
        metrics["coefficient_relative_error"] = error
    if "velocity" in outcome.recovered_params and experiment.true_params is not None:
        v_true = np.asarray(experiment.true_params["velocity"], dtype=float)
        v_rec = np.asarray(outcome.recovered_params["velocity"], dtype=float)
        metrics["velocity_true"] = v_true
        metrics["velocity_recovered"] = v_rec
        metrics["velocity_relative_error"] = float(
            np.linalg.norm(v_rec - v_true) / max(np.linalg.norm(v_true), 1e-300)
        )
    metrics.update(
        data_misfit=result.misfit,
        data_misfit_per_datum=2.0 * result.misfit / data.size,
        relative_residual=float(np.linalg.norm(outcome.predictions - data) / np.linalg.norm(data)),
        objective=result.fun,
        iterations=result.iterations,
        num_evaluations=result.num_evaluations,
        status=inverse.STATUS_NAMES[result.status],
        optimizer_status=result.status,
        optimizer_message=result.message,
        regularization_weight=outcome.weight,
        wall_time_s=wall_time_s,
        fit_time_s=outcome.fit_time_s,
        setup_time_s=experiment.build_time_s,
        check_time_s=check_time_s,
        diffrax_check=diffrax_check,
        num_nodes=experiment.space.num_nodes,
        num_states=experiment.model.num_states,
        num_unknowns=problem.parameters.size,
        num_data=int(data.size),
        noise_sigma=float(np.mean(problem.sigma)),
        solver_statistics=statistics,
        seconds_per_evaluation=outcome.fit_time_s / max(result.num_evaluations, 1),
        environment=_environment(),
        devices=experiment.device_layout,
    )
    if outcome.morozov is not None:
        metrics["morozov"] = {
            "weights_tried": outcome.morozov.weights,
            "misfits": outcome.morozov.misfits,
            "target_misfit": outcome.morozov.target,
            "chosen_weight": outcome.morozov.weight,
        }
    return metrics


def run_title(config: RunConfig, experiment) -> str:
    """Short description for figure titles, e.g. ``heat: heat PDE, 1024 nodes, 1% noise``."""
    noise = config.noise.level
    where = "P1 mesh" if config.model.mesh else "grid"
    return (
        f"{config.name} — {config.model.pde.replace('_', '-')} on a {where} with "
        f"{experiment.space.num_nodes} nodes, {noise * 100:g}% noise"
    )


def _data_sigma(problem):
    """Per-datum sigma ``(T, M)`` when it varies (e.g. from a CSV file), else ``None``."""
    sigma = np.asarray(problem.sigma, dtype=float)
    data = np.asarray(problem.data)
    if sigma.ndim == 0 or data.ndim != 2:
        return None
    return np.broadcast_to(sigma, data.shape).copy()


def write_fit_folder(folder: Path, experiment, outcome, metrics, uncertainty=None) -> None:
    """config.yaml, metrics.json, result.npz, fields.vtu and the figures.

    ``uncertainty`` (a :class:`~pdeinv.cli._uncertainty.Uncertainty`) adds its arrays
    to result.npz and its pointwise std to fields.vtu.
    """
    config = experiment.config
    problem = experiment.problem
    report.write_config(folder, dump_config(config.to_dict()))
    report.write_metrics(folder, metrics)
    true = experiment.true_field
    recovered = outcome.recovered_field
    arrays = {
        **_space_arrays(experiment.space),
        "coefficient": np.asarray(experiment.coefficient),
        "title": np.asarray(run_title(config, experiment)),
        "recovered_field": recovered,
        "true_field": true,
        "initial_field": field_values(
            experiment, problem.parameters.field(jnp.asarray(experiment.x0))
        ),
        "times": problem.times,
        "observations": problem.data,
        "clean_observations": experiment.clean_data,
        "predictions": outcome.predictions,
        "observation_kind": np.asarray(experiment.observation_kind),
        "sensor_locations": getattr(problem.observation, "locations", None)
        if experiment.observation_kind == "sensors"
        else None,
        "noise_sigma": np.asarray(np.mean(problem.sigma)),
        "data_sigma": _data_sigma(problem),
        "misfit_target": np.asarray(problem.num_observations / 2.0),
        "stage_starts": outcome.stage_starts,
        "x": outcome.result.x,
    }
    for key, value in outcome.history.items():
        arrays[f"history_{key}"] = value
    if uncertainty is not None:
        arrays.update(uncertainty.arrays)
    for key, value in outcome.recovered_params.items():
        if key != problem.parameters.field_name and np.size(value) < 16:
            arrays[f"recovered_{key}"] = value
            if experiment.true_params is not None and key in experiment.true_params:
                arrays[f"true_{key}"] = np.asarray(experiment.true_params[key])
    from ._scale import split_experiment_arrays

    report.write_result(folder, split_experiment_arrays(arrays))
    if config.output.vtu:
        name = experiment.coefficient
        point_data = {f"{name}_recovered": recovered}
        if true is not None:
            point_data[f"{name}_true"] = true
            point_data[f"{name}_error"] = recovered - true
        if uncertainty is not None:
            point_data.update(uncertainty.point_data)
        report.write_vtu(
            folder, experiment.space.points, experiment.space.cells, experiment.space.cell_type,
            point_data,
        )  # fmt: skip
    if config.output.figures:
        report.draw_figures(folder)

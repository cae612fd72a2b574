"""The resolved config as typed, immutable sections: read once, then passed to the builders.

:func:`~pdeinv.cli._config.load_config` (or ``resolve_config``) validates a config and
returns the plain resolved dict, the one written to a run folder's ``config.yaml``;
:meth:`RunConfig.from_dict` reads that dict, once per command, into one frozen
dataclass per top-level section.  Every field is named like its YAML key, holds the
type the schema guarantees (lists become tuples, mappings read-only) and is
documented in ``docs/config.md``.  :meth:`RunConfig.to_dict` gives the resolved dict
back, key for key and in schema order.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

# A boundary side's condition: "neumann" / "dirichlet" / "periodic" or {kind: value}.
BoundarySpec = str | Mapping[str, str | Mapping[str, float]]


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """``model``: the PDE, its grid or mesh, boundary, capacity and initial condition.

    ``grid``, ``lower``, ``upper`` describe the structured grid (ignored when
    ``mesh``, an absolute path, is set); ``boundary`` is a condition name or a
    read-only mapping side/tag -> condition; ``capacity`` a number or an expression.
    """

    pde: str
    wave_form: str
    grid: tuple[int, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    mesh: str | None
    boundary: BoundarySpec
    capacity: float | str
    initial_condition: str


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """One entry of ``sources``: a point source (``location``) or a volume source (``field``).

    Exactly one of ``location`` and ``field`` is set; ``rate`` > 0 injects, and
    the source acts on ``start <= t < stop`` (``stop`` ``None``: to the end).
    """

    rate: float
    location: tuple[float, ...] | None
    field: str | None
    start: float
    stop: float | None


@dataclasses.dataclass(frozen=True)
class TruthSection:
    """``truth``: the true coefficient ``field`` of synthetic data and its built-in shapes."""

    field: str
    background: float
    contrast: float
    center: tuple[float, ...]
    radius: float
    smooth_amplitude: float
    num_features: int
    velocity: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class DataSection:
    """``data``: ``source`` synthetic or file, and the data ``file`` (absolute path)."""

    source: str
    file: str | None


@dataclasses.dataclass(frozen=True)
class SensorsSection:
    """``observations.sensors``: how many and where (``points`` overrides count/layout)."""

    count: int
    layout: str
    points: tuple[tuple[float, ...], ...] | None
    interpolation: str


@dataclasses.dataclass(frozen=True)
class ObservationsSection:
    """``observations``: the observation ``times`` and ``kind`` (full field or ``sensors``)."""

    times: tuple[float, ...]
    kind: str
    sensors: SensorsSection


@dataclasses.dataclass(frozen=True)
class NoiseSection:
    """``noise``: the relative noise ``level`` of synthetic data."""

    level: float


@dataclasses.dataclass(frozen=True)
class ExperimentsSection:
    """``experiments``: initial conditions of several experiments and their vmap batch size."""

    initial_conditions: tuple[str, ...] | None
    random: int
    length_scale: float
    batch_size: int | None


@dataclasses.dataclass(frozen=True)
class ParameterizationSection:
    """``parameterization``: the unknowns (``kind``) and the optimiser's starting point."""

    kind: str
    regions: tuple[int, ...]
    coarse_grid: tuple[int, ...]
    initial_value: float
    fit_velocity: bool
    initial_velocity: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class RegularizationSection:
    """``regularization``: the prior/penalty on the log-coefficient and how its weight is chosen."""

    kind: str
    weight: float
    prior_mean: float | None
    tv_epsilon: float
    correlation_length: float | None
    prior_variance: float
    choose_weight: str
    evidence_weights: tuple[float, ...] | None
    morozov_weights: tuple[float, ...]
    morozov_tau: float


@dataclasses.dataclass(frozen=True)
class OptimizerSection:
    """``optimizer``: the ``method`` (lbfgsb, adam, newton_cg) and its stopping rules."""

    method: str
    max_iter: int
    gtol: float
    ftol: float
    learning_rate: float
    log_bounds: tuple[float, float]
    max_cg: int
    forcing_max: float
    cg_memory: int
    product_tol: float | None
    trust_radius: float | None


@dataclasses.dataclass(frozen=True)
class SolverSection:
    """``solver``: the options of :func:`pdeinv.expm_multiply` (``tol`` filled in by precision)."""

    tol: float
    krylov_dim: int
    max_steps: int
    method: str
    checkpoint: str


@dataclasses.dataclass(frozen=True)
class CheckSection:
    """``check``: the diffrax re-simulation of the result (tolerances filled in by precision)."""

    enabled: bool
    solver: str
    rtol: float
    atol: float


@dataclasses.dataclass(frozen=True)
class UncertaintySection:
    """``uncertainty``: the Laplace posterior after the fit (eigensolver, rank, samples)."""

    enabled: bool
    rank: int | None
    samples: int
    method: str
    oversampling: int
    nugget: float
    batch_size: int
    hessian: str


@dataclasses.dataclass(frozen=True)
class OutputSection:
    """``output``: which run-folder files to write and how often to checkpoint."""

    vtu: bool
    figures: bool
    checkpoint_every_s: float


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A resolved config, one typed section per top-level key (docs/config.md).

    Build it with :meth:`from_dict` from the dict of
    :func:`~pdeinv.cli._config.load_config`; :meth:`to_dict` returns that dict.
    ``name`` is the run name (``None`` only for a config resolved without a file),
    ``precision`` ``"float64"`` or ``"float32"``.
    """

    name: str | None
    seed: int
    precision: str
    model: ModelSection
    sources: tuple[SourceSpec, ...]
    truth: TruthSection
    data: DataSection
    observations: ObservationsSection
    noise: NoiseSection
    experiments: ExperimentsSection
    parameterization: ParameterizationSection
    regularization: RegularizationSection
    optimizer: OptimizerSection
    solver: SolverSection
    check: CheckSection
    uncertainty: UncertaintySection
    output: OutputSection

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> RunConfig:
        """The sections of a resolved (validated) config dict.

        Raises ``TypeError`` when the dict's keys and the sections' fields differ,
        which only a config that bypassed validation (or a schema change without
        a matching field) can cause.
        """
        obs = dict(config["observations"])
        obs["sensors"] = _section(SensorsSection, obs["sensors"])
        top = {
            "name": config["name"],
            "seed": config["seed"],
            "precision": config["precision"],
            "sources": tuple(_source(src) for src in config["sources"]),
            "observations": _section(ObservationsSection, obs),
        }
        for field in dataclasses.fields(cls):
            if field.name not in top:
                top[field.name] = _section(_SECTIONS[field.name], config[field.name])
        extra = set(config) - set(top)
        if extra:
            raise TypeError(f"config keys without a section field: {sorted(extra)}")
        return cls(**top)

    def to_dict(self) -> dict:
        """The resolved config dict (lists and plain dicts, keys in schema order)."""
        return _thaw(self)


_SECTIONS = {
    "model": ModelSection,
    "truth": TruthSection,
    "data": DataSection,
    "noise": NoiseSection,
    "experiments": ExperimentsSection,
    "parameterization": ParameterizationSection,
    "regularization": RegularizationSection,
    "optimizer": OptimizerSection,
    "solver": SolverSection,
    "check": CheckSection,
    "uncertainty": UncertaintySection,
    "output": OutputSection,
}


def _section(cls, values: Mapping[str, Any]):
    """``cls`` from a mapping with exactly its fields (lists frozen to tuples)."""
    names = [field.name for field in dataclasses.fields(cls)]
    if set(values) != set(names):
        raise TypeError(
            f"{cls.__name__}: keys {sorted(values)} differ from the fields {sorted(names)}"
        )
    return cls(**{name: _freeze(values[name]) for name in names})


def _source(values: Mapping[str, Any]) -> SourceSpec:
    location = values.get("location")
    return SourceSpec(
        rate=values["rate"],
        location=None if location is None else tuple(location),
        field=values.get("field"),
        start=values["start"],
        stop=values["stop"],
    )


def _freeze(value: Any) -> Any:
    """Lists -> tuples and dicts -> read-only mappings, recursively."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


def _thaw(value: Any) -> Any:
    """The inverse of :func:`_freeze` for sections: plain dicts and lists for YAML."""
    if isinstance(value, SourceSpec):
        out: dict[str, Any] = {"rate": value.rate}
        if value.location is not None:
            out["location"] = list(value.location)
        else:
            out["field"] = value.field
        out["start"], out["stop"] = value.start, value.stop
        return out
    if dataclasses.is_dataclass(value):
        return {f.name: _thaw(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    return value

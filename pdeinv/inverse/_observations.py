"""Observation operators: nodal fields -> measured values, and synthetic noisy data."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..discretize._space import Space
from ._geometry import interpolation_weights


@dataclasses.dataclass(frozen=True, eq=False)
class FullField:
    """Every node is observed."""

    space: Space

    @property
    def num_observations(self) -> int:
        return self.space.num_nodes

    @property
    def locations(self) -> np.ndarray:
        return self.space.points

    def __call__(self, fields):
        """``(..., num_nodes) -> (..., num_nodes)``."""
        return fields


@dataclasses.dataclass(frozen=True, eq=False)
class PointSensors:
    """Values at sensor points, by nearest node or linear (P1) interpolation."""

    locations: np.ndarray  # (num_sensors, dim)
    index: np.ndarray  # (num_sensors, k)
    weight: np.ndarray  # (num_sensors, k)
    interpolation: str = "linear"

    @property
    def num_observations(self) -> int:
        return int(self.index.shape[0])

    def __call__(self, fields):
        """``(..., num_nodes) -> (..., num_sensors)``."""
        fields = jnp.asarray(fields)
        return jnp.sum(fields[..., self.index] * jnp.asarray(self.weight, fields.dtype), axis=-1)

    @classmethod
    def at(cls, space: Space, locations, interpolation: str = "linear") -> PointSensors:
        locations = np.atleast_2d(np.asarray(locations, dtype=float))
        index, weight = interpolation_weights(space, locations, method=interpolation)
        return cls(locations, index, weight, interpolation)


def sensor_layout(space: Space, count: int, layout: str = "grid", *, seed: int = 0) -> np.ndarray:
    """``count`` sensor positions inside the bounding box of ``space``.

    ``layout="grid"``: a regular lattice with about ``count`` points, inset by half a
    spacing from the boundary; ``"random"``: uniform random nodes of the space (seeded).
    """
    if count < 1:
        raise ValueError(f"observations.sensors.count must be >= 1, got {count}")
    lo, hi = space.points.min(axis=0), space.points.max(axis=0)
    if layout == "random":
        rng = np.random.default_rng(seed)
        pick = rng.choice(space.num_nodes, size=min(count, space.num_nodes), replace=False)
        return space.points[np.sort(pick)]
    if layout != "grid":
        raise ValueError(f"observations.sensors.layout must be 'grid' or 'random', got {layout!r}")
    per_axis = max(1, int(round(count ** (1.0 / space.dim))))
    axes = [
        lo[i] + (hi[i] - lo[i]) * (np.arange(per_axis) + 0.5) / per_axis for i in range(space.dim)
    ]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def add_noise(clean, level: float, *, seed: int):
    """Clean data plus Gaussian noise of standard deviation ``level * rms(clean)``.

    Returns
    -------
    data, sigma
        Noisy data (same shape) and the scalar noise standard deviation used (the
        misfit divides by it).  ``level = 0`` gives ``sigma = rms(clean)`` as a scale
        and no noise.
    """
    clean = np.asarray(clean, dtype=float)
    if level < 0:
        raise ValueError(f"noise.level must be >= 0, got {level}")
    rms = float(np.sqrt(np.mean(clean**2)))
    if rms == 0.0:
        raise ValueError(
            "the synthetic observations are all zero; choose another initial_condition"
        )
    if level == 0:
        return clean.copy(), rms
    sigma = level * rms
    rng = np.random.default_rng(seed)
    return clean + sigma * rng.standard_normal(clean.shape), sigma


@dataclasses.dataclass(frozen=True)
class SensorData:
    """Measurements at point sensors read by :func:`read_sensor_csv`.

    Attributes
    ----------
    times
        ``(T,)`` increasing measurement times.
    values
        ``(T, M)`` measured values, sensor ``j`` in column ``j``.
    sensors
        ``(M, dim)`` sensor coordinates, in order of first appearance in the file.
    sigma
        ``(T, M)`` standard deviations, or ``None`` when the file has no sigma column.
    """

    times: np.ndarray
    values: np.ndarray
    sensors: np.ndarray
    sigma: np.ndarray | None


_CSV_COORDS = ("x", "y", "z")


def read_sensor_csv(path, space: Space) -> SensorData:
    """Read sensor measurements from a CSV file with columns ``time, x, y[, z], value[, sigma]``.

    One row per measurement, a header row first (column names in any order, case and
    surrounding spaces ignored).  Rows with the same coordinates belong to one sensor;
    every sensor must have exactly one value at each measurement time of the file.

    Parameters
    ----------
    path
        The ``.csv`` file.
    space
        Grid or mesh the sensors must lie in; its dimension decides which coordinate
        columns are required.

    Returns
    -------
    SensorData

    Raises
    ------
    ValueError
        For a missing or unknown column, a cell that is not a finite number, a time
        ``<= 0``, a sigma ``<= 0``, a sensor outside the domain, a repeated or missing
        (sensor, time) pair; the message names the file, the row (1 = first data row)
        with its line number, and the column.
    """
    import csv
    import difflib

    dim = space.dim
    name = str(path)
    required = ["time", *_CSV_COORDS[:dim], "value"]
    allowed = [*required, "sigma"]
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    rows = [(line, row) for line, row in enumerate(rows, start=1) if any(c.strip() for c in row)]
    if not rows:
        raise ValueError(f"{name}: empty file; expected a header {', '.join(required)}[, sigma]")
    header_line, header = rows[0]
    columns = [c.strip().lower() for c in header]
    for column in columns:
        if column not in allowed:
            close = difflib.get_close_matches(column, allowed, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            extra = f" (the domain is {dim}-D)" if column in _CSV_COORDS[dim:] and column else ""
            raise ValueError(
                f"{name}, line {header_line}: unknown column {column!r}{hint}{extra}; expected "
                f"{', '.join(required)}[, sigma]"
            )
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(
            f"{name}, line {header_line}: missing column(s) {', '.join(missing)}; the header "
            f"has {', '.join(columns)}, expected {', '.join(required)}[, sigma]"
        )
    if len(set(columns)) != len(columns):
        raise ValueError(f"{name}, line {header_line}: a column name appears twice: {columns}")
    index = {c: columns.index(c) for c in columns}
    has_sigma = "sigma" in index
    if len(rows) == 1:
        raise ValueError(f"{name}: no data rows after the header")

    records = []
    for number, (line, row) in enumerate(rows[1:], start=1):
        where = f"{name}, row {number} (line {line})"
        if len(row) != len(columns):
            raise ValueError(f"{where}: {len(row)} cells, the header has {len(columns)}")
        values = {}
        for column, k in index.items():
            text = row[k].strip()
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{where}, column {column!r}: {text!r} is not a number") from None
            if not np.isfinite(value):
                raise ValueError(f"{where}, column {column!r}: {text!r} is not a finite number")
            values[column] = value
        if values["time"] <= 0:
            raise ValueError(
                f"{where}, column 'time': times must be > 0 (t = 0 is the initial state), "
                f"got {values['time']:g}"
            )
        if has_sigma and values["sigma"] <= 0:
            raise ValueError(f"{where}, column 'sigma': must be > 0, got {values['sigma']:g}")
        records.append((where, values))

    sensor_of: dict = {}
    sensors = []
    for where, values in records:
        key = tuple(values[c] for c in _CSV_COORDS[:dim])
        if key not in sensor_of:
            if not _inside(space, np.asarray(key)):
                raise ValueError(
                    f"{where}, columns {', '.join(_CSV_COORDS[:dim])}: sensor at {list(key)} lies "
                    "outside the domain"
                )
            sensor_of[key] = len(sensors)
            sensors.append(key)
    times = np.unique([values["time"] for _, values in records])
    data = np.full((len(times), len(sensors)), np.nan)
    sigma = np.full_like(data, np.nan) if has_sigma else None
    seen: dict = {}
    for where, values in records:
        i = int(np.searchsorted(times, values["time"]))
        j = sensor_of[tuple(values[c] for c in _CSV_COORDS[:dim])]
        if (i, j) in seen:
            raise ValueError(
                f"{where}, column 'time': a second value for the sensor at "
                f"{list(sensors[j])} at time {values['time']:g} (first in {seen[i, j]})"
            )
        seen[i, j] = where.split(", ", 1)[1]
        data[i, j] = values["value"]
        if sigma is not None:
            sigma[i, j] = values["sigma"]
    missing = np.argwhere(np.isnan(data))
    if missing.size:
        i, j = missing[0]
        raise ValueError(
            f"{name}: the sensor at {list(sensors[j])} has no row at time {times[i]:g} "
            f"({len(missing)} (sensor, time) pair(s) missing); every sensor needs a value at "
            "every time of the file"
        )
    return SensorData(times, data, np.asarray(sensors, dtype=float), sigma)


def _inside(space: Space, point: np.ndarray) -> bool:
    lower = getattr(space, "lower", None)
    if lower is not None and len(lower):
        upper = np.asarray(space.upper)
        return bool(np.all(point >= np.asarray(lower)) and np.all(point <= upper))
    if space.cell_type in ("triangle", "tetra"):
        from ..discretize import locate_simplex

        try:
            locate_simplex(space, point)
        except ValueError:
            return False
        return True
    lo, hi = space.points.min(axis=0), space.points.max(axis=0)
    return bool(np.all(point >= lo) and np.all(point <= hi))

"""Run folder files: resolved config, metrics, arrays, VTU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
RESULT_FILE = "result.npz"
VTU_FILE = "fields.vtu"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(folder, metrics: dict) -> Path:
    """``metrics.json`` (NaN/inf written as null; numpy values as plain numbers)."""
    path = Path(folder) / METRICS_FILE
    path.write_text(json.dumps(_jsonable(metrics), indent=2) + "\n")
    return path


def read_metrics(folder) -> dict:
    return json.loads((Path(folder) / METRICS_FILE).read_text())


def write_config(folder, text: str) -> Path:
    path = Path(folder) / CONFIG_FILE
    path.write_text(text)
    return path


def write_result(folder, arrays: dict) -> Path:
    """``result.npz`` from a dict of arrays (``None`` entries are skipped)."""
    path = Path(folder) / RESULT_FILE
    np.savez_compressed(path, **{k: np.asarray(v) for k, v in arrays.items() if v is not None})
    return path


def read_result(folder) -> dict:
    with np.load(Path(folder) / RESULT_FILE, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def write_vtu(folder, points, cells, cell_type: str, point_data: dict) -> Path:
    """``fields.vtu``: the grid/mesh with nodal fields, for ParaView (via meshio)."""
    import meshio

    points = np.asarray(points, dtype=float)
    if points.shape[1] < 3:  # VTK points are 3-D
        points = np.hstack([points, np.zeros((len(points), 3 - points.shape[1]))])
    mesh = meshio.Mesh(
        points,
        [(cell_type, np.asarray(cells, dtype=np.int64))],
        point_data={k: np.asarray(v, dtype=float) for k, v in point_data.items() if v is not None},
    )
    path = Path(folder) / VTU_FILE
    mesh.write(path)
    return path

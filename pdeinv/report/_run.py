"""Run folder files: resolved config, metrics, arrays, VTU.

Every file is written under a temporary name in the same folder and then
renamed over the final name (:func:`atomic_path`): a reader, or a run killed
while writing, sees the previous complete file or the new complete file, never
a half-written one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
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


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The temporary name keeps the suffix (some writers pick the format from it)
    and starts with a dot; on an error it is removed and ``path`` is untouched.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield temporary
        with contextlib.suppress(OSError):  # make the content durable before the rename
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return path


def write_metrics(folder, metrics: dict) -> Path:
    """``metrics.json`` (NaN/inf written as null; numpy values as plain numbers)."""
    text = json.dumps(_jsonable(metrics), indent=2) + "\n"
    return _write_text(Path(folder) / METRICS_FILE, text)


def read_metrics(folder) -> dict:
    return json.loads((Path(folder) / METRICS_FILE).read_text())


def write_config(folder, text: str) -> Path:
    return _write_text(Path(folder) / CONFIG_FILE, text)


def write_result(folder, arrays: dict) -> Path:
    """``result.npz`` from a dict of arrays (``None`` entries are skipped)."""
    path = Path(folder) / RESULT_FILE
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(
            handle, **{k: np.asarray(v) for k, v in arrays.items() if v is not None}
        )
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
    with atomic_path(path) as temporary:
        meshio.write(temporary, mesh, file_format="vtu")
    return path

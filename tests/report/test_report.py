"""Run folder writers and figures, on a grid and on a triangle mesh."""

import json

import meshio
import numpy as np
import pytest

from pdeinv import report
from pdeinv.inverse import grid_space
from pdeinv.inverse._geometry import simplex_split


def result_arrays(space, kind):
    rng = np.random.default_rng(0)
    true = 1.0 + space.points[:, 0]
    n_obs = space.num_nodes if kind == "full" else 9
    arrays = {
        "points": space.points,
        "cells": space.cells,
        "cell_type": np.asarray(space.cell_type),
        "grid_shape": np.asarray(space.shape if space.shape else (), dtype=np.int64),
        "coefficient": np.asarray("kappa"),
        "true_field": true,
        "recovered_field": true + 0.05 * rng.standard_normal(space.num_nodes),
        "times": np.array([0.01, 0.02, 0.04]),
        "observations": rng.standard_normal((3, n_obs)),
        "predictions": rng.standard_normal((3, n_obs)),
        "observation_kind": np.asarray(kind),
        "noise_sigma": np.asarray(0.1),
        "misfit_target": np.asarray(3 * n_obs / 2),
        "history_objective": np.geomspace(100, 1, 12),
        "history_misfit": np.geomspace(90, 1, 12),
        "history_grad_norm": np.geomspace(10, 1e-4, 12),
    }
    return arrays


@pytest.mark.parametrize("geometry, kind", [("grid", "full"), ("mesh", "sensors")])
def test_run_folder_files(tmp_path, geometry, kind):
    space = grid_space((9, 7), (0.0, 0.0), (1.0, 0.8))
    if geometry == "mesh":
        from pdeinv.discretize import Space

        space = Space(space.points, simplex_split(space), "triangle")
    arrays = result_arrays(space, kind)
    report.write_result(tmp_path, arrays)
    report.write_metrics(tmp_path, {"a": np.float64(1.5), "b": np.array([1, 2]), "c": float("nan")})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a": 1.5, "b": [1, 2], "c": None}
    back = report.read_result(tmp_path)
    np.testing.assert_array_equal(back["true_field"], arrays["true_field"])
    report.write_vtu(
        tmp_path, space.points, space.cells, space.cell_type,
        {"kappa_true": arrays["true_field"], "kappa_recovered": arrays["recovered_field"]},
    )  # fmt: skip
    mesh = meshio.read(tmp_path / "fields.vtu")
    np.testing.assert_allclose(mesh.point_data["kappa_true"], arrays["true_field"])
    assert mesh.points.shape == (space.num_nodes, 3)
    paths = report.draw_figures(tmp_path)
    assert {p.name for p in paths} == {"kappa.png", "convergence.png", "fit.png"}
    for p in paths:
        assert p.stat().st_size > 10_000


def test_draw_figures_needs_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        report.draw_figures(tmp_path)

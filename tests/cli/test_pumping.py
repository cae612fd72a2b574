"""Pumping test end to end: `simulate` against the Theis solution, and a fit of K from Theis data.

2-D confined aquifer ``S h_t = div(T grad h) + Q delta``: with a constant pumping rate
``Q`` (rate -Q in the config, extraction) from t = 0 in an infinite aquifer the drawdown
``s = -h`` is ``Q / (4 pi T) E1(r^2 S / (4 T t))`` (Theis 1935).  The grid has unit cells
and the well sits on a cell centre; the observation wells are 10-14 cells away, at times
where ``u = r^2 S / (4 T t) <= 1.4`` (there the discrete delta and the five-point stencil
are within 1 % of the continuum) and the Dirichlet boundary 30 cells away is not felt.
"""

import json

import numpy as np
import pytest
from scipy.special import exp1

from pdeinv.cli import main

T, S, Q = 2.0, 0.5, 3.0
WELLS = [[10.0, 0.0], [0.0, -12.0], [-14.0, 0.0]]
TIMES = [9.0, 12.0, 15.0]

CONFIG = f"""
model:
  pde: heat
  grid: [61, 61]
  lower: [-30.5, -30.5]
  upper: [30.5, 30.5]
  boundary: {{left: dirichlet, right: dirichlet, bottom: dirichlet, top: dirichlet}}
  capacity: {S}
  initial_condition: "0"
sources:
  - {{location: [0.0, 0.0], rate: {-Q}}}
truth: {{field: constant, background: {T}}}
observations:
  kind: sensors
  times: {TIMES}
  sensors: {{points: {WELLS}, interpolation: linear}}
noise: {{level: 0.0}}
output: {{vtu: false, figures: false}}
"""


def theis(r, t):
    return Q / (4 * np.pi * T) * exp1(r**2 * S / (4 * T * np.asarray(t)[:, None]))


def test_simulate_matches_theis(tmp_path):
    config = tmp_path / "theis.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "run"
    assert main(["simulate", str(config), "--out", str(out), "--quiet"]) == 0
    result = np.load(out / "result.npz")
    r = np.linalg.norm(result["sensor_locations"], axis=1)
    np.testing.assert_allclose(result["times"], TIMES)
    drawdown = -result["clean_observations"]
    expected = theis(r, TIMES)
    assert np.all(r**2 * S / (4 * T * np.asarray(TIMES)[:, None]) <= 1.4)
    np.testing.assert_allclose(drawdown, expected, rtol=0.02)
    # not a loose pass: the grid solution is within 1 % here
    assert np.max(np.abs(drawdown / expected - 1)) < 0.01


@pytest.mark.slow
def test_fit_transmissivity_from_theis_data(tmp_path):
    """Data from the Theis formula itself (CSV, 1 % sigma), one unknown K from K = 1."""
    times = np.array([6.0, 9.0, 12.0, 15.0])
    r = np.linalg.norm(WELLS, axis=1)
    head = -theis(r, times)
    lines = ["time,x,y,value,sigma"]
    for i, t in enumerate(times):
        for j, (x, y) in enumerate(WELLS):
            lines.append(f"{t},{x},{y},{float(head[i, j])!r},{0.01 * abs(float(head[i, j]))!r}")
    (tmp_path / "wells.csv").write_text("\n".join(lines) + "\n")
    config = tmp_path / "fit.yaml"
    config.write_text(
        CONFIG.replace("noise: {level: 0.0}", "").replace("figures: false", "figures: true")
        + """
data: {source: file, file: wells.csv}
parameterization: {kind: regions, regions: [1, 1], initial_value: 1.0}
regularization: {kind: none, weight: 0.0}
optimizer: {max_iter: 30}
check: {enabled: false}
"""
    )
    out = tmp_path / "run"
    assert main(["fit", str(config), "--out", str(out), "--quiet"]) == 0
    recovered = np.load(out / "result.npz")["recovered_field"]
    np.testing.assert_allclose(recovered, T, rtol=0.02)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data_misfit_per_datum"] < 1.0  # Theis data fitted to within 1 % sigma
    assert (out / "fit.png").stat().st_size > 10_000

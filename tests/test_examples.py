"""Every example config runs end to end (small overrides); heat.yaml in full with -m slow."""

import json
import os
import time
from pathlib import Path

import pytest

from pdeinv.cli import main
from pdeinv.cli._config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

SMALL = {
    # heat's diffrax check is covered by tests/cli/test_cli.py
    "heat.yaml": ["model.grid=[10, 10]", "optimizer.max_iter=3", "check.enabled=false"],
    "heat_mesh.yaml": ["optimizer.max_iter=3", "observations.sensors.count=16"],
    "wave.yaml": ["model.grid=[10, 10]", "optimizer.max_iter=2", "observations.times=[0.25, 0.5]"],
    "wave_paper.yaml": [
        "model.grid=[12, 12]",
        "parameterization.coarse_grid=[3, 3]",
        "optimizer.max_iter=2",
        "observations.times=[0.5, 1.0]",
        "check.enabled=false",
    ],
    "advection_diffusion.yaml": ["model.grid=[10, 10]", "optimizer.max_iter=3"],
    # the posterior is tested in tests/inverse/test_laplace.py (against dense Bayesian
    # linear regression) and, through the CLI, tests/cli/test_uncertainty_cli.py
    "initial_condition.yaml": [
        "model.grid=[8, 8]",
        "observations.sensors.count=9",
        "optimizer.max_iter=3",
        "check.enabled=false",
        "uncertainty.enabled=false",  # the posterior through the CLI: -m slow (budget)
    ],
    # the Theis check of the same setup is tests/cli/test_pumping.py
    "pumping_test.yaml": [
        "model.grid=[12, 12]",
        "parameterization.coarse_grid=[3, 3]",
        "optimizer.max_iter=2",
        "check.enabled=false",
    ],
    # float64 here (the CLI would switch x64 off for this process); float32, several
    # devices and the full run are in tests/scale/test_cli_scale.py
    "heat_large.yaml": [
        "model.grid=[12, 12]",
        "parameterization.coarse_grid=[4, 4]",
        "experiments.random=1",
        "precision=float64",
        "optimizer.max_iter=2",
        "check.enabled=false",
    ],
}


def test_every_example_is_covered():
    assert {p.name for p in EXAMPLES.glob("*.yaml")} == set(SMALL)


# Pipelines the default suite runs elsewhere (say where); here with -m slow.
COVERED = {
    "heat.yaml": "tests/cli/test_cli.py fits the same heat pipeline on an 8 x 8 grid",
    "heat_large.yaml": "tests/scale/test_batch.py fits a multi-experiment heat problem",
    # Each ~12-18 s; by default: wave_paper.yaml runs the skew wave fit end to end,
    # pumping_test.yaml the sources, tests/models the wave and advection models,
    # tests/discretize/test_fem*.py the mesh, tests/inverse/test_laplace.py the
    # initial-condition unknown, and test_every_example_config_is_valid every config.
    "wave.yaml": "tests/test_examples.py runs wave_paper.yaml (the same model and CLI path)",
    "advection_diffusion.yaml": "tests/models and tests/expm cover the nonsymmetric path",
    "heat_mesh.yaml": "tests/discretize/test_fem*.py and tests/cli cover the mesh path",
    "initial_condition.yaml": "tests/inverse/test_laplace.py covers the unknown kind",
}


def test_every_example_config_is_valid():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        config = load_config(path, SMALL[path.name])
        assert config["name"] == path.stem


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in COVERED else n for n in sorted(SMALL)]
)
def test_example_runs(name, tmp_path):
    out = tmp_path / "run"
    assert main(["fit", str(EXAMPLES / name), "--out", str(out), "--quiet", *SMALL[name]]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["coefficient_relative_error"] < 1.0
    assert metrics["diffrax_check"] is None or metrics["diffrax_check"] < 1e-6
    if name == "advection_diffusion.yaml":
        assert "velocity_relative_error" in metrics
    for figure in ("kappa.png", "convergence.png", "fit.png"):
        assert (out / figure).stat().st_size > 10_000


@pytest.mark.slow
def test_heat_example_full_run_meets_targets(tmp_path):
    """The issue's acceptance numbers for examples/heat.yaml (2-core machine).

    Wall time is only asserted when the machine is not oversubscribed (load average
    at most the number of cores); the CPU time of the run is asserted always.
    """
    out = tmp_path / "run"
    start, cpu_start = time.perf_counter(), time.process_time()
    assert main(["fit", str(EXAMPLES / "heat.yaml"), "--out", str(out), "--quiet"]) == 0
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kappa_relative_error"] <= 0.10
    assert metrics["diffrax_check"] <= 1e-4
    assert cpu <= 60.0
    if os.getloadavg()[0] <= (os.cpu_count() or 1):
        assert wall <= 60.0

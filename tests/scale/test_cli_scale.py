"""CLI with several experiments, float32 and several devices; examples/heat_large.yaml.

Runs that use float32 go through a subprocess: the CLI switches JAX's x64 flag
off for its process, which must not leak into the rest of the test session.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pdeinv.cli import main
from pdeinv.cli._config import ConfigError, resolve_config

ROOT = Path(__file__).resolve().parents[2]
LARGE = ROOT / "examples" / "heat_large.yaml"
SMALL_LARGE = [
    "model.grid=[12, 12]",
    "parameterization.coarse_grid=[4, 4]",
    "experiments.random=2",  # + bumps: 3 experiments on 2 devices (one padded slot)
    "optimizer.max_iter=3",
]


def run_cli(args, devices=1, timeout=900):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run(
        [sys.executable, "-m", "pdeinv", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.slow  # ~28 s subprocess fit on two forced devices
def test_small_multi_experiment_float32_run_on_two_devices(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(["fit", LARGE, "--out", out, "--quiet", *SMALL_LARGE], devices=2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    layout = metrics["devices"]
    assert layout["count"] == 2 and layout["available"] == 2 and layout["platform"] == "cpu"
    assert layout["mesh_shape"] == {"experiments": 2}
    assert layout["num_experiments"] == 3 and layout["experiments_per_device"] == [2, 1]
    assert metrics["coefficient_relative_error"] < 1.0
    assert metrics["diffrax_check"] < 1e-4  # float32 check of the first experiment
    assert metrics["num_data"] == 3 * 3 * 144
    result = np.load(out / "result.npz")
    assert result["x"].dtype == np.float32
    assert result["experiments_observations"].shape == (3, 3, 144)
    assert result["observations"].shape == (3, 144)  # first experiment, for the figures
    assert (out / "fit.png").stat().st_size > 10_000


@pytest.mark.slow  # ~25 s (a subprocess and an in-process fit)
def test_devices_option_and_single_device_layout(tmp_path):
    proc = run_cli(["fit", LARGE, "--out", tmp_path / "a", "--devices", "3", *SMALL_LARGE])
    assert proc.returncode == 1
    assert "--devices: devices must be between 1 and the 1 available cpu" in proc.stderr
    # float64 in-process: no x64 switch; one device runs the experiments unsharded.
    out = tmp_path / "b"
    args = ["fit", LARGE, "--out", out, "--quiet", "--devices", "1", *SMALL_LARGE]
    args += ["precision=float64", "optimizer.max_iter=1", "check.enabled=false", "output.vtu=false"]
    assert main([str(a) for a in args]) == 0
    layout = json.loads((out / "metrics.json").read_text())["devices"]
    assert layout["count"] == 1 and layout["mesh_shape"] is None
    assert layout["experiments_per_device"] == [3]


def test_experiments_config_keys():
    config = resolve_config({"precision": "float32", "experiments": {"random": 2}})
    assert config["precision"] == "float32" and config["solver"]["tol"] == 1e-5
    config = resolve_config({"experiments": {"initial_conditions": "bumps"}})
    assert config["experiments"]["initial_conditions"] == ["bumps"]
    bad = [
        ({"precision": "float16"}, "precision must be one of float64, float32"),
        ({"experiments": {"initial_conditions": []}}, "experiments.initial_conditions must"),
        ({"experiments": {"initial_conditions": ["bumps", 3]}}, "non-empty strings"),
        ({"experiments": {"random": -1}}, "experiments.random must be >= 0"),
        ({"experiments": {"batch_size": 0}}, "experiments.batch_size must be > 0"),
        ({"experiments": {"sizes": 2}}, "unknown key 'experiments.sizes'"),
    ]
    for raw, message in bad:
        with pytest.raises(ConfigError, match=message):
            resolve_config(raw)


@pytest.mark.slow
def test_heat_large_full_run(tmp_path):
    """The documented run of examples/heat_large.yaml.

    Its numbers are in docs/scale.md#the-large-example.
    """
    out = tmp_path / "run"
    start = time.perf_counter()
    proc = run_cli(["fit", LARGE, "--out", out, "--quiet"], timeout=3600)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_nodes"] == 256 * 256
    assert metrics["devices"]["num_experiments"] == 4
    assert metrics["coefficient_relative_error"] < 0.1  # measured 0.048
    assert metrics["diffrax_check"] < 1e-4
    print(f"heat_large: {wall:.0f} s wall, kappa error {metrics['kappa_relative_error']:.3f}")

"""Nothing lost, nothing silent: interrupt/resume, checkpoints, atomic files, bad data,
memory plan (issue 17)."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pdeinv import report
from pdeinv.cli import _robust as robust
from pdeinv.cli import main
from pdeinv.cli._config import resolve_config
from pdeinv.cli._sections import RunConfig

SMALL = """
seed: 0
model: {pde: heat, grid: [8, 8]}
observations: {times: [0.01, 0.02]}
optimizer: {max_iter: 400, ftol: 0.0, gtol: 0.0}
check: {enabled: false}
output: {vtu: false, figures: true, checkpoint_every_s: 0}
"""


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))


def _start_fit(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "pdeinv", "fit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def _wait_for_iteration(proc, timeout=120):
    """Read stderr until the first optimiser progress line; return the lines read."""
    lines, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("iter"):
            return lines
    proc.kill()
    pytest.fail("no progress line:\n" + "".join(lines))


@pytest.mark.slow  # ~22 s subprocess; the in-process SIGTERM test covers the stop path by default
def test_sigint_writes_the_run_folder_then_resume_continues(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    out = tmp_path / "run"
    proc = _start_fit(str(config), "--out", str(out))
    setup = "".join(_wait_for_iteration(proc))
    proc.send_signal(signal.SIGINT)
    assert "planned memory of one gradient: " in setup
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "SIGINT: stopping after the current evaluation" in stderr
    assert "Traceback" not in stderr
    metrics = report.read_metrics(out)
    assert metrics["status"] == "interrupted"
    assert metrics["interrupted_by"] == "SIGINT"
    result = report.read_result(out)
    history = result["history_objective"]
    assert 0 <= metrics["iterations"] < 400  # 0: the first line-search trial was refused
    assert len(history) == metrics["iterations"] + 1
    # x is the best iterate so far, and its objective is the history's minimum.
    assert metrics["objective"] == pytest.approx(history.min(), rel=1e-12)
    for name in ("config.yaml", "kappa.png", "convergence.png", "fit.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*tmp*"))  # no temporary files left behind

    # Resume with an override: a few more iterations, appended to the history.
    proc = _start_fit("--resume", str(out), "optimizer.max_iter=3", "output.figures=false")
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr[-2000:]
    assert f"resuming {out} from iteration {metrics['iterations']}" in stderr
    resumed = report.read_metrics(out)
    assert resumed["status"] == "max_iter"
    assert resumed["resumed_from_status"] == ["interrupted"]
    assert resumed["iterations_this_run"] == 3
    assert resumed["iterations"] == metrics["iterations"] + 3
    again = report.read_result(out)
    assert len(again["history_objective"]) == len(history) + 3
    np.testing.assert_array_equal(again["history_objective"][: len(history)], history)
    np.testing.assert_array_equal(
        again["history_iteration"], np.arange(len(history) + 3, dtype=float)
    )
    assert again["history_objective"][-1] <= history.min()
    assert "optimizer:\n  method: lbfgsb\n  max_iter: 3" in (out / "config.yaml").read_text()


@pytest.mark.slow
def test_kill_9_loses_at_most_one_checkpoint_interval_and_resumes(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    out = tmp_path / "run"
    proc = _start_fit(str(config), "--out", str(out), "output.figures=false")
    _wait_for_iteration(proc)
    for _ in range(5):
        proc.stderr.readline()
    proc.kill()
    proc.wait()
    metrics = report.read_metrics(out)  # complete JSON, never half-written
    assert metrics["status"] == "running"
    result = report.read_result(out)
    assert result["history_objective"].size >= 2
    assert result["x"].shape == (64,)
    proc = _start_fit("--resume", str(out), "optimizer.max_iter=2")
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr[-2000:]
    assert report.read_metrics(out)["resumed_from_status"] == ["running"]


def test_resume_errors_are_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["fit", "--resume", str(missing)]) == 1
    assert "--resume: run folder not found" in capsys.readouterr().err
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("model: {grid: [8, 8]}\n")
    assert main(["fit", "--resume", str(folder)]) == 1
    assert "holds no result.npz yet" in capsys.readouterr().err
    assert main(["fit", "--resume", str(folder), "--out", str(tmp_path / "x")]) == 1
    assert "--out/--force do not go with --resume" in capsys.readouterr().err
    assert main(["fit", str(folder / "config.yaml"), "--resume", str(folder)]) == 1
    assert "give either CONFIG.yaml or --resume RUN_DIR" in capsys.readouterr().err
    assert main(["fit"]) == 1
    assert "fit needs CONFIG.yaml (or --resume RUN_DIR)" in capsys.readouterr().err
    data = _data_file(tmp_path)
    (folder / "config.yaml").write_text(
        f"model: {{grid: [9, 9]}}\ndata: {{source: file, file: {data}}}\n"
    )
    report.write_result(folder, {"x": np.zeros(3)})
    assert main(["fit", "--resume", str(folder)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "error: --resume: the run folder's iterate has 3 entries but this config has 81 "
        "unknowns (parameterization changed?)"
    )
    assert report.read_metrics(folder) == {
        "name": "config", "status": "failed", "error": err[len("error: "):],
        "resumed_from_status": ["unknown"],
    }  # fmt: skip


def test_sigterm_and_second_signal(monkeypatch):
    messages = []
    with robust.StopOnSignal(messages.append) as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() and stop.requested == "SIGTERM"
        assert "stopping after the current evaluation" in messages[0]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_checkpointer_rate_limit_and_history_join(tmp_path):
    previous = {"iteration": np.array([0.0, 1.0, 2.0]), "objective": np.array([5.0, 3.0, 2.0]),
                "elapsed": np.array([0.0, 1.0, 2.0])}  # fmt: skip
    new = {"iteration": np.array([0.0, 1.0]), "objective": np.array([2.0, 1.5]),
           "elapsed": np.array([0.0, 0.5])}  # fmt: skip
    joined = robust.join_histories(previous, new)
    np.testing.assert_array_equal(joined["iteration"], [0, 1, 2, 3])
    np.testing.assert_array_equal(joined["objective"], [5, 3, 2, 1.5])
    np.testing.assert_array_equal(joined["elapsed"], [0, 1, 2, 2.5])

    slow = robust.Checkpointer(tmp_path, 3600.0)
    slow(np.ones(2), new)
    assert slow.count == 0 and not (tmp_path / "metrics.json").exists()
    every = robust.Checkpointer(tmp_path, 0.0, previous_history=previous)
    every(np.ones(2), new)
    every(np.zeros(2), new)
    assert every.count == 2
    assert report.read_metrics(tmp_path)["status"] == "running"
    assert report.read_metrics(tmp_path)["iterations"] == 3
    np.testing.assert_array_equal(report.read_result(tmp_path)["x"], [0.0, 0.0])


def test_run_folder_files_are_replaced_atomically(tmp_path, monkeypatch):
    report.write_metrics(tmp_path, {"status": "running", "iterations": 1})
    report.write_result(tmp_path, {"x": np.arange(3.0)})
    before = (tmp_path / "metrics.json").read_text()

    class Unserialisable:
        pass

    with pytest.raises(TypeError):  # fails while writing: the old file stays whole
        report.write_metrics(tmp_path, {"status": "converged", "bad": Unserialisable()})
    assert (tmp_path / "metrics.json").read_text() == before

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        report.write_result(tmp_path, {"x": np.zeros(5)})
    monkeypatch.undo()
    np.testing.assert_array_equal(report.read_result(tmp_path)["x"], np.arange(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "result.npz"]


# --- bad data -------------------------------------------------------------------------


def _data_file(tmp_path, **changes):
    times = np.array([0.01, 0.02])
    arrays = {"times": times, "observations": np.ones((2, 81)), **changes}
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"observations": np.where(np.arange(162).reshape(2, 81) % 50 == 7, np.nan, 1.0)},
            "data.file: observations hold 4 non-finite values (first at time index 0, column 7)",
        ),
        ({"times": np.array([0.01, np.inf])}, "data.file: times hold 1 non-finite value"),
        (
            {"sigma": np.full((2, 81), 0.1), "truth": np.where(np.arange(81) == 4, np.nan, 1.0)},
            "data.file: truth hold 1 non-finite value (first at index 4)",
        ),
        ({"sigma": np.array(np.nan)}, "data.file: sigma holds 1 non-finite value"),
        ({"sigma": np.array(0.0)}, "data.file: sigma must be > 0"),
        (
            {"observations": np.ones((2, 2)), "sensors": np.array([[0.5, np.nan], [0.1, 0.1]])},
            "data.file: sensors hold 1 non-finite value (first at sensor 0, coordinate 1)",
        ),
    ],
)
def test_non_finite_data_file_is_one_error_line(tmp_path, capsys, changes, message):
    path = _data_file(tmp_path, **changes)
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{grid: [9, 9]}}\ndata: {{source: file, file: {path}}}\n")
    out = tmp_path / "run"
    assert main(["fit", str(config), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert report.read_metrics(out)["status"] == "failed"


def test_zero_noise_uses_the_documented_sigma_floor():
    from pdeinv.inverse import add_noise

    clean = np.array([[1.0, -2.0], [3.0, 0.5]])
    data, sigma = add_noise(clean, 0.0, seed=0)
    np.testing.assert_array_equal(data, clean)
    assert sigma == pytest.approx(np.sqrt(np.mean(clean**2))) and sigma > 0
    from pdeinv.cli._config import SCHEMA

    assert "sigma is never 0" in SCHEMA["noise"]["level"].doc


# --- memory plan ----------------------------------------------------------------------


def test_memory_plan_printed_and_refused_above_available(tmp_path, capsys, monkeypatch):
    path = _data_file(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"model: {{grid: [9, 9]}}\ndata: {{source: file, file: {path}}}\n"
        "solver: {max_steps: 5000, checkpoint: bases}\n"
    )
    monkeypatch.setattr(robust, "available_memory_bytes", lambda: 10 * 2**20)
    assert main(["fit", str(config), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: the planned memory of one gradient, ")
    assert "exceeds the available 10.0 MiB" in line
    assert "experiments.batch_size (now 1)" in line and "solver.max_steps (now 5000)" in line


def test_memory_plan_scales_with_buffers_and_batch():
    solver = RunConfig.from_dict(
        resolve_config({"solver": {"max_steps": 100, "checkpoint": "states"}})
    ).solver
    one = robust.planned_gradient_memory(solver, "float64", 10_000, 3, 1)
    four = robust.planned_gradient_memory(solver, "float64", 10_000, 3, 4)
    assert four["total_bytes"] == 4 * one["total_bytes"]
    # 32 kept states + a replay segment of 4 (32 * 4 >= 100), 8 bytes each, per node.
    assert one["states_bytes"] == (32 + 4) * 10_000 * 8
    bases = robust.planned_gradient_memory(
        dataclasses.replace(solver, checkpoint="bases"), "float64", 10_000, 3, 1
    )
    assert bases["per_solve_bytes"] > 100 * 30 * 10_000 * 8
    line = robust.check_memory(solver, one, 2**40)
    assert line.startswith("planned memory of one gradient: ") and "available 1024.0 GiB" in line

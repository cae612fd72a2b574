"""End-to-end CLI: fit / simulate / plot, run folders, errors, reproducibility.

The ``tiny`` config (8 x 8 heat, 4 iterations) is in tests/conftest.py.
"""

import io
import json

import meshio
import numpy as np
import pytest
import yaml

from pdeinv.cli import main
from pdeinv.cli._progress import Progress
from pdeinv.inverse import IterationInfo


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("fit", "simulate", "plot"):
        assert name in out
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "dotted.key=value" in capsys.readouterr().out


def test_fit_writes_run_folder_and_reruns_identically(tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(["fit", str(tiny), "--out", str(out), "--quiet", "check.enabled=true"]) == 0
    stdout = capsys.readouterr().out
    assert "kappa_relative_error" in stdout
    for name in ("config.yaml", "metrics.json", "result.npz", "fields.vtu", "kappa.png",
                 "convergence.png", "fit.png"):  # fmt: skip
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("kappa_relative_error", "data_misfit", "iterations", "wall_time_s",
                "diffrax_check", "solver_statistics"):  # fmt: skip
        assert key in metrics, key
    assert metrics["iterations"] <= 4
    assert metrics["diffrax_check"] < 1e-6
    assert metrics["solver_statistics"]["num_matvecs"] > 0
    mesh = meshio.read(out / "fields.vtu")
    assert {"kappa_true", "kappa_recovered", "kappa_error"} <= set(mesh.point_data)
    result = np.load(out / "result.npz")
    assert result["history_objective"].shape == (metrics["iterations"] + 1,)
    assert result["observations"].shape == (2, 64)

    # The resolved config reproduces the run exactly (seeded noise, deterministic fit).
    # The rerun also checks the default run folder (one fit less than a test of its
    # own: every CLI fit compiles its solvers anew, ~12 s on 2 cores).
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["optimizer"]["max_iter"] == 4 and resolved["name"] == "tiny"
    monkeypatch.chdir(tmp_path)
    skip = ["check.enabled=false", "output.figures=false", "output.vtu=false"]
    assert main(["fit", str(out / "config.yaml"), "--quiet", *skip]) == 0
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("tiny-")
    again = folders[0]
    result2 = np.load(again / "result.npz")
    np.testing.assert_array_equal(result["observations"], result2["observations"])
    np.testing.assert_array_equal(result["x"], result2["x"])

    # An existing folder is refused before any solve; --force replaces it (the
    # folder logic is shared by the sub-commands: simulate is the cheaper run).
    capsys.readouterr()
    assert main(["fit", str(tiny), "--out", str(again), *skip]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert main(["simulate", str(tiny), "--out", str(again), "--force", "--quiet", *skip]) == 0
    assert "history_objective" not in np.load(again / "result.npz")  # the fit's files are gone
    assert json.loads((again / "metrics.json").read_text())["status"] == "converged"


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "optimizer.max_iters=3",
            "unknown key 'optimizer.max_iters'; did you mean 'optimizer.max_iter'?",
        ),
        ("noise.level=-1", "noise.level must be >= 0.0"),
        ("model.mesh=missing.msh", "model.mesh: file not found"),
        ("truth.field=__import__('os')", "truth.field"),
        ("truth.field=x - 2", "truth.field = 'x - 2' must be positive"),
        ("solver.max_steps=1", "expm_multiply: max_steps=1 reached"),
        ("precision=float32", "solver.tol = 1e-08 is below what float32 can reach"),
    ],
)
def test_bad_input_one_line_error(tiny, tmp_path, capsys, override, message):
    extra = ["solver.tol=1e-8"] if override.startswith("precision") else []
    code = main(["fit", str(tiny), "--out", str(tmp_path / "r"), override, *extra])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_debug_shows_traceback(tiny, tmp_path):
    from pdeinv.cli._config import ConfigError

    with pytest.raises(ConfigError):
        main(["fit", str(tiny), "--out", str(tmp_path / "r"), "--debug", "noise.levl=1"])


def test_simulate_then_fit_from_file_then_plot(tiny, tmp_path, capsys):
    sim = tmp_path / "sim"
    args = ["observations.kind=sensors", "observations.sensors.count=9"]
    assert main(["simulate", str(tiny), "--out", str(sim), *args]) == 0
    data = np.load(sim / "result.npz")
    assert data["observations"].shape == (2, 9) and data["sensors"].shape == (9, 2)
    assert (sim / "kappa.png").is_file() and (sim / "fit.png").is_file()
    assert json.loads((sim / "metrics.json").read_text())["status"] == "converged"

    fit_dir = tmp_path / "fit"
    code = main([
        "fit", str(tiny), "--out", str(fit_dir), "--quiet", "data.source=file",
        f"data.file={sim / 'result.npz'}", "optimizer.max_iter=2", "check.enabled=false",
        "parameterization.kind=coarse", "parameterization.coarse_grid=[3, 3]",
    ])  # fmt: skip
    assert code == 0
    metrics = json.loads((fit_dir / "metrics.json").read_text())
    assert metrics["num_data"] == 18 and metrics["num_unknowns"] == 9
    assert "kappa_relative_error" in metrics  # the file carried the truth

    (fit_dir / "kappa.png").unlink()
    capsys.readouterr()
    assert main(["plot", str(fit_dir)]) == 0
    assert (fit_dir / "kappa.png").is_file()
    assert main(["plot", str(tmp_path)]) == 1
    assert "not a run folder" in capsys.readouterr().err


def test_simulate_status_failed_and_interrupted(tiny, tmp_path, capsys, monkeypatch):
    import os
    import signal

    from pdeinv import report

    failed = tmp_path / "failed"
    assert main(["simulate", str(tiny), "--out", str(failed), "truth.field=x - 2"]) == 1
    metrics = json.loads((failed / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "must be positive" in metrics["error"]
    assert "Traceback" not in capsys.readouterr().err

    # Ctrl-C while the run starts: it stops before the next solve, says so, exits 130.
    write_config = report.write_config

    def write_then_interrupt(*args):
        path = write_config(*args)
        os.kill(os.getpid(), signal.SIGINT)
        return path

    monkeypatch.setattr(report, "write_config", write_then_interrupt)
    stopped = tmp_path / "stopped"
    assert main(["simulate", str(tiny), "--out", str(stopped), "--quiet"]) == 130
    metrics = json.loads((stopped / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["interrupted_by"] == "SIGINT"
    assert (stopped / "config.yaml").is_file() and not (stopped / "result.npz").exists()


def info(i):
    return IterationInfo(i, 10.0 / (i + 1), 1.0, 5.0, 0.1, 0.5 * i)


def test_progress_lines_plain_live_and_quiet():
    plain = io.StringIO()
    progress = Progress(plain)
    for i in range(3):
        progress(info(i))
    lines = plain.getvalue().splitlines()
    assert len(lines) == 3 and all(line.startswith("iter") for line in lines)
    assert "objective" in lines[0] and "|grad|" in lines[0] and "step" in lines[0]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    live = Terminal()
    progress = Progress(live)
    progress(info(0))
    progress(info(1))
    progress.message("done")
    text = live.getvalue()
    assert text.count("\r") == 2 and text.endswith("done\n")

    quiet = io.StringIO()
    progress = Progress(quiet, quiet=True)
    progress(info(0))
    progress.message("x")
    assert quiet.getvalue() == ""


def test_float32_run(tiny, tmp_path):
    import jax

    out = tmp_path / "f32"
    try:
        assert main(["fit", str(tiny), "--out", str(out), "--quiet", "precision=float32",
                     "optimizer.max_iter=2", "output.figures=false"]) == 0  # fmt: skip
    finally:
        jax.config.update("jax_enable_x64", True)  # the CLI switched it off for this run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["diffrax_check"] < 1e-4
    assert np.load(out / "result.npz")["x"].dtype == np.float32
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["solver"]["tol"] == 1e-5 and resolved["check"]["rtol"] == 1e-6

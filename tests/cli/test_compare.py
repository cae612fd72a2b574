"""``python -m pdeinv compare``: end to end on a tiny config, folder safety, bad input."""

import json
import math

import pytest

from pdeinv.cli import main

# The shared `tiny` config (tests/conftest.py) on a 6 x 6 grid.
FAST = ["--solvers", "pdeinv", "tsit5-fixed", "--tols", "1e-5", "--repeats", "1",
        "--reference", "pdeinv", "model.grid=[6, 6]"]  # fmt: skip


@pytest.mark.slow  # ~18 s; tests/reference/test_compare_core.py covers the core by default
def test_compare_writes_outputs_and_prints_table(tiny, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(tiny), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "| solver |" in printed and "Tsit5 fixed step" in printed
    assert {p.name for p in out.iterdir()} >= {"compare.json", "compare.md", "work_precision.png"}
    data = json.loads((out / "compare.json").read_text())
    assert len(data["rows"]) == 2
    for row in data["rows"]:
        assert row["status"] == "ok", row
        for key in ("forward_s", "value_and_grad_s", "value_error", "gradient_error"):
            assert math.isfinite(row[key])
    assert data["problem"]["num_states"] == 36

    # An existing folder is never overwritten without --force.
    assert main(["compare", str(tiny), "--out", str(out), *FAST]) == 1
    assert "already exists" in capsys.readouterr().err


def test_unknown_solver_is_rejected(tiny, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["compare", str(tiny), "--out", str(tmp_path / "x"), "--solvers", "rk4"])
    assert "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

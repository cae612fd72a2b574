"""Compare core: end to end on a tiny problem, verdict logic, outputs, failures as rows."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from pdeinv.reference import _compare, _toy
from pdeinv.reference._compare import CompareProblem, SolverConfig


def _tiny_problem():
    model = _toy.heat_1d(12)
    times = np.array([0.01, 0.02])
    return CompareProblem(
        model, model.params, times, lambda s: 0.5 * jnp.sum((s - 0.2) ** 2), name="tiny heat"
    )


@pytest.fixture(scope="module")
def tiny_result():
    configs = [
        SolverConfig("pdeinv", 1e-6),
        SolverConfig("tsit5", 1e-6),
    ]
    lines = []
    result = _compare.compare(
        _tiny_problem(), configs, repeats=2, reference="pdeinv", progress=lines.append
    )
    result["_lines"] = lines
    return result


def test_compare_end_to_end_has_finite_entries(tiny_result, tmp_path):
    rows = tiny_result["rows"]
    assert [r["family"] for r in rows] == ["pdeinv", "tsit5"]
    for row in rows:
        assert row["status"] == "ok", row
        for key in ("forward_s", "value_and_grad_s", "num_matvecs", "value_error",
                    "gradient_error", "loss"):  # fmt: skip
            assert math.isfinite(row[key]), (row["label"], key)
        assert row["num_matvecs"] > 0
        assert row["peak_memory_bytes"] is None or row["peak_memory_bytes"] > 0
    assert tiny_result["reference"]["source"].startswith("pdeinv")
    # Accuracy follows the tolerance: pdeinv at 1e-6 and Tsit5 at 1e-6 are close.
    by = {r["family"]: r for r in rows}
    assert by["pdeinv"]["gradient_error"] < 1e-4
    assert by["tsit5"]["value_error"] < 1e-4
    assert len(tiny_result["_lines"]) == len(rows) + 2

    paths = _compare.write_outputs(tiny_result, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert len(data["rows"]) == len(rows)
    assert all(r["status"] == "ok" and r["gradient_error"] is not None for r in data["rows"])
    table = paths["markdown"].read_text()
    assert table.count("\n| ") == len(rows) + 1  # header + one line per row
    assert paths["figure"].stat().st_size > 10_000


def test_speedup_statements():
    def row(kind, label, t, e):
        return {"kind": kind, "label": label, "status": "ok", "value_and_grad_s": t,
                "gradient_error": e}  # fmt: skip

    rows = [
        row("pdeinv", "p", 0.01, 1e-7),
        row("diffrax", "slow accurate", 0.5, 1e-8),
        row("diffrax", "fast accurate", 0.1, 5e-8),
        row("diffrax", "fast sloppy", 0.001, 1e-3),
        row("pdeinv", "p-loose", 0.01, 1e-2),
    ]
    s = _compare.speedups(rows)
    assert s[0]["diffrax"] == "fast accurate" and s[0]["speedup"] == pytest.approx(10.0)
    assert s[1]["diffrax"] == "fast sloppy" and s[1]["speedup"] == pytest.approx(0.1)
    text = _compare.summary_lines({"speedups": s, "rows": rows})
    assert "pdeinv is 10.0x faster" in text[0]
    assert "diffrax wins" in text[1]
    # Nothing as accurate: said so.
    none = _compare.speedups([row("pdeinv", "p", 0.01, 1e-12), row("diffrax", "d", 0.1, 1e-6)])
    assert none[0]["speedup"] is None
    assert "no diffrax configuration" in _compare.summary_lines({"speedups": none, "rows": []})[0]


def test_failures_are_rows_with_reasons(monkeypatch):
    problem = _tiny_problem()
    # A step budget far too small makes the diffrax solve fail; the row says why.
    real = _compare._diffrax_options
    monkeypatch.setattr(_compare, "_diffrax_options", lambda p, c: {**real(p, c), "max_steps": 2})
    result = _compare.compare(problem, [SolverConfig("tsit5", 1e-8)], repeats=1,
                              reference="pdeinv")  # fmt: skip
    (row,) = result["rows"]
    assert row["status"] == "failed"
    assert "maximum number of solver steps" in row["reason"]
    assert any("failed" in line for line in result["summary"])


def test_budget_exhausted_rows_are_skipped_not_dropped():
    problem = _tiny_problem()
    configs = [SolverConfig("tsit5", 1e-4), SolverConfig("dopri8", 1e-4)]
    result = _compare.compare(problem, configs, repeats=1, budget=1e-3, reference="pdeinv")
    assert [r["status"] for r in result["rows"]] == ["skipped", "skipped"]
    assert all("budget" in r["reason"] for r in result["rows"])
    assert "skipped" in _compare.to_markdown(result)


def test_solver_configs_order_and_validation():
    configs = _compare.solver_configs(["pdeinv", "tsit5", "tsit5-fixed", "kvaerno5"],
                                      [1e-8, 1e-4])  # fmt: skip
    labels = [(c.family, c.tol) for c in configs]
    assert labels == [("pdeinv", 1e-4), ("tsit5", 1e-4), ("tsit5-fixed", None),
                      ("kvaerno5", 1e-4), ("pdeinv", 1e-8), ("tsit5", 1e-8)]  # fmt: skip
    with pytest.raises(ValueError, match="unknown solver"):
        _compare.solver_configs(["rk4"])
    with pytest.raises(ValueError, match="tols"):
        _compare.solver_configs(["pdeinv"], [0.0])
    with pytest.raises(ValueError, match="budget"):
        _compare.compare(_tiny_problem(), [], budget=0)


@pytest.mark.slow
def test_compare_all_diffrax_families_on_nonsymmetric_problem():
    model = _toy.advection_diffusion_1d(12)
    problem = CompareProblem(model, model.params, np.array([0.01, 0.02]),
                             lambda s: jnp.sum(s**2), name="tiny advection-diffusion")  # fmt: skip
    configs = _compare.solver_configs(_compare.SOLVER_CHOICES, [1e-5])
    result = _compare.compare(problem, configs, repeats=1)
    ref = result["reference"]
    assert ref["source"].startswith("pdeinv")
    assert ref["cross_check"]["gradient_difference"] < 1e-9  # Dopri8 agrees with pdeinv
    for row in result["rows"]:
        assert row["status"] == "ok", row
        assert math.isfinite(row["gradient_error"])

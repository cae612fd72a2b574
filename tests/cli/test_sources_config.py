"""Config keys of issue 16: sources, model.boundary per side / tag, model.capacity, CSV data."""

from pathlib import Path

import pytest

from pdeinv.cli import main
from pdeinv.cli._config import ConfigError, load_config, schema_markdown


def test_valid_sources_boundary_and_capacity(write_file):
    config = load_config(
        write_file(
            "model: {boundary: {left: {dirichlet: 1}, right: {neumann: 0.5}, top: neumann,"
            " bottom: dirichlet}, capacity: '1 + x'}\n"
            "sources:\n"
            "  - {location: [0.5, 0.5], rate: -2, start: 0.1, stop: 0.3}\n"
            "  - {field: 'exp(-r**2)', rate: 1e-3}\n",
        )
    )
    assert config["model"]["boundary"] == {
        "left": {"dirichlet": 1.0}, "right": {"neumann": 0.5}, "top": "neumann",
        "bottom": "dirichlet",
    }  # fmt: skip
    assert config["sources"] == [
        {"rate": -2.0, "location": [0.5, 0.5], "start": 0.1, "stop": 0.3},
        {"rate": 1e-3, "field": "exp(-r**2)", "start": 0.0, "stop": None},
    ]
    table = schema_markdown()
    for key in ("`sources`", "`model.capacity`", "`model.boundary`"):
        assert key in table


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("sources: [{location: [1.5, 0.5], rate: 1}]",
         r"sources\[0\].location \[1.5, 0.5\] lies outside the domain"),
        ("sources: [{location: [0.5, 0.5], rate: .nan}]", r"sources\[0\].rate must be a finite"),
        ("sources: [{location: [0.5, 0.5], rate: .inf}]", r"sources\[0\].rate must be a finite"),
        ("sources: [{location: [0.5, 0.5], rate: 1, start: 0.2, stop: 0.2}]",
         r"sources\[0\].stop must be > start = 0.2"),
        ("sources: [{location: [0.5, 0.5], rate: 1, start: -1}]",
         r"sources\[0\].start must be >= 0"),
        ("sources: [{location: [0.5, 0.5], rte: 1}]", r"unknown key sources\[0\].'rte'.*'rate'"),
        ("sources: [{location: [0.5, 0.5]}]", r"sources\[0\].rate must be set"),
        ("sources: [{location: [0.5, 0.5], field: x, rate: 1}]", r"exactly one of location"),
        ("sources: [{location: [0.5], rate: 1}]", r"sources\[0\].location must have 2 coordinates"),
        ("model: {boundary: {lft: dirichlet, right: neumann}}",
         r"model.boundary: unknown side 'lft'; did you mean 'left'"),
        ("model: {boundary: {left: dirichlett}}",
         r"model.boundary.left .* did you mean 'dirichlet'"),
        ("model: {boundary: {left: {dirichlet: .nan}}}", r"model.boundary.left.dirichlet must be"),
        ("model: {boundary: dirichelt}",
         r"model.boundary must be one of .*did you mean 'dirichlet'"),
        ("model: {capacity: -1}", r"model.capacity must be > 0"),
        ("model: {pde: wave}\nsources: [{location: [0.5, 0.5], rate: 1}]", "heat only"),
    ],
)  # fmt: skip
def test_bad_input_names_the_key(write_file, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(write_file(text + "\n"))


def test_cli_prints_one_error_line_for_a_mesh_tag_typo(write_file, tmp_path, capsys):
    mesh = Path(__file__).resolve().parents[2] / "meshes" / "unit_square.msh"
    path = write_file(f"model: {{mesh: {mesh}, boundary: {{rigth: dirichlet}}}}\n")
    assert main(["simulate", str(path), "--out", str(tmp_path / "out"), "--quiet"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: model.boundary: unknown boundary tag 'rigth'")
    assert "did you mean 'right'" in err[0]


def test_cli_names_the_csv_row_and_column(write_file, tmp_path, capsys):
    (tmp_path / "d.csv").write_text("time,x,y,value\n0.1,0.5,0.5,1\n0.2,0.5,0.5,oops\n")
    path = write_file("data: {source: file, file: d.csv}\n")
    assert main(["fit", str(path), "--out", str(tmp_path / "out"), "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data.file: ")
    assert "d.csv, row 2 (line 3), column 'value': 'oops' is not a number" in err

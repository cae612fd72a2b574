"""README.md documents every config key (generated table is up to date)."""

from pathlib import Path

from pdeinv.cli._config import iter_options
from pdeinv.cli._docs import render

DOC = Path(__file__).resolve().parents[2] / "README.md"


def test_config_table_is_current():
    text = DOC.read_text()
    assert render(text) == text, "run: python -m pdeinv.cli._docs README.md"
    for key, _ in iter_options():
        assert f"`{key}`" in text


def test_documented_figures_exist():
    for name in ("kappa.png", "convergence.png", "fit.png"):
        assert f"docs/figures/{name}" in DOC.read_text()
        assert (DOC.parent / "docs" / "figures" / name).stat().st_size > 10_000

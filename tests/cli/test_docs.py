"""docs/config.md documents every config key (generated table is up to date)."""

from pathlib import Path

from pdeinv.cli._config import iter_options
from pdeinv.cli._docs import DEFAULT_PATH, render

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / DEFAULT_PATH


def test_config_table_is_current():
    text = DOC.read_text()
    assert render(text) == text, "run: python -m pdeinv.cli._docs"
    for key, _ in iter_options():
        assert f"`{key}`" in text


def test_documented_figures_exist():
    cli_page = (ROOT / "docs" / "cli.md").read_text()
    for name in ("kappa.png", "convergence.png", "fit.png"):
        assert f"](figures/{name})" in cli_page
        assert (ROOT / "docs" / "figures" / name).stat().st_size > 10_000
    assert "](docs/figures/kappa.png)" in (ROOT / "README.md").read_text()

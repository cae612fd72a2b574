"""The README's ten-line example runs and prints what the README says it prints."""

import contextlib
import io
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_prints_what_it_claims():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python in ten lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    claimed = re.search(r"\nprints\n\n```\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    got = [[float(x) for x in line.split()] for line in out.getvalue().splitlines()]
    want = [[float(x) for x in line.split()] for line in claimed.splitlines()]
    assert len(got) == len(want) == 2
    np.testing.assert_allclose(got, want, rtol=1e-10)
    for value, closed_form in got:  # each line: pdeinv, then the closed form
        assert abs(value - closed_form) <= 1e-12 * abs(closed_form)

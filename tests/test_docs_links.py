"""Every relative link in the README and docs/ resolves, and so does every docs reference in code.

A link ``[text](path#anchor)`` must name an existing file and, with an anchor, a heading of
that file under both slug rules its readers use: MkDocs (Python-Markdown's ``toc``) and
GitHub. Code (``pdeinv/``, ``tests/``, ``benchmarks/``, ``examples/``) cites the docs as
``docs/<page>.md#<anchor>`` in comments and docstrings; those must resolve too.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", *DOCS.glob("*.md")])
CODE_DIRS = ("pdeinv", "tests", "benchmarks", "examples")
# Pages written in other branches; mkdocs.yml lists them before they are merged.
PENDING_PAGES = {"robustness.md", "sources.md"}

_FENCE = re.compile(r"^(```|~~~)")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# "docs" + "/" is spelled apart so that this file's own patterns are not references.
_CODE_REF = re.compile(r"(?<![\w/.])" + "docs" + r"/([\w./-]*[\w])(?:#([\w-]+))?")


def _prose_lines(text: str):
    """``(line number, line)`` outside fenced and indented code blocks, inline code removed."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if fenced or line.startswith("    ") and not line.lstrip().startswith(("-", "*", "|")):
            continue
        yield number, _INLINE_CODE.sub("", line)


def _heading_text(raw: str) -> str:
    """Rendered text of a heading: code spans keep their content, markup goes."""
    text = re.sub(r"`([^`]*)`", r"\1", raw)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[*_]{1,2}([^*_]+)[*_]{1,2}", r"\1", text)


def slug_mkdocs(text: str) -> str:
    """Python-Markdown ``toc.slugify`` (MkDocs' default)."""
    value = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def slug_github(text: str) -> str:
    """GitHub's heading anchors: lower case, punctuation dropped, each space a hyphen."""
    value = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return value.replace(" ", "-")


def anchors(path: Path) -> tuple[set[str], set[str]]:
    """Heading anchors of a Markdown file under the MkDocs and the GitHub rules."""
    mkdocs, github = set(), set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match:
            text = _heading_text(match.group(2))
            mkdocs.add(slug_mkdocs(text))
            github.add(slug_github(text))
    return mkdocs, github


def _check_target(source: Path, target: str, problems: list[str], where: str):
    path_part, _, anchor = target.partition("#")
    path = source if not path_part else (source.parent / path_part).resolve()
    if not path.exists():
        problems.append(f"{where}: {target!r}: no file {path.relative_to(ROOT)}")
        return
    if anchor:
        if path.suffix != ".md":
            problems.append(f"{where}: {target!r}: anchor on a file that is not Markdown")
            return
        mkdocs, github = anchors(path)
        for rule, names in (("MkDocs", mkdocs), ("GitHub", github)):
            if anchor not in names:
                problems.append(f"{where}: {target!r}: no heading with the {rule} anchor")


def test_slug_rules():
    assert (
        slug_mkdocs("The integrator: pdeinv.expm_multiply") == "the-integrator-pdeinvexpm_multiply"
    )
    assert slug_mkdocs("Several devices: --devices N") == "several-devices-devices-n"
    assert slug_github("Several devices: --devices N") == "several-devices---devices-n"
    assert slug_github("What fit solves") == "what-fit-solves"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    problems: list[str] = []
    for number, line in _prose_lines(page.read_text(encoding="utf-8")):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            _check_target(page, target, problems, f"{page.relative_to(ROOT)}:{number}")
    assert not problems, "\n".join(problems)


def test_docs_pages_do_not_link_outside_docs():
    """MkDocs can only link pages and figures inside docs/ (the README is outside)."""
    problems = []
    for page in DOCS.glob("*.md"):
        for _, line in _prose_lines(page.read_text(encoding="utf-8")):
            for target in _LINK.findall(line):
                path_part = target.partition("#")[0]
                if re.match(r"^[a-z][a-z0-9+.-]*:", target) or not path_part:
                    continue
                if DOCS not in (page.parent / path_part).resolve().parents:
                    problems.append(f"{page.name}: {target}")
    assert not problems, problems


def test_code_references_to_docs_resolve():
    problems: list[str] = []
    for folder in CODE_DIRS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in {".py", ".yaml", ".yml", ".md", ".toml"}:
                continue
            text = path.read_text(encoding="utf-8")
            for match in _CODE_REF.finditer(text):
                target = match.group(1) + (f"#{match.group(2)}" if match.group(2) else "")
                line = text.count("\n", 0, match.start()) + 1
                _check_target(
                    DOCS / "index.md", target, problems, f"{path.relative_to(ROOT)}:{line}"
                )
    assert not problems, "\n".join(problems)


def test_mkdocs_nav_lists_every_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from pages(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)

    nav = set(pages(config["nav"]))
    on_disk = {p.name for p in DOCS.glob("*.md")}
    missing = {name for name in nav - on_disk if name not in PENDING_PAGES}
    assert not missing, f"mkdocs.yml nav names pages that do not exist: {sorted(missing)}"
    assert not on_disk - nav, f"pages missing from the mkdocs.yml nav: {sorted(on_disk - nav)}"

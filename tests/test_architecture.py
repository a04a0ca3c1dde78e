"""The docs name every module (docs/architecture.md) and revision (docs/migrations.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tasktoolkit"


def _listed() -> set[str]:
    """The modules the page's "Every module" section lists, as paths under ``tasktoolkit/``."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("\n## Every module\n", 1)[1].split("\n## ", 1)[0]
    listed: set[str] = set()
    folder = ""
    for line in section.splitlines():
        if heading := re.fullmatch(r"### `tasktoolkit/(.*)`", line):
            folder = heading.group(1)
        elif row := re.match(r"\| `([^`]+\.py)` \|", line):
            listed.add(folder + row.group(1))
    return listed


def _modules() -> set[str]:
    """Every module of the package but the migrations' revisions."""
    return {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "versions" not in path.relative_to(PACKAGE).parts
    }


def test_every_module_is_named_once_on_the_architecture_page() -> None:
    listed, modules = _listed(), _modules()
    assert not modules - listed, f"modules the page does not name: {sorted(modules - listed)}"
    assert not listed - modules, f"names on the page that are no module: {sorted(listed - modules)}"


def test_every_revision_is_listed_on_the_migrations_page() -> None:
    text = (ROOT / "docs" / "migrations.md").read_text()
    section = text.split("\n## The revisions\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(tasktoolkit_\d{4}\w*)` \|", section, re.M)
    versions = PACKAGE / "orm" / "migrations" / "versions"
    revisions = sorted(path.stem for path in versions.glob("tasktoolkit_*.py"))
    assert listed == revisions

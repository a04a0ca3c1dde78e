"""``tasktoolkit db upgrade``: the toolkit's migrations."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import create_engine

from tests.commands.conftest import assert_one_line_error, run


def test_db_upgrade_creates_the_tables(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    status, out, err = run(capsys, "db", "upgrade", "--db-url", url)
    assert (status, err) == (0, "")
    assert out.startswith("database is at head")
    engine = create_engine(url)
    assert inspect(engine).has_table("tasktoolkit_tasks")
    engine.dispose()


@pytest.mark.parametrize(
    "revision",
    [pytest.param("bad", id="unknown"), pytest.param("tasktoolkit@nowhere", id="unknown-branch")],
)
def test_db_upgrade_to_a_bad_revision_makes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, revision: str
) -> None:
    path = tmp_path / "new.db"
    argv = ["db", "upgrade", "--db-url", f"sqlite:///{path}", "--revision", revision]
    assert_one_line_error(capsys, argv, 1, "toolkit migrations:")
    assert not path.exists()

"""The ``tasktoolkit`` command itself: its script, its one-line errors, its settings."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tasktoolkit import commands
from tasktoolkit.commands._common import settings_of
from tasktoolkit.commands._main import build_parser
from tests.commands.conftest import assert_one_line_error


def test_the_console_script_is_main() -> None:
    [script] = entry_points(group="console_scripts", name="tasktoolkit")
    assert script.load() is commands.main


@pytest.mark.parametrize(
    ("argv", "status", "says"),
    [
        pytest.param(["purge"], 1, "no database: pass --db-url", id="no-url"),
        pytest.param(
            ["purge", "--db-url", "bogus"], 1, "'bogus' is not a database URL", id="bad-url"
        ),
        pytest.param(
            ["purge", "--db-url", "mysql+pymysql://root@127.0.0.1:abc/x"],
            1,
            "'mysql+pymysql://root@127.0.0.1:abc/x' is not a database URL",
            id="port-not-a-number",
        ),
        pytest.param(
            ["purge", "--db-url", "postgresql+psycopg://nobody@127.0.0.1:1/none"],
            1,
            "cannot connect to postgresql+psycopg://nobody@127.0.0.1:1/none",
            id="unreachable",
        ),
        pytest.param(
            ["purge", "--db-url", "sqlite:////nonexistent/x.db"],
            1,
            "no such database file",
            id="missing-sqlite-file",
        ),
        pytest.param(
            ["purge", "--db-url", "nosuchdb://x/y"], 1, "cannot use nosuchdb://x/y", id="no-dialect"
        ),
        pytest.param(
            ["purge", "--db-url", "sqlite://", "--batch-size", "0"],
            2,
            "'0' is not a whole number from 1 to 10000",
            id="bad-batch-size",
        ),
        pytest.param(
            ["purge", "--db-url", "sqlite://"], 1, "has no tasktoolkit tables", id="no-tables"
        ),
        pytest.param(
            ["reap", "--db-url", "sqlite://", "--models", "no.such.module"],
            1,
            "--models no.such.module: No module named 'no'",
            id="bad-models",
        ),
        pytest.param(["frobnicate"], 2, "invalid choice: 'frobnicate'", id="unknown-command"),
    ],
)
def test_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], status: int, says: str
) -> None:
    assert_one_line_error(capsys, argv, status, says)


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasktoolkit",
            "purge",
            "--db-url",
            "mysql+pymysql://x@127.0.0.1:1/y",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(
        "tasktoolkit: error: cannot connect to mysql+pymysql://x@127.0.0.1:1/y"
    )
    assert len(done.stderr.splitlines()) == 1


def test_settings_come_from_the_config_file_then_each_set(tmp_path: Path) -> None:
    config = tmp_path / "tasktoolkit.conf"
    config.write_text("# the reaper's\n\nbatch_size = 50\ndeadline = 3s\nreap_every = 5m\n")
    argv = ["reap", "--config", str(config), "--set", "deadline=2s", "--set", "max_wait=1m"]
    settings = settings_of(build_parser().parse_args(argv))
    assert (settings.batch_size, settings.reap_every) == (50, timedelta(minutes=5))
    assert (settings.deadline, settings.max_wait) == (timedelta(seconds=2), timedelta(minutes=1))


@pytest.mark.parametrize(
    ("argv", "status", "says"),
    [
        pytest.param(["--set", "bogus=1"], 1, "unknown option 'bogus'", id="unknown-setting"),
        pytest.param(
            ["--set", "deadline=soon"], 1, "deadline: 'soon' is not a duration", id="bad-value"
        ),
        pytest.param(["--set", "deadline"], 2, "'deadline' is not a setting", id="no-value"),
        pytest.param(["--config", "/nonexistent/x.conf"], 1, "--config /nonexistent", id="no-file"),
        pytest.param(["--config", "{bad}"], 1, "x.conf:2: not 'name = value'", id="bad-line"),
    ],
)
def test_bad_settings_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], status: int, says: str
) -> None:
    bad = tmp_path / "x.conf"
    bad.write_text("deadline = 2s\njust words\n")
    argv = [a.replace("{bad}", str(bad)) for a in argv]
    assert_one_line_error(capsys, ["purge", "--db-url", "sqlite://", *argv], status, says)

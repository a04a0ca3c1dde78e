"""The ``tasktoolkit`` command itself: its script, its one-line errors, its settings."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import nullcontext
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.orm import Session

from tasktoolkit import commands
from tasktoolkit.commands import _records
from tasktoolkit.commands._common import settings_of, toolkit
from tasktoolkit.commands._main import build_parser
from tests.commands.conftest import assert_one_line_error, run


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


def _completions(line: str, tmp_path: Path) -> list[str]:
    """What the shell would offer after ``line`` (but the options, ``-h``...): argcomplete's
    own protocol (the variables its bash hook sets), answered by a real process."""
    answer = tmp_path / "completions"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\n",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "COMP_TYPE": "9",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tasktoolkit"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return sorted(word for word in answer.read_text().split() if not word.startswith("-"))


@pytest.mark.parametrize(
    ("line", "offered"),
    [
        pytest.param(
            "tasktoolkit ",
            ["db", "health", "operations", "purge", "reap", "stats", "tasks", "watch", "workers"],
            id="commands",
        ),
        pytest.param("tasktoolkit ta", ["tasks"], id="a-prefix"),
        pytest.param("tasktoolkit tasks ", ["cancel", "list", "retry", "show"], id="actions"),
        pytest.param(
            "tasktoolkit operations list -f ", ["csv", "json", "table", "value"], id="formats"
        ),
        pytest.param(
            "tasktoolkit operations list --sort-key ",
            ["created_at", "finished_at", "state", "updated_at"],
            id="sort-keys",
        ),
    ],
)
def test_the_shell_completes_commands_and_choices(
    tmp_path: Path, line: str, offered: list[str]
) -> None:
    pytest.importorskip("argcomplete")
    assert _completions(line, tmp_path) == offered


def test_a_missing_driver_names_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # not installed
    url = "postgresql+psycopg://app@127.0.0.1:1/app"
    assert_one_line_error(
        capsys,
        ["tasks", "list", "--db-url", url],
        1,
        f"cannot use {url}: import of psycopg halted; None in sys.modules; "
        "pip install 'tasktoolkit[postgresql]'",
    )


def test_a_reader_that_went_away_ends_it_quietly(tmp_path: Path) -> None:
    """``tasktoolkit ... | head -1``: the pipe's reader is gone before anything is written."""
    database = f"sqlite:///{tmp_path / 'app.db'}"
    assert commands.main(["db", "upgrade", "--db-url", database]) == 0
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tasktoolkit",
                "operations",
                "list",
                "-f",
                "json",
                "--db-url",
                database,
            ],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (commands.EXIT_ERROR, "")


def test_an_interrupt_while_the_pool_resets_a_connection_is_not_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Ctrl-C landing as a session gives its connection back: the pool would log it with a
    traceback before ``main`` says "interrupted"; a real error is still logged."""
    database = f"sqlite:///{tmp_path / 'app.db'}"
    assert commands.main(["db", "upgrade", "--db-url", database]) == 0
    args = build_parser().parse_args(["purge", "--db-url", database])
    for raised in (KeyboardInterrupt, RuntimeError):

        def reset(*_: object, raised: type[BaseException] = raised) -> None:
            raise raised("while resetting")

        with toolkit(args) as kit:
            monkeypatch.setattr(kit.engine.dialect, "do_rollback", reset)
            connection = kit.engine.connect()
            with pytest.raises(KeyboardInterrupt) if raised is KeyboardInterrupt else nullcontext():
                connection.close()
            monkeypatch.undo()
    logged = [r.exc_info[0] for r in caplog.records if r.exc_info and r.exc_info[0]]
    assert logged == [RuntimeError]


def test_an_interrupt_whose_rollback_fails_is_still_an_interrupt(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Ctrl-C in the middle of a query can leave the connection mid-reply (seen on MariaDB):
    the rollback as the session unwinds fails, and its error takes the interrupt's place."""
    database = f"sqlite:///{tmp_path / 'app.db'}"
    assert commands.main(["db", "upgrade", "--db-url", database]) == 0
    capsys.readouterr()

    def lost(*_: object) -> None:
        raise sqlite3.OperationalError("the connection is mid-reply")

    def ctrl_c_mid_query(session: Session, *_: object, **__: object) -> None:
        session.execute(text("SELECT 1"))
        monkeypatch.setattr(SQLiteDialect_pysqlite, "do_rollback", lost)
        os.kill(os.getpid(), signal.SIGINT)  # raises KeyboardInterrupt here, as Ctrl-C would

    monkeypatch.setattr(_records, "list_tasks", ctrl_c_mid_query)
    assert run(capsys, "tasks", "list", "--db-url", database) == (
        commands.EXIT_INTERRUPTED,
        "",
        "tasktoolkit: error: interrupted\n",
    )
    assert not [r for r in caplog.records if r.exc_info]

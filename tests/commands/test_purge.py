"""``tasktoolkit purge``: a dry run counts, a purge deletes in batches and sums up."""

from __future__ import annotations

import sys
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import commands
from tasktoolkit.commands._main import build_parser
from tests.commands.conftest import assert_one_line_error, count, expire_all, run, spawn


def test_purge_dry_run_counts_only(
    capsys: pytest.CaptureFixture[str],
    db_url: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
) -> None:
    spawn(session_factory, ["a", "b", "c"])
    expire_all(engine, timedelta(hours=1))

    status, out, err = run(capsys, "purge", "--db-url", db_url, "--dry-run")

    assert (status, err) == (0, "")
    assert out.startswith("would purge 3 tasks and 1 operation (expired before ")
    assert count(engine) == (3, 1)


def test_purge_deletes_and_sums_up(
    capsys: pytest.CaptureFixture[str],
    db_url: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
) -> None:
    spawn(session_factory, ["a", "b", "c"])
    expire_all(engine, timedelta(hours=1))

    status, out, err = run(capsys, "purge", "--db-url", db_url, "--batch-size", "2")

    assert (status, err) == (0, "")  # not a terminal: no progress display
    assert out.startswith("purged 3 tasks and 1 operation (expired before ")
    assert count(engine) == (0, 0)


def test_purge_older_than_keeps_the_recently_expired(
    capsys: pytest.CaptureFixture[str],
    db_url: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
) -> None:
    spawn(session_factory, ["a"])
    expire_all(engine, timedelta(hours=1))

    status, out, _ = run(capsys, "purge", "--db-url", db_url, "--older-than", "2h")

    assert status == 0 and out.startswith("purged 0 tasks and 0 operations")
    assert count(engine) == (1, 1)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(["--batch-size", "1"], id="its-option"),
        pytest.param(["--set", "batch_size=1"], id="the-setting"),
    ],
)
def test_purge_shows_progress_on_a_terminal_batch_by_batch(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
    options: list[str],
) -> None:
    spawn(session_factory, ["a", "b", "c"])
    expire_all(engine, timedelta(hours=1))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)

    status, _, err = run(capsys, "purge", "--db-url", db_url, *options)

    assert status == 0
    assert "\rpurging tasks: 1 of 3 (33%)" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1d12h", timedelta(days=1, hours=12), id="combined"),
        pytest.param("0s", timedelta(0), id="zero"),
        pytest.param("7", timedelta(seconds=7), id="seconds-without-unit"),
        pytest.param("1.5h", timedelta(minutes=90), id="fraction"),
    ],
)
def test_older_than_takes_the_one_duration_form(text: str, expected: timedelta) -> None:
    args = build_parser().parse_args(["purge", "--older-than", text])
    assert args.older_than == expected


NOT_A_DURATION = "is not a duration"
TOO_LONG = "is longer than 3650d"
BAD_DURATIONS = [
    pytest.param("", NOT_A_DURATION, id="empty"),
    pytest.param("7x", NOT_A_DURATION, id="unknown-unit"),
    pytest.param("-1d", NOT_A_DURATION, id="negative"),
    pytest.param("d", NOT_A_DURATION, id="no-number"),
    pytest.param("7d later", NOT_A_DURATION, id="trailing-words"),
    pytest.param("9999w", TOO_LONG, id="absurd"),
    pytest.param("99999d", TOO_LONG, id="absurd-in-days"),
]


@pytest.mark.parametrize(("text", "says"), BAD_DURATIONS)
def test_purge_refuses_a_bad_older_than(
    capsys: pytest.CaptureFixture[str], text: str, says: str
) -> None:
    argv = ["purge", "--db-url", "sqlite://", f"--older-than={text}"]
    assert_one_line_error(capsys, argv, commands.EXIT_USAGE, f"{text!r} {says}")

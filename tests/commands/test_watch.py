"""``tasktoolkit watch``: an operation's tasks, live, from the database or through the API."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import commands
from tasktoolkit.commands import _watch
from tasktoolkit.orm import TaskRules, Worker
from tests.commands.conftest import ADMIN, AS_ADMIN, SYSTEM, Counted, Watch, claim, run, spawn


def test_watch_shows_a_finished_operation_and_its_outcome(
    capsys: pytest.CaptureFixture[str],
    db_url: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
) -> None:
    rid, _ = spawn(session_factory, ["build", "wire"])
    claim(engine, ["build", "wire"]).fail("no_capacity", "the rack is full")
    claim(engine, ["build", "wire"]).succeed()

    status, out, err = run(capsys, "watch", rid, "--db-url", db_url)

    assert (status, err) == (commands.EXIT_OPERATION_FAILED, "")
    header, *lines = out.splitlines()
    assert header == f"{rid} POST /clusters: failed (HTTP 202)"
    assert sorted(line.split()[0] for line in lines) == ["build", "wire"]
    assert any("failed" in line and "the rack is full" in line for line in lines)


def test_watch_follows_a_running_operation_until_it_ends(
    capsys: pytest.CaptureFixture[str],
    db_url: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
) -> None:
    rid, _ = spawn(session_factory, ["build"])
    job = claim(engine, ["build"])
    job.progress(30, "copying")
    watch = Watch(
        capsys, ["watch", rid, "--db-url", db_url, "--interval", "1s", "--timeout", "60s"]
    )
    out = watch.until("running")
    assert f"{rid} POST /clusters: running (HTTP 202)" in out
    assert any(line.split()[-3:] == ["running", "30%", "copying"] for line in out.splitlines())
    job.succeed()

    assert watch.ended() == 0
    assert f"{rid} POST /clusters: succeeded (HTTP 202)" in watch.out
    assert watch.out.splitlines()[-1].split()[-3:] == ["succeeded", "100%", "copying"]


def test_watch_shows_each_attempt_of_a_task_that_ran_again(
    capsys: pytest.CaptureFixture[str],
    db_url: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
) -> None:
    rid, [task_id] = spawn(session_factory, ["build"], rules=TaskRules(max_attempts=2, jitter=0))
    Worker(engine, host="w1").start(task_id).fail("dhcp_timeout", "no lease", retry=True)
    first = "    attempt 1 on w1: failed dhcp_timeout: no lease"
    watch = Watch(
        capsys, ["watch", rid, "--db-url", db_url, "--interval", "1s", "--timeout", "60s"]
    )
    waiting = watch.until("next attempt not before").splitlines()
    assert waiting[-2:-1] == [first]
    assert waiting[-1].startswith("    next attempt not before ")
    Worker(engine, host="w2").start(task_id).succeed()

    assert watch.ended() == 0
    assert watch.out.splitlines()[-1] == "    attempt 2 on w2: succeeded"
    status, out, err = run(capsys, "watch", rid, "--db-url", db_url)
    assert (status, err) == (0, "")
    header, task, *attempts = out.splitlines()
    assert header == f"{rid} POST /clusters: succeeded (HTTP 202)"
    assert task.split()[:1] + task.split()[2:4] == ["build", "succeeded", "100%"]
    assert attempts == [first, "    attempt 2 on w2: succeeded"]


def test_watch_gives_up_after_its_timeout(
    capsys: pytest.CaptureFixture[str], db_url: str, session_factory: sessionmaker[Session]
) -> None:
    rid, _ = spawn(session_factory, ["build"])
    status, _, err = run(
        capsys, "watch", rid, "--db-url", db_url, "--interval", "1s", "--timeout", "1s"
    )
    assert status == commands.EXIT_ERROR
    assert err == f"tasktoolkit: error: {rid} is still running after --timeout\n"


def test_watch_of_an_unknown_operation(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    status, out, err = run(capsys, "watch", "req-unknown", "--db-url", db_url)
    assert (status, out) == (commands.EXIT_ERROR, "")
    assert err == "tasktoolkit: error: no operation 'req-unknown'\n"


def test_watch_interrupted_exits_130(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    session_factory: sessionmaker[Session],
) -> None:
    rid, _ = spawn(session_factory, ["build"])

    def ctrl_c(seconds: float) -> None:
        raise KeyboardInterrupt

    # Only the command's own clock: other threads of the process sleep as they should.
    monkeypatch.setattr(_watch, "time", SimpleNamespace(monotonic=time.monotonic, sleep=ctrl_c))
    status, _, err = run(capsys, "watch", rid, "--db-url", db_url)
    assert (status, err) == (commands.EXIT_INTERRUPTED, "tasktoolkit: error: interrupted\n")


def test_watch_follows_an_operation_location_over_http(
    capsys: pytest.CaptureFixture[str],
    api: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
) -> None:
    rid, _ = spawn(session_factory, ["build"])
    job = claim(engine, ["build"])
    job.progress(30, "copying")
    watch = Watch(capsys, ["watch", f"{api}/operations/{rid}", *AS_ADMIN])
    assert f"{rid} POST /clusters: running (HTTP 202)" in watch.until("running")
    job.succeed(result={"ok": True})
    assert watch.ended() == 0
    assert watch.out.splitlines()[-1].split()[-3:] == ["succeeded", "100%", "copying"]


def test_watch_over_http_exits_3_when_the_operation_failed(
    capsys: pytest.CaptureFixture[str],
    api: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
) -> None:
    rid, _ = spawn(session_factory, ["build"])
    claim(engine, ["build"]).fail("no_capacity", "the rack is full")
    status, out, err = run(capsys, "watch", f"{api}/operations/{rid}", *AS_ADMIN)
    assert (status, err) == (commands.EXIT_OPERATION_FAILED, "")
    assert "the rack is full" in out


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        pytest.param(
            "/operations/req-00000000-0000-4000-8000-000000000000",
            [ADMIN, SYSTEM],
            "HTTP 404: no operation 'req-00000000-0000-4000-8000-000000000000'",
            id="unknown",
        ),
        pytest.param("/operations/{rid}", [], "HTTP 404", id="not-visible-without-auth"),
    ],
)
def test_watch_over_http_reports_the_apis_error(
    capsys: pytest.CaptureFixture[str],
    api: str,
    session_factory: sessionmaker[Session],
    path: str,
    headers: list[str],
    expected: str,
) -> None:
    rid, _ = spawn(session_factory, ["build"])
    argv = ["watch", api + path.format(rid=rid)]
    for header in headers:
        argv += ["--header", header]
    status, out, err = run(capsys, *argv)
    assert (status, out) == (commands.EXIT_ERROR, "")
    assert err.startswith("tasktoolkit: error: http://") and expected in err, err


def test_watch_over_http_gives_up_after_its_timeout(
    capsys: pytest.CaptureFixture[str], api: str, session_factory: sessionmaker[Session]
) -> None:
    rid, _ = spawn(session_factory, ["build"])
    url = f"{api}/operations/{rid}"
    status, _, err = run(capsys, "watch", url, *AS_ADMIN, "--timeout", "1s")
    assert status == commands.EXIT_ERROR
    assert err == f"tasktoolkit: error: {url} is still running after --timeout\n"


def test_watch_over_http_polls_as_retry_after_says_when_the_server_holds_no_wait(
    capsys: pytest.CaptureFixture[str],
    served: Callable[..., tuple[str, Counted]],
    session_factory: sessionmaker[Session],
) -> None:
    api, counted = served(max_waiting=0)
    rid, _ = spawn(session_factory, ["build"])
    url = f"{api}/operations/{rid}"
    status, _, err = run(capsys, "watch", url, *AS_ADMIN, "--timeout", "3s")
    assert (status, err) == (1, f"tasktoolkit: error: {url} is still running after --timeout\n")
    assert 2 <= counted.requests <= 5  # one a second (Retry-After: 1), not one after another


def test_watch_of_an_unreachable_api(capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://127.0.0.1:1/operations/req-x"
    status, _, err = run(capsys, "watch", url)
    assert status == commands.EXIT_ERROR
    assert err.startswith(f"tasktoolkit: error: cannot reach {url}")


@pytest.mark.parametrize("header", ["no colon", "Bad Name: x", ": empty name", "X-Token: a\x01b"])
def test_watch_refuses_a_malformed_header(capsys: pytest.CaptureFixture[str], header: str) -> None:
    status, _, err = run(capsys, "watch", "http://127.0.0.1:1/operations/x", "--header", header)
    assert status == commands.EXIT_USAGE and "is not a header" in err


def test_watch_by_id_takes_no_header(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    status, _, err = run(capsys, "watch", "req-x", "--db-url", db_url, "--header", "A: b")
    assert status == commands.EXIT_ERROR and "--header is for an operation's URL" in err


class Terminal(io.StringIO):
    """A terminal of the width ``$COLUMNS`` says, as the screen sees one."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        pytest.param("short", "short", id="fits"),
        pytest.param("x" * 20, "x" * 20, id="exactly"),
        pytest.param("y" * 21 + " message", "y" * 20, id="cut"),
        pytest.param("端口" * 6, "端口" * 5, id="wide-characters-take-two"),
        pytest.param("e\u0301" * 25, "e\u0301" * 20, id="combining-marks-take-none"),
    ],
)
def test_on_a_terminal_each_line_is_cut_to_its_width(
    monkeypatch: pytest.MonkeyPatch, line: str, shown: str
) -> None:
    """A line that wrapped would take two rows, and the redraw would climb one row short."""
    monkeypatch.setenv("COLUMNS", "20")
    screen = _watch._Screen(Terminal())
    screen.show(["header", line])
    screen.show(["header", line])
    drawn = screen.stream.getvalue()  # type: ignore[attr-defined]
    assert drawn == f"header\n{shown}\n\x1b[2F\x1b[Jheader\n{shown}\n"


def test_elsewhere_lines_are_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "20")
    stream = io.StringIO()
    _watch._Screen(stream).show(["z" * 30])
    assert stream.getvalue() == "z" * 30 + "\n"


@pytest.mark.parametrize(
    "interval",
    [
        pytest.param("1s", id="while-it-sleeps"),
        pytest.param("1ms", id="while-it-reads-the-database"),
    ],
)
def test_watch_in_a_real_process_exits_130_on_ctrl_c(
    tmp_path: Path, db_url: str, session_factory: sessionmaker[Session], interval: str
) -> None:
    rid, _ = spawn(session_factory, ["build"])
    argv = ["watch", rid, "--db-url", db_url, "--interval", interval]
    process = subprocess.Popen(
        [sys.executable, "-m", "tasktoolkit", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert process.stdout is not None
    assert rid in process.stdout.readline()  # drawn once: it is waiting now
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert (process.returncode, err) == (
        commands.EXIT_INTERRUPTED,
        "tasktoolkit: error: interrupted\n",
    )

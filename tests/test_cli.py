"""The ``tasktoolkit`` command: purge, reap, db upgrade, watch, and its one-line errors."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import routes
from sqlalchemy import delete, func, inspect, select, update
from sqlalchemy.engine import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import cli
from tasktoolkit.cli import parse_duration
from tasktoolkit.context import RequestContext, new_request_id, request_context
from tasktoolkit.endpoints import Router, mount
from tasktoolkit.errors import InvalidDurationError
from tasktoolkit.orm import Job, TaskRules, Worker, cancel_task
from tasktoolkit.orm._clock import db_now, later
from tasktoolkit.orm._operations import OperationFields, end_request, open_operation
from tasktoolkit.orm._records import operations_table, tasks_table
from tests.clock import age, watched
from tests.middleware.test_concurrency import Served
from tests.models import Cluster


@pytest.fixture
def db_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)``: its exit status, standard output and standard error."""
    try:
        status = cli.main(list(argv))
    except SystemExit as exit:  # argparse's usage errors
        status = int(exit.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def spawn(
    session_factory: sessionmaker[Session],
    names: list[str],
    *,
    status: int | None = 202,
    rules: TaskRules | None = None,
) -> tuple[str, list[str]]:
    """An operation whose request ended with ``status`` (``None``: never recorded its
    end), with one task per name (with ``rules`` instead of their names')."""
    rid = new_request_id()
    with session_factory() as s:
        open_operation(s.connection(), OperationFields(rid, "POST", "/clusters"))
        cluster = Cluster(name="c")
        s.add(cluster)
        s.flush()
        with request_context(RequestContext(rid, operation_id=rid)):
            tasks = cluster.spawn_tasks(names, rules=rules)
        if status is not None:
            end_request(s.connection(), rid, status)
        s.commit()
        return rid, [t.id for t in tasks]


def expire_all(engine: Engine, ago: timedelta) -> None:
    """Make every task and operation finished and expired ``ago`` (on the database's clock)."""
    moment = later(db_now(), -ago)
    with engine.begin() as conn:
        conn.execute(update(tasks_table).values(state="succeeded", expires_at=moment))
        conn.execute(update(operations_table).values(state="succeeded", expires_at=moment))


def count(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(tasks_table)).scalar_one(),
            conn.execute(select(func.count()).select_from(operations_table)).scalar_one(),
        )


def claim(engine: Engine, names: list[str]) -> Job:
    """The next pending task of these names, claimed by a worker."""
    job = Worker(engine, names, host="w").claim()
    assert job is not None
    return job


class Watch:
    """``main(argv)`` in a thread of its own, its standard output read as it comes."""

    def __init__(self, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
        self.capsys = capsys
        self.out = ""
        self.statuses: list[int] = []
        self.thread = threading.Thread(target=lambda: self.statuses.append(cli.main(argv)))
        self.thread.start()

    def until(self, text: str) -> str:
        """The output so far, once it has ``text`` (or 60 s passed)."""
        deadline = time.monotonic() + 60
        while text not in self.out and time.monotonic() < deadline:
            self.out += self.capsys.readouterr().out
            self.thread.join(timeout=0.05)
        return self.out

    def ended(self) -> int:
        """The exit status, once ``main`` returned (within 60 s); then ``out`` is all of it."""
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        self.out += self.capsys.readouterr().out
        [status] = self.statuses
        return status


def test_the_console_script_is_main() -> None:
    [script] = entry_points(group="console_scripts", name="tasktoolkit")
    assert script.load() is cli.main


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


def test_purge_shows_progress_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
) -> None:
    spawn(session_factory, ["a", "b", "c"])
    expire_all(engine, timedelta(hours=1))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)

    status, _, err = run(capsys, "purge", "--db-url", db_url, "--batch-size", "1")

    assert status == 0
    assert "\rpurging tasks: 1 of 3 (33%)" in err


Left = dict[str, str]
"""What a reap case left in the database: ``{"operation": id}``, and ``"task"`` when it has one."""


def lost_worker(engine: Engine, session_factory: sessionmaker[Session], **spawned: Any) -> Left:
    """A running task whose worker stopped heartbeating 301 s ago (its timeout: 300 s)."""
    rid, [task_id] = spawn(session_factory, ["a"], **spawned)
    Worker(engine, host="gone").start(task_id)
    age(engine, tasks_table, heartbeat_at=timedelta(seconds=301))
    watched(engine, timedelta(seconds=301))
    return {"operation": rid, "task": task_id}


def cancel_asked_of_a_lost_worker(engine: Engine, session_factory: sessionmaker[Session]) -> Left:
    left = lost_worker(engine, session_factory)
    with session_factory() as s:
        cancel_task(s, left["task"])
        s.commit()
    return left


def pending(engine: Engine, session_factory: sessionmaker[Session], **ago: timedelta) -> Left:
    """A task pending since its spawn, with these times of it moved ``ago``."""
    rid, [task_id] = spawn(session_factory, ["a"])
    age(engine, tasks_table, **ago)
    return {"operation": rid, "task": task_id}


def unended(
    engine: Engine, session_factory: sessionmaker[Session], names: list[str], **ago: timedelta
) -> Left:
    """An operation whose request never recorded its end (tasks of ``names``), with these
    times of it moved ``ago``."""
    rid, tasks = spawn(session_factory, names, status=None)
    age(engine, operations_table, **ago)
    return {"operation": rid, **({"task": tasks[0]} if tasks else {})}


def vanished(engine: Engine, session_factory: sessionmaker[Session]) -> Left:
    """An operation whose pending task went with its resource, deleted in plain SQL."""
    rid, _ = spawn(session_factory, ["a"])
    with engine.begin() as conn:
        conn.execute(delete(Cluster.__table__))
    return {"operation": rid}


def reaped(
    tasks: str = "0 tasks",
    failed: int = 0,
    requeued: int = 0,
    cancelled: int = 0,
    not_started: int = 0,
    requests: str = "0 lost requests",
    settled: str = "",
) -> str:
    """The line ``reap`` prints."""
    return (
        f"reaped {tasks}: {failed} failed (worker_lost), {requeued} re-queued, "
        f"{cancelled} cancelled, {not_started} failed (not_started); ended {requests}"
        + (f"; settled {settled}" if settled else "")
        + "\n"
    )


TWO_MINUTES = timedelta(minutes=2)
SECOND = timedelta(seconds=1)
Seed = Callable[[Engine, sessionmaker[Session]], Left]


@pytest.mark.parametrize(
    ("seed", "options", "out", "states"),
    [
        pytest.param(
            lost_worker,
            [],
            reaped("1 task", failed=1),
            {"task": ("failed", "worker_lost"), "operation": ("failed", None)},
            id="worker_lost",
        ),
        pytest.param(
            partial(lost_worker, rules=TaskRules(max_attempts=2)),
            [],
            reaped("1 task", requeued=1),
            {"task": ("pending", None), "operation": ("running", None)},
            id="worker_lost-requeued",
        ),
        pytest.param(
            cancel_asked_of_a_lost_worker,
            [],
            reaped("1 task", cancelled=1),
            {"task": ("cancelled", None), "operation": ("cancelled", None)},
            id="worker_lost-cancel-asked",
        ),
        pytest.param(
            partial(pending, start_deadline=SECOND),
            [],
            reaped("1 task", not_started=1),
            {"task": ("failed", "not_started"), "operation": ("failed", None)},
            id="not_started",
        ),
        pytest.param(
            partial(pending, created_at=TWO_MINUTES),
            [],
            reaped(),
            {"task": ("pending", None), "operation": ("running", None)},
            id="pending-within-its-start-timeout",
        ),
        pytest.param(
            partial(pending, created_at=TWO_MINUTES),
            ["--start-timeout", "1m"],
            reaped("1 task", not_started=1),
            {"task": ("failed", "not_started"), "operation": ("failed", None)},
            id="not_started-by-start-timeout",
        ),
        pytest.param(
            partial(pending, created_at=TWO_MINUTES),
            ["--start-timeout", "5m"],
            reaped(),
            {"task": ("pending", None), "operation": ("running", None)},
            id="pending-within-start-timeout-option",
        ),
        pytest.param(
            partial(unended, names=[], request_deadline=SECOND),
            [],
            reaped(requests="1 lost request"),
            {"operation": ("failed", "request_lost")},
            id="request_lost",
        ),
        pytest.param(
            partial(unended, names=["a"], request_deadline=SECOND),
            [],
            reaped(requests="1 lost request"),
            {"task": ("pending", None), "operation": ("running", None)},
            id="request_lost-follows-its-pending-task",
        ),
        pytest.param(
            partial(unended, names=[], created_at=TWO_MINUTES),
            [],
            reaped(),
            {"operation": ("running", None)},
            id="request-within-its-timeout",
        ),
        pytest.param(
            partial(unended, names=[], created_at=TWO_MINUTES),
            ["--request-timeout", "1m"],
            reaped(requests="1 lost request"),
            {"operation": ("failed", "request_lost")},
            id="request_lost-by-request-timeout",
        ),
        pytest.param(
            partial(unended, names=[], created_at=TWO_MINUTES),
            ["--request-timeout", "5m"],
            reaped(),
            {"operation": ("running", None)},
            id="request-within-request-timeout-option",
        ),
        pytest.param(
            vanished,
            [],
            reaped(settled="1 operation"),
            {"operation": ("cancelled", None)},
            id="settled",
        ),
    ],
)
def test_reap_moves_what_is_overdue_and_says_what_it_did(
    capsys: pytest.CaptureFixture[str],
    db_url: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
    seed: Seed,
    options: list[str],
    out: str,
    states: dict[str, tuple[str, str | None]],
) -> None:
    left = seed(engine, session_factory)

    argv = ["reap", "--db-url", db_url, "--models", "tests.models", *options]
    assert run(capsys, *argv) == (0, out, "")

    assert set(left) == set(states)
    assert states == {
        kind: tuple(row_of(engine, kind, record_id)[c] for c in ("state", "error_code"))
        for kind, record_id in left.items()
    }


def row_of(engine: Engine, kind: str, record_id: str) -> Any:
    table = {"task": tasks_table, "operation": operations_table}[kind]
    with engine.connect() as conn:
        return conn.execute(select(table).where(table.c.id == record_id)).one()._mapping


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

    assert (status, err) == (cli.EXIT_OPERATION_FAILED, "")
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
    assert status == cli.EXIT_ERROR
    assert err == f"tasktoolkit: error: {rid} is still running after --timeout\n"


def test_watch_of_an_unknown_operation(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    status, out, err = run(capsys, "watch", "req-unknown", "--db-url", db_url)
    assert (status, out) == (cli.EXIT_ERROR, "")
    assert err == "tasktoolkit: error: no operation 'req-unknown'\n"


def test_db_upgrade_creates_the_tables(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    status, out, err = run(capsys, "db", "upgrade", "--db-url", url)
    assert (status, err) == (0, "")
    assert out.startswith("database is at head")
    engine = create_engine(url)
    assert inspect(engine).has_table("tasktoolkit_tasks")
    engine.dispose()


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


def assert_one_line_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], status: int, says: str
) -> None:
    """``main(argv)`` exits ``status``, printing nothing but one line of error that ``says``."""
    got, out, err = run(capsys, *argv)
    assert got == status
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("tasktoolkit")
    assert says in err


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasktoolkit.cli",
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


# -- durations -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("90s", timedelta(seconds=90), id="seconds"),
        pytest.param("15m", timedelta(minutes=15), id="minutes"),
        pytest.param("12h", timedelta(hours=12), id="hours"),
        pytest.param("7d", timedelta(days=7), id="days"),
        pytest.param("2w", timedelta(weeks=2), id="weeks"),
        pytest.param("1d12h", timedelta(days=1, hours=12), id="combined"),
        pytest.param(" 3H ", timedelta(hours=3), id="spaces-and-case"),
        pytest.param("0s", timedelta(0), id="zero"),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


NOT_A_DURATION = "is not a duration"
TOO_LONG = "is longer than 3650 days"
BAD_DURATIONS = [
    pytest.param("", NOT_A_DURATION, id="empty"),
    pytest.param("7", NOT_A_DURATION, id="no-unit"),
    pytest.param("7x", NOT_A_DURATION, id="unknown-unit"),
    pytest.param("-1d", NOT_A_DURATION, id="negative"),
    pytest.param("1.5h", NOT_A_DURATION, id="fraction"),
    pytest.param("d", NOT_A_DURATION, id="no-number"),
    pytest.param("7d later", NOT_A_DURATION, id="trailing-words"),
    pytest.param("9999w", TOO_LONG, id="absurd"),
    pytest.param("99999d", TOO_LONG, id="absurd-in-days"),
]


@pytest.mark.parametrize(("text", "says"), BAD_DURATIONS)
def test_parse_duration_refuses(text: str, says: str) -> None:
    with pytest.raises(InvalidDurationError) as raised:
        parse_duration(text)
    assert str(raised.value).startswith(f"{text!r} {says}")


@pytest.mark.parametrize(("text", "says"), BAD_DURATIONS)
def test_purge_refuses_a_bad_older_than(
    capsys: pytest.CaptureFixture[str], text: str, says: str
) -> None:
    argv = ["purge", "--db-url", "sqlite://", f"--older-than={text}"]
    assert_one_line_error(capsys, argv, cli.EXIT_USAGE, f"{text!r} {says}")


@pytest.fixture
def api(session_factory: sessionmaker[Session]) -> Iterator[str]:
    """The task endpoints served over HTTP on this test's database; their base URL."""
    mapper = routes.Mapper()
    mounted = mount(mapper, collections={"clusters": Cluster}, session_factory=session_factory)
    served = Served(Router(mapper))
    yield f"http://{served.address[0]}:{served.address[1]}"
    served.stop()
    mounted.close()


ADMIN = "X-Roles: admin"  # the operations of these tests belong to no project


def test_watch_follows_an_operation_location_over_http(
    capsys: pytest.CaptureFixture[str],
    api: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
) -> None:
    rid, _ = spawn(session_factory, ["build"])
    job = claim(engine, ["build"])
    job.progress(30, "copying")
    watch = Watch(capsys, ["watch", f"{api}/operations/{rid}", "--header", ADMIN])
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
    status, out, err = run(capsys, "watch", f"{api}/operations/{rid}", "--header", ADMIN)
    assert (status, err) == (cli.EXIT_OPERATION_FAILED, "")
    assert "the rack is full" in out


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        pytest.param(
            "/operations/req-00000000-0000-4000-8000-000000000000",
            [ADMIN],
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
    assert (status, out) == (cli.EXIT_ERROR, "")
    assert err.startswith("tasktoolkit: error: http://") and expected in err, err


def test_watch_over_http_gives_up_after_its_timeout(
    capsys: pytest.CaptureFixture[str], api: str, session_factory: sessionmaker[Session]
) -> None:
    rid, _ = spawn(session_factory, ["build"])
    url = f"{api}/operations/{rid}"
    status, _, err = run(capsys, "watch", url, "--header", ADMIN, "--timeout", "1s")
    assert status == cli.EXIT_ERROR
    assert err == f"tasktoolkit: error: {url} is still running after --timeout\n"


def test_watch_of_an_unreachable_api(capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://127.0.0.1:1/operations/req-x"
    status, _, err = run(capsys, "watch", url)
    assert status == cli.EXIT_ERROR and err.startswith(f"tasktoolkit: error: cannot reach {url}")


@pytest.mark.parametrize("header", ["no colon", "Bad Name: x", ": empty name", "X-Token: a\x01b"])
def test_watch_refuses_a_malformed_header(capsys: pytest.CaptureFixture[str], header: str) -> None:
    status, _, err = run(capsys, "watch", "http://127.0.0.1:1/operations/x", "--header", header)
    assert status == cli.EXIT_USAGE and "is not a header" in err


def test_watch_by_id_takes_no_header(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    status, _, err = run(capsys, "watch", "req-x", "--db-url", db_url, "--header", "A: b")
    assert status == cli.EXIT_ERROR and "--header is for an operation's URL" in err

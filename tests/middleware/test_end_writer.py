"""The end writer on SQLite, PostgreSQL and MariaDB: ends written off the request's thread.

Each request end lands once: in rounds while the process runs, at its exit
(``atexit``, ``SIGTERM``), in a forked child only the child's own; a crash
loses what was held, and the reaper then closes those operations.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import webtest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import Toolkit, signals
from tasktoolkit.hooks import Hook
from tasktoolkit.middleware import flush_ends
from tasktoolkit.orm import Worker, create_all, reap
from tasktoolkit.signals import OperationChange
from tests.clock import passed
from tests.middleware.apps import cluster_app
from tests.middleware.stacks import Stacks, operations_of
from tests.orm._db import operation_row

ROOT = Path(__file__).resolve().parents[2]
COUNT = 3


class Process:
    """``tests.middleware.writer_process`` on the test's database, its lines read as they come."""

    def __init__(self, mode: str, engine: Engine) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.middleware.writer_process",
                mode,
                engine.url.render_as_string(hide_password=False),
                str(COUNT),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def read_until(self, last: str) -> list[str]:
        """The lines printed up to ``last`` (not included)."""
        assert self.process.stdout is not None
        lines = []
        while (line := self.process.stdout.readline().strip()) != last:
            assert line, f"the process ended before {last!r}: {lines}"
            lines.append(line)
        return lines

    def wait(self) -> int:
        return self.process.wait(timeout=60)


@pytest.fixture
def process(engine: Engine) -> Iterator[Callable[[str], Process]]:
    started: list[Process] = []

    def start(mode: str) -> Process:
        started.append(Process(mode, engine))
        return started[-1]

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
        running.process.wait()
        for stream in (running.process.stdin, running.process.stdout):
            if stream is not None:
                stream.close()


def ended(engine: Engine, request_id: str) -> bool:
    """Whether the request's end is recorded on its operation."""
    row = operation_row(engine, request_id)
    return row["http_status"] == 201 and row["request_deadline"] is None


def test_the_ends_held_at_exit_are_written(
    engine: Engine, process: Callable[[str], Process]
) -> None:
    running = process("exit")
    ids = running.read_until("held")
    assert running.wait() == 0
    assert len(ids) == COUNT and all(ended(engine, i) for i in ids)


def test_sigterm_writes_the_held_ends_then_the_process_dies_of_it(
    engine: Engine, process: Callable[[str], Process]
) -> None:
    running = process("wait")
    ids = running.read_until("held")
    assert not any(ended(engine, i) for i in ids)  # held, not written
    running.process.send_signal(signal.SIGTERM)
    assert running.wait() == -signal.SIGTERM  # it died of it, as it would have
    assert all(ended(engine, i) for i in ids)


def test_a_crash_loses_the_held_ends_and_the_reaper_closes_them(
    engine: Engine, process: Callable[[str], Process]
) -> None:
    running = process("wait")
    ids = running.read_until("held")
    running.process.kill()
    running.wait()
    rows = [operation_row(engine, i) for i in ids]
    assert all(
        (r["state"], r["http_status"], r["tasks_pending"]) == ("running", None, 2) for r in rows
    )
    # The request timeout (10 minutes) passed: the reaper ends those requests.
    passed(engine, timedelta(minutes=11))
    result = reap(engine)
    assert sorted(result.requests) == sorted(ids)
    worker = Worker(engine, ["provision", "configure"], host="w")
    while (job := worker.claim()) is not None:
        job.succeed()
    assert all(operation_row(engine, i)["state"] == "succeeded" for i in ids)


def test_a_forked_child_writes_its_own_ends_and_never_the_parents(
    engine: Engine, process: Callable[[str], Process]
) -> None:
    running = process("fork")
    parents = running.read_until("held")
    children = [line.split()[1] for line in running.read_until("child-exited")]
    assert len(children) == COUNT and all(ended(engine, i) for i in children)
    # The parent's held ends, copied into the child, were the parent's to write.
    assert not any(ended(engine, i) for i in parents)
    assert running.process.stdin is not None
    running.process.stdin.write("go\n")
    running.process.stdin.flush()
    assert running.wait() == 0
    assert all(ended(engine, i) for i in parents)


# -- in the test's own process ---------------------------------------------------


class Seen(Hook):
    """A hook that notes the operations' changes it is told of, and on which thread."""

    def __init__(self) -> None:
        self.changes: list[tuple[OperationChange, str]] = []

    def operation_changed(self, change: OperationChange) -> None:
        self.changes.append((change, threading.current_thread().name))


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """The statements sent on ``engine``'s connections within the block (executemany once)."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.split()[0])

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_round_writes_every_end_held_in_one_statement(
    engine: Engine, stacks: Stacks, session_factory: sessionmaker[Session]
) -> None:
    stack = stacks.wsgi(cluster_app(session_factory))
    writer = operations_of(stack).ends
    app = webtest.TestApp(stack)
    release, writing = threading.Event(), threading.Event()
    original = writer._transaction

    def slow_first_round(ends: Any, read_back: bool) -> Any:
        writing.set()
        release.wait(30)  # ends arrive meanwhile: the next round takes them all
        return original(ends, read_back)

    writer._transaction = slow_first_round  # type: ignore[method-assign]
    first = app.post("/clusters", status=201).headers["X-Request-Id"]
    assert writing.wait(30)
    held = [app.post("/clusters", status=201).headers["X-Request-Id"] for _ in range(5)]
    writer._transaction = original  # type: ignore[method-assign]
    with statements(engine) as sent:
        release.set()
        assert writer.flush(30)
    assert sent.count("UPDATE") == 2  # the first round's end, then the five held: one each
    assert all(ended(engine, i) for i in [first, *held])
    assert len(writer.lags) == 6 and max(writer.lags) < 30


def test_a_finished_operation_is_announced_after_the_writers_commit(
    engine: Engine, stacks: Stacks, session_factory: sessionmaker[Session]
) -> None:
    hook = Seen()
    finished: list[OperationChange] = []

    def receive(sender: object, change: OperationChange) -> None:
        # After the commit: the row says so on another connection.
        assert operation_row(engine, change.operation_id)["state"] == change.state
        finished.append(change)

    app = stacks.test_app(cluster_app(session_factory, task_names=()), hooks=[hook])
    with signals.operation_finished.connected_to(receive):
        rid = app.post("/look", status=200).headers["X-Request-Id"]  # nothing spawned
        keyed = app.post("/clusters", "{}", headers={"Idempotency-Key": "k1"}, status=201).headers[
            "X-Request-Id"
        ]  # written before the app; ended by the writer
    assert [c.operation_id for c in finished] == [rid, keyed]
    states = [(c.operation_id, c.state) for c, _ in hook.changes]
    assert states == [
        (rid, "running"),
        (rid, "succeeded"),
        (keyed, "running"),
        (keyed, "succeeded"),
    ]
    assert hook.changes[-1][1] == "tasktoolkit-end-writer"  # off the request's thread


def test_flush_ends_writes_every_held_end(
    engine: Engine, stacks: Stacks, session_factory: sessionmaker[Session]
) -> None:
    app = webtest.TestApp(stacks.wsgi(cluster_app(session_factory)))
    ids = [app.post("/clusters", status=201).headers["X-Request-Id"] for _ in range(4)]
    assert flush_ends(30)  # what a server's worker-exit hook calls
    assert all(ended(engine, i) for i in ids)


def test_an_in_memory_sqlite_database_has_its_ends_written_by_the_closing_thread() -> None:
    # One connection per thread: a writer's thread would see an empty database of its own.
    toolkit = Toolkit("sqlite://")
    create_all(toolkit.engine)
    try:
        app = webtest.TestApp(toolkit.wsgi(cluster_app(toolkit.sessions)))
        rid = app.post("/clusters", status=201).headers["X-Request-Id"]
        assert ended(toolkit.engine, rid)  # written before the request returned
    finally:
        toolkit.close()
        toolkit.engine.dispose()

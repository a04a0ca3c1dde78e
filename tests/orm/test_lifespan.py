"""Lifespan: durations, the batched purge, and the reaper of lost workers' tasks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import Settings, orm, signals
from tasktoolkit.context import RequestContext, new_request_id, request_context
from tasktoolkit.errors import InvalidTransitionError
from tasktoolkit.orm import Operation, TaskRules, Worker, purge, reap
from tasktoolkit.orm._lifespan import _next_batch_size
from tasktoolkit.orm._operations import OperationFields, end_request, open_operation
from tasktoolkit.orm._records import operations_table, tasks_table
from tasktoolkit.orm._transitions import start_task, transition
from tasktoolkit.signals import TaskChange
from tests.clock import database_now, passed
from tests.models import Cluster
from tests.orm._db import load
from tests.threads import at_once


@pytest.fixture
def now(engine: Engine) -> datetime:
    """The database's time as the test starts."""
    return database_now(engine)


# -- purge ---------------------------------------------------------------------


Finished = Callable[..., str]


@pytest.fixture
def finished(session_factory: sessionmaker[Session]) -> Finished:
    """``finished(expires_at, request_id=None, state="succeeded")``: a finished task's id.

    ``expires_at`` is set after the fact (``None`` keeps it); ``state`` ``pending``
    leaves the task pending.
    """

    def make(
        expires_at: datetime | None, request_id: str | None = None, state: str = "succeeded"
    ) -> str:
        with session_factory() as s:
            cluster = Cluster(name="c")
            s.add(cluster)
            s.flush()
            ctx = (
                None if request_id is None else RequestContext(request_id, operation_id=request_id)
            )
            with request_context(ctx):
                task = cluster.spawn_task("build")
            if state != "pending":
                start_task(s, task.id, host="h")
                failure = {"error_code": "x", "error_message": "y"}
                transition(s, task.id, state, values=failure if state == "failed" else None)
                s.execute(
                    update(tasks_table)
                    .where(tasks_table.c.id == task.id)
                    .values(expires_at=expires_at)
                )
            s.commit()
            return task.id

    return make


def operation(session: Session, expires_at: datetime | None, state: str = "succeeded") -> str:
    rid = new_request_id()
    open_operation(session.connection(), OperationFields(rid, "POST", "/clusters"))
    session.execute(
        update(operations_table)
        .where(operations_table.c.id == rid)
        .values(state=state, http_status=202, expires_at=expires_at)
    )
    session.commit()
    return rid


def task_ids(session: Session) -> set[str]:
    session.commit()
    return set(session.execute(select(tasks_table.c.id)).scalars())


def operation_ids(session: Session) -> set[str]:
    session.commit()
    return set(session.execute(select(operations_table.c.id)).scalars())


def test_purge_deletes_expired_records_and_nothing_else(
    now: datetime, engine: Engine, session: Session, finished: Finished
) -> None:
    gone = {finished(now - timedelta(hours=2)), finished(now - timedelta(seconds=1))}
    kept = {
        finished(now + timedelta(hours=1)),
        finished(None),
        finished(None, state="pending"),
        finished(now + timedelta(seconds=5), state="failed"),
    }
    old_op = operation(session, now - timedelta(minutes=1))
    live_ops = {operation(session, now + timedelta(minutes=1)), operation(session, None)}

    result = purge(engine)

    assert (result.tasks, result.operations, result.dry_run) == (2, 1, False)
    assert task_ids(session) == kept
    assert operation_ids(session) == live_ops
    assert old_op not in operation_ids(session) and not gone & task_ids(session)


def test_purge_older_than_keeps_the_recently_expired(
    now: datetime, engine: Engine, session: Session, finished: Finished
) -> None:
    finished(now - timedelta(hours=3))
    recent = finished(now - timedelta(minutes=10))

    result = purge(engine, older_than=timedelta(hours=1))

    assert result.tasks == 1
    assert task_ids(session) == {recent}


def test_dry_run_counts_and_deletes_nothing(
    now: datetime, engine: Engine, session: Session, finished: Finished
) -> None:
    ids = {finished(now - timedelta(hours=1)) for _ in range(3)}
    operation(session, now - timedelta(hours=1))

    result = purge(engine, dry_run=True)

    assert (result.tasks, result.operations, result.dry_run) == (3, 1, True)
    assert task_ids(session) == ids
    assert purge(engine, dry_run=True).tasks == 3


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every statement sent on ``engine`` while the test runs, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_purge_works_in_batches_of_ids(
    now: datetime,
    engine: Engine,
    session: Session,
    finished: Finished,
    statements: list[tuple[str, Any]],
) -> None:
    for _ in range(5):
        finished(now - timedelta(hours=1))
    progress: list[tuple[str, int]] = []
    statements.clear()

    result = purge(
        engine, settings=Settings(batch_size=2), progress=lambda k, n: progress.append((k, n))
    )

    assert result.tasks == 5
    done = [n for kind, n in progress if kind == "tasks"]
    # At most 2 a batch (fewer if a batch was slow: the size adapts), up to all 5.
    assert done[-1] == 5 and len(done) >= 3
    assert all(0 <= b - a <= 2 for a, b in zip([0, *done], done, strict=False))
    deletes = [s for s, _ in statements if s.lstrip().upper().startswith("DELETE")]
    assert len(deletes) == len(done) - (done[-1] == done[-2])
    # Every DELETE names its rows by id (at most a batch of them), never a range.
    assert all(" IN (" in s and "expires_at" in s for s in deletes)
    selects = [s for s, _ in statements if "ORDER BY" in s and "LIMIT" in s.upper()]
    assert len(selects) >= 3


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"older_than": timedelta(seconds=-1)}, id="older-than-negative"),
        pytest.param({"older_than": timedelta(days=40000)}, id="older-than-absurd"),
        pytest.param({"older_than": 3600}, id="older-than-int"),
    ],
)
def test_purge_refuses_bad_options_and_deletes_nothing(
    now: datetime, engine: Engine, session: Session, finished: Finished, options: dict[str, Any]
) -> None:
    ids = {finished(now - timedelta(hours=1))}
    with pytest.raises(ValueError):
        purge(engine, **options)
    assert task_ids(session) == ids


def test_purged_tasks_leave_their_operation_counts(
    engine: Engine, session: Session, session_factory: sessionmaker[Session]
) -> None:
    rid = new_request_id()
    with session_factory() as s:
        open_operation(s.connection(), OperationFields(rid, "POST", "/c"), ttl=timedelta(days=2))
        cluster = Cluster(name="c")
        s.add(cluster)
        s.flush()
        with request_context(RequestContext(rid, operation_id=rid)):
            cluster.spawn_tasks(["a", "b"])
        end_request(s.connection(), rid, 202)
        s.commit()
    worker = Worker(engine, ["a", "b"], host="w")
    for _ in range(2):
        job = worker.claim()
        assert job is not None
        job.succeed()
    passed(engine, timedelta(hours=25))

    assert purge(engine).tasks == 2

    session.commit()
    op = session.get(Operation, rid, populate_existing=True)
    assert op is not None and op.state == "succeeded"
    assert op.task_counts == {
        "pending": 0,
        "running": 0,
        "succeeded": 2,
        "failed": 0,
        "cancelled": 0,
    }


def expired_tasks(engine: Engine, count: int) -> None:
    """``count`` expired finished tasks, inserted in one statement."""
    now = database_now(engine)
    rows = [
        {
            "id": f"00000000-0000-4000-8000-{n:012d}",
            "resource_type": "cluster",
            "resource_id": "gone",
            "name": "build",
            "state": "succeeded",
            "created_at": now,
            "updated_at": now,
            "finished_at": now,
            "expires_at": now - timedelta(seconds=1 + n),
        }
        for n in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(tasks_table.insert(), rows)


def test_purge_starts_with_a_batch_of_at_most_100_rows(
    now: datetime, engine: Engine, session: Session
) -> None:
    # The database's speed is not known yet: a thousand rows at once on a cold
    # MariaDB with its default buffer pool took 380 ms.
    expired_tasks(engine, 150)
    progress: list[tuple[str, int]] = []

    result = purge(
        engine, settings=Settings(batch_size=1000), progress=lambda k, n: progress.append((k, n))
    )

    assert result.tasks == 150
    assert progress[0] == ("tasks", 100)


@pytest.mark.parametrize(
    ("size", "slowest", "limit", "expected"),
    [
        pytest.param(1000, 0.4, 1000, 125, id="slow-shrinks-to-what-meets-the-target"),
        pytest.param(100, 0.06, 1000, 50, id="just-over-halves-at-least"),
        pytest.param(12, 1.0, 1000, 10, id="never-below-10"),
        pytest.param(5, 1.0, 5, 5, id="never-below-a-size-already-under-10"),
        pytest.param(100, 0.05, 1000, 100, id="on-target-stays"),
        pytest.param(100, 0.03, 1000, 100, id="over-half-target-stays"),
        pytest.param(100, 0.01, 1000, 150, id="quick-grows-by-half"),
        pytest.param(800, 0.001, 1000, 1000, id="grows-up-to-the-limit"),
        pytest.param(1, 0.0, 5, 2, id="grows-by-one-at-least"),
        pytest.param(2, 0.0, 2, 2, id="limit-kept"),
    ],
)
def test_next_batch_size(size: int, slowest: float, limit: int, expected: int) -> None:
    assert _next_batch_size(size, slowest, limit) == expected


#: Statements that hold the whole tasks table from every other session, and release it.
_TABLE_LOCK = {
    "postgresql": ("LOCK TABLE tasktoolkit_tasks IN ACCESS EXCLUSIVE MODE", "ROLLBACK"),
    "mariadb": ("LOCK TABLES tasktoolkit_tasks WRITE", "UNLOCK TABLES"),
}


@contextmanager
def tasks_table_held(engine: Engine, backend: str, *, at_most: float) -> Iterator[None]:
    """The tasks table locked by another session for the block (``at_most`` seconds, so
    that a purge that waits for it still ends, and fails its test)."""
    take, release = _TABLE_LOCK[backend]
    with engine.connect() as holder:
        holder.exec_driver_sql(take)
        guard = threading.Lock()

        def let_go() -> None:
            with guard:
                if not holder.closed:
                    holder.exec_driver_sql(release)
                    holder.close()

        timer = threading.Timer(at_most, let_go)
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            let_go()


def test_purge_gives_up_within_its_deadline_on_a_table_it_cannot_read(
    backend: str, now: datetime, engine: Engine, finished: Finished
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no client-side deadline: its waits end at its own timeout")
    gone = finished(now - timedelta(hours=1))
    settings = Settings(deadline="500ms")
    with tasks_table_held(engine, backend, at_most=10):
        started = time.monotonic()
        with pytest.raises(OperationalError):
            purge(engine, settings=settings)
        took = time.monotonic() - started
    # One attempt, then once more on a fresh connection: two deadlines, and a margin.
    assert took < 2 * 0.5 + 1.5, took
    result = purge(engine, settings=settings)  # and it works again
    assert result.tasks == 1, gone


def test_two_purges_at_once_delete_each_row_once(
    now: datetime, engine: Engine, session: Session, session_factory: sessionmaker[Session]
) -> None:
    expired_tasks(engine, 600)
    kept = {_live_task(session_factory)}

    def run() -> orm.PurgeResult:
        return purge(engine, settings=Settings(batch_size=25))

    results = at_once(run, run)
    assert sum(r.tasks for r in results) == 600
    assert task_ids(session) == kept


def _live_task(session_factory: sessionmaker[Session]) -> str:
    with session_factory() as s:
        cluster = Cluster(name="live")
        s.add(cluster)
        s.flush()
        task = cluster.spawn_task("build")
        s.commit()
        return task.id


# -- reaper --------------------------------------------------------------------


@pytest.fixture
def running(session_factory: sessionmaker[Session], engine: Engine) -> Callable[..., str]:
    """``running(max_attempts=1, timeout=300, request_id=None)``: a task claimed by ``lost``."""

    def make(max_attempts: int = 1, timeout: int = 300, request_id: str | None = None) -> str:
        with session_factory() as s:
            cluster = Cluster(name="c")
            s.add(cluster)
            s.flush()
            if request_id is not None:
                open_operation(s.connection(), OperationFields(request_id, "POST", "/c"))
            ctx = (
                None if request_id is None else RequestContext(request_id, operation_id=request_id)
            )
            with request_context(ctx):
                rules = TaskRules(
                    max_attempts=max_attempts, heartbeat_timeout=timedelta(seconds=timeout)
                )
                task = cluster.spawn_task("build", rules=rules)
            if request_id is not None:
                end_request(s.connection(), request_id, 202)
            s.commit()
        job = Worker(engine, host="lost").start(task.id)
        return job.id

    return make


def test_reaper_leaves_tasks_that_heartbeat(engine: Engine, running: Callable[..., str]) -> None:
    running()
    assert reap(engine).total == 0
    passed(engine, timedelta(seconds=290))
    assert reap(engine).total == 0


def test_reaper_fails_a_lost_task_and_its_operation_follows(
    engine: Engine, session: Session, running: Callable[..., str]
) -> None:
    rid = new_request_id()
    task_id = running(request_id=rid)
    passed(engine, timedelta(seconds=301))

    result = reap(engine)

    assert result.failed == (task_id,) and result.total == 1
    task = load(session, task_id)
    assert task.state == "failed"
    assert task.error == {
        "code": "worker_lost",
        "message": "worker lost sent no heartbeat for 300 s",
    }
    assert task.expires_at == task.finished_at + timedelta(hours=24)
    op = session.get(Operation, rid, populate_existing=True)
    assert op is not None and op.state == "failed"
    assert (op.tasks_running, op.tasks_failed) == (0, 1)


def test_each_task_is_judged_by_its_own_timeout(
    engine: Engine, running: Callable[..., str]
) -> None:
    short = running(timeout=60)
    running(timeout=300)
    passed(engine, timedelta(seconds=120))
    assert reap(engine).failed == (short,)


def test_reaper_requeues_while_attempts_remain(
    engine: Engine, session: Session, running: Callable[..., str]
) -> None:
    rid = new_request_id()
    task_id = running(max_attempts=2, request_id=rid)

    passed(engine, timedelta(seconds=301))
    result = reap(engine)

    assert result.requeued == (task_id,)
    task = load(session, task_id)
    assert (task.state, task.host, task.attempts, task.started_at) == ("pending", None, 1, None)
    op = session.get(Operation, rid, populate_existing=True)
    assert op is not None and op.state == "running"
    assert (op.tasks_pending, op.tasks_running) == (1, 0)

    # The second (and last) attempt is lost too: now it fails. (Started
    # explicitly: a claim would wait for the backoff, in the future here.)
    second = Worker(engine, host="second").start(task_id)
    assert second is not None and (second.id, second.attempts) == (task_id, 2)
    passed(engine, timedelta(seconds=301))
    assert reap(engine).failed == (task_id,)
    assert load(session, task_id).error_code == "worker_lost"


def test_reaper_cancels_a_lost_task_whose_cancellation_was_asked(
    engine: Engine, session: Session, running: Callable[..., str]
) -> None:
    task_id = running(max_attempts=3)
    orm.cancel_task(session, task_id)
    session.commit()

    passed(engine, timedelta(seconds=301))
    assert reap(engine).cancelled == (task_id,)
    assert load(session, task_id).state == "cancelled"


def test_requeue_is_the_reapers_alone(session: Session, running: Callable[..., str]) -> None:
    task_id = running(max_attempts=3)
    with pytest.raises(InvalidTransitionError):
        transition(session, task_id, "pending")
    assert load(session, task_id).state == "running"


def test_reaper_moves_are_signalled_after_commit(
    engine: Engine, running: Callable[..., str]
) -> None:
    task_id = running(max_attempts=2)
    heard: list[TaskChange] = []

    def receive(sender: str, change: TaskChange) -> None:
        heard.append(change)

    passed(engine, timedelta(seconds=301))
    with signals.task_state_changed.connected_to(receive):
        reap(engine)
    assert [(c.task_id, c.old_state, c.new_state) for c in heard] == [
        (task_id, "running", "pending")
    ]


def test_reaper_works_in_batches(
    engine: Engine, session: Session, running: Callable[..., str]
) -> None:
    ids = {running() for _ in range(5)}
    passed(engine, timedelta(seconds=301))
    result = reap(engine, settings=Settings(batch_size=2))
    assert set(result.failed) == ids
    session.commit()
    states = session.execute(select(tasks_table.c.state).distinct()).scalars().all()
    assert states == ["failed"]

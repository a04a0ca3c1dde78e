"""What a queue bridge's sweeper publishes, marks and reads, on the database's clock.

No broker here (``tests/celery`` runs the real ones): the sweeper's search
(:func:`to_publish`) over rows whose times are set relative to the
database's own ``now``, on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.errors import InvalidTaskRulesError
from tasktoolkit.orm import TaskRules, Worker, cancel_task
from tasktoolkit.orm._clock import read_now as database_now
from tasktoolkit.orm._publishing import (
    Recorded,
    backoffs,
    mark_published,
    recorded,
    to_publish,
)
from tasktoolkit.orm._records import tasks_table
from tasktoolkit.orm._types import utcnow
from tests.models import Cluster
from tests.orm._db import task_row

REDELIVER = timedelta(seconds=5)
SWEEP_AFTER = timedelta(seconds=5)
Spawn = Callable[..., str]


@pytest.fixture
def spawn(session_factory: sessionmaker[Session], engine: Engine) -> Spawn:
    """``spawn(name, **columns)``: one pending task (its ``redeliver_after`` 5 s) whose
    columns are then set, each a value or a ``timedelta`` from the database's now."""

    def make(name: str = "wire", **columns: Any) -> str:
        with session_factory() as session:
            cluster = Cluster(name="c")
            session.add(cluster)
            session.flush()
            (task,) = cluster.spawn_tasks([name], rules=TaskRules(redeliver_after=REDELIVER))
            session.commit()
        with engine.begin() as connection:
            now = database_now(connection)
            values = {
                k: now + v if isinstance(v, timedelta) else v for k, v in columns.items()
            }
            if values:
                connection.execute(
                    update(tasks_table).where(tasks_table.c.id == task.id).values(**values)
                )
        return task.id

    return make


def found(engine: Engine, names: list[str] | None = None) -> dict[str, bool]:
    """What a sweep finds now: task id -> whether it is published again."""
    with Session(engine) as session, session.begin():
        rows = to_publish(session, names or ["wire"], sweep_after=SWEEP_AFTER, limit=100)
    return {row.task_id: row.again for row in rows}


AGO, AHEAD = timedelta(seconds=-1), timedelta(seconds=1)


@pytest.mark.parametrize(
    ("columns", "swept"),
    [
        pytest.param({"created_at": 10 * AGO}, False, id="never-published-long-enough"),
        pytest.param({"created_at": 2 * AGO}, None, id="never-published-just-spawned"),
        pytest.param(
            {"created_at": 60 * AGO, "not_before": 10 * AHEAD}, None, id="never-published-backoff"
        ),
        pytest.param(
            {"created_at": 60 * AGO, "not_before": 10 * AGO}, False, id="never-published-retried"
        ),
        pytest.param({"published_at": 10 * AGO}, True, id="published-not-started-in-time"),
        pytest.param({"published_at": 2 * AGO}, None, id="published-just-now"),
        pytest.param(
            {"published_at": 60 * AGO, "not_before": 2 * AGO}, None, id="published-backoff-ended"
        ),
        pytest.param(
            {"published_at": 60 * AGO, "not_before": 10 * AGO}, True, id="published-backoff-old"
        ),
        pytest.param(
            {"published_at": 60 * AGO, "state": "running", "host": "w"}, None, id="started"
        ),
        pytest.param({"published_at": 60 * AGO, "state": "cancelled"}, None, id="cancelled"),
        pytest.param(
            {"published_at": 60 * AGO, "redeliver_after": 120}, None, id="its-own-longer-bound"
        ),
    ],
)
def test_what_a_sweep_publishes(
    engine: Engine, spawn: Spawn, columns: dict[str, Any], swept: bool | None
) -> None:
    task_id = spawn(**columns)
    expected = {} if swept is None else {task_id: swept}
    assert found(engine) == expected


def test_a_sweep_finds_its_names_only(engine: Engine, spawn: Spawn) -> None:
    wire, boot = spawn("wire", published_at=60 * AGO), spawn("boot", published_at=60 * AGO)
    assert found(engine, ["wire"]) == {wire: True}
    assert found(engine, ["boot", "scan"]) == {boot: True}


def test_a_sweep_takes_the_unpublished_first_then_the_oldest_publish(
    engine: Engine, spawn: Spawn
) -> None:
    late = spawn(published_at=10 * AGO)
    early = spawn(published_at=60 * AGO)
    lost = spawn(created_at=60 * AGO)
    with Session(engine) as session, session.begin():
        rows = to_publish(session, ["wire"], sweep_after=SWEEP_AFTER, limit=2)
    assert [(r.task_id, r.again) for r in rows] == [(lost, False), (early, True)]
    assert late not in {r.task_id for r in rows}


@pytest.mark.parametrize(
    ("again", "moved"),
    [
        pytest.param(False, False, id="after-a-commit-a-mark-stays"),
        pytest.param(True, True, id="a-sweep-marks-afresh"),
    ],
)
def test_marking_a_published_task(engine: Engine, spawn: Spawn, again: bool, moved: bool) -> None:
    task_id = spawn(published_at=60 * AGO)
    before = task_row(engine, task_id)["published_at"]  # type: ignore[index]
    with engine.begin() as connection:
        mark_published(connection, [task_id], again=again)
    after = task_row(engine, task_id)["published_at"]  # type: ignore[index]
    assert (after != before) is moved
    assert found(engine) == ({} if moved else {task_id: True})  # marked afresh: not due yet


def test_a_mark_is_the_database_time_and_skips_a_started_task(
    engine: Engine, spawn: Spawn
) -> None:
    pending, started = spawn(), spawn(state="running", host="w")
    with engine.begin() as connection:
        mark_published(connection, [pending, started])
        now = database_now(connection)
    marked = task_row(engine, pending)["published_at"]  # type: ignore[index]
    assert marked is not None and abs(marked - now) < timedelta(seconds=5)
    assert task_row(engine, started)["published_at"] is None  # type: ignore[index]


def test_the_database_time_is_utc(engine: Engine) -> None:
    with engine.connect() as connection:
        now = database_now(connection)
    assert now.utcoffset() == timedelta(0)
    assert abs(now - utcnow()) < timedelta(seconds=60)  # one machine: the same clock


@pytest.mark.parametrize(
    ("rules", "seconds"),
    [
        pytest.param(TaskRules(), 900, id="default-three-heartbeat-timeouts"),
        pytest.param(TaskRules(heartbeat_timeout=timedelta(seconds=10)), 30, id="from-heartbeats"),
        pytest.param(TaskRules(redeliver_after=timedelta(seconds=7)), 7, id="its-own"),
    ],
)
def test_a_task_carries_its_redelivery_bound(
    session_factory: sessionmaker[Session], engine: Engine, rules: TaskRules, seconds: int
) -> None:
    with session_factory() as session:
        cluster = Cluster(name="c")
        session.add(cluster)
        session.flush()
        (task,) = cluster.spawn_tasks(["wire"], rules=rules)
        session.commit()
    assert task_row(engine, task.id)["redeliver_after"] == seconds  # type: ignore[index]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(timedelta(0), id="zero"),
        pytest.param(timedelta(milliseconds=500), id="under-a-second"),
        pytest.param(30, id="not-a-timedelta"),
    ],
)
def test_a_bad_redelivery_bound_is_refused(value: object) -> None:
    with pytest.raises(InvalidTaskRulesError, match="redeliver_after"):
        TaskRules(redeliver_after=value)  # type: ignore[arg-type]


def test_the_backoff_left_is_read_on_the_database_clock(engine: Engine, spawn: Spawn) -> None:
    waiting, now = spawn(not_before=30 * AHEAD), spawn()
    with engine.connect() as connection:
        left = backoffs(connection, [waiting, now])
    assert set(left) == {waiting} and 20 < left[waiting] <= 30


def test_how_each_attempt_ended_is_read_from_its_own_row(
    session_factory: sessionmaker[Session], engine: Engine
) -> None:
    rules = TaskRules(max_attempts=2, backoff=timedelta(seconds=30), jitter=0)
    with session_factory() as session:
        cluster = Cluster(name="c")
        session.add(cluster)
        session.flush()
        flaky, doomed, stopped, held = (
            t.id for t in cluster.spawn_tasks(["flaky", "doomed", "stopped", "held"], rules=rules)
        )
        session.commit()
    worker = Worker(engine, ["flaky", "doomed", "stopped", "held"])
    jobs = {job.id: job for job in worker.claim_many(4)}
    jobs[flaky].fail("flaky", "try again", retry=True)
    jobs[doomed].fail("doomed", "for good")  # not retryable: final
    with session_factory() as session:
        cancel_task(session, stopped)
        session.commit()
    jobs[stopped].acknowledge_cancel()

    def read(task_id: str, attempt: int) -> Recorded | None:
        with engine.connect() as connection:
            return recorded(connection, task_id, attempt)

    retry = read(flaky, 1)
    assert retry is not None and retry.retry_in is not None and 20 < retry.retry_in <= 30
    assert retry == Recorded("pending", "flaky", "try again", retry_in=retry.retry_in)
    assert read(doomed, 1) == Recorded("failed", "doomed", "for good")
    assert read(stopped, 1) == Recorded("cancelled")
    assert read(held, 1) is None  # still running: its end is not recorded
    assert read("00000000-0000-4000-8000-000000000000", 1) is None
    # The second attempt runs and succeeds: the first stays a retry, whenever it is read.
    with engine.begin() as connection:
        connection.execute(
            update(tasks_table).where(tasks_table.c.id == flaky).values(not_before=None)
        )
    second = worker.claim(["flaky"])
    assert second is not None and second.attempts == 2
    second.succeed(result={"ok": True})
    worker.close()
    assert read(flaky, 1) == Recorded("pending", "flaky", "try again", retry_in=0.0)
    assert read(flaky, 2) == Recorded("succeeded", result={"ok": True})

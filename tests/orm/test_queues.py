"""Routing and waking: a task's queue, workers claiming by queue, idle workers woken.

On PostgreSQL an idle worker sleeps on the process's one ``LISTEN``
connection and is woken by the ``NOTIFY`` of the spawning transaction; on
SQLite and MariaDB it polls with backoff.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import orm
from tasktoolkit.errors import InvalidQueueError
from tasktoolkit.orm import Job, Worker
from tasktoolkit.orm._listening import Listener, waiter_for
from tasktoolkit.orm._records import tasks_table
from tests.models import Cluster
from tests.orm._db import task_row

Spawn = Callable[..., list[str]]


@pytest.fixture
def spawn(session_factory: sessionmaker[Session]) -> Spawn:
    """``spawn(names, **options)``: a cluster with one pending task per name; their ids."""

    def make(names: list[str], **options: Any) -> list[str]:
        with session_factory() as s:
            cluster = Cluster(name="c")
            s.add(cluster)
            s.flush()
            ids = [t.id for t in cluster.spawn_tasks(names, **options)]
            s.commit()
            return ids

    return make


@pytest.fixture
def make_worker(engine: Engine) -> Iterator[Callable[..., Worker]]:
    """``make_worker(names, **options)``: a worker on the engine, closed after the test."""
    made: list[Worker] = []

    def make(names: list[str], **options: Any) -> Worker:
        made.append(Worker(engine, names, **options))
        return made[-1]

    yield make
    for worker in made:
        worker.close()


def test_a_task_keeps_the_queue_it_was_spawned_with(engine: Engine, spawn: Spawn) -> None:
    routed, default = spawn(["build"], queue="host-1.example.org") + spawn(["build"])
    assert task_row(engine, routed)["queue"] == "host-1.example.org"  # type: ignore[index]
    assert task_row(engine, default)["queue"] is None  # type: ignore[index]


@pytest.mark.parametrize(
    "queue",
    [
        pytest.param("", id="empty"),
        pytest.param("host 1", id="space"),
        pytest.param("host\t1", id="tab"),
        pytest.param("h" * 256, id="256-characters"),
        pytest.param("hôte", id="not-ascii"),
        pytest.param(7, id="not-text"),
    ],
)
def test_a_bad_queue_is_refused_at_spawn_and_nothing_written(
    engine: Engine, spawn: Spawn, queue: object
) -> None:
    with pytest.raises(InvalidQueueError, match="queue name"):
        spawn(["build"], queue=queue)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM tasktoolkit_tasks").scalar() == 0


def test_the_longest_queue_name_is_kept(engine: Engine, spawn: Spawn) -> None:
    (task_id,) = spawn(["build"], queue="q" * 255)
    assert task_row(engine, task_id)["queue"] == "q" * 255  # type: ignore[index]


def test_workers_claim_only_from_their_queues(
    spawn: Spawn, make_worker: Callable[..., Worker]
) -> None:
    (on_a,) = spawn(["build"], queue="host-a")
    (on_b,) = spawn(["build"], queue="host-b")
    (default,) = spawn(["build"])
    plain = make_worker(["build"])  # the default queue only
    agent_a = make_worker(["build"], queues=["host-a"])
    both = make_worker(["build"], queues=[None, "host-b"])
    assert _claimed(agent_a) == [on_a]
    assert _claimed(plain) == [default]
    assert _claimed(both) == [on_b]


def _claimed(worker: Worker) -> list[str]:
    ids = []
    while (job := worker.claim()) is not None:
        ids.append(job.id)
        job.succeed()
    return ids


@pytest.mark.parametrize(
    "queues",
    [pytest.param([], id="none"), pytest.param(["a b"], id="bad-name")],
)
def test_a_worker_needs_good_queues(engine: Engine, queues: list[str]) -> None:
    with pytest.raises(InvalidQueueError):
        Worker(engine, ["build"], queues=queues)


def test_an_idle_worker_is_woken_by_a_spawn(
    backend: str, engine: Engine, spawn: Spawn, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(["build"], queues=["host-a"])
    claimed: list[Job | None] = []
    waiting = threading.Thread(target=lambda: claimed.append(worker.claim(wait=30)))
    waiting.start()
    _until_subscribed(backend, worker)
    spawned = time.monotonic()
    (task_id,) = spawn(["build"], queue="host-a")
    waiting.join(timeout=30)
    woken = time.monotonic() - spawned
    assert claimed and claimed[0] is not None and claimed[0].id == task_id
    claimed[0].succeed()
    # Pushed on PostgreSQL; polled with a pause of at most 1 s elsewhere.
    assert woken < (0.5 if backend == "postgresql" else 2.0), woken


def test_an_idle_worker_gives_up_when_its_wait_is_over(
    backend: str, spawn: Spawn, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(["build"], queues=["host-a"])
    spawn(["build"], queue="host-b")  # a NOTIFY on another queue wakes nobody here
    started = time.monotonic()
    assert worker.claim(wait=0.3) is None
    assert 0.3 <= time.monotonic() - started < 3


def test_an_idle_worker_sends_no_statement_while_woken_by_postgresql(
    backend: str, engine: Engine, make_worker: Callable[..., Worker]
) -> None:
    if backend != "postgresql":
        pytest.skip("only PostgreSQL pushes; elsewhere an idle worker polls")
    worker = make_worker(["build"])
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    worker.claim(wait=0.1)  # the pool's connection made, and the listener's
    listener = worker._waiting
    assert isinstance(listener, Listener)
    deadline = time.monotonic() + 10
    while not listener.healthy and time.monotonic() < deadline:
        time.sleep(0.01)
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert worker.claim(wait=2) is None
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 1, statements  # one look, then asleep until the wait ends


def test_one_listener_per_engine_and_process(backend: str, engine: Engine) -> None:
    if backend != "postgresql":
        pytest.skip("only PostgreSQL listens")
    first, second = waiter_for(engine), waiter_for(engine)
    try:
        assert isinstance(first, Listener) and first is second
    finally:
        first.close()
    assert first.users == 1 and first._thread.is_alive()  # the other user still listens
    second.close()
    first._thread.join(timeout=10)
    assert not first._thread.is_alive()
    third = waiter_for(engine)  # a new one once the last user let go
    try:
        assert third is not first
    finally:
        third.close()


def _until_subscribed(backend: str, worker: Worker) -> None:
    """Wait until ``worker`` sleeps on a pushing listener (PostgreSQL), or a moment."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = worker._waiting
        if backend != "postgresql" and waiting is not None:
            return
        if isinstance(waiting, Listener) and waiting.healthy:
            with waiting._lock:
                if waiting._waiting:
                    return
        time.sleep(0.01)
    raise AssertionError("the worker never waited")


@pytest.mark.parametrize("count", [1, 2, 5])
def test_claim_many_starts_at_most_count_oldest_first(
    engine: Engine, spawn: Spawn, make_worker: Callable[..., Worker], count: int
) -> None:
    ids = spawn(["build"] * 4)
    worker = make_worker(["build"])
    jobs = worker.claim_many(count)
    assert [j.id for j in jobs] == ids[:count]
    with engine.connect() as conn:
        running = conn.exec_driver_sql(
            "SELECT count(*) FROM tasktoolkit_tasks WHERE state = 'running'"
        ).scalar()
    assert running == min(count, 4)
    for job in jobs:
        job.succeed()
    assert len(worker.claim_many(count)) == min(count, max(0, 4 - count))


#: The queues of tasks spawned one after another: a worker over the first three takes
#: them oldest first across its queues, never ``other``'s.
_SPREAD = ["b", None, "a", "other", "b", "a", None, "other", "a"]


@pytest.mark.parametrize("count", [1, 2, 4, 10])
def test_a_claim_over_several_queues_takes_the_oldest_first(
    engine: Engine, spawn: Spawn, make_worker: Callable[..., Worker], count: int
) -> None:
    ids = [spawn(["build"], queue=queue)[0] for queue in _SPREAD]
    with engine.begin() as conn:  # one second apart: the order does not hang on the clock
        for n, task_id in enumerate(ids):
            conn.execute(
                update(tasks_table)
                .where(tasks_table.c.id == task_id)
                .values(created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n))
            )
    served = [i for i, queue in zip(ids, _SPREAD, strict=True) if queue != "other"]
    worker = make_worker(["build"], queues=[None, "a", "b"])
    claimed: list[str] = []
    while jobs := worker.claim_many(count):
        assert len(jobs) == min(count, len(served) - len(claimed))
        claimed += [job.id for job in jobs]
    assert claimed == served


def test_a_claimed_job_finishes_from_its_snapshot_and_a_stale_one_is_read_again(
    engine: Engine, spawn: Spawn, make_worker: Callable[..., Worker], session: Session
) -> None:
    (task_id,) = spawn(["build"])
    job = make_worker(["build"]).claim()
    assert job is not None
    orm.cancel_task(session, task_id)  # since the claim: the snapshot is stale
    session.commit()
    job.fail("boom", "it broke")
    row = task_row(engine, task_id)
    assert (row["state"], row["error_code"], row["cancel_requested"]) == ("failed", "boom", True)  # type: ignore[index]


def test_a_job_finishes_without_reading_its_task_first(
    engine: Engine, spawn: Spawn, make_worker: Callable[..., Worker]
) -> None:
    spawn(["build"])
    job = make_worker(["build"]).claim()
    assert job is not None
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        job.succeed()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    reads = [
        s for s in statements if s.lstrip().upper().startswith("SELECT tasktoolkit_tasks".upper())
    ]
    assert reads == [], statements


def test_a_stale_snapshot_never_retries_a_task_whose_cancel_was_asked(
    engine: Engine, spawn: Spawn, make_worker: Callable[..., Worker], session: Session
) -> None:
    (task_id,) = spawn(["build"], rules=orm.TaskRules(max_attempts=3))
    job = make_worker(["build"]).claim()
    assert job is not None
    orm.cancel_task(session, task_id)  # after the claim: the job's snapshot says no cancel
    session.commit()
    job.fail("boom", "it broke", retry=True)
    row = task_row(engine, task_id)
    assert (row["state"], row["attempts"]) == ("failed", 1)  # type: ignore[index]


def test_stop_ends_a_wait_for_work(engine: Engine, make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(["build"])
    claimed: list[Job | None] = []
    waiting = threading.Thread(target=lambda: claimed.append(worker.claim(wait=60)))
    started = time.monotonic()
    waiting.start()
    worker.stop(grace=0)
    waiting.join(timeout=10)
    assert claimed == [None] and time.monotonic() - started < 5


def test_a_task_view_shows_its_queue(spawn: Spawn, session: Session) -> None:
    from tasktoolkit.views import task_view

    (routed,) = spawn(["build"], queue="host-1")
    assert task_view(session.get(orm.Task, routed), admin=False)["queue"] == "host-1"

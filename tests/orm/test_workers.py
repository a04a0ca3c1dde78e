"""The worker API: claims, heartbeats, progress, held-only finishes, the Job block."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import Settings, orm
from tasktoolkit.context import RequestContext, new_request_id, request_context
from tasktoolkit.errors import (
    InvalidProgressError,
    InvalidTransitionError,
    TaskCancelRequested,
    TaskFailure,
    TaskNotFoundError,
    TaskNotHeldError,
)
from tasktoolkit.orm import Job, Worker
from tasktoolkit.orm._engine import supports_skip_locked
from tasktoolkit.orm._operations import (
    CHANGES_CHANNEL,
    OperationFields,
    end_request,
    open_operation,
)
from tasktoolkit.orm._records import attempts_table, tasks_table
from tasktoolkit.orm._transitions import (
    acknowledge_cancel,
    fail_task,
    report_progress,
    succeed_task,
)
from tasktoolkit.orm._workers import claim_task, heartbeat
from tests.clock import age, watched
from tests.models import Cluster
from tests.orm._db import load, load_operation
from tests.proxy import TcpProxy

Spawn = Callable[..., list[str]]
Claimed = Callable[..., tuple[str, Job]]


@pytest.fixture
def spawn(session_factory: sessionmaker[Session]) -> Spawn:
    """``spawn(names, request_id=None)``: a cluster with one pending task per name; their ids.

    With ``request_id`` the tasks belong to an operation whose request ended with 202.
    """

    def make(names: list[str], request_id: str | None = None) -> list[str]:
        with session_factory() as s:
            cluster = Cluster(name="c")
            s.add(cluster)
            s.flush()
            ctx = None
            if request_id is not None:
                open_operation(s.connection(), OperationFields(request_id, "POST", "/clusters"))
                ctx = RequestContext(request_id=request_id, operation_id=request_id)
            with request_context(ctx):
                tasks = cluster.spawn_tasks(names)
            if request_id is not None:
                end_request(s.connection(), request_id, 202)
            s.commit()
            return [t.id for t in tasks]

    return make


@pytest.fixture
def worker(engine: Engine) -> Worker:
    return Worker(engine, ["build", "wire"], host="worker-a")


@pytest.fixture
def other(engine: Engine) -> Worker:
    return Worker(engine, ["build", "wire"], host="worker-b")


@pytest.fixture
def claimed(worker: Worker, spawn: Spawn) -> Claimed:
    """``claimed(request_id=None)``: one "build" task spawned and claimed by ``worker``.

    Its id and its job; with ``request_id`` as in ``spawn``.
    """

    def make(request_id: str | None = None) -> tuple[str, Job]:
        [task_id] = spawn(["build"], request_id=request_id)
        job = worker.claim()
        assert job is not None and job.id == task_id
        return task_id, job

    return make


def test_claim_takes_the_oldest_pending_task_among_the_names(
    worker: Worker, spawn: Spawn, session: Session
) -> None:
    # One spawn per task: tasks spawned together share created_at (ties go by id).
    [first], [skipped], [second] = spawn(["build"]), spawn(["other"]), spawn(["wire"])

    job = worker.claim()

    assert job is not None and job.id == first
    task = load(session, first)
    assert (task.state, task.host, task.attempts) == ("running", "worker-a", 1)
    assert task.started_at is not None and task.heartbeat_at is not None
    job2 = worker.claim()
    assert job2 is not None and job2.id == second
    assert worker.claim() is None
    assert load(session, skipped).state == "pending"


def test_claim_of_other_names_leaves_the_tasks_alone(worker: Worker, spawn: Spawn) -> None:
    spawn(["build"])
    assert worker.claim(["unrelated"]) is None


@pytest.mark.parametrize(
    "names", [pytest.param([], id="none"), pytest.param([""], id="empty-name")]
)
def test_claim_needs_names(worker: Worker, names: list[str]) -> None:
    with pytest.raises(ValueError, match="task names"):
        worker.claim(names)


def test_claim_skips_a_task_another_claim_holds_locked(
    engine: Engine, spawn: Spawn, session_factory: sessionmaker[Session]
) -> None:
    if not supports_skip_locked(engine):
        pytest.skip("no SKIP LOCKED: SQLite has one writer at a time (see tests/stress)")
    [first], [second] = spawn(["build"]), spawn(["build"])
    with session_factory() as holder, holder.begin():
        held = claim_task(holder, ["build"], host="worker-a")
        assert held is not None and held.id == first
        # The first claim's transaction is still open: the second passes it by.
        with session_factory() as s, s.begin():
            taken = claim_task(s, ["build"], host="worker-b")
            assert taken is not None and taken.id == second


def test_claimed_task_counts_move_in_its_operation(
    worker: Worker, spawn: Spawn, session: Session
) -> None:
    rid = new_request_id()
    spawn(["build", "wire"], request_id=rid)

    job = worker.claim()
    assert job is not None and job.request_id == rid

    op = load_operation(session, rid)
    assert (op.tasks_pending, op.tasks_running, op.state) == (1, 1, "running")


#: How a job of an operation ends: the call, the state the task ends in.
ENDINGS = [
    pytest.param(lambda job: job.succeed("done"), "succeeded", id="succeed"),
    pytest.param(lambda job: job.fail("broken", "it broke"), "failed", id="fail"),
    pytest.param(lambda job: job.acknowledge_cancel(), "cancelled", id="cancel"),
]


@pytest.mark.parametrize(("end", "state"), ENDINGS)
def test_a_job_of_an_operation_ends_in_one_statement_on_postgresql(
    backend: str,
    engine: Engine,
    worker: Worker,
    spawn: Spawn,
    session: Session,
    end: Callable[[Job], None],
    state: str,
) -> None:
    """The move, the row of its attempt, the operation's count and the ``NOTIFY`` of their
    waiters: one statement, then the commit (and a failure's keep as the operation's error)."""
    if backend != "postgresql":
        pytest.skip("one statement needs data-modifying CTEs (PostgreSQL)")
    rid = new_request_id()
    spawn(["build", "wire"], request_id=rid)
    job = worker.claim()
    assert job is not None
    sent: list[str] = []
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as listening:
        listening.exec_driver_sql(f"LISTEN {CHANGES_CHANNEL}")

        def record(*args: Any) -> None:
            sent.append(args[2])

        event.listen(engine, "before_cursor_execute", record)
        try:
            end(job)
        finally:
            event.remove(engine, "before_cursor_execute", record)
        told, heard = {job.id, rid}, set()
        for notice in listening.connection.driver_connection.notifies(timeout=5):
            heard.add(notice.payload)  # other tests' may come too
            if told <= heard:
                break
        assert told <= heard
    # A failure also becomes its operation's error unless it has one (one statement more).
    assert len(sent) == (2 if state == "failed" else 1), sent
    attempts = session.execute(
        select(attempts_table.c.number, attempts_table.c.outcome, attempts_table.c.host)
    ).all()
    assert [tuple(a) for a in attempts] == [(1, state, "worker-a")]
    op = load_operation(session, rid)
    counts = (op.tasks_pending, op.tasks_running, getattr(op, f"tasks_{state}"))
    assert (counts, op.state) == ((1, 0, 1), "running")
    last = worker.claim()
    assert last is not None
    last.succeed()
    session.expire_all()
    assert load_operation(session, rid).state == state  # the operation ends as its worst task


def test_heartbeat_records_life_but_not_a_change(claimed: Claimed, session: Session) -> None:
    task_id, job = claimed()
    before = load(session, task_id)
    beat, updated = before.heartbeat_at, before.updated_at

    assert job.heartbeat() is False

    after = load(session, task_id)
    assert after.heartbeat_at is not None and beat is not None and after.heartbeat_at > beat
    assert after.updated_at == updated


def test_heartbeat_tells_the_worker_cancellation_was_asked(
    claimed: Claimed, session: Session
) -> None:
    task_id, job = claimed()
    orm.cancel_task(session, task_id)
    session.commit()

    assert job.heartbeat() is True
    assert job.cancel_requested() is True
    with pytest.raises(TaskCancelRequested):
        job.check_cancelled()


def test_progress_is_recorded_and_counts_as_a_heartbeat(claimed: Claimed, session: Session) -> None:
    task_id, job = claimed()
    beat = load(session, task_id).heartbeat_at

    job.progress(40, "copying image")

    task = load(session, task_id)
    assert (task.progress, task.message) == (40, "copying image")
    assert task.heartbeat_at is not None and beat is not None and task.heartbeat_at > beat


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(-1, id="negative"),
        pytest.param(101, id="over-100"),
        pytest.param(True, id="bool"),
        pytest.param("50", id="string"),
    ],
)
def test_bad_progress_is_refused_and_nothing_written(
    claimed: Claimed, session: Session, value: object
) -> None:
    task_id, job = claimed()
    with pytest.raises(InvalidProgressError):
        job.progress(value, "never")  # type: ignore[arg-type]
    task = load(session, task_id)
    assert (task.progress, task.message) == (None, None)


Report = Callable[[Worker, str], object]


def _as(worker: Worker, report: Callable[[Session, str], object]) -> object:
    """``report`` in a transaction of ``worker``'s (a report of its host's)."""
    with worker.transaction() as session:
        return report(session, worker.host)


REPORTS = [
    pytest.param(lambda w, t: _as(w, lambda s, h: heartbeat(s, t, host=h)), id="heartbeat"),
    pytest.param(
        lambda w, t: _as(w, lambda s, h: report_progress(s, t, 10, host=h, message="x")),
        id="progress",
    ),
    pytest.param(lambda w, t: _as(w, lambda s, h: succeed_task(s, t, host=h)), id="succeed"),
    pytest.param(
        lambda w, t: _as(w, lambda s, h: fail_task(s, t, code="boom", message="x", host=h)),
        id="fail",
    ),
    pytest.param(
        lambda w, t: _as(w, lambda s, h: acknowledge_cancel(s, t, host=h)),
        id="acknowledge-cancel",
    ),
]


def _snapshot(session: Session, task_id: str) -> tuple[object, ...]:
    row = session.execute(select(tasks_table).where(tasks_table.c.id == task_id)).one()
    return tuple(row)


@pytest.mark.parametrize("report", REPORTS)
def test_a_task_held_by_another_worker_is_refused_and_nothing_written(
    claimed: Claimed, other: Worker, session: Session, report: Report
) -> None:
    task_id, _ = claimed()
    before = _snapshot(session, task_id)

    with pytest.raises(TaskNotHeldError, match=r"worker-b.*running on 'worker-a'"):
        report(other, task_id)

    session.rollback()
    assert _snapshot(session, task_id) == before


@pytest.mark.parametrize("report", REPORTS)
def test_a_pending_task_is_not_held(
    worker: Worker, spawn: Spawn, session: Session, report: Report
) -> None:
    [task_id] = spawn(["build"])
    before = _snapshot(session, task_id)
    with pytest.raises(TaskNotHeldError, match="it is pending"):
        report(worker, task_id)
    session.rollback()
    assert _snapshot(session, task_id) == before


@pytest.mark.parametrize("report", REPORTS)
def test_a_finished_task_is_not_held(claimed: Claimed, worker: Worker, report: Report) -> None:
    _, job = claimed()
    job.succeed()
    with pytest.raises(TaskNotHeldError, match="it is succeeded"):
        report(worker, job.id)


@pytest.mark.parametrize("report", REPORTS)
def test_an_unknown_task_is_not_found(worker: Worker, report: Report) -> None:
    with pytest.raises(TaskNotFoundError):
        report(worker, "00000000-0000-0000-0000-000000000000")


def test_fail_keeps_code_message_and_traceback(claimed: Claimed, session: Session) -> None:
    task_id, job = claimed()
    job.fail("dhcp_timeout", "no lease after 30 s", "Traceback: ...")
    task = load(session, task_id)
    assert task.state == "failed"
    assert task.error == {"code": "dhcp_timeout", "message": "no lease after 30 s"}
    assert task.error_traceback == "Traceback: ..."
    assert task.finished_at is not None and task.expires_at is not None


@pytest.mark.parametrize(
    "code", [pytest.param("", id="empty"), pytest.param("x" * 65, id="too-long")]
)
def test_fail_refuses_a_bad_code(claimed: Claimed, session: Session, code: str) -> None:
    task_id, job = claimed()
    with pytest.raises(ValueError, match="error code"):
        job.fail(code, "msg")
    assert load(session, task_id).state == "running"


def test_job_block_that_ends_succeeds_the_task(claimed: Claimed, session: Session) -> None:
    rid = new_request_id()
    task_id, job = claimed(rid)
    with job:
        job.progress(50)
    task = load(session, task_id)
    assert (task.state, task.progress) == ("succeeded", 100)
    op = load_operation(session, rid)
    assert op.state == "succeeded"
    assert op.task_counts["succeeded"] == 1


def test_job_block_that_raises_fails_the_task_and_reraises(
    claimed: Claimed, session: Session
) -> None:
    rid = new_request_id()
    task_id, job = claimed(rid)
    with pytest.raises(ZeroDivisionError), job:
        1 / 0  # noqa: B018
    task = load(session, task_id)
    assert task.state == "failed"
    assert task.error == {"code": "worker_error", "message": "division by zero"}
    assert task.error_traceback is not None and "ZeroDivisionError" in task.error_traceback
    assert load_operation(session, rid).state == "failed"


def test_job_block_raising_task_failure_fails_with_its_code(
    claimed: Claimed, session: Session
) -> None:
    task_id, job = claimed()
    with job:
        raise TaskFailure("no_capacity", "the rack is full")
    assert load(session, task_id).error == {"code": "no_capacity", "message": "the rack is full"}


def test_job_block_stopping_on_cancellation_cancels_the_task(
    claimed: Claimed, session: Session
) -> None:
    rid = new_request_id()
    task_id, job = claimed(rid)
    with job:
        orm.cancel_task(session, task_id)
        session.commit()
        job.check_cancelled()
        pytest.fail("check_cancelled did not raise")  # pragma: no cover
    assert load(session, task_id).state == "cancelled"
    assert load_operation(session, rid).state == "cancelled"


def test_job_block_interrupted_hands_the_task_back(claimed: Claimed, session: Session) -> None:
    task_id, job = claimed()
    with pytest.raises(KeyboardInterrupt), job:
        raise KeyboardInterrupt
    task = load(session, task_id)
    assert (task.state, task.host, task.attempts, task.max_attempts) == ("pending", None, 1, 2)
    assert [(a.number, a.outcome) for a in task.attempt_records] == [(1, "handed_back")]


def _taken_away(engine: Engine, task_id: str) -> None:
    """The reaper takes the task: no heartbeat for an hour, watched all along."""
    age(engine, tasks_table, tasks_table.c.id == task_id, heartbeat_at=timedelta(hours=1))
    watched(engine, timedelta(hours=1))
    assert orm.reap(engine).failed == (task_id,)


def test_job_block_whose_task_was_taken_away_says_so_once(
    claimed: Claimed, engine: Engine, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    task_id, job = claimed()
    _taken_away(engine, task_id)

    with caplog.at_level(logging.WARNING, "tasktoolkit.worker"), job:
        pass  # the work is done, but the task is not this worker's any more

    [line] = [r for r in caplog.records if r.name == "tasktoolkit.worker"]
    assert "outcome succeeded not recorded" in line.getMessage() and line.exc_info is None
    assert job.refused is not None and not job.finished
    task = load(session, task_id)
    assert task.error == {
        "code": "worker_lost",
        "message": "worker worker-a sent no heartbeat for 300 s",
    }
    [attempt] = task.attempt_records
    assert (attempt.outcome, attempt.error_code) == ("failed", "worker_lost")
    assert attempt.error_message == (
        "worker worker-a sent no heartbeat for 300 s; "
        "then its worker worker-a reported succeeded: not recorded"
    )


def test_job_block_raising_after_its_task_was_taken_away_keeps_its_error(
    claimed: Claimed, engine: Engine
) -> None:
    task_id, job = claimed()
    _taken_away(engine, task_id)
    with pytest.raises(RuntimeError) as raised, job:
        raise RuntimeError("late")
    assert any("outcome not recorded" in note for note in raised.value.__notes__)
    with pytest.raises(TaskNotHeldError):  # asked directly, it is refused
        job.succeed()


def test_start_takes_one_given_task(worker: Worker, spawn: Spawn, session: Session) -> None:
    first, second = spawn(["build", "build"])
    job = worker.start(second)
    assert job.id == second and load(session, first).state == "pending"
    with pytest.raises(InvalidTransitionError):
        worker.start(second)


def test_worker_on_a_sessionmaker(
    session_factory: sessionmaker[Session], spawn: Spawn, session: Session
) -> None:
    [task_id] = spawn(["build"])
    w = Worker(session_factory, "build", host="w")
    job = w.claim()
    assert job is not None
    with job:
        pass
    assert load(session, task_id).state == "succeeded"


def test_default_host_is_unique_per_process(engine: Engine) -> None:
    import os

    assert Worker(engine).host.endswith(f":{os.getpid()}")


@pytest.mark.parametrize(
    "host", [pytest.param("", id="empty"), pytest.param("h" * 256, id="too-long")]
)
def test_bad_host_is_refused(engine: Engine, host: str) -> None:
    with pytest.raises(ValueError, match="host"):
        Worker(engine, host=host)


# -- the database away ---------------------------------------------------------------

#: Servers nothing listens on: a job's own database that is away, as its real driver says.
AWAY = [
    pytest.param("postgresql+psycopg://postgres@127.0.0.1:1/away", id="postgresql-away"),
    pytest.param("mysql+pymysql://root@127.0.0.1:1/away", id="mariadb-away"),
]


@pytest.mark.parametrize("away", AWAY)
def test_a_database_error_in_a_jobs_own_code_is_a_retryable_failure(
    engine: Engine,
    session_factory: sessionmaker[Session],
    session: Session,
    caplog: pytest.LogCaptureFixture,
    away: str,
) -> None:
    with session_factory() as s:
        cluster = Cluster(name="c")
        s.add(cluster)
        s.flush()
        rules = orm.TaskRules(max_attempts=2, backoff=timedelta(0), jitter=0)
        [task] = cluster.spawn_tasks(["build"], rules=rules)
        s.commit()
    worker = Worker(engine, ["build"], host="w")
    job = worker.claim()
    assert job is not None
    gone = create_engine(away)
    try:
        with caplog.at_level(logging.WARNING, "tasktoolkit.worker"), job:
            gone.connect()  # the job's own reads meet an outage
    finally:
        gone.dispose()

    [line] = [r for r in caplog.records if r.name == "tasktoolkit.worker"]
    assert "transient database error" in line.getMessage() and line.exc_info is None
    task = load(session, task.id)
    assert (task.state, task.attempts, task.error) == ("pending", 1, None)
    [attempt] = task.attempt_records
    assert (attempt.outcome, attempt.error_code) == ("failed", "worker_error")
    again = worker.claim()
    assert again is not None and again.attempts == 2
    with again:
        pass
    assert load(session, task.id).state == "succeeded"


def _lines(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name and r.levelno >= logging.WARNING]


def test_claims_ride_out_an_outage_saying_so_once_and_once_back(
    proxied: tuple[TcpProxy, Engine], spawn: Spawn, caplog: pytest.LogCaptureFixture
) -> None:
    proxy, through = proxied
    worker = Worker(through, ["build"], host="w", settings=Settings(deadline=1))
    assert worker.claim() is None  # a pooled connection, as a running worker has
    with caplog.at_level(logging.DEBUG, "tasktoolkit.worker"):
        proxy.cut()
        try:
            assert worker.claim(wait=3.5) is None  # four looks, none raises
        finally:
            proxy.restore()
        [task_id] = spawn(["build"])
        job = worker.claim(wait=10)
    worker.close()
    assert job is not None and job.id == task_id
    away, back = _lines(caplog, "tasktoolkit.worker")
    assert "database unavailable" in away.getMessage() and "back after" in back.getMessage()
    assert not away.exc_info and not back.exc_info  # no traceback


@pytest.mark.parametrize(
    "of_request",
    [pytest.param(True, id="of-an-operation"), pytest.param(False, id="of-no-request")],
)
def test_a_task_spawned_inside_a_job_belongs_to_the_jobs_operation(
    worker: Worker, session_factory: sessionmaker[Session], session: Session, of_request: bool
) -> None:
    rid = new_request_id() if of_request else None
    with session_factory() as s:
        cluster = Cluster(name="c")  # a resource of no project: the task's comes from its caller
        s.add(cluster)
        s.flush()
        ctx = None
        if rid is not None:
            fields = OperationFields(rid, "POST", "/clusters", project_id="p1", user_id="u1")
            open_operation(s.connection(), fields)
            ctx = RequestContext(rid, project_id="p1", user_id="u1", operation_id=rid)
        with request_context(ctx):
            [parent] = cluster.spawn_tasks(["build"])
        if rid is not None:
            end_request(s.connection(), rid, 202)
        s.commit()
        cluster_id = cluster.id

    job = worker.claim(["build"])
    assert job is not None and job.id == parent.id
    with job, session_factory() as s:
        child = s.get_one(Cluster, cluster_id).spawn_tasks(["wire"])[0]
        s.commit()

    spawned = load(session, child.id)
    assert (spawned.request_id, spawned.project_id, spawned.user_id) == (
        (rid, "p1", "u1") if of_request else (None, None, None)
    )
    if rid is None:
        return
    assert load_operation(session, rid).state == "running"  # the job's follow-up is its work too
    follow_up = worker.claim(["wire"])
    assert follow_up is not None and follow_up.id == child.id
    with follow_up:
        pass
    operation = load_operation(session, rid)
    assert (operation.state, operation.task_counts["succeeded"]) == ("succeeded", 2)

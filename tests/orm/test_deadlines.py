"""Nothing stays active for ever: start deadlines, lost requests, retries, attempts, hand-back.

Time is moved by moving the rows back on the database's clock (``passed``), never
by sleeping or faking a host's clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import Settings, errors, orm
from tasktoolkit.context import RequestContext, new_request_id
from tasktoolkit.middleware import RequestIdLogFilter
from tasktoolkit.orm import Operation, ReapResult, Task, TaskRules, Worker, reap
from tasktoolkit.orm._operations import end_request
from tasktoolkit.orm._records import attempts_table, operation_resources_table
from tests.clock import database_now, passed
from tests.models import Cluster
from tests.orm._db import counts_of, operation_row, task_row
from tests.orm._db import load as committed_task
from tests.threads import at_once

#: Fixed backoff (no jitter): a retry may start exactly 10 s after its failure.
RETRY = TaskRules(
    max_attempts=3, backoff=timedelta(seconds=10), backoff_cap=timedelta(seconds=40), jitter=0
)


@pytest.fixture
def tasks(
    session: Session,
    cluster: Cluster,
    in_request: Callable[..., AbstractContextManager[Any]],
) -> Callable[..., list[str]]:
    """``tasks(*names, rules=..., request_id=None)``: spawn and commit; their ids."""

    def make(
        *names: str, rules: TaskRules | None = None, request_id: str | None = None
    ) -> list[str]:
        with in_request(request_id):
            spawned = cluster.spawn_tasks(list(names), rules=rules)
        session.commit()
        return [t.id for t in spawned]

    return make


def load(session: Session, task_id: str) -> Task:
    """The task as committed now, with its attempts."""
    task = committed_task(session, task_id)
    session.refresh(task, ["attempt_records"])
    return task


def attempts(engine: Engine, task_id: str) -> list[tuple[int, str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(attempts_table.c.number, attempts_table.c.outcome, attempts_table.c.error_code)
            .where(attempts_table.c.task_id == task_id)
            .order_by(attempts_table.c.number)
        ).all()
    return [tuple(row) for row in rows]


def claim(engine: Engine, host: str) -> orm.Job | None:
    return Worker(engine, ["build", "ship"], host=host).claim()


# -- start deadlines -------------------------------------------------------------


def test_a_pending_task_past_its_start_timeout_fails_not_started(
    engine: Engine, session: Session, cluster: Cluster, open_op: Callable[..., str], tasks: Any
) -> None:
    rid = open_op()
    rules = TaskRules(start_timeout=timedelta(minutes=5))
    [late] = tasks("build", rules=rules, request_id=rid)
    with engine.begin() as conn:
        end_request(conn, rid, 202)
    assert cluster.task_status == "busy"
    spawned = load(session, late)
    assert spawned.start_deadline == spawned.created_at + timedelta(minutes=5)

    passed(engine, timedelta(minutes=4))
    assert reap(engine) == ReapResult()
    passed(engine, timedelta(minutes=2))
    result = reap(engine)

    assert result.not_started == (late,) and result.total == 1
    task = load(session, late)
    assert (task.state, task.error_code) == ("failed", "not_started")
    assert "start timeout" in (task.error_message or "")
    assert task.attempt_records == []
    session.expire(cluster)
    assert cluster.task_status == "error"  # no longer busy: failed
    assert counts_of(engine, rid) == {"failed": 1}
    assert operation_row(engine, rid)["state"] == "failed"


def test_default_start_timeout_is_an_hour_and_none_is_never(engine: Engine, tasks: Any) -> None:
    [default] = tasks("build")
    [never] = tasks("ship", rules=TaskRules(start_timeout=None))
    passed(engine, timedelta(minutes=59))
    assert reap(engine) == ReapResult()
    passed(engine, timedelta(minutes=2))
    assert reap(engine).not_started == (default,)
    passed(engine, timedelta(days=365))
    assert reap(engine) == ReapResult()
    assert task_row(engine, never)["state"] == "pending"  # type: ignore[index]


def test_reap_start_timeout_bounds_every_task(engine: Engine, tasks: Any) -> None:
    [task_id] = tasks("build", rules=TaskRules(start_timeout=None))
    bound = timedelta(seconds=30)
    passed(engine, timedelta(seconds=20))
    assert reap(engine, start_timeout=bound) == ReapResult()
    passed(engine, timedelta(seconds=20))
    assert reap(engine, start_timeout=bound).not_started == (task_id,)


def test_a_claim_wins_over_a_late_reaper(engine: Engine, session: Session, tasks: Any) -> None:
    [task_id] = tasks("build", rules=TaskRules(start_timeout=timedelta(seconds=60)))
    assert claim(engine, "w") is not None
    passed(engine, timedelta(minutes=2))
    assert reap(engine) == ReapResult()
    assert load(session, task_id).state == "running"


# -- requests that never ended ------------------------------------------------------


def test_an_operation_whose_request_never_ended_and_spawned_nothing_fails_request_lost(
    engine: Engine, open_op: Callable[..., str]
) -> None:
    rid = open_op()
    assert operation_row(engine, rid)["request_deadline"] is not None
    passed(engine, timedelta(minutes=9))
    assert reap(engine) == ReapResult()

    passed(engine, timedelta(minutes=2))
    result = reap(engine)

    assert result.requests == (rid,) and result.total == 0
    row = operation_row(engine, rid)
    assert (row["state"], row["http_status"], row["request_deadline"]) == ("failed", None, None)
    assert (row["error_code"], row["finished_at"] is not None) == ("request_lost", True)
    passed(engine, timedelta(minutes=20))
    assert reap(engine) == ReapResult()  # once


def test_a_lost_request_with_tasks_follows_its_tasks(
    engine: Engine, session: Session, open_op: Callable[..., str], tasks: Any
) -> None:
    rid = open_op()
    [task_id] = tasks("build", request_id=rid)

    passed(engine, timedelta(minutes=11))
    assert reap(engine).requests == (rid,)
    assert operation_row(engine, rid)["state"] == "running"  # its task is still pending

    job = Worker(engine, host="w").start(task_id)
    job.succeed()
    row = operation_row(engine, rid)
    assert (row["state"], row["error_code"], row["http_status"]) == ("succeeded", None, None)


def test_a_request_that_ends_after_the_reaper_keeps_the_reapers_verdict(
    engine: Engine, open_op: Callable[..., str]
) -> None:
    rid = open_op()
    passed(engine, timedelta(minutes=11))
    reap(engine)
    with engine.begin() as conn:
        assert end_request(conn, rid, 201) is None
    row = operation_row(engine, rid)
    assert (row["state"], row["http_status"], row["error_code"]) == ("failed", None, "request_lost")


def test_a_request_that_ended_is_never_reaped(engine: Engine, open_op: Callable[..., str]) -> None:
    rid = open_op()
    with engine.begin() as conn:
        end_request(conn, rid, 201)
    assert operation_row(engine, rid)["request_deadline"] is None
    passed(engine, timedelta(days=1))
    assert reap(engine) == ReapResult()
    assert operation_row(engine, rid)["state"] == "succeeded"


def test_reap_request_timeout_bounds_every_request(
    engine: Engine, open_op: Callable[..., str]
) -> None:
    rid = open_op()
    bound = timedelta(seconds=30)
    passed(engine, timedelta(seconds=20))
    assert reap(engine, request_timeout=bound) == ReapResult()
    passed(engine, timedelta(seconds=20))
    assert reap(engine, request_timeout=bound).requests == (rid,)


# -- retries and attempts -----------------------------------------------------------


def test_a_retryable_failure_runs_again_after_its_backoff_up_to_max_attempts(
    engine: Engine, session: Session, open_op: Callable[..., str], tasks: Any
) -> None:
    rid = open_op()
    [task_id] = tasks("build", rules=RETRY, request_id=rid)
    for number, backoff in [(1, 10), (2, 20)]:
        job = claim(engine, "w1")
        assert job is not None and job.attempts == number
        assert load(session, task_id).message is None  # "retrying in ..." ended with its wait
        job.progress(60)
        job.fail("flaky", f"try {number}", retry=True)
        task = load(session, task_id)
        assert (task.state, task.host, task.progress, task.error) == ("pending", None, None, None)
        assert task.message is not None and task.message.endswith(f"retrying in {backoff}.0 s")
        assert task.not_before == task.updated_at + timedelta(seconds=backoff)
        # Still running, one task pending: the counts moved running -> pending.
        assert operation_row(engine, rid)["state"] == "running"
        assert counts_of(engine, rid) == {"pending": 1}
        wait = task.not_before - database_now(engine)
        assert timedelta(seconds=backoff - 1) < wait <= timedelta(seconds=backoff)
        assert claim(engine, "w1") is None  # its backoff is not over
        passed(engine, timedelta(seconds=backoff - 1))
        assert claim(engine, "w1") is None
        passed(engine, timedelta(seconds=1))
    job = claim(engine, "w1")
    assert job is not None
    assert load(session, task_id).message is None
    job.fail("flaky", "try 3", retry=True)  # the last failure is final

    task = load(session, task_id)
    assert (task.state, task.error_code, task.attempts) == ("failed", "flaky", 3)
    assert attempts(engine, task_id) == [(n, "failed", "flaky") for n in (1, 2, 3)]
    assert [a.error_message for a in task.attempt_records] == ["try 1", "try 2", "try 3"]
    assert {a.host for a in task.attempt_records} == {"w1"}
    assert counts_of(engine, rid) == {"failed": 1}


def failed_in_a_job_block(engine: Engine, tasks: Any, failure: errors.TaskFailure) -> str:
    """A task with the RETRY rules whose first job block raised ``failure``; its id."""
    task_id: str
    [task_id] = tasks("build", rules=RETRY)
    with Worker(engine, host="w").start(task_id):
        raise failure
    return task_id


def test_a_retryable_task_failure_from_a_job_block(
    engine: Engine, session: Session, tasks: Any
) -> None:
    failure = errors.TaskFailure("dhcp_timeout", "no lease", retryable=True)
    task_id = failed_in_a_job_block(engine, tasks, failure)
    assert load(session, task_id).state == "pending"
    with Worker(engine, host="w").start(task_id):
        pass
    task = load(session, task_id)
    assert (task.state, task.not_before, task.message) == ("succeeded", None, None)
    assert attempts(engine, task_id) == [(1, "failed", "dhcp_timeout"), (2, "succeeded", None)]


def test_a_failure_not_marked_retryable_is_final(
    engine: Engine, session: Session, tasks: Any
) -> None:
    task_id = failed_in_a_job_block(engine, tasks, errors.TaskFailure("bad_config", "no"))
    assert load(session, task_id).state == "failed"
    assert attempts(engine, task_id) == [(1, "failed", "bad_config")]


def test_worker_lost_counts_as_an_attempt_and_is_recorded(
    engine: Engine, session: Session, tasks: Any
) -> None:
    rules = TaskRules(max_attempts=2, heartbeat_timeout=timedelta(seconds=30), jitter=0)
    [task_id] = tasks("build", rules=rules)
    Worker(engine, host="lost-1").start(task_id).progress(70)
    passed(engine, timedelta(seconds=31))
    assert reap(engine).requeued == (task_id,)
    task = load(session, task_id)
    assert (task.state, task.progress) == ("pending", None)
    assert task.not_before == task.updated_at + rules.backoff
    Worker(engine, host="lost-2").start(task_id)
    passed(engine, timedelta(seconds=31))
    assert reap(engine).failed == (task_id,)
    assert attempts(engine, task_id) == [(1, "failed", "worker_lost"), (2, "failed", "worker_lost")]
    assert [a.host for a in load(session, task_id).attempt_records] == ["lost-1", "lost-2"]


def test_attempts_are_deleted_with_their_task(
    engine: Engine, session: Session, cluster: Cluster, tasks: Any
) -> None:
    [task_id] = tasks("build")
    Worker(engine, host="w").start(task_id).succeed()
    assert attempts(engine, task_id) == [(1, "succeeded", None)]
    session.delete(cluster)
    session.commit()
    assert attempts(engine, task_id) == []


# -- stopping workers ---------------------------------------------------------------


def test_a_stopping_worker_hands_back_what_runs_after_its_grace(
    engine: Engine, session: Session, open_op: Callable[..., str], tasks: Any
) -> None:
    rid = open_op()
    [task_id] = tasks("build", rules=TaskRules(max_attempts=1), request_id=rid)
    worker = Worker(engine, ["build"], host="w")
    job = worker.claim()
    assert job is not None
    job.progress(40)
    worker.stop(grace=3600)
    assert worker.claim() is None and not worker.must_hand_back
    job.check_cancelled()  # within the grace period: carry on
    worker.stop(grace=0)
    with job:
        job.check_cancelled()
        pytest.fail("check_cancelled should raise WorkerStopping")
    task = load(session, task_id)
    # Pending at once, progress cleared, and the hand-back used up no attempt.
    assert (task.state, task.host, task.progress) == ("pending", None, None)
    assert (task.attempts, task.max_attempts) == (1, 2)
    assert attempts(engine, task_id) == [(1, "handed_back", None)]
    assert counts_of(engine, rid) == {"pending": 1}
    again = Worker(engine, ["build"], host="w2").claim()
    assert again is not None and again.attempts == 2
    again.succeed()
    assert attempts(engine, task_id) == [(1, "handed_back", None), (2, "succeeded", None)]


def test_reporting_on_a_task_the_reaper_failed_is_refused_and_writes_nothing(
    engine: Engine, tasks: Any
) -> None:
    [task_id] = tasks("build", rules=TaskRules(heartbeat_timeout=timedelta(seconds=5)))
    job = Worker(engine, host="w").start(task_id)
    passed(engine, timedelta(seconds=6))
    reap(engine)
    before = task_row(engine, task_id)
    for report in (job.succeed, job.hand_back, lambda: job.fail("x", "y", retry=True)):
        with pytest.raises(errors.TaskNotHeldError):
            report()
    assert task_row(engine, task_id) == before


# -- logs -------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestIdLogFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def log_records() -> Iterator[_Records]:
    handler = _Records()
    logger = logging.getLogger("tests.worker")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


def test_a_jobs_log_records_carry_its_request_ids(
    engine: Engine, open_op: Callable[..., str], tasks: Any, log_records: _Records
) -> None:
    global_id = new_request_id()
    rid = open_op(global_request_id=global_id)
    tasks("build", request_id=rid)
    job = Worker(engine, ["build"], host="w").claim()
    assert job is not None and job.global_request_id == global_id
    with job:
        logging.getLogger("tests.worker").info("working")
    logging.getLogger("tests.worker").info("after")
    inside, after = log_records.records
    assert (inside.request_id, inside.operation_id, inside.global_request_id) == (  # type: ignore[attr-defined]
        rid,
        rid,
        global_id,
    )
    assert after.request_id == "-"  # type: ignore[attr-defined]
    assert job.context == RequestContext(rid, global_id, project_id="p1", operation_id=rid)


# -- reapers at once --------------------------------------------------------------


def test_two_reapers_racing_move_each_row_once(
    engine: Engine,
    session_factory: sessionmaker[Session],
    open_op: Callable[..., str],
    tasks: Any,
) -> None:
    ops = [open_op() for _ in range(4)]
    lost, late = [], []
    for rid in ops:
        short = TaskRules(
            start_timeout=timedelta(seconds=5), heartbeat_timeout=timedelta(seconds=5)
        )
        ids = tasks("build", "build", "ship", "ship", rules=short, request_id=rid)
        for task_id in ids[:2]:
            Worker(engine, host=f"w-{task_id}").start(task_id)
        lost += ids[:2]
        late += ids[2:]
    passed(engine, timedelta(minutes=11))

    def run() -> ReapResult:
        return reap(engine, settings=Settings(batch_size=3))

    first, second = at_once(run, run)
    for kind in ("failed", "not_started", "requests"):
        mine, theirs = getattr(first, kind), getattr(second, kind)
        assert not set(mine) & set(theirs), kind
    both = first + second
    missed = {i: (task_row(engine, i) or {}).get("state") for i in set(lost) - set(both.failed)}
    assert sorted(both.failed) == sorted(lost), (first, second, missed)
    assert sorted(both.not_started) == sorted(late)
    assert sorted(both.requests) == sorted(ops)
    with session_factory() as s:
        finished = s.execute(select(Operation.state).where(Operation.id.in_(ops))).scalars()
        assert set(finished) == {"failed"}
    for rid in ops:
        assert counts_of(engine, rid) == {"failed": 4}


def test_a_task_asked_to_cancel_is_not_taken_up_again(
    engine: Engine, session: Session, tasks: Any
) -> None:
    handed, failed = tasks("build", "ship", rules=RETRY)
    worker = Worker(engine, host="w")
    jobs = {task_id: worker.start(task_id) for task_id in (handed, failed)}
    for task_id in (handed, failed):
        orm.cancel_task(session, task_id)
        session.commit()
    jobs[handed].hand_back()
    jobs[failed].fail("flaky", "again", retry=True)
    assert load(session, handed).state == "cancelled"
    assert load(session, failed).state == "failed"
    assert attempts(engine, handed) == [(1, "cancelled", None)]


def test_the_reapers_end_of_a_lost_request_keeps_the_resources_its_tasks_touched(
    engine: Engine, open_op: Callable[..., str], tasks: Any
) -> None:
    rid = open_op()
    tasks("build", request_id=rid)
    with engine.begin() as conn:
        # As a request's own spawn leaves them, to be kept with its end.
        conn.execute(delete(operation_resources_table))
    passed(engine, timedelta(minutes=11))
    assert reap(engine).requests == (rid,)
    kept = operation_resources_table.c
    with engine.connect() as conn:
        rows = conn.execute(select(kept.operation_id, kept.resource_type)).all()
    assert [tuple(row) for row in rows] == [(rid, "cluster")]

"""The Celery bridge against real brokers and real ``celery worker`` processes.

Every test runs on RabbitMQ and Redis, on SQLite and PostgreSQL (see
``conftest.py``): tasks are spawned in the test process, published after
commit through its bridge, and run by the handlers of
``tests/celery/worker_app.py`` in the workers' processes.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import webtest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import Toolkit, commands, orm
from tasktoolkit.bridges import Message
from tasktoolkit.celery import CeleryBridge
from tasktoolkit.errors import HandlerConflictError
from tasktoolkit.orm import Task, TaskRules, Worker, cancel_task
from tasktoolkit.orm._events import DISPATCHER, change_of
from tests.celery.conftest import Counting, Events, Workers, wait_for
from tests.middleware.apps import cluster_app
from tests.middleware.stacks import Stacks
from tests.models import Cluster
from tests.orm._db import task_row
from tests.proxy import TcpProxy


def spawn(sessions: sessionmaker[Session], name: str, count: int = 1, **options: Any) -> list[str]:
    """Spawn ``count`` tasks named ``name`` on a new cluster and commit; their ids."""
    with sessions() as session:
        cluster = Cluster(name="c", project_id="p1")
        session.add(cluster)
        session.flush()
        ids = [t.id for t in cluster.spawn_tasks([name] * count, **options)]
        session.commit()
    return ids


def state_of(engine: Engine, task_id: str) -> str | None:
    row = task_row(engine, task_id)
    return None if row is None else str(row["state"])


def wait_state(engine: Engine, task_id: str, state: str, seconds: float = 30.0) -> None:
    wait_for(lambda: state_of(engine, task_id) == state, f"task {task_id} {state}", seconds=seconds)


@pytest.fixture
def sessions(bridge: CeleryBridge, session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """Sessions of the API side: on the bridge's engine, so their spawns are published."""
    return session_factory


@pytest.fixture
def make_stack(
    engine: Engine, sessions: sessionmaker[Session]
) -> Iterator[Callable[[list[str]], webtest.TestApp]]:
    """``make_stack(task_names)``: the whole stack over an app spawning those tasks."""
    stacks = Stacks(engine)

    def make(task_names: list[str]) -> webtest.TestApp:
        return stacks.test_app(cluster_app(sessions, task_names=task_names))

    yield make
    stacks.close()


def test_a_request_publishes_its_tasks_after_commit(
    make_stack: Callable[[list[str]], webtest.TestApp],
    engine: Engine,
    sessions: sessionmaker[Session],
    workers: Workers,
) -> None:
    reply = make_stack(["quick", "quick"]).post("/clusters", status=201)
    request_id = reply.headers["X-Request-Id"]
    with sessions() as session:
        ids = list(session.scalars(select(Task.id).where(Task.request_id == request_id)))
    assert len(ids) == 2
    for task_id in ids:
        wait_state(engine, task_id, "succeeded")
        [(_, _, event, _, pid)] = workers.runs(task_id)
        row = task_row(engine, task_id)
        assert (event, row["result"], row["progress"]) == ("ran", {"pid": pid}, 100)  # type: ignore[index]
    with sessions() as session:
        operation = orm.get_operation(session, request_id, scope=orm.Scope(all_projects=True))
    assert operation.task_counts["succeeded"] == 2


def test_broker_down_at_spawn_the_request_answers_and_the_sweeper_publishes(
    make_stack: Callable[[list[str]], webtest.TestApp],
    bridge: CeleryBridge,
    engine: Engine,
    sessions: sessionmaker[Session],
    workers: Workers,
    proxy: TcpProxy,
) -> None:
    stack = make_stack(["quick"])
    with proxy.down():
        reply = stack.post("/clusters", status=201)
        assert bridge.sweep() == 0  # still down: nothing published, nothing marked
    with sessions() as session:
        task = session.scalars(
            select(Task).where(Task.request_id == reply.headers["X-Request-Id"])
        ).one()
    assert (task.state, task.published_at) == ("pending", None)
    assert bridge.sweep() == 1
    wait_state(engine, task.id, "succeeded")
    assert bridge.sweep() == 0  # published (and started): never again


def test_a_message_delivered_twice_runs_once(
    bridge: CeleryBridge, engine: Engine, sessions: sessionmaker[Session], workers: Workers
) -> None:
    (task_id,) = spawn(sessions, "quick")
    with sessions() as session:
        change = change_of(session.get(Task, task_id), "pending")
    bridge.publish([change])  # a second message while the first may be on its way
    wait_state(engine, task_id, "succeeded")
    bridge.publish([change])  # and a late one after the run
    wait_for(
        lambda: workers.log().count(f"task {task_id} is succeeded: not started again") >= 1,
        "a skipped delivery in the workers' logs",
    )
    assert [e for _, _, e, _, _ in workers.runs(task_id)] == ["ran"]
    assert task_row(engine, task_id)["attempts"] == 1  # type: ignore[index]
    # Each of the three deliveries ran inside the hooks' around_delivery, the skips too.
    wait_for(lambda: len(workers.deliveries(task_id)) == 6, "3 deliveries through the hook")
    assert Counter(workers.deliveries(task_id)) == {"enter": 3, "exit": 3}  # maybe at once


def test_the_bridge_announces_its_publishes_and_sweeps(
    bridge: CeleryBridge,
    counting: Counting,
    engine: Engine,
    sessions: sessionmaker[Session],
    workers: Workers,
    proxy: TcpProxy,
) -> None:
    before = Counter(counting.counts)
    ids = spawn(sessions, "quick", 2)
    assert counting.counts["published"] - before["published"] == 2  # told after the commit
    with proxy.down():
        (late,) = spawn(sessions, "quick")  # nothing published: nothing told
    assert counting.counts - before == {"published": 2}
    assert bridge.sweep() == 1
    assert counting.counts - before == {"published": 2, "swept": 1}
    for task_id in [*ids, late]:
        wait_state(engine, task_id, "succeeded")


def test_a_message_for_no_task_is_acknowledged(
    bridge: CeleryBridge, engine: Engine, sessions: sessionmaker[Session], workers: Workers
) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    bridge._send([Message(missing, "quick")] * 3)
    wait_for(lambda: workers.log().count(f"task {missing} does not exist") == 3, "3 skips")
    (task_id,) = spawn(sessions, "quick")  # the workers go on
    wait_state(engine, task_id, "succeeded")
    assert "Traceback" not in workers.log()


def test_a_task_cancelled_while_pending_is_skipped_when_its_message_arrives(
    bridge: CeleryBridge,
    engine: Engine,
    sessions: sessionmaker[Session],
    workers: Workers,
    proxy: TcpProxy,
) -> None:
    with proxy.down():
        (task_id,) = spawn(sessions, "quick")  # not published: the broker is away
    with sessions() as session:
        cancel_task(session, task_id)
        session.commit()
    bridge._send([Message(task_id, "quick")])  # its message arrives after all
    wait_for(lambda: f"task {task_id} is cancelled" in workers.log(), "the skip")
    assert workers.runs(task_id) == []
    assert state_of(engine, task_id) == "cancelled"


def test_a_running_task_is_stopped_by_the_revoke_of_its_cancel(
    bridge: CeleryBridge, engine: Engine, sessions: sessionmaker[Session], workers: Workers
) -> None:
    (task_id,) = spawn(sessions, "hang")  # never looks at its cancel flag
    wait_for(lambda: workers.runs(task_id), "the handler to start")
    with sessions() as session:
        cancel_task(session, task_id)
        session.commit()  # the revoke goes out after this commit
    wait_state(engine, task_id, "cancelled", seconds=20)
    assert [e for _, _, e, _, _ in workers.runs(task_id)] == ["started", "interrupted"]


def test_a_running_task_sees_the_cancel_flag_without_a_revoke(
    bridge: CeleryBridge, engine: Engine, sessions: sessionmaker[Session], workers: Workers
) -> None:
    (task_id,) = spawn(sessions, "polite")
    wait_for(lambda: workers.runs(task_id), "the handler to start")
    without_bridge = engine.execution_options(**{DISPATCHER: None})
    with Session(without_bridge) as session:  # no revoke: the flag alone
        cancel_task(session, task_id)
        session.commit()
    wait_state(engine, task_id, "cancelled", seconds=20)
    assert [e for _, _, e, _, _ in workers.runs(task_id)] == ["started"]


def test_a_worker_killed_mid_task_is_reaped_and_its_redelivery_runs_nothing(
    bridge: CeleryBridge, engine: Engine, sessions: sessionmaker[Session], workers: Workers
) -> None:
    rules = TaskRules(
        heartbeat_timeout=timedelta(seconds=2), max_attempts=2, backoff=timedelta(0), jitter=0
    )
    (task_id,) = spawn(sessions, "hang", rules=rules)
    wait_for(lambda: workers.runs(task_id), "the handler to start")
    [(_, _, _, _, pid)] = workers.runs(task_id)
    os.kill(pid, signal.SIGKILL)
    # Celery hands the message back (reject_on_worker_lost); its next delivery
    # finds the task running on the dead process and starts nothing.
    wait_for(lambda: f"task {task_id} is running: not started again" in workers.log(), "a skip")
    wait_for(lambda: orm.reap(engine).requeued, "the reaper to re-queue it", seconds=20)
    wait_state(engine, task_id, "succeeded")  # published again after the reaper's commit
    runs = workers.runs(task_id)
    assert [(n, e) for _, n, e, _, _ in runs] == [(1, "started"), (2, "ran")]
    assert task_row(engine, task_id)["attempts"] == 2  # type: ignore[index]


def test_a_handler_longer_than_its_heartbeat_timeout_is_kept_by_the_background_heartbeats(
    bridge: CeleryBridge, engine: Engine, sessions: sessionmaker[Session], workers: Workers
) -> None:
    timeout = timedelta(seconds=2)  # the workers' bridge beats every third of it
    rules = TaskRules(heartbeat_timeout=timeout, max_attempts=2, backoff=timedelta(0), jitter=0)
    (task_id,) = spawn(sessions, "slow", rules=rules)  # ~5 s without a heartbeat of its own
    beats: set[datetime] = set()

    def reaped_never_and_succeeded() -> bool:
        reaped = orm.reap(engine)  # at the real current time, all through the run
        taken = {*reaped.failed, *reaped.requeued, *reaped.cancelled}
        assert task_id not in taken, f"the reaper took the running task: {reaped}"
        row = task_row(engine, task_id)
        assert row is not None
        if row["state"] == "running" and row["heartbeat_at"] is not None:
            beats.add(row["heartbeat_at"])
        return bool(row["state"] == "succeeded")

    wait_for(reaped_never_and_succeeded, f"task {task_id} succeeded", seconds=20)
    with sessions() as session:
        attempts = session.get(Task, task_id).attempt_records
        assert [(a.number, a.outcome, a.error_code) for a in attempts] == [(1, "succeeded", None)]
    row = task_row(engine, task_id)
    assert row is not None and row["attempts"] == 1
    assert row["finished_at"] - row["started_at"] > 2 * timeout  # clearly past its timeout
    assert len(beats) >= 3 and max(beats) > row["started_at"] + timeout  # beat all along
    runs = workers.runs(task_id)
    assert [(n, e) for _, n, e, _, _ in runs] == [(1, "started"), (1, "finished")]


def test_a_retryable_failure_is_published_again_after_its_backoff(
    bridge: CeleryBridge, engine: Engine, sessions: sessionmaker[Session], workers: Workers
) -> None:
    rules = TaskRules(max_attempts=2, backoff=timedelta(seconds=1), jitter=0)
    (task_id,) = spawn(sessions, "flaky", rules=rules)
    wait_state(engine, task_id, "succeeded")
    runs = workers.runs(task_id)
    assert [(n, e) for _, n, e, _, _ in runs] == [(1, "failed"), (2, "ran")]
    with sessions() as session:
        task = session.get(Task, task_id)
        attempts = [(a.number, a.outcome, a.error_code) for a in task.attempt_records]
        first_ended, second_started = task.attempt_records[0].finished_at, task.started_at
    assert attempts == [(1, "failed", "flaky"), (2, "succeeded", None)]
    # Published again at once, with Celery's eta: started after its backoff, not before.
    assert second_started is not None and second_started - first_ended >= timedelta(seconds=1)


def test_a_task_routed_to_a_queue_runs_on_its_consumer(
    bridge: CeleryBridge, engine: Engine, sessions: sessionmaker[Session], workers: Workers
) -> None:
    ids = spawn(sessions, "quick", 6, queue="host-a")
    for task_id in ids:
        wait_state(engine, task_id, "succeeded")
    assert {w for i in ids for _, _, _, w, _ in workers.runs(i)} == {"a"}


def test_500_tasks_over_4_processes_none_lost_none_run_twice(
    bridge: CeleryBridge, engine: Engine, sessions: sessionmaker[Session], workers: Workers
) -> None:
    ids = [i for _ in range(10) for i in spawn(sessions, "quick", 50)]
    with sessions() as session:  # and every tenth message sent twice
        twice = [change_of(session.get(Task, i), "pending") for i in ids[::10]]
    bridge.publish(twice)

    def done() -> bool:
        with sessions() as session:
            states = Counter(session.scalars(select(Task.state).where(Task.id.in_(ids))))
        return states == {"succeeded": 500}

    wait_for(done, "500 tasks succeeded", seconds=120)
    runs = Counter(t for t, _, e, _, _ in workers.runs() if t in set(ids) and e == "ran")
    assert len(runs) == 500 and set(runs.values()) == {1}
    assert len({pid for t, _, _, _, pid in workers.runs() if t in set(ids)}) >= 2


#: The bridge ``tasktoolkit reap --bridge tests.celery.test_bridge:CLI_BRIDGE`` sweeps with.
CLI_BRIDGE: CeleryBridge | None = None


def test_tasktoolkit_reap_sweeps_with_a_bridge(
    bridge: CeleryBridge,
    engine: Engine,
    sessions: sessionmaker[Session],
    workers: Workers,
    proxy: TcpProxy,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with proxy.down():
        (task_id,) = spawn(sessions, "quick")
    monkeypatch.setattr(sys.modules[__name__], "CLI_BRIDGE", bridge)
    url = engine.url.render_as_string(hide_password=False)
    status = commands.main(["reap", "--db-url", url, "--bridge", f"{__name__}:CLI_BRIDGE"])
    assert (status, capsys.readouterr().out.splitlines()[-1]) == (
        0,
        "swept: published 1 task the queue did not have",
    )
    wait_state(engine, task_id, "succeeded")
    status = commands.main(["reap", "--db-url", url, "--bridge", f"{__name__}:spawn"])
    assert status == commands.EXIT_ERROR
    assert "is not a bridge" in capsys.readouterr().err


# -- Celery's own tools say what the toolkit recorded ------------------------------


def celery_state(bridge: CeleryBridge, task_id: str) -> tuple[str, object]:
    """Celery's result backend's ``(state, result)`` of ``task_id``."""
    result = bridge.app.AsyncResult(task_id)
    return result.state, result.result


def wait_events(events: Events, task_id: str, last: str) -> list[str]:
    """The task's events once ``last`` was heard."""
    wait_for(lambda: last in events.of(task_id), f"event {last} of {task_id}")
    return events.of(task_id)


@pytest.mark.parametrize(
    ("name", "cancel", "error"),
    [
        pytest.param("doomed", False, "doomed: it always fails", id="failed"),
        pytest.param("polite", True, "cancelled as asked", id="cancelled"),
    ],
)
def test_a_task_recorded_failed_or_cancelled_is_a_failure_in_celery(
    bridge: CeleryBridge,
    engine: Engine,
    sessions: sessionmaker[Session],
    workers: Workers,
    events: Events,
    name: str,
    cancel: bool,
    error: str,
) -> None:
    (task_id,) = spawn(sessions, name)
    if cancel:
        wait_for(lambda: workers.runs(task_id), "the handler to start")
        with sessions() as session:
            cancel_task(session, task_id)
            session.commit()
    wait_state(engine, task_id, "cancelled" if cancel else "failed")
    kinds = wait_events(events, task_id, "task-failed")
    assert "task-succeeded" not in kinds, kinds
    state, result = celery_state(bridge, task_id)
    assert state == "FAILURE"
    assert type(result).__name__ == ("TaskCancelled" if cancel else "TaskFailed")
    assert str(result) == error


def test_a_retried_task_is_a_retry_then_a_success_in_celery(
    bridge: CeleryBridge,
    engine: Engine,
    sessions: sessionmaker[Session],
    workers: Workers,
    events: Events,
) -> None:
    rules = TaskRules(max_attempts=2, backoff=timedelta(0), jitter=0)
    (task_id,) = spawn(sessions, "flaky", rules=rules)
    wait_state(engine, task_id, "succeeded")
    wait_events(events, task_id, "task-succeeded")
    wait_events(events, task_id, "task-retried")  # two workers' events: in either order
    ends = ("task-retried", "task-succeeded", "task-failed")
    outcomes = Counter(k for k in events.of(task_id) if k in ends)
    assert outcomes == {"task-retried": 1, "task-succeeded": 1}, events.of(task_id)
    assert celery_state(bridge, task_id) == ("SUCCESS", None)


@pytest.mark.parametrize(
    ("name", "state", "celery"),
    [
        pytest.param("quick", "succeeded", "SUCCESS", id="after-a-success"),
        pytest.param("doomed", "failed", "FAILURE", id="after-a-failure"),
    ],
)
def test_a_duplicate_delivery_is_no_second_outcome_in_celery(
    bridge: CeleryBridge,
    engine: Engine,
    sessions: sessionmaker[Session],
    workers: Workers,
    events: Events,
    name: str,
    state: str,
    celery: str,
) -> None:
    (task_id,) = spawn(sessions, name)
    wait_state(engine, task_id, state)
    final = "task-succeeded" if celery == "SUCCESS" else "task-failed"
    wait_events(events, task_id, final)
    before = celery_state(bridge, task_id)
    bridge._send([Message(task_id, name)])  # a late second message
    skip = f"task {task_id} is {state}: not started again"
    wait_for(lambda: skip in workers.log(), "the skipped delivery")
    # The second delivery was received and acknowledged, with no outcome of its own.
    wait_for(lambda: events.of(task_id).count("task-received") == 2, "its task-received")
    assert events.of(task_id).count(final) == 1, events.of(task_id)
    assert "task-succeeded" not in events.of(task_id)[events.of(task_id).index(final) + 1 :]
    assert repr(celery_state(bridge, task_id)) == repr(before)  # exceptions compare by identity
    assert before[0] == celery


# -- two backends on one database ----------------------------------------------------


def test_a_bridge_and_database_workers_share_one_database(
    bridge: CeleryBridge,
    toolkit: Toolkit,
    engine: Engine,
    sessions: sessionmaker[Session],
    workers: Workers,
) -> None:
    with sessions() as session:
        cluster = Cluster(name="c", project_id="p1")
        session.add(cluster)
        session.flush()
        on_celery, local = (t.id for t in cluster.spawn_tasks(["quick", "local"]))
        session.commit()
    assert task_row(engine, local)["published_at"] is None  # type: ignore[index]
    worker = Worker(engine, ["local"])
    try:
        job = worker.claim()
        assert job is not None and job.id == local
        with job:
            pass
    finally:
        worker.close()
    wait_state(engine, on_celery, "succeeded")
    assert state_of(engine, local) == "succeeded"
    assert workers.runs(local) == []  # never on Celery


def test_a_task_name_runs_on_one_bridge_of_an_engine(
    bridge: CeleryBridge, toolkit: Toolkit, broker_url: str
) -> None:
    with pytest.raises(HandlerConflictError, match="'quick' already runs on"):
        CeleryBridge(toolkit, broker_url, names=["quick"])
    other = CeleryBridge(toolkit, broker_url, names=["elsewhere"])
    try:
        with pytest.raises(HandlerConflictError, match="'slow' already runs on"):
            other.handler("slow")(lambda job: None)
        assert other.names == {"elsewhere"} and "elsewhere" not in bridge.names
    finally:
        other.close()
    again = CeleryBridge(toolkit, broker_url, names=["elsewhere"])  # released by close()
    again.close()

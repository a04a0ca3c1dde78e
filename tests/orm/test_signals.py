"""Signals go out after commit only: never before it, never for a rolled-back change."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tasktoolkit import signals
from tasktoolkit.orm import Task, cancel_task, reap
from tasktoolkit.orm._events import _send_queued
from tasktoolkit.orm._operations import end_request
from tasktoolkit.orm._records import tasks_table
from tasktoolkit.orm._transitions import fail_task, start_task, succeed_task
from tests.cases import named_cases
from tests.clock import passed
from tests.models import Node
from tests.orm._db import InOperation, SpawnInOp, count_rows, counts_of, spawn

Heard = list[tuple[str, Any, Any]]


@pytest.fixture
def heard() -> Iterator[Heard]:
    """Every task/operation signal sent during the test, as ``(signal, sender, change)``."""
    got: Heard = []
    receivers = []
    for signal in (
        signals.task_created,
        signals.task_state_changed,
        signals.operation_finished,
    ):

        def receive(sender: Any, *, change: Any, _name: str = signal.name, **_: Any) -> None:
            got.append((_name, sender, change))

        signal.connect(receive)
        receivers.append((signal, receive))
    yield got
    for signal, receive in receivers:
        signal.disconnect(receive)


def names(heard: Heard) -> list[str]:
    return [name for name, _, _ in heard]


def test_task_created_after_commit_only(
    session: Session, node: Node, in_operation: InOperation, heard: Heard
) -> None:
    with in_operation() as op:
        tasks = node.spawn_tasks(["a", "b"])
    session.flush()
    assert heard == []
    session.commit()
    assert names(heard) == ["task-created", "task-created"]
    (_, sender, change) = heard[0]
    assert sender == "node"
    assert (change.task_id, change.request_id, change.resource_type, change.resource_id) == (
        tasks[0].id,
        op,
        "node",
        str(node.id),
    )
    assert (change.name, change.old_state, change.new_state) == ("a", None, "pending")
    assert [c.name for _, _, c in heard] == ["a", "b"]


def test_nothing_after_rollback(session: Session, node: Node, heard: Heard) -> None:
    node.spawn_tasks(["a", "b"])
    session.flush()
    session.rollback()
    session.commit()  # a later commit must not send what was rolled back
    assert heard == []


def test_task_state_changed_after_commit_only(session: Session, node: Node, heard: Heard) -> None:
    (task,) = spawn(session, node, "boot")
    heard.clear()
    start_task(session, task.id, host="w")
    assert heard == []
    session.commit()
    assert names(heard) == ["task-state-changed"]
    change = heard[0][2]
    assert (change.task_id, change.old_state, change.new_state) == (task.id, "pending", "running")
    heard.clear()
    succeed_task(session, task.id)
    session.rollback()
    assert heard == []
    session.commit()
    assert heard == []


def test_operation_finished_after_commit_only(
    session: Session, engine: Engine, spawn_in_op: SpawnInOp, heard: Heard
) -> None:
    op, (a, b) = spawn_in_op("a", "b")
    with engine.begin() as conn:
        end_request(conn, op, 202)
    heard.clear()
    cancel_task(session, a.id)
    session.commit()
    assert names(heard) == ["task-state-changed"]
    heard.clear()
    fail_task(session, b.id, code="x", message="y")
    session.rollback()  # the last task's failure, and so the finish, is rolled back
    assert heard == []
    fail_task(session, b.id, code="x", message="y")
    assert heard == []
    session.commit()
    assert names(heard) == ["task-state-changed", "operation-finished"]
    change = heard[1][2]
    assert (change.operation_id, change.state, change.http_status) == (op, "failed", 202)


def test_savepoint_rollback_drops_only_its_own_signals(
    session: Session, node: Node, heard: Heard
) -> None:
    node.spawn_task("kept")
    session.flush()
    with pytest.raises(RuntimeError), session.begin_nested():
        node.spawn_task("dropped")
        session.flush()
        raise RuntimeError("abandon the savepoint")
    assert heard == []
    session.commit()
    assert [c.name for _, _, c in heard] == ["kept"]


def test_savepoint_release_waits_for_the_real_commit(
    session: Session, node: Node, heard: Heard
) -> None:
    with session.begin_nested():
        node.spawn_task("inner")
    assert heard == []  # released, but nothing is committed yet
    session.rollback()
    session.commit()
    assert heard == []
    with session.begin_nested():
        node.spawn_task("inner-committed")
    session.commit()
    assert [c.name for _, _, c in heard] == ["inner-committed"]


def test_nested_savepoints(session: Session, node: Node, heard: Heard) -> None:
    outer = session.begin_nested()
    node.spawn_task("outer")
    inner = session.begin_nested()
    node.spawn_task("inner")
    inner.commit()  # released into the outer savepoint...
    outer.rollback()  # ...which is rolled back, taking the inner with it
    node.spawn_task("after")
    session.commit()
    assert [c.name for _, _, c in heard] == ["after"]


def test_close_without_commit_forgets(session: Session, node: Node, heard: Heard) -> None:
    node.spawn_task("abandoned")
    session.flush()
    session.close()  # no commit: the transaction is rolled back with the connection
    session.commit()  # the session is reused
    assert heard == []
    assert session.scalar(text("SELECT count(*) FROM tasktoolkit_tasks")) == 0


def test_failed_flush_sends_nothing(session: Session, node: Node, heard: Heard) -> None:
    node.spawn_task("ok")
    session.flush()  # queued; then the transaction fails before any commit
    # a task of a node that does not exist: the foreign key fails the flush
    session.add(
        Task(id=str(uuid.uuid4()), resource_type="node", resource_id="0", name="x", node_id=-1)
    )
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()
    session.commit()
    assert heard == []


def test_task_signals_come_before_the_operation_they_finish(
    session: Session, engine: Engine, spawn_in_op: SpawnInOp, heard: Heard
) -> None:
    """Whatever order the code queues them in (here the reaper's), one commit
    announces the task's move before the operation it finished."""
    op, (task,) = spawn_in_op("boot")
    start_task(session, task.id, host="gone")
    session.commit()
    with engine.begin() as conn:
        end_request(conn, op, 202)
    heard.clear()
    passed(engine, timedelta(days=1))
    reaped = reap(engine)
    assert reaped.failed == (task.id,)
    assert names(heard) == ["task-state-changed", "operation-finished"]
    assert heard[1][2].state == "failed"


# -- a receiver's failure is the receiver's ----------------------------------


@pytest.fixture
def broken() -> Iterator[list[str]]:
    """A receiver on every task and operation signal that raises; the names it was sent."""
    called: list[str] = []
    connected = []
    for signal in (signals.task_created, signals.task_state_changed, signals.operation_finished):

        def receive(sender: Any, *, change: Any, _name: str = signal.name, **_: Any) -> None:
            called.append(_name)
            raise RuntimeError(f"broken receiver of {_name}")

        signal.connect(receive)
        connected.append((signal, receive))
    yield called
    for signal, receive in connected:
        signal.disconnect(receive)


def _by_spawn(session: Session, engine: Engine, node: Node, op: str) -> list[str]:
    node.spawn_tasks(["a", "b"])
    session.commit()
    return ["task-created", "task-created"]


def _by_transition(session: Session, engine: Engine, node: Node, op: str) -> list[str]:
    a, b = spawn(session, node, "a", "b")
    with engine.begin() as conn:
        end_request(conn, op, 202)
    cancel_task(session, a.id)
    fail_task(session, b.id, code="x", message="y")
    session.commit()
    return ["task-state-changed", "task-state-changed", "operation-finished"]


def _by_reaper(session: Session, engine: Engine, node: Node, op: str) -> list[str]:
    a, b = spawn(session, node, "a", "b")
    start_task(session, a.id, host="gone")
    start_task(session, b.id, host="gone")
    session.commit()
    with engine.begin() as conn:
        end_request(conn, op, 202)
    passed(engine, timedelta(days=1))
    reap(engine)
    return ["task-state-changed", "task-state-changed", "operation-finished"]


def _by_session_add(session: Session, engine: Engine, node: Node, op: str) -> list[str]:
    for name in ("a", "b"):
        session.add(_added_task(node, name, op))
    session.commit()
    return ["task-created", "task-created"]


def _added_task(node: Node, name: str, op: str | None) -> Task:
    """A task made as a host might, added to the session rather than spawned."""
    return Task(
        id=str(uuid.uuid4()),
        request_id=op,
        resource_type="node",
        resource_id=str(node.id),
        node_id=node.id,
        name=name,
    )


@pytest.mark.parametrize(
    "source",
    named_cases(_by_spawn, _by_transition, _by_reaper, _by_session_add, prefix="_by_"),
)
def test_a_raising_receiver_breaks_no_commit_and_drops_no_signal(
    session: Session,
    engine: Engine,
    node: Node,
    in_operation: InOperation,
    heard: Heard,
    broken: list[str],
    caplog: pytest.LogCaptureFixture,
    source: Callable[[Session, Engine, Node, str], list[str]],
) -> None:
    with in_operation() as op:
        expected = source(session, engine, node, op)  # commits without raising
    sent = [name for name in names(heard) if name in expected]
    assert sent[-len(expected) :] == expected  # every signal reached the other receiver
    assert broken[-len(expected) :] == expected  # and the broken one, every time
    failures = [r for r in caplog.records if r.name == "tasktoolkit.signals"]
    assert len(failures) >= len(expected)
    assert all(r.exc_info and "broken receiver" in str(r.exc_info[1]) for r in failures)
    assert any(expected[-1] in r.getMessage() and op in r.getMessage() for r in failures)
    assert count_rows(engine, tasks_table, tasks_table.c.request_id == op) == 2


def test_a_task_added_to_the_session_counts_in_its_operation(
    session: Session,
    engine: Engine,
    node: Node,
    open_op: Callable[..., str],
    heard: Heard,
) -> None:
    op = open_op()
    task = _added_task(node, "added", op)
    session.add(task)
    session.flush()
    assert heard == []
    session.rollback()
    assert counts_of(engine, op) == {}
    session.add(_added_task(node, "added", op))
    session.add(_added_task(node, "no-operation", None))
    session.commit()
    assert counts_of(engine, op) == {"pending": 1}
    assert [c.name for _, _, c in heard] == ["added", "no-operation"]
    assert names(heard) == ["task-created", "task-created"]


def test_nothing_is_queued_nor_listened_for_without_receivers(
    session: Session, session_factory: Any, node: Node
) -> None:
    node.spawn_tasks(["a"])
    assert "tasktoolkit.signals" not in session.info
    assert not event.contains(session, "after_commit", _send_queued)
    session.commit()


def test_only_the_sessions_that_queue_signals_get_listeners(
    session: Session, other_session: Session, node: Node, heard: Heard
) -> None:
    other_session.execute(text("SELECT 1"))
    node.spawn_tasks(["a"])
    session.commit()
    assert event.contains(session, "after_commit", _send_queued)
    assert not event.contains(other_session, "after_commit", _send_queued)
    assert not event.contains(Session, "after_commit", _send_queued)
    assert names(heard) == ["task-created"]


def test_a_coroutine_receiver_is_refused_when_it_connects() -> None:
    async def receive(sender: Any, **extra: Any) -> None:
        pass

    class Receiver:
        async def __call__(self, sender: Any, **extra: Any) -> None:
            pass

    for receiver in (receive, Receiver()):
        with pytest.raises(TypeError, match="coroutine function"):
            signals.task_created.connect(receiver)
    assert not signals.task_created.receivers

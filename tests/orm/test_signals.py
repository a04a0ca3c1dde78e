"""Signals go out after commit only: never before it, never for a rolled-back change."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tasktoolkit import signals
from tasktoolkit.orm import Task, cancel_task, reap
from tasktoolkit.orm._operations import end_request
from tasktoolkit.orm._transitions import fail_task, start_task, succeed_task
from tasktoolkit.orm._types import utcnow
from tests.models import Node
from tests.orm._db import spawn

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
    session: Session, node: Node, open_op: Callable[..., str], in_request: Any, heard: Heard
) -> None:
    op = open_op()
    with in_request(op):
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
    session: Session,
    engine: Engine,
    node: Node,
    open_op: Callable[..., str],
    in_request: Any,
    heard: Heard,
) -> None:
    op = open_op()
    with in_request(op):
        a, b = spawn(session, node, "a", "b")
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
    session: Session,
    engine: Engine,
    node: Node,
    open_op: Callable[..., str],
    in_request: Any,
    heard: Heard,
) -> None:
    """Whatever order the code queues them in (here the reaper's), one commit
    announces the task's move before the operation it finished."""
    op = open_op()
    with in_request(op):
        (task,) = spawn(session, node, "boot")
    start_task(session, task.id, host="gone")
    session.commit()
    with engine.begin() as conn:
        end_request(conn, op, 202)
    heard.clear()
    reaped = reap(engine, now=utcnow() + timedelta(days=1))
    assert reaped.failed == (task.id,)
    assert names(heard) == ["task-state-changed", "operation-finished"]
    assert heard[1][2].state == "failed"

"""Operation roll-up: task counts, the final state, expiry, and counts that outlive tasks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tasktoolkit.orm import Operation, Task, cancel_task, reap
from tasktoolkit.orm._operations import end_request
from tasktoolkit.orm._transitions import acknowledge_cancel, fail_task, start_task, succeed_task
from tests.models import Node
from tests.orm._db import InOperation, SpawnInOp, counts_of, move_through, operation_row, spawn


def _end(engine: Engine, op: str, status: int) -> Any:
    with engine.begin() as conn:
        return end_request(conn, op, status)


def _finish(session: Session, task: Task, final: str) -> None:
    """``final`` from running (a cancel acknowledged), or ``<state>_pending`` from pending."""
    if final.endswith("_pending"):
        move_through(session, task.id, final.removesuffix("_pending"))
    else:
        move_through(session, task.id, "running", final)
    if final == "cancelled":
        acknowledge_cancel(session, task.id)
    session.commit()


def test_counts_follow_transitions(
    session: Session, engine: Engine, spawn_in_op: SpawnInOp
) -> None:
    op, (a, b, c) = spawn_in_op("a", "b", "c")
    assert counts_of(engine, op) == {"pending": 3}
    start_task(session, a.id)
    session.commit()
    assert counts_of(engine, op) == {"pending": 2, "running": 1}
    succeed_task(session, a.id)
    cancel_task(session, b.id)
    session.commit()
    assert counts_of(engine, op) == {"pending": 1, "succeeded": 1, "cancelled": 1}
    fail_task(session, c.id, code="x", message="y")
    session.commit()
    assert counts_of(engine, op) == {"succeeded": 1, "cancelled": 1, "failed": 1}
    with Session(engine) as fresh:
        read = fresh.get(Operation, op)
        assert read is not None
        assert read.task_counts == {
            "pending": 0,
            "running": 0,
            "succeeded": 1,
            "failed": 1,
            "cancelled": 1,
        }


def test_running_while_tasks_active_after_end_request(
    session: Session, engine: Engine, spawn_in_op: SpawnInOp
) -> None:
    op, (task,) = spawn_in_op("boot")
    assert _end(engine, op, 202) is None
    row = operation_row(engine, op)
    assert (row["state"], row["http_status"], row["finished_at"]) == ("running", 202, None)
    start_task(session, task.id)
    session.commit()
    assert operation_row(engine, op)["state"] == "running"
    succeed_task(session, task.id)
    session.commit()
    row = operation_row(engine, op)
    assert row["state"] == "succeeded" and row["finished_at"] is not None


OUTCOMES = [
    pytest.param(200, ["succeeded", "succeeded"], "succeeded", id="2xx-all-succeeded"),
    pytest.param(303, ["succeeded"], "succeeded", id="3xx-succeeded"),
    pytest.param(204, [], "succeeded", id="2xx-no-tasks"),
    pytest.param(202, ["succeeded", "failed"], "failed", id="2xx-a-task-failed"),
    pytest.param(202, ["failed_pending"], "failed", id="2xx-a-pending-task-failed"),
    pytest.param(202, ["cancelled", "succeeded"], "cancelled", id="2xx-a-task-cancelled"),
    pytest.param(202, ["cancelled_pending"], "cancelled", id="2xx-pending-task-cancelled"),
    pytest.param(202, ["cancelled", "failed"], "failed", id="2xx-failed-beats-cancelled"),
    pytest.param(400, [], "failed", id="4xx-no-tasks"),
    pytest.param(409, ["succeeded"], "failed", id="4xx-tasks-succeeded"),
    pytest.param(500, ["succeeded"], "failed", id="5xx-tasks-succeeded"),
    pytest.param(404, ["cancelled"], "failed", id="4xx-beats-cancelled"),
]


@pytest.mark.parametrize(
    "end_first", [pytest.param(True, id="end-first"), pytest.param(False, id="tasks-first")]
)
@pytest.mark.parametrize(("status", "finals", "expected"), OUTCOMES)
def test_final_state(
    session: Session,
    engine: Engine,
    node: Node,
    in_operation: InOperation,
    status: int,
    finals: list[str],
    expected: str,
    end_first: bool,
) -> None:
    with in_operation() as op:
        tasks = spawn(session, node, *[f"t{i}" for i in range(len(finals))]) if finals else []
    if end_first:
        change = _end(engine, op, status)
        assert (change is None) == bool(finals)
    for task, final in zip(tasks, finals, strict=True):
        assert operation_row(engine, op)["state"] == "running"
        _finish(session, task, final)
    if not end_first:
        assert operation_row(engine, op)["state"] == "running"  # the request has not ended
        change = _end(engine, op, status)
        assert change is not None and change.state == expected
    row = operation_row(engine, op)
    assert (row["state"], row["http_status"]) == (expected, status)
    assert row["finished_at"] is not None
    assert row["expires_at"] == row["finished_at"] + timedelta(hours=24)


@pytest.mark.parametrize(
    "ttl",
    [
        pytest.param(timedelta(hours=1), id="one-hour"),
        pytest.param(timedelta(0), id="zero"),
        pytest.param(None, id="keep"),
    ],
)
def test_finished_operation_expires_after_its_ttl(
    engine: Engine, open_op: Callable[..., str], ttl: timedelta | None
) -> None:
    op = open_op(ttl=ttl)
    change = _end(engine, op, 201)
    assert change is not None and change.state == "succeeded"
    row = operation_row(engine, op)
    assert row["expires_at"] == (None if ttl is None else row["finished_at"] + ttl)


def test_no_task_operation_ends_with_its_response(
    engine: Engine, open_op: Callable[..., str]
) -> None:
    op = open_op(method="DELETE", path="/nodes/1")
    change = _end(engine, op, 204)
    assert change is not None
    assert (change.operation_id, change.state, change.http_status, change.method) == (
        op,
        "succeeded",
        204,
        "DELETE",
    )
    assert _end(engine, op, 500) is None  # a second end changes nothing
    row = operation_row(engine, op)
    assert (row["state"], row["http_status"]) == ("succeeded", 204)


def test_finish_is_in_the_transition_transaction(
    session: Session, engine: Engine, spawn_in_op: SpawnInOp
) -> None:
    op, (task,) = spawn_in_op("boot")
    _end(engine, op, 202)
    cancel_task(session, task.id)
    session.rollback()
    row = operation_row(engine, op)
    assert row["state"] == "running" and counts_of(engine, op) == {"pending": 1}


def test_counts_survive_deleted_tasks(
    session: Session, engine: Engine, node: Node, open_op: Callable[..., str], in_request: Any
) -> None:
    op = open_op(method="DELETE")
    with in_request(op):
        a, b = spawn(session, node, "a", "b")
    _finish(session, a, "succeeded")
    _finish(session, b, "failed")
    _end(engine, op, 202)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM nodes WHERE id = :id"), {"id": node.id})
    assert session.scalar(text("SELECT count(*) FROM tasktoolkit_tasks")) == 0
    assert counts_of(engine, op) == {"succeeded": 1, "failed": 1}
    assert operation_row(engine, op)["state"] == "failed"


def test_rolled_back_spawn_is_not_counted(
    session: Session, engine: Engine, node: Node, in_operation: InOperation
) -> None:
    with in_operation() as op:
        node.spawn_tasks(["a", "b"])
        session.flush()
        session.rollback()
        spawn(session, node, "c")
    assert counts_of(engine, op) == {"pending": 1}


def test_savepoint_rolled_back_spawn_is_not_counted(
    session: Session, engine: Engine, node: Node, in_operation: InOperation
) -> None:
    with in_operation() as op:
        node.spawn_task("kept")
        savepoint = session.begin_nested()
        node.spawn_tasks(["dropped1", "dropped2"])
        savepoint.rollback()
        session.commit()
    assert counts_of(engine, op) == {"pending": 1}
    assert session.scalars(text("SELECT name FROM tasktoolkit_tasks")).all() == ["kept"]


def test_tasks_of_an_unknown_operation(
    session: Session, engine: Engine, node: Node, in_request: Any
) -> None:
    """A request id with no operation row (already purged): tasks spawn, nothing to count."""
    with in_request("req-00000000-0000-4000-8000-000000000000"):
        (task,) = spawn(session, node, "boot")
    start_task(session, task.id)
    succeed_task(session, task.id)
    session.commit()
    assert task.state == "succeeded"


def test_counts_after_many_spawns_in_one_flush(
    session: Session, engine: Engine, make_node: Callable[..., Node], in_operation: InOperation
) -> None:
    nodes = [make_node(f"n{i}") for i in range(5)]
    with in_operation() as op:
        for n in nodes:
            n.spawn_tasks(["a", "b"])
        session.commit()
    assert counts_of(engine, op) == {"pending": 10}


# -- tasks deleted while active ----------------------------------------------------


def _delete_node(engine: Engine, node: Node) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM nodes WHERE id = :id"), {"id": node.id})


@pytest.mark.parametrize(
    ("others", "expected_state", "expected_counts"),
    [
        pytest.param([], "cancelled", {"cancelled": 2}, id="all-vanished"),
        pytest.param(
            ["succeeded"], "cancelled", {"succeeded": 1, "cancelled": 2}, id="with-success"
        ),
        pytest.param(["failed"], "failed", {"failed": 1, "cancelled": 2}, id="with-failure"),
        pytest.param(["running"], "running", {"running": 1, "cancelled": 2}, id="one-still-active"),
    ],
)
def test_vanished_active_tasks_settle_the_operation(
    session: Session,
    engine: Engine,
    make_node: Callable[..., Node],
    in_operation: InOperation,
    others: list[str],
    expected_state: str,
    expected_counts: dict[str, int],
) -> None:
    doomed, survivor = make_node("doomed"), make_node("survivor")
    with in_operation() as op:
        _, running = spawn(session, doomed, "a", "b")
        kept = spawn(session, survivor, *[f"k{i}" for i in range(len(others))])
    start_task(session, running.id, host="w")
    session.commit()
    for task, final in zip(kept, others, strict=True):
        if final == "running":
            start_task(session, task.id)
            session.commit()
        else:
            _finish(session, task, final)
    _end(engine, op, 202)
    _delete_node(engine, doomed)
    assert operation_row(engine, op)["state"] == "running"  # stuck, until settled

    finished = reap(engine).operations

    assert counts_of(engine, op) == expected_counts
    row = operation_row(engine, op)
    assert row["state"] == expected_state
    assert finished == (() if expected_state == "running" else (op,))
    if expected_state != "running":
        assert row["expires_at"] == row["finished_at"] + timedelta(hours=24)
    assert reap(engine).operations == ()  # nothing more to settle


def test_settle_leaves_consistent_operations_alone(
    session: Session, engine: Engine, spawn_in_op: SpawnInOp
) -> None:
    op, (task,) = spawn_in_op("boot")
    _end(engine, op, 202)
    before = operation_row(engine, op)
    assert reap(engine).operations == ()
    assert operation_row(engine, op) == before
    _finish(session, task, "succeeded")
    assert operation_row(engine, op)["state"] == "succeeded"


def test_settle_before_the_request_ends_only_fixes_counts(
    engine: Engine, node: Node, spawn_in_op: SpawnInOp
) -> None:
    op, _ = spawn_in_op("boot")
    _delete_node(engine, node)
    assert reap(engine).operations == ()
    assert counts_of(engine, op) == {"cancelled": 1}
    change = _end(engine, op, 204)
    assert change is not None and change.state == "cancelled"

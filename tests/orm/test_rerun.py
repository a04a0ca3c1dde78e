"""Re-runs in the ORM, and what an operation keeps of its tasks: its first failure and
every resource it touched, after the tasks and resources are gone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tasktoolkit.context import RequestContext
from tasktoolkit.errors import NothingToRerunError
from tasktoolkit.orm import Operation, Task
from tasktoolkit.orm._operations import end_request
from tasktoolkit.orm._records import operation_resources_table
from tasktoolkit.orm._transitions import (
    fail_task,
    rerun_operation,
    rerun_task,
    start_task,
    succeed_task,
)
from tests.models import Cluster, Node
from tests.orm._db import InOperation, SpawnInOp, counts_of, load, load_operation, operation_row

InRequest = Callable[..., AbstractContextManager[RequestContext | None]]


def _failed(session: Session, spawn_in_op: SpawnInOp, *names: str) -> tuple[str, list[Task]]:
    """An operation whose tasks ran once each and failed (``x_failed``), committed."""
    op, tasks = spawn_in_op(*names)
    for task in tasks:
        start_task(session, task.id, host="w1")
        fail_task(session, task.id, code=f"{task.name}_failed", message="no", host="w1")
    session.commit()
    return op, tasks


def test_a_re_run_counts_in_the_new_operation_and_leaves_the_old_one_its_counts(
    session: Session,
    engine: Engine,
    spawn_in_op: SpawnInOp,
    open_op: Callable[..., str],
    in_request: InRequest,
) -> None:
    old, [task] = _failed(session, spawn_in_op, "boot")
    new = open_op()
    with in_request(new):
        rerun_task(session, task.id)
    session.commit()
    assert counts_of(engine, old) == {"failed": 1}
    assert counts_of(engine, new) == {"pending": 1}
    assert operation_row(engine, new)["retry_of"] == old
    rerun = load(session, task.id)
    assert (rerun.state, rerun.request_id, rerun.attempts, rerun.max_attempts) == (
        "pending",
        new,
        1,
        2,
    )
    assert rerun.error is None and rerun.finished_at is None and rerun.expires_at is None
    with engine.begin() as conn:
        end_request(conn, new, 202)  # the re-run's request answered
    start_task(session, task.id, host="w2")
    succeed_task(session, task.id, host="w2")
    session.commit()
    assert operation_row(engine, new)["state"] == "succeeded"
    assert [a.outcome for a in load(session, task.id).attempt_records] == ["failed", "succeeded"]


def test_outside_a_request_a_task_is_re_run_in_no_operation(
    session: Session, spawn_in_op: SpawnInOp
) -> None:
    _, [task] = _failed(session, spawn_in_op, "boot")
    rerun_task(session, task.id)
    session.commit()
    assert (load(session, task.id).state, load(session, task.id).request_id) == ("pending", None)


@pytest.mark.parametrize("state", ["pending", "running", "succeeded"])
def test_only_a_failed_or_cancelled_task_is_re_run(
    session: Session, spawn_in_op: SpawnInOp, state: str
) -> None:
    _, [task] = spawn_in_op("boot")
    if state != "pending":
        start_task(session, task.id, host="w1")
    if state == "succeeded":
        succeed_task(session, task.id, host="w1")
    session.commit()
    with pytest.raises(NothingToRerunError):
        rerun_task(session, task.id)
    session.rollback()
    assert load(session, task.id).state == state


def test_an_operation_with_nothing_to_re_run_is_refused(
    session: Session, spawn_in_op: SpawnInOp, open_op: Callable[..., str], in_request: InRequest
) -> None:
    old, tasks = _failed(session, spawn_in_op, "a", "b")
    with in_request(open_op()):
        assert rerun_operation(session, old) == sorted(t.id for t in tasks)
    session.commit()
    with in_request(open_op()), pytest.raises(NothingToRerunError):
        rerun_operation(session, old)


@pytest.fixture
def clusters(session: Session) -> Iterator[list[Cluster]]:
    made = [Cluster(name=f"c{i}", project_id="p1") for i in range(2)]
    session.add_all(made)
    session.commit()
    yield made


def test_an_operation_keeps_its_first_failure_and_resources_after_they_are_gone(
    session: Session, engine: Engine, clusters: list[Cluster], in_operation: InOperation
) -> None:
    with in_operation() as op:
        first = clusters[0].spawn_tasks(["a", "a"])  # one resource touched twice: kept once
        [second] = clusters[1].spawn_tasks(["b"])
    session.commit()
    fail_task(session, second.id, code="b_down", message="first")
    session.commit()
    fail_task(session, first[0].id, code="a_down", message="later")
    session.commit()
    for cluster in clusters:
        session.delete(cluster)
    session.commit()
    assert session.execute(select(Task.id).where(Task.request_id == op)).all() == []
    operation = load_operation(session, op)
    assert operation.error == {
        "code": "b_down",
        "message": "first",
        "task_id": second.id,
        "task_name": "b",
    }
    kept = {(r.resource_type, r.resource_id) for r in operation.resource_records}
    assert kept == {("cluster", c.id) for c in clusters}
    # They go with their operation.
    with engine.begin() as conn:
        conn.execute(delete(Operation).where(Operation.id == op))
        left = conn.execute(select(operation_resources_table.c.operation_id)).all()
    assert left == []


def test_a_task_of_no_written_operation_keeps_no_resource(
    session: Session, node: Node, in_request: InRequest
) -> None:
    with in_request("req-00000000-0000-4000-8000-000000000000"):
        node.spawn_tasks(["boot"])
    session.commit()
    assert session.execute(select(operation_resources_table)).all() == []

"""The resource mixin: spawning, the tasks relationships, and the derived status."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, selectinload

from tasktoolkit.orm import ResourceStatus, Task, cancel_task, spawn_tasks
from tasktoolkit.orm._records import tasks_table
from tasktoolkit.orm._resource import resource_class, resource_types
from tasktoolkit.orm._transitions import start_task, succeed_task
from tasktoolkit.orm._types import utcnow
from tests.clock import database_now, wait_past
from tests.models import Cluster, Node
from tests.orm._db import (
    PATH_FROM_PENDING,
    InOperation,
    counts_of,
    move_through,
    spawn,
    task_count,
    task_row,
)


def test_registry_knows_the_test_types() -> None:
    assert resource_types()["node"] is Node
    assert resource_class("cluster") is Cluster
    assert resource_class("nope") is None


def test_spawn_task_outside_a_request(session: Session, engine: Engine, node: Node) -> None:
    task = node.spawn_task("boot", message="queued")
    session.commit()
    row = task_row(engine, task.id)
    assert row is not None
    assert row["request_id"] is None
    assert (row["resource_type"], row["resource_id"], row["node_id"]) == (
        "node",
        str(node.id),
        node.id,
    )
    assert (row["name"], row["state"], row["message"]) == ("boot", "pending", "queued")
    assert row["project_id"] == "p1"
    assert row["cluster_id"] is None


def test_spawn_task_in_a_request_joins_its_operation(
    session: Session, engine: Engine, node: Node, in_operation: InOperation
) -> None:
    with in_operation(user_id="u1", project_id="p9") as op:
        task = node.spawn_task("boot")
    session.commit()
    row = task_row(engine, task.id)
    assert row is not None
    assert row["request_id"] == op
    assert row["user_id"] == "u1"
    assert row["project_id"] == "p1"  # the resource's own project wins over the caller's
    assert counts_of(engine, op) == {"pending": 1}


def test_spawn_in_a_request_without_operation(
    session: Session, engine: Engine, node: Node, in_request: Any
) -> None:
    """A GET (no operation) that spawns a task: the task belongs to no operation."""
    with in_request(None):
        task = node.spawn_task("probe")
    session.commit()
    row = task_row(engine, task.id)
    assert row is not None and row["request_id"] is None


def test_spawn_takes_the_callers_project_when_the_resource_has_none(
    session: Session, engine: Engine, cluster: Cluster, in_operation: InOperation
) -> None:
    cluster.project_id = None
    session.commit()
    with in_operation(project_id="p7"):
        task = cluster.spawn_task("upgrade")
    session.commit()
    row = task_row(engine, task.id)
    assert row is not None and row["project_id"] == "p7"


def test_spawn_tasks_keeps_order(session: Session, node: Node) -> None:
    names = [f"step{i:02d}" for i in range(25)]
    spawned = node.spawn_tasks(names)
    session.commit()
    assert [t.name for t in spawned] == names
    session.expire_all()
    assert [t.name for t in node.tasks] == names
    ordered = session.scalars(
        select(Task.name).where(Task.node_id == node.id).order_by(Task.created_at, Task.id)
    ).all()
    assert ordered == names


def test_spawn_calls_in_one_session_keep_order(session: Session, node: Node) -> None:
    names = [f"call{i:02d}" for i in range(10)]
    for name in names:
        node.spawn_task(name)
    session.commit()
    session.expire_all()
    assert [t.name for t in node.tasks] == names


def test_bulk_spawn_across_resources_in_one_statement(
    session: Session,
    engine: Engine,
    cluster: Cluster,
    make_node: Callable[..., Node],
    open_op: Callable[..., str],
    in_request: Any,
) -> None:
    a, b = make_node("a"), make_node("b")
    op = open_op()
    inserts: list[str] = []

    def count_insert(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO TASKTOOLKIT_TASKS"):
            inserts.append(statement)

    event.listen(engine, "before_cursor_execute", count_insert)
    try:
        with in_request(op):
            tasks = spawn_tasks(
                session, [(a, "boot"), (b, "boot"), (a, "wire"), (cluster, "rebalance")]
            )
    finally:
        event.remove(engine, "before_cursor_execute", count_insert)
    session.commit()
    assert len(inserts) == 1
    assert [(t.resource_type, t.name) for t in tasks] == [
        ("node", "boot"),
        ("node", "boot"),
        ("node", "wire"),
        ("cluster", "rebalance"),
    ]
    assert task_count(engine, tasks_table.c.node_id == a.id) == 2
    assert task_count(engine, tasks_table.c.node_id == b.id) == 1
    assert task_count(engine, tasks_table.c.cluster_id == cluster.id) == 1
    assert counts_of(engine, op) == {"pending": 4}


def test_spawn_on_an_unflushed_resource_flushes_it(
    session: Session, engine: Engine, cluster: Cluster
) -> None:
    n = Node(cluster_id=cluster.id)
    session.add(n)  # pending: no id yet
    task = n.spawn_task("boot")
    session.commit()
    assert n.id is not None
    row = task_row(engine, task.id)
    assert row is not None and row["node_id"] == n.id and row["resource_id"] == str(n.id)


def test_tasks_and_active_tasks(session: Session, node: Node) -> None:
    _, b, c, d = spawn(session, node, "a", "b", "c", "d")
    start_task(session, b.id)
    start_task(session, c.id)
    succeed_task(session, c.id)
    cancel_task(session, d.id)
    session.commit()
    session.expire_all()
    assert [t.name for t in node.tasks] == ["a", "b", "c", "d"]
    assert [t.name for t in node.active_tasks] == ["a", "b"]


def test_spawn_refreshes_loaded_relationships(session: Session, node: Node) -> None:
    spawn(session, node, "a")
    assert [t.name for t in node.tasks] == ["a"]
    assert [t.name for t in node.active_tasks] == ["a"]
    node.spawn_task("b")
    assert [t.name for t in node.tasks] == ["a", "b"]
    assert [t.name for t in node.active_tasks] == ["a", "b"]


def _run(session: Session, node: Node, name: str, outcome: str) -> Task:
    """A task of ``name`` on ``node`` brought to ``outcome``."""
    task = node.spawn_task(name)
    move_through(session, task.id, *PATH_FROM_PENDING[outcome])
    session.commit()
    return task


def _expire(session: Session, task: Task) -> None:
    session.execute(
        update(Task).where(Task.id == task.id).values(expires_at=utcnow() - timedelta(seconds=1))
    )
    session.commit()


STATUS_CASES = [
    pytest.param([], [], ResourceStatus.IDLE, id="no-tasks"),
    pytest.param([("a", "pending")], [], ResourceStatus.BUSY, id="pending-busy"),
    pytest.param([("a", "running")], [], ResourceStatus.BUSY, id="running-busy"),
    pytest.param([("a", "succeeded")], [], ResourceStatus.IDLE, id="succeeded-idle"),
    pytest.param([("a", "cancelled")], [], ResourceStatus.CANCELLED, id="cancelled"),
    pytest.param(
        [("a", "cancelled"), ("b", "cancelled")], [], ResourceStatus.CANCELLED, id="all-cancelled"
    ),
    pytest.param(
        [("a", "cancelled"), ("a", "succeeded")],
        [],
        ResourceStatus.IDLE,
        id="cancel-then-success",
    ),
    pytest.param(
        [("a", "cancelled"), ("b", "failed")], [], ResourceStatus.ERROR, id="failure-over-cancel"
    ),
    pytest.param(
        [("a", "cancelled"), ("b", "running")], [], ResourceStatus.BUSY, id="busy-over-cancel"
    ),
    pytest.param([("a", "cancelled")], [0], ResourceStatus.IDLE, id="expired-cancel-not-counted"),
    pytest.param([("a", "failed")], [], ResourceStatus.ERROR, id="failed-error"),
    pytest.param(
        [("a", "failed"), ("a", "succeeded")], [], ResourceStatus.IDLE, id="failure-then-success"
    ),
    pytest.param(
        [("a", "succeeded"), ("a", "failed")], [], ResourceStatus.ERROR, id="success-then-failure"
    ),
    pytest.param(
        [("a", "failed"), ("b", "succeeded")], [], ResourceStatus.ERROR, id="other-name-failed"
    ),
    pytest.param([("a", "failed"), ("b", "pending")], [], ResourceStatus.BUSY, id="busy-wins"),
    pytest.param([("a", "failed")], [0], ResourceStatus.IDLE, id="expired-failure-not-counted"),
    pytest.param(
        [("a", "failed"), ("a", "succeeded")],
        [1],
        ResourceStatus.IDLE,
        id="expired-success-still-supersedes-failure",
    ),
    pytest.param(
        [("a", "succeeded"), ("a", "failed")],
        [0],
        ResourceStatus.ERROR,
        id="expired-old-success-live-failure",
    ),
]


@pytest.mark.parametrize(("runs", "expired", "expected"), STATUS_CASES)
def test_task_status(
    session: Session,
    make_node: Callable[..., Node],
    runs: list[tuple[str, str]],
    expired: list[int],
    expected: str,
) -> None:
    node, bystander = make_node("subject"), make_node("bystander")
    _run(session, bystander, "a", "failed")  # another node's failure must not leak in
    tasks = [_run(session, node, name, outcome) for name, outcome in runs]
    for index in expired:
        _expire(session, tasks[index])
    session.expire_all()
    assert node.task_status == expected
    in_sql = session.scalars(select(Node.id).where(Node.task_status == expected)).all()
    assert node.id in in_sql
    assert session.scalar(select(Node.task_status).where(Node.id == node.id)) == expected


def test_task_status_of_many_resources_in_one_query(
    session: Session, make_node: Callable[..., Node]
) -> None:
    busy, error, idle = make_node("busy"), make_node("error"), make_node("idle")
    _run(session, busy, "a", "running")
    _run(session, error, "a", "failed")
    _run(session, idle, "a", "failed")
    _run(session, idle, "a", "succeeded")
    rows = dict(session.execute(select(Node.name, Node.task_status).order_by(Node.name)).all())
    assert rows == {"busy": "busy", "error": "error", "idle": "idle"}
    in_error = session.scalars(select(Node.name).where(Node.task_status == "error")).all()
    assert in_error == ["error"]


def test_task_status_of_a_transient_resource_is_idle(cluster: Cluster) -> None:
    assert Node(cluster_id=cluster.id).task_status == ResourceStatus.IDLE


def test_task_status_on_cluster_ignores_its_nodes(
    session: Session, cluster: Cluster, node: Node
) -> None:
    _run(session, node, "a", "running")
    assert cluster.task_status == ResourceStatus.IDLE
    assert node.task_status == ResourceStatus.BUSY
    both = (
        select(Cluster.task_status, Node.task_status)
        .select_from(Cluster)
        .join(Node, Node.cluster_id == Cluster.id)
    )
    assert session.execute(both).one() == (ResourceStatus.IDLE, ResourceStatus.BUSY)


def test_active_tasks_follow_moves_in_the_same_session(session: Session, node: Node) -> None:
    a, b = spawn(session, node, "a", "b")
    assert [t.name for t in node.active_tasks] == ["a", "b"]
    start_task(session, a.id)
    succeed_task(session, a.id)
    assert [t.name for t in node.active_tasks] == ["b"]  # no commit or refresh needed
    cancel_task(session, b.id)
    assert node.active_tasks == []


def test_task_status_query_built_once_reads_the_clock_when_run(
    session: Session, node: Node
) -> None:
    in_error = select(Node.id).where(Node.task_status == ResourceStatus.ERROR)  # built once
    failed = _run(session, node, "a", "failed")
    assert session.scalars(in_error).all() == [node.id]
    soon = database_now(session) + timedelta(milliseconds=5)
    session.execute(update(Task).where(Task.id == failed.id).values(expires_at=soon))
    session.commit()
    wait_past(session.get_bind(), soon)  # poll the database's clock past the expiry
    assert session.scalars(in_error).all() == []


@pytest.mark.parametrize(
    "load",
    [
        pytest.param(lambda s, n: n.tasks, id="lazy"),
        pytest.param(
            lambda s, n: s.scalars(select(Node).options(selectinload(Node.tasks))).one().tasks,
            id="selectin",
        ),
    ],
)
def test_expired_tasks_are_not_in_the_tasks_relationship_and_still_cascade(
    session: Session, engine: Engine, node: Node, load: Callable[[Session, Node], list[Task]]
) -> None:
    kept, gone = _run(session, node, "kept", "succeeded"), _run(session, node, "gone", "failed")
    ids = [kept.id, gone.id]
    _expire(session, gone)
    session.expire_all()
    assert [t.name for t in load(session, node)] == ["kept"]
    session.delete(node)
    session.commit()
    assert [task_row(engine, task_id) for task_id in ids] == [None, None]

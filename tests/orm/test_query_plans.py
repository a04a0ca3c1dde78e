"""The indexes are really used: each query's plan seeks an index, never scans the table.

The workers' claims and the Celery sweeper's search are explained as they are sent
(the statement caught on its way out, with its parameters), on realistic rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Result, Select, event, insert, select, text, update
from sqlalchemy.orm import Session

from tasktoolkit.orm import Operation, Scope, Task
from tasktoolkit.orm._publishing import to_publish
from tasktoolkit.orm._records import attempts_table, operations_table, tasks_table
from tasktoolkit.orm._stats import task_stats
from tasktoolkit.orm._types import utcnow
from tasktoolkit.orm._workers import claim_tasks
from tests.models import Node
from tests.orm._db import spawn

QUERIES = [
    pytest.param(
        lambda: (
            select(Task.id)
            .where(Task.resource_type == "node", Task.resource_id == "1", Task.state == "running")
            .order_by(Task.created_at.desc(), Task.id.desc())
        ),
        id="by-resource-and-state",
    ),
    pytest.param(
        lambda: select(Task.id).where(Task.node_id == 1, Task.state == "running"),  # type: ignore[attr-defined]
        id="by-resource-column-and-state",
    ),
    pytest.param(
        lambda: select(Task.id).where(Task.request_id == "req-x").order_by(Task.created_at),
        id="by-request-id",
    ),
    pytest.param(
        lambda: (
            select(Task.id)
            .where(Task.state == "running")
            .order_by(Task.created_at.desc(), Task.id.desc())
            .limit(100)
        ),
        id="by-state-across-resources",
    ),
    pytest.param(lambda: select(Task.id).where(Task.expires_at <= utcnow()), id="by-expiry"),
]


def _plan_text(backend: str, rows: Result[Any]) -> str:
    """The rows of an ``EXPLAIN`` (``EXPLAIN QUERY PLAN`` on SQLite), one line each."""
    if backend == "sqlite":
        return "\n".join(str(r[-1]) for r in rows)
    if backend == "postgresql":
        return "\n".join(r[0] for r in rows)
    return "\n".join(f"table={r['table']} type={r['type']} key={r['key']}" for r in rows.mappings())


def _plan(session: Session, backend: str, query: Select[Any]) -> str:
    compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
    sql = str(compiled)
    if backend == "sqlite":
        return _plan_text(backend, session.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
    if backend == "postgresql":
        session.execute(text("SET LOCAL enable_seqscan = off"))  # tiny tables: ask for the index
    return _plan_text(backend, session.execute(text(f"EXPLAIN {sql}")))


@pytest.mark.parametrize("query", QUERIES)
def test_query_uses_an_index(
    session: Session,
    backend: str,
    make_node: Callable[..., Node],
    query: Callable[[], Select[Any]],
) -> None:
    for i in range(20):  # some rows, so that no planner takes the table for empty
        spawn(session, make_node(f"n{i}"), "boot", "wire")
    session.execute(
        text(
            "ANALYZE tasktoolkit_tasks"
            if backend != "mariadb"
            else "ANALYZE TABLE tasktoolkit_tasks"
        )
    )
    plan = _plan(session, backend, query())
    if backend == "sqlite":
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
        assert "SCAN tasktoolkit_tasks\n" not in plan + "\n", plan
    elif backend == "postgresql":
        assert "Index" in plan and "Seq Scan" not in plan, plan
    else:
        assert "type=ALL" not in plan and "key=None" not in plan, plan


OPERATION_QUERIES = [
    pytest.param(
        lambda: Operation.action == "delete",
        "ix_tasktoolkit_operations_project_action",
        id="action",
    ),
    pytest.param(
        lambda: Operation.method == "DELETE",
        "ix_tasktoolkit_operations_project_method",
        id="method",
    ),
    pytest.param(
        lambda: Operation.state == "running", "ix_tasktoolkit_operations_project_state", id="state"
    ),
]


def _operations_page(where: Any, *, project: bool = True) -> Select[Any]:
    return (
        select(Operation.id)
        .where(where, *([Operation.project_id == "p3"] if project else []))
        .order_by(Operation.created_at.desc(), Operation.id.desc())
        .limit(50)
    )


@pytest.fixture
def operations(session: Session, backend: str) -> None:
    """Operations of ten projects, every method and action, on many resources."""
    now = utcnow()
    session.execute(
        insert(operations_table),
        [
            {
                "id": f"req-{n:08d}",
                "method": ("POST", "PUT", "DELETE")[n % 3],
                "path": "/x",
                "action": ("create", "update", "delete")[n % 3],
                "resource_type": "node",
                "resource_id": str(n % 97),
                "project_id": f"p{n % 10}",
                "state": "succeeded" if n % 7 else "running",
                "created_at": now,
                "updated_at": now,
            }
            for n in range(600)
        ],
    )
    table = "ANALYZE TABLE" if backend == "mariadb" else "ANALYZE"
    session.execute(text(f"{table} tasktoolkit_operations"))


@pytest.mark.parametrize(("where", "index"), OPERATION_QUERIES)
def test_operation_filters_of_a_project_seek_their_index(
    session: Session, backend: str, operations: None, where: Callable[[], Any], index: str
) -> None:
    plan = _plan(session, backend, _operations_page(where()))
    assert index in plan, plan


def test_operation_resource_filter_seeks_its_index(
    session: Session, backend: str, operations: None
) -> None:
    where = (Operation.resource_type == "node") & (Operation.resource_id == "5")
    for project in (True, False):  # a project's, and an admin's across projects
        plan = _plan(session, backend, _operations_page(where, project=project))
        assert "ix_tasktoolkit_operations_resource" in plan, plan


WORKER_NAMES = ["boot", "wire"]

#: The claims (as ``Worker(engine, names, queues=...)`` makes them) and the Celery
#: sweeper's search; each with the index it should seek, and how many seeks of it:
#: a claim seeks each of its queues, never walking the other queues' pending tasks.
TASK_STATEMENTS = [
    pytest.param(
        lambda s: claim_tasks(s, WORKER_NAMES, host="w1", queues=["q1"], count=1),
        "ix_tasktoolkit_tasks_queue",
        1,
        id="claim-one-queue",
    ),
    pytest.param(
        lambda s: claim_tasks(s, WORKER_NAMES, host="w1", queues=["q1", "q2"], count=1),
        "ix_tasktoolkit_tasks_queue",
        2,
        id="claim-several-queues",
    ),
    pytest.param(
        lambda s: claim_tasks(s, WORKER_NAMES, host="w1", queues=[None], count=1),
        "ix_tasktoolkit_tasks_queue",
        1,
        id="claim-default-queue",
    ),
    pytest.param(
        lambda s: claim_tasks(s, WORKER_NAMES, host="w1", queues=[None, "q1", "q2"], count=1),
        "ix_tasktoolkit_tasks_queue",
        3,
        id="claim-queues-and-default",
    ),
    pytest.param(
        lambda s: claim_tasks(s, WORKER_NAMES, host="w1", queues=[None, "q1", "q2"], count=10),
        "ix_tasktoolkit_tasks_queue",
        3,
        id="claim-ten-over-queues",
    ),
    pytest.param(
        lambda s: to_publish(s, WORKER_NAMES, sweep_after=timedelta(minutes=1), limit=500),
        "ix_tasktoolkit_tasks_unpublished",
        1,
        id="sweeper-unpublished",
    ),
]


@pytest.fixture
def queued_tasks(session: Session, backend: str) -> None:
    """2000 tasks, mostly finished; a tenth pending, spread over the default queue and four
    named ones, a third of those never published."""
    now = utcnow()
    session.execute(
        insert(tasks_table),
        [
            {
                "id": f"task-{n:08d}",
                "resource_type": "node",
                "resource_id": str(n % 97),
                "name": ("boot", "wire", "scan")[n % 3],
                "state": "pending" if n % 10 == 0 else ("succeeded", "failed", "running")[n % 3],
                "queue": (None, "q1", "q2", "q3", "q4")[n // 10 % 5],
                "published_at": None if n // 10 % 3 == 0 else now,
                "created_at": now - timedelta(seconds=n),
                "updated_at": now,
            }
            for n in range(2000)
        ],
    )
    table = "ANALYZE TABLE" if backend == "mariadb" else "ANALYZE"
    session.execute(text(f"{table} tasktoolkit_tasks"))


class _Sent(Exception):
    """The statement that was about to run (stopped before it ran)."""

    def __init__(self, statement: str, parameters: Any) -> None:
        super().__init__(statement)
        self.statement, self.parameters = statement, parameters


def _explain_first_statement(session: Session, backend: str, run: Callable[[Session], Any]) -> str:
    """The plan of the first statement ``run`` sends, as sent (with its own parameters); it is
    stopped before it runs."""

    def stop(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        raise _Sent(statement, parameters)

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", stop)
    try:
        with pytest.raises(_Sent) as sent:
            run(session)
    finally:
        event.remove(connection, "before_cursor_execute", stop)
    statement, parameters = sent.value.statement, sent.value.parameters
    explain = "EXPLAIN QUERY PLAN" if backend == "sqlite" else "EXPLAIN"
    return _plan_text(backend, connection.exec_driver_sql(f"{explain} {statement}", parameters))


@pytest.mark.parametrize(("run", "index", "seeks"), TASK_STATEMENTS)
def test_claims_and_sweeps_seek_their_index(
    session: Session,
    backend: str,
    queued_tasks: None,
    run: Callable[[Session], Any],
    index: str,
    seeks: int,
) -> None:
    plan = _explain_first_statement(session, backend, run)
    assert "ix_tasktoolkit_tasks_state" not in plan, plan  # no walk of every queue's
    if backend == "sqlite":
        found = re.findall(f"SEARCH tasktoolkit_tasks USING (?:COVERING )?INDEX {index} ", plan)
        assert "SCAN tasktoolkit_tasks" not in plan, plan
    elif backend == "postgresql":
        found = re.findall(f"(?:Index (?:Only )?Scan using|Bitmap Index Scan on) {index} ", plan)
        assert "Seq Scan on tasktoolkit_tasks" not in plan, plan
    else:
        found = re.findall(f"table=tasktoolkit_tasks type=(?:ref|range) key={index}$", plan, re.M)
        assert "table=tasktoolkit_tasks type=ALL" not in plan, plan
    assert len(found) == seeks, plan


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param(Scope(all_projects=True), id="every-project"),
        pytest.param(Scope(project_id="p1"), id="one-project"),
    ],
)
def test_the_stats_seek_their_indexes(
    session: Session, backend: str, queued_tasks: None, scope: Scope
) -> None:
    # Ten projects; an ended attempt for each task not pending, ended over the last two days.
    for digit in range(10):
        session.execute(
            update(tasks_table)
            .where(tasks_table.c.id.like(f"%{digit}"))
            .values(project_id=f"p{digit}")
        )
    now = utcnow()
    session.execute(
        insert(attempts_table),
        [
            {
                "task_id": f"task-{n:08d}",
                "number": 1,
                "started_at": now - timedelta(seconds=86 * n + 1),
                "finished_at": now - timedelta(seconds=86 * n),
                "outcome": "succeeded",
            }
            for n in range(2000)
            if n % 10
        ],
    )
    for table in ("tasktoolkit_tasks", "tasktoolkit_task_attempts"):
        session.execute(text(f"{'ANALYZE TABLE' if backend == 'mariadb' else 'ANALYZE'} {table}"))
    sent: list[tuple[str, Any]] = []

    def catch(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "tasktoolkit_tasks" in statement:
            sent.append((statement, parameters))

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", catch)
    try:
        task_stats(connection, scope=scope)
    finally:
        event.remove(connection, "before_cursor_execute", catch)
    assert len(sent) == 3
    explain = "EXPLAIN QUERY PLAN" if backend == "sqlite" else "EXPLAIN"
    if backend == "postgresql":
        session.execute(text("SET LOCAL enable_seqscan = off"))  # small tables: ask for the index
    for statement, parameters in sent:
        plan = _plan_text(backend, connection.exec_driver_sql(f"{explain} {statement}", parameters))
        if backend == "sqlite":
            assert "SCAN tasktoolkit_tasks\n" not in plan + "\n", plan
            assert "SCAN tasktoolkit_task_attempts\n" not in plan + "\n", plan
        elif backend == "postgresql":
            assert "Seq Scan on tasktoolkit_tasks" not in plan, plan
            assert "Seq Scan on tasktoolkit_task_attempts" not in plan, plan
        else:
            assert "table=tasktoolkit_tasks type=ALL" not in plan, plan
            assert "table=tasktoolkit_task_attempts type=ALL" not in plan, plan


#: What each database's plan says when the claim seeks past the waiting tasks: the
#: ready ones (``waiting_on`` = 0) are a prefix of the claims' index.
SEEKS_READY = {
    "sqlite": "USING INDEX ix_tasktoolkit_tasks_queue (state=? AND queue=? AND waiting_on=?)",
    "postgresql": "AND ((queue)::text = 'q1'::text) AND (waiting_on = 0))",
    "mariadb": "type=ref key=ix_tasktoolkit_tasks_queue",
}


def test_a_claim_seeks_past_tasks_waiting_on_prerequisites(
    session: Session, backend: str, queued_tasks: None
) -> None:
    now = utcnow()
    session.execute(
        insert(tasks_table),
        [
            {
                "id": f"waiting-{n:08d}",
                "resource_type": "node",
                "resource_id": str(n % 97),
                "name": "boot",
                "state": "pending",
                "queue": "q1",
                "waiting_on": 1,
                "after": '["wire"]',
                "created_at": now - timedelta(days=1, seconds=n),
                "updated_at": now,
            }
            for n in range(2000)
        ],
    )
    table = "ANALYZE TABLE" if backend == "mariadb" else "ANALYZE"
    session.execute(text(f"{table} tasktoolkit_tasks"))
    claim = lambda s: claim_tasks(s, WORKER_NAMES, host="w1", queues=["q1"], count=1)  # noqa: E731
    plan = _explain_first_statement(session, backend, claim)
    assert SEEKS_READY[backend] in plan, plan
    assert "SCAN tasktoolkit_tasks" not in plan and "Seq Scan" not in plan, plan
    assert "table=tasktoolkit_tasks type=ALL" not in plan, plan

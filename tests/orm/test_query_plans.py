"""The indexes are really used: each query's plan seeks an index, never scans the table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Select, insert, select, text
from sqlalchemy.orm import Session

from tasktoolkit.orm import Operation, Task
from tasktoolkit.orm._records import operations_table
from tasktoolkit.orm._types import utcnow
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


def _plan(session: Session, backend: str, query: Select[Any]) -> str:
    compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
    sql = str(compiled)
    if backend == "sqlite":
        rows = session.execute(text(f"EXPLAIN QUERY PLAN {sql}")).all()
        return "\n".join(str(r[-1]) for r in rows)
    if backend == "postgresql":
        session.execute(text("SET LOCAL enable_seqscan = off"))  # tiny tables: ask for the index
        return "\n".join(r[0] for r in session.execute(text(f"EXPLAIN {sql}")).all())
    rows = session.execute(text(f"EXPLAIN {sql}")).mappings().all()
    return "\n".join(f"type={r['type']} key={r['key']}" for r in rows)


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

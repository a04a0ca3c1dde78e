"""The indexes are really used: each query's plan seeks an index, never scans the table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session

from tasktoolkit.orm import Task
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

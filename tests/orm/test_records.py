"""The records on the database: fields, UTC times, named constraints, indexes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, event, insert, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session

from tasktoolkit.orm import Operation, Task
from tasktoolkit.orm._records import operations_table, tasks_table
from tests.models import Node
from tests.orm._db import count_rows, spawn, task_count

TASK_FIELDS = [
    "id",
    "request_id",
    "resource_type",
    "resource_id",
    "name",
    "state",
    "progress",
    "message",
    "error",
    "host",
    "created_at",
    "started_at",
    "updated_at",
    "finished_at",
    "expires_at",
]
OPERATION_FIELDS = [
    "id",
    "global_request_id",
    "method",
    "path",
    "action",
    "resource_type",
    "resource_id",
    "project_id",
    "user_id",
    "state",
    "http_status",
    "task_counts",
    "retry_of",
    "created_at",
    "updated_at",
    "finished_at",
    "expires_at",
]
# Fields that are derived in Python from stored columns.
DERIVED = {
    "error": ["error_code", "error_message", "error_traceback"],
    "task_counts": [
        f"tasks_{s}" for s in ("pending", "running", "succeeded", "failed", "cancelled")
    ],
}


def _stored_columns(field: str) -> list[str]:
    return DERIVED.get(field, [field])


@pytest.mark.parametrize("field", [pytest.param(f, id=f) for f in TASK_FIELDS])
def test_task_has_field(engine: Engine, field: str) -> None:
    columns = {c["name"] for c in inspect(engine).get_columns("tasktoolkit_tasks")}
    assert set(_stored_columns(field)) <= columns
    assert hasattr(Task, field)


@pytest.mark.parametrize("field", [pytest.param(f, id=f) for f in OPERATION_FIELDS])
def test_operation_has_field(engine: Engine, field: str) -> None:
    columns = {c["name"] for c in inspect(engine).get_columns("tasktoolkit_operations")}
    assert set(_stored_columns(field)) <= columns
    assert hasattr(Operation, field)


def test_task_values_read_back(session: Session, session_factory: Any, node: Node) -> None:
    (task,) = spawn(session, node, "boot")
    with session_factory() as fresh:
        read = fresh.get(Task, task.id)
        assert read is not None
        assert (read.resource_type, read.resource_id, read.name) == ("node", str(node.id), "boot")
        assert (read.state, read.progress, read.error, read.host) == ("pending", None, None, None)
        assert read.request_id is None
        assert read.started_at is read.finished_at is read.expires_at is None
        assert read.created_at == task.created_at


UTC_TIMES = [
    pytest.param(datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC), id="utc"),
    pytest.param(
        datetime(2026, 3, 1, 17, 30, 0, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        id="plus-0530",
    ),
    pytest.param(
        datetime(2026, 3, 1, 4, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-8))), id="minus-08"
    ),
]


@pytest.mark.parametrize("moment", UTC_TIMES)
def test_datetimes_read_back_aware_utc(
    session: Session, session_factory: Any, node: Node, moment: datetime
) -> None:
    (task,) = spawn(session, node, "boot")
    task.expires_at = moment
    session.commit()
    with session_factory() as fresh:
        read = fresh.get(Task, task.id)
        assert read is not None
        for value in (read.created_at, read.updated_at, read.expires_at):
            assert value is not None
            assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
        assert read.expires_at == moment  # the same instant, to the microsecond
        assert read.expires_at is not None and read.expires_at.tzinfo == UTC
        core = fresh.execute(
            select(tasks_table.c.expires_at).where(tasks_table.c.id == task.id)
        ).scalar_one()
        assert core == moment and core.utcoffset() == timedelta(0)


def test_datetime_comparison_in_sql_uses_the_instant(session: Session, node: Node) -> None:
    (task,) = spawn(session, node, "boot")
    task.expires_at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    session.commit()
    earlier_elsewhere = datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=2)))  # 11:00Z
    later_elsewhere = datetime(2026, 3, 1, 6, 0, tzinfo=timezone(timedelta(hours=-7)))  # 13:00Z
    assert session.scalar(select(Task.id).where(Task.expires_at > earlier_elsewhere)) == task.id
    assert session.scalar(select(Task.id).where(Task.expires_at > later_elsewhere)) is None


@pytest.mark.parametrize(
    ("value", "cause"),
    [
        pytest.param(datetime(2026, 3, 1, 12, 0), ValueError, id="naive"),
        pytest.param("2026-03-01T12:00:00Z", TypeError, id="string"),
    ],
)
def test_bad_datetime_refused_and_nothing_written(
    session: Session, engine: Engine, node: Node, value: Any, cause: type[Exception]
) -> None:
    (task,) = spawn(session, node, "boot")
    task.expires_at = value
    with pytest.raises(StatementError) as info:
        session.commit()
    assert isinstance(info.value.orig, cause)
    session.rollback()
    with engine.connect() as conn:
        stored = conn.execute(
            select(tasks_table.c.expires_at).where(tasks_table.c.id == task.id)
        ).scalar_one()
    assert stored is None


def test_naive_datetime_refused_in_a_query(session: Session) -> None:
    with pytest.raises(StatementError) as info:
        session.execute(select(Task).where(Task.created_at > datetime(2026, 1, 1)))
    assert isinstance(info.value.orig, ValueError)


CHECK_CONSTRAINTS = [
    pytest.param("tasktoolkit_tasks", "ck_tasktoolkit_tasks_state", id="tasks-state"),
    pytest.param("tasktoolkit_tasks", "ck_tasktoolkit_tasks_progress", id="tasks-progress"),
    pytest.param(
        "tasktoolkit_operations", "ck_tasktoolkit_operations_state", id="operations-state"
    ),
]


@pytest.mark.parametrize(("table", "name"), CHECK_CONSTRAINTS)
def test_check_constraint_named(engine: Engine, table: str, name: str) -> None:
    names = {c["name"] for c in inspect(engine).get_check_constraints(table)}
    assert name in names


@pytest.mark.parametrize(
    ("resource_column", "referred"),
    [
        pytest.param("cluster_id", "clusters", id="cluster"),
        pytest.param("node_id", "nodes", id="node"),
    ],
)
def test_resource_foreign_key_named_and_cascading(
    engine: Engine, resource_column: str, referred: str
) -> None:
    (fk,) = [
        fk
        for fk in inspect(engine).get_foreign_keys("tasktoolkit_tasks")
        if fk["constrained_columns"] == [resource_column]
    ]
    assert fk["name"] == f"fk_tasktoolkit_tasks_{resource_column}_{referred}"
    assert fk["referred_table"] == referred
    assert fk["options"].get("ondelete", "").upper() == "CASCADE"


@pytest.mark.parametrize(
    "table",
    [
        pytest.param("tasktoolkit_tasks", id="tasks"),
        pytest.param("tasktoolkit_operations", id="operations"),
    ],
)
def test_primary_key_named(engine: Engine, backend: str, table: str) -> None:
    name = inspect(engine).get_pk_constraint(table)["name"]
    # MariaDB names every primary key PRIMARY whatever the DDL said (reflected as None).
    assert name == (None if backend == "mariadb" else f"pk_{table}")


def _leading(engine: Engine, table: str) -> list[tuple[str, ...]]:
    return [tuple(ix["column_names"]) for ix in inspect(engine).get_indexes(table)]


INDEXED_QUERIES = [
    pytest.param("tasktoolkit_tasks", ("resource_type", "resource_id"), id="tasks-by-resource"),
    pytest.param("tasktoolkit_tasks", ("cluster_id",), id="tasks-by-cluster-column"),
    pytest.param("tasktoolkit_tasks", ("node_id",), id="tasks-by-node-column"),
    pytest.param("tasktoolkit_tasks", ("request_id",), id="tasks-by-request-id"),
    pytest.param("tasktoolkit_tasks", ("state", "created_at"), id="tasks-by-state-newest"),
    pytest.param("tasktoolkit_tasks", ("expires_at",), id="tasks-by-expiry"),
    pytest.param("tasktoolkit_operations", ("created_at",), id="operations-newest"),
    pytest.param("tasktoolkit_operations", ("expires_at",), id="operations-by-expiry"),
]


@pytest.mark.parametrize(("table", "prefix"), INDEXED_QUERIES)
def test_index_serves_query(engine: Engine, table: str, prefix: tuple[str, ...]) -> None:
    """Some index of ``table`` starts with ``prefix`` (the query's equality/range columns)."""
    indexes = _leading(engine, table)
    assert any(cols[: len(prefix)] == prefix for cols in indexes), indexes


def test_resource_and_state_query_seeks_the_resource(engine: Engine) -> None:
    """A resource's tasks in a state: the resource index is seeked, then its few rows filtered.

    The per-resource index also carries the list order (created_at, id), so a
    resource's page needs no sort whatever its state filter.
    """
    indexes = _leading(engine, "tasktoolkit_tasks")
    assert ("resource_type", "resource_id", "created_at", "id") in indexes


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        pytest.param({"state": "bogus"}, "ck_tasktoolkit_tasks_state", id="task-state"),
        pytest.param({"progress": 101}, "ck_tasktoolkit_tasks_progress", id="progress-over-100"),
        pytest.param({"progress": -1}, "ck_tasktoolkit_tasks_progress", id="progress-negative"),
    ],
)
def test_check_constraints_enforced(
    engine: Engine, values: dict[str, Any], constraint: str
) -> None:
    now = datetime.now(UTC)
    row = {
        "id": "00000000-0000-4000-8000-000000000001",
        "resource_type": "node",
        "resource_id": "1",
        "name": "boot",
        "state": "pending",
        "created_at": now,
        "updated_at": now,
        **values,
    }
    # MariaDB reports a CHECK violation as error 4025, which PyMySQL raises as an
    # OperationalError rather than an IntegrityError: match on the name instead.
    with pytest.raises(DBAPIError, match=constraint), engine.begin() as conn:
        conn.execute(insert(tasks_table).values(row))
    assert task_count(engine) == 0


def test_operation_state_constraint_enforced(engine: Engine) -> None:
    now = datetime.now(UTC)
    with pytest.raises(DBAPIError, match="ck_tasktoolkit_operations_state"), engine.begin() as conn:
        conn.execute(
            insert(operations_table).values(
                id="req-x", method="POST", path="/", state="bogus", created_at=now, updated_at=now
            )
        )
    assert count_rows(engine, operations_table) == 0


def test_repr_never_loads(session: Session, node: Node) -> None:
    (task,) = spawn(session, node, "boot")
    session.expire(task)
    assert repr(task) == "<Task >"
    assert "state" not in inspect(task).dict


SESSION_TIME_ZONE = {
    "postgresql": "SET TIME ZONE 'Asia/Kolkata'",
    "mariadb": "SET time_zone = '+05:30'",
}


def test_times_survive_a_non_utc_database_session(
    session: Session, engine: Engine, backend: str, node: Node
) -> None:
    """A connection whose database session is not in UTC reads and writes the same instants."""
    (task,) = spawn(session, node, "boot")
    local = create_engine(engine.url)

    @event.listens_for(local, "connect")
    def set_zone(dbapi_connection: Any, _: Any) -> None:
        if backend in SESSION_TIME_ZONE:
            cursor = dbapi_connection.cursor()
            cursor.execute(SESSION_TIME_ZONE[backend])
            cursor.close()

    moment = datetime(2026, 6, 1, 23, 30, 0, 5, tzinfo=UTC)
    try:
        with Session(local) as other:
            if backend in SESSION_TIME_ZONE:  # the zone really is in force
                zone = "SHOW TIME ZONE" if backend == "postgresql" else "SELECT @@time_zone"
                assert other.execute(text(zone)).scalar() in ("Asia/Kolkata", "+05:30")
            read = other.get(Task, task.id)
            assert read is not None
            assert read.created_at == task.created_at
            assert read.created_at.utcoffset() == timedelta(0)
            read.expires_at = moment
            other.commit()
    finally:
        local.dispose()
    session.expire_all()
    assert task.expires_at == moment and task.expires_at.tzinfo == UTC

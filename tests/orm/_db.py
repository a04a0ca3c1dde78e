"""Reading committed rows in ORM tests, on a connection of their own."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from tasktoolkit.orm import Operation, Task, cancel_task
from tasktoolkit.orm._records import operations_table, tasks_table
from tasktoolkit.orm._transitions import fail_task, start_task, succeed_task

STATES = ("pending", "running", "succeeded", "failed", "cancelled")

PATH_FROM_PENDING = {
    "pending": (),
    "running": ("running",),
    "succeeded": ("running", "succeeded"),
    "failed": ("failed",),
    "cancelled": ("cancelled",),
}
"""The allowed moves that take a pending task to each state (through running only where needed)."""

InOperation = Callable[..., AbstractContextManager[str]]
"""The ``in_operation`` fixture: ``with in_operation() as op:``."""

SpawnInOp = Callable[..., tuple[str, list[Task]]]
"""The ``spawn_in_op`` fixture: ``op, tasks = spawn_in_op(*names)``."""


def load(session: Session, task_id: str) -> Task:
    """The task as committed now (a new transaction: MariaDB reads repeatably)."""
    session.commit()
    task = session.get(Task, task_id, populate_existing=True)
    assert task is not None
    return task


def load_operation(session: Session, request_id: str) -> Operation:
    """The operation as committed now (a new transaction, as in :func:`load`)."""
    session.commit()
    op = session.get(Operation, request_id, populate_existing=True)
    assert op is not None
    return op


def count_rows(bind: Session | Connection | Engine, table: Table, *where: Any) -> int:
    """How many rows of ``table`` match ``where`` (read in a fresh statement)."""
    stmt = select(func.count()).select_from(table).where(*where)
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return int(conn.execute(stmt).scalar_one())
    return int(bind.execute(stmt).scalar_one())


def task_count(engine: Engine, *where: Any) -> int:
    """How many task rows are committed (read on a connection of its own)."""
    return count_rows(engine, tasks_table, *where)


def task_row(engine: Engine, task_id: str) -> dict[str, Any] | None:
    """The committed row of a task as a dict, or ``None``."""
    with engine.connect() as conn:
        row = conn.execute(select(tasks_table).where(tasks_table.c.id == task_id)).one_or_none()
    return None if row is None else dict(row._mapping)


def operation_row(engine: Engine, operation_id: str) -> dict[str, Any]:
    """The committed row of an operation as a dict."""
    with engine.connect() as conn:
        row = conn.execute(
            select(operations_table).where(operations_table.c.id == operation_id)
        ).one()
    return dict(row._mapping)


def counts_of(engine: Engine, operation_id: str) -> dict[str, int]:
    """The committed ``task_counts`` of an operation, zero counts left out."""
    row = operation_row(engine, operation_id)
    return {state: row[f"tasks_{state}"] for state in STATES if row[f"tasks_{state}"]}


def spawn(session: Session, resource: Any, *names: str) -> list[Task]:
    """Spawn ``names`` on ``resource`` and commit; the tasks."""
    tasks = resource.spawn_tasks(list(names))
    session.commit()
    return list(tasks)


def move_through(session: Session, task_id: str, *states: str) -> None:
    """Move a task through ``states`` in order, one allowed move each (worker ``w1``); no commit."""
    for state in states:
        if state == "running":
            start_task(session, task_id, host="w1")
        elif state == "succeeded":
            succeed_task(session, task_id)
        elif state == "failed":
            fail_task(session, task_id, code="boom", message="it broke")
        elif state == "cancelled":
            cancel_task(session, task_id)
        else:
            raise ValueError(f"no move to {state!r}")

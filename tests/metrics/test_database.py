"""The database gauges: what they read, from the index alone, once a second, through an outage."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest
from sqlalchemy import event, insert, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from tasktoolkit import Settings, Toolkit
from tasktoolkit.metrics import DatabaseCollector, Metrics, metrics_registry
from tasktoolkit.orm import Worker
from tasktoolkit.orm._records import tasks_table, workers_table
from tasktoolkit.orm._transitions import succeed_task
from tasktoolkit.orm._types import utcnow
from tests.clock import age
from tests.metrics.scrapes import Scrape, family, parse
from tests.models import Node


def _rows(count: int, *, state: str, name: str, queue: str | None, age: float) -> list[Any]:
    now = utcnow()
    return [
        {
            "id": f"{name}-{state}-{queue}-{n:06d}",
            "resource_type": "node",
            "resource_id": "1",
            "name": name,
            "state": state,
            "queue": queue,
            "created_at": now - timedelta(seconds=age + n),
            "updated_at": now,
        }
        for n in range(count)
    ]


@pytest.fixture
def filled(session: Session, engine: Engine, backend: str) -> None:
    """A history of 2,000 finished tasks, and some active ones on two queues."""
    rows = [
        *_rows(2000, state="succeeded", name="boot", queue=None, age=600),
        *_rows(3, state="pending", name="boot", queue=None, age=100),
        *_rows(2, state="running", name="boot", queue=None, age=50),
        *_rows(4, state="pending", name="wire", queue="host-1", age=10),
    ]
    session.execute(insert(tasks_table), rows)
    session.commit()
    # The statistics (and PostgreSQL's visibility map) as autovacuum or InnoDB would keep them.
    analyze = {"postgresql": "VACUUM ANALYZE", "mariadb": "ANALYZE TABLE"}.get(backend, "ANALYZE")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"{analyze} tasktoolkit_tasks")


def test_the_gauges_count_active_tasks_and_the_oldest_ready_one(
    filled: None, session: Session, scrape: Callable[[], Scrape]
) -> None:
    # The oldest pending boot waits for its retry's backoff: the next oldest counts.
    session.execute(
        update(tasks_table)
        .where(tasks_table.c.id == "boot-pending-None-000002")
        .values(not_before=utcnow() + timedelta(minutes=5))
    )
    session.commit()
    read = scrape()
    assert family(read, "tasktoolkit_tasks") == {
        (("name", "boot"), ("queue", ""), ("state", "pending")): 3.0,
        (("name", "boot"), ("queue", ""), ("state", "running")): 2.0,
        (("name", "wire"), ("queue", "host-1"), ("state", "pending")): 4.0,
    }
    ages = family(read, "tasktoolkit_oldest_pending_age_seconds")
    assert set(ages) == {(("name", "boot"), ("queue", "")), (("name", "wire"), ("queue", "host-1"))}
    assert 101 <= ages[(("name", "boot"), ("queue", ""))] < 110
    assert 13 <= ages[(("name", "wire"), ("queue", "host-1"))] < 20


def test_a_retry_is_ready_from_the_end_of_its_backoff(
    session: Session, node: Node, scrape: Callable[[], Scrape]
) -> None:
    (task,) = node.spawn_tasks(["boot"])
    session.commit()
    session.execute(
        update(tasks_table)
        .where(tasks_table.c.id == task.id)
        .values(
            created_at=utcnow() - timedelta(hours=1), not_before=utcnow() - timedelta(seconds=30)
        )
    )
    session.commit()
    (age,) = family(scrape(), "tasktoolkit_oldest_pending_age_seconds").values()
    assert 30 <= age < 40


def test_a_task_waiting_on_another_is_ready_from_when_that_one_succeeded(
    session: Session, node: Node, scrape: Callable[[], Scrape]
) -> None:
    wire, _ = node.spawn_tasks(["wire", "boot"], after={"boot": ["wire"]})
    session.commit()
    session.execute(update(tasks_table).values(created_at=utcnow() - timedelta(hours=1)))
    session.execute(
        update(tasks_table).where(tasks_table.c.id == wire.id).values(state="running")
    )
    session.commit()
    assert family(scrape(), "tasktoolkit_oldest_pending_age_seconds") == {}  # boot waits
    succeed_task(session, wire.id)
    session.commit()
    (age,) = family(scrape(), "tasktoolkit_oldest_pending_age_seconds").values()
    assert 0 <= age < 10


def _explained(engine: Engine, backend: str) -> str:
    """The plan of the statement a scrape sends, as sent."""
    sent: list[tuple[str, Any]] = []

    def catch(conn: Connection, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", catch)
    try:
        list(DatabaseCollector(engine).collect())
    finally:
        event.remove(engine, "before_cursor_execute", catch)
    (statement, parameters), = [s for s in sent if "tasktoolkit_tasks" in s[0]]
    explain = "EXPLAIN QUERY PLAN" if backend == "sqlite" else "EXPLAIN"
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"{explain} {statement}", parameters).all()
    if backend == "mariadb":
        return "\n".join(f"key={r.key} type={r.type} extra={r.Extra}" for r in rows)
    return "\n".join(str(r[-1] if backend == "sqlite" else r[0]) for r in rows)


def test_a_scrape_reads_the_index_alone(filled: None, engine: Engine, backend: str) -> None:
    plan = _explained(engine, backend)
    if backend == "sqlite":
        assert "USING COVERING INDEX ix_tasktoolkit_tasks_queue" in plan, plan
    elif backend == "postgresql":
        assert "Index Only Scan using ix_tasktoolkit_tasks_queue" in plan, plan
    else:
        assert "key=ix_tasktoolkit_tasks_queue type=range" in plan, plan
        assert "Using index" in plan, plan


def test_scrapes_within_a_second_read_the_database_once(engine: Engine) -> None:
    statements: list[str] = []

    def count(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    collector = DatabaseCollector(engine)
    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(3):
            names = [f.name for f in collector.collect()]
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert names == [
        "tasktoolkit_tasks",
        "tasktoolkit_oldest_pending_age_seconds",
        "tasktoolkit_workers",
    ]
    assert len([s for s in statements if "tasktoolkit_tasks" in s]) == 1
    assert len([s for s in statements if "tasktoolkit_workers" in s]) == 1


def test_a_scrape_while_the_database_is_away_serves_the_rest_and_counts_it() -> None:
    # Nothing listens on port 1: the connection is refused, as when the server is down.
    toolkit = Toolkit(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", Settings(hooks=[Metrics()])
    )
    try:
        read = parse(generate_latest(metrics_registry(toolkit)).decode())
    finally:
        toolkit.engine.dispose()
    assert family(read, "tasktoolkit_tasks") == {}
    assert family(read, "tasktoolkit_database_unavailable_total") == {
        (("where", "metrics.scrape"),): 1.0
    }


def test_the_workers_gauge_counts_the_live_workers_of_each_name_and_queue(
    engine: Engine, session: Session, scrape: Callable[[], Scrape]
) -> None:
    Worker(engine, ["boot", "wire"], queues=[None, "host-1"], host="w:1").claim()
    Worker(engine, ["boot"], host="w:2").claim()
    Worker(engine, ["wire"], queues=["host-2"], host="w:3").claim()
    age(engine, workers_table, workers_table.c.id == "w:3", beat_at=timedelta(minutes=5))
    assert family(scrape(), "tasktoolkit_workers") == {
        (("name", "boot"), ("queue", "")): 2.0,
        (("name", "boot"), ("queue", "host-1")): 1.0,
        (("name", "wire"), ("queue", "")): 1.0,
        (("name", "wire"), ("queue", "host-1")): 1.0,
    }

"""Migrations: the toolkit's own history, and a host's history adding resource columns.

The example host (tests/orm/migration_host) is migrated and compared in
subprocesses: its resource types would otherwise join this process's shared
tasks table, and the comparison must see exactly the toolkit plus that host.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, create_engine, func, inspect, select, text
from sqlalchemy.engine import URL

from tasktoolkit.errors import InvalidRevisionError
from tasktoolkit.orm import UTCDateTime, migrations
from tasktoolkit.orm._records import tasks_table
from tests.databases import engine_for, private_database

ROOT = Path(__file__).resolve().parents[2]
HOST_INI = ROOT / "tests" / "orm" / "migration_host" / "alembic.ini"

TOOLKIT_TABLES = {
    "tasktoolkit_operations",
    "tasktoolkit_tasks",
    "tasktoolkit_idempotency_keys",
    "tasktoolkit_task_attempts",
    "tasktoolkit_reaper_watch",
    "tasktoolkit_workers",
    "tasktoolkit_operation_resources",
    migrations.VERSION_TABLE,
}
HOST_TABLES = {"volumes", "snapshots", "alembic_version"}

#: What the toolkit's times are on each backend.
DATETIME_TYPE = {
    "sqlite": "DATETIME",
    "postgresql": "TIMESTAMP WITH TIME ZONE",
    "mariadb": "DATETIME(6)",
}

#: What the host's second revision (snapshots, integer keys) adds.
SNAPSHOT_DIFFS = [
    ["add_table", "snapshots", ""],
    ["add_index", "snapshots", "ix_snapshots_volume_id"],
    ["add_column", "tasktoolkit_tasks", "snapshot_id"],
    ["add_index", "tasktoolkit_tasks", "ix_tasktoolkit_tasks_snapshot_id"],
    ["add_fk", "tasktoolkit_tasks", "fk_tasktoolkit_tasks_snapshot_id_snapshots"],
]


@pytest.fixture
def empty_url(backend: str, tmp_path: Path) -> Iterator[URL]:
    """A database of its own, with no table at all (unlike the ``engine`` fixture's)."""
    with private_database(backend, tmp_path) as url:
        yield url


def run(*args: str, url: URL) -> str:
    """Run ``python args...`` at the project root against ``url``; its stdout."""
    env = {**os.environ, "MIGRATION_HOST_DATABASE_URL": url.render_as_string(hide_password=False)}
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def host_alembic(*args: str, url: URL) -> str:
    """The example host's ``alembic -c .../alembic.ini args...``, as from a shell."""
    return run("-m", "alembic", "-c", str(HOST_INI), *args, url=url)


def compare(url: URL) -> dict[str, Any]:
    """The database against the toolkit's records plus the host's models."""
    out = run(
        "-m", "tests.orm.migration_host.compare", url.render_as_string(hide_password=False), url=url
    )
    result: dict[str, Any] = json.loads(out)
    return result


def sorted_diffs(result: dict[str, Any]) -> list[list[str]]:
    return sorted(result["diffs"])


def tables(url: URL) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def columns(url: URL, table: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        return list(inspect(engine).get_columns(table))
    finally:
        engine.dispose()


def test_host_migrations_match_the_models(backend: str, empty_url: URL) -> None:
    migrations.upgrade(empty_url)
    assert migrations.current(empty_url) == migrations.heads()[0]
    assert tables(empty_url) == TOOLKIT_TABLES

    # The host's first revision only: what its second adds is reported missing,
    # which shows that the comparison sees columns, indexes and foreign keys.
    host_alembic("upgrade", "host_0001", url=empty_url)
    assert sorted_diffs(compare(empty_url)) == sorted(SNAPSHOT_DIFFS)

    host_alembic("upgrade", "head", url=empty_url)
    result = compare(empty_url)
    assert result["diffs"] == []
    assert set(result["tables"]) == TOOLKIT_TABLES | HOST_TABLES
    for table, checks in result["check_constraints"].items():
        assert checks["found"] == checks["expected"], table
    assert result["check_constraints"]["tasktoolkit_tasks"]["expected"] == [
        "ck_tasktoolkit_tasks_progress",
        "ck_tasktoolkit_tasks_state",
    ]
    assert len(result["datetime_types"]) == 22
    assert set(result["datetime_types"].values()) == {DATETIME_TYPE[backend]}
    assert "No new upgrade operations detected" in host_alembic("check", url=empty_url)

    host_alembic("downgrade", "-1", url=empty_url)
    assert sorted_diffs(compare(empty_url)) == sorted(SNAPSHOT_DIFFS)

    host_alembic("downgrade", "base", url=empty_url)
    migrations.downgrade(empty_url)
    assert migrations.current(empty_url) is None
    assert tables(empty_url) == {"alembic_version"}  # the host's own, as Alembic leaves it


def test_host_upgrade_on_empty_database_cascades_and_downgrade_deletes_tasks(
    backend: str, empty_url: URL
) -> None:
    # One command on an empty database does both histories: the host's env.py
    # brings the toolkit's tables up first.
    host_alembic("upgrade", "head", url=empty_url)
    assert migrations.current(empty_url) == migrations.heads()[0]
    assert tables(empty_url) == TOOLKIT_TABLES | HOST_TABLES
    engine = engine_for(empty_url)
    now = datetime.now(UTC)
    insert_task = text(
        "INSERT INTO tasktoolkit_tasks (id, resource_type, resource_id, name, state,"
        " created_at, updated_at, volume_id, snapshot_id)"
        " VALUES (:id, :type, :rid, 'work', 'pending', :now, :now, :volume, :snapshot)"
    ).bindparams(bindparam("now", type_=UTCDateTime()))
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO volumes (id, name) VALUES ('v1', 'one'), ('v2', 'two')"))
            conn.execute(text("INSERT INTO snapshots (id, volume_id) VALUES (1, 'v1'), (2, 'v2')"))
            for n, (volume, snapshot) in enumerate([("v1", None), (None, 1), ("v2", None)]):
                conn.execute(
                    insert_task,
                    {
                        "id": f"t{n}",
                        "type": "volume" if volume else "snapshot",
                        "rid": volume or str(snapshot),
                        "now": now,
                        "volume": volume,
                        "snapshot": snapshot,
                    },
                )
        with engine.begin() as conn:
            # Raw SQL on the parent: volume v1, its snapshot 1, and both their tasks go.
            conn.execute(text("DELETE FROM volumes WHERE id = 'v1'"))
        with engine.connect() as conn:
            left = conn.execute(text("SELECT id FROM tasktoolkit_tasks ORDER BY id")).scalars()
            assert list(left) == ["t2"]
            assert conn.execute(select(func.count()).select_from(text("snapshots"))).scalar() == 1
        with engine.begin() as conn:
            conn.execute(
                insert_task,
                {
                    "id": "t3",
                    "type": "snapshot",
                    "rid": "2",
                    "now": now,
                    "volume": None,
                    "snapshot": 2,
                },
            )
    finally:
        engine.dispose()
    # Dropping the snapshots table deletes its resources' tasks, as deleting them would.
    host_alembic("downgrade", "host_0001", url=empty_url)
    engine = engine_for(empty_url)
    try:
        with engine.connect() as conn:
            left = conn.execute(text("SELECT id FROM tasktoolkit_tasks ORDER BY id")).scalars()
            assert list(left) == ["t2"]
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_steps_relatively(backend: str, empty_url: URL) -> None:
    assert migrations.current(empty_url) is None
    migrations.upgrade(empty_url)
    migrations.upgrade(empty_url, "tasktoolkit@head")
    assert migrations.current(empty_url) == migrations.heads()[0]
    engine = create_engine(empty_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(text(f"SELECT version_num FROM {migrations.VERSION_TABLE}"))
            assert list(versions.scalars()) == [migrations.heads()[0]]
    finally:
        engine.dispose()
    migrations.downgrade(empty_url, "-1")
    assert migrations.current(empty_url) == "tasktoolkit_0011_rerun"
    assert "waiting_on" not in {c["name"] for c in columns(empty_url, "tasktoolkit_tasks")}
    migrations.downgrade(empty_url, "-1")
    assert migrations.current(empty_url) == "tasktoolkit_0010_workers"
    assert "tasktoolkit_operation_resources" not in tables(empty_url)
    assert "retry_of" not in {c["name"] for c in columns(empty_url, "tasktoolkit_operations")}
    migrations.downgrade(empty_url, "-1")
    assert migrations.current(empty_url) == "tasktoolkit_0009_reaper_watch"
    assert "tasktoolkit_workers" not in tables(empty_url)
    migrations.downgrade(empty_url, "-1")
    assert migrations.current(empty_url) == "tasktoolkit_0008_notifications"
    assert "tasktoolkit_reaper_watch" not in tables(empty_url)
    migrations.downgrade(empty_url, "-1")
    assert migrations.current(empty_url) == "tasktoolkit_0007_observability"
    assert "notified_at" not in {c["name"] for c in columns(empty_url, "tasktoolkit_operations")}
    migrations.downgrade(empty_url, "-1")
    assert migrations.current(empty_url) == "tasktoolkit_0006"
    assert "trace_context" not in {c["name"] for c in columns(empty_url, "tasktoolkit_tasks")}
    migrations.downgrade(empty_url, "-1")
    assert migrations.current(empty_url) == "tasktoolkit_0005"
    assert "redeliver_after" not in {c["name"] for c in columns(empty_url, "tasktoolkit_tasks")}
    migrations.downgrade(empty_url, "-1")
    assert migrations.current(empty_url) == "tasktoolkit_0004"
    assert "queue" not in {c["name"] for c in columns(empty_url, "tasktoolkit_tasks")}
    migrations.downgrade(empty_url, "-1")
    assert migrations.current(empty_url) == "tasktoolkit_0003"
    assert "tasktoolkit_task_attempts" not in tables(empty_url)
    migrations.downgrade(empty_url, "-1")
    assert migrations.current(empty_url) == "tasktoolkit_0002"
    assert tables(empty_url) == TOOLKIT_TABLES - {
        "tasktoolkit_idempotency_keys",
        "tasktoolkit_task_attempts",
        "tasktoolkit_reaper_watch",
        "tasktoolkit_workers",
        "tasktoolkit_operation_resources",
    }
    migrations.downgrade(empty_url, "-1")
    assert migrations.current(empty_url) == "tasktoolkit_0001"
    migrations.downgrade(empty_url, "-1")
    assert migrations.current(empty_url) is None
    assert tables(empty_url) == set()
    migrations.upgrade(empty_url, "+1")
    assert migrations.current(empty_url) == "tasktoolkit_0001"
    migrations.upgrade(empty_url, "+3")
    assert migrations.current(empty_url) == "tasktoolkit_0004"
    migrations.upgrade(empty_url, "+1")
    assert migrations.current(empty_url) == "tasktoolkit_0005"
    migrations.upgrade(empty_url, "+1")
    assert migrations.current(empty_url) == "tasktoolkit_0006"
    migrations.upgrade(empty_url, "+1")
    assert migrations.current(empty_url) == "tasktoolkit_0007_observability"
    migrations.upgrade(empty_url, "+1")
    assert migrations.current(empty_url) == "tasktoolkit_0008_notifications"
    migrations.upgrade(empty_url, "+1")
    assert migrations.current(empty_url) == "tasktoolkit_0009_reaper_watch"
    migrations.upgrade(empty_url, "+1")
    assert migrations.current(empty_url) == "tasktoolkit_0010_workers"
    migrations.upgrade(empty_url, "+1")
    assert migrations.current(empty_url) == "tasktoolkit_0011_rerun"
    migrations.upgrade(empty_url, "+1")
    head = "tasktoolkit_0012_ordering"
    assert migrations.current(empty_url) == migrations.heads()[0] == head


def test_tasks_already_there_get_three_heartbeat_timeouts_to_start(
    backend: str, empty_url: URL
) -> None:
    migrations.upgrade(empty_url, "tasktoolkit_0005")
    engine = create_engine(empty_url)
    try:
        with engine.begin() as conn:
            for task_id, state in (("t1", "pending"), ("t2", "succeeded")):
                conn.execute(
                    text(
                        "INSERT INTO tasktoolkit_tasks (id, resource_type, resource_id, name,"
                        " state, heartbeat_timeout, created_at, updated_at) VALUES (:id, 'node',"
                        " '1', 'boot', :state, 10, :now, :now)"
                    ),
                    {"id": task_id, "state": state, "now": datetime(2026, 1, 1)},
                )
        migrations.upgrade(empty_url)
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT id, redeliver_after FROM tasktoolkit_tasks ORDER BY id")
            ).all()
        assert [tuple(row) for row in found] == [("t1", 30), ("t2", 900)]
    finally:
        engine.dispose()


def test_operations_already_finished_count_as_notified(backend: str, empty_url: URL) -> None:
    migrations.upgrade(empty_url, "tasktoolkit_0007_observability")
    engine = create_engine(empty_url)
    finished = datetime(2026, 1, 1, 12, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            for operation_id, state, end in (
                ("req-1", "running", None),
                ("req-2", "succeeded", finished),
            ):
                conn.execute(
                    text(
                        "INSERT INTO tasktoolkit_operations (id, method, path, state, created_at,"
                        " updated_at, finished_at) VALUES (:id, 'POST', '/ports', :state, :now,"
                        " :now, :end)"
                    ).bindparams(bindparam("end", type_=UTCDateTime())),
                    {"id": operation_id, "state": state, "now": finished, "end": end},
                )
        migrations.upgrade(empty_url)
        with engine.connect() as conn:
            found = conn.execute(
                select(text("id"), text("notified_at"))
                .select_from(text("tasktoolkit_operations"))
                .order_by(text("id"))
            ).all()
        assert [(row[0], row[1] is not None) for row in found] == [
            ("req-1", False),
            ("req-2", True),
        ]
    finally:
        engine.dispose()


def test_upgrade_with_a_connection_leaves_it_usable(backend: str, empty_url: URL) -> None:
    engine = create_engine(empty_url)
    try:
        with engine.connect() as conn:
            migrations.upgrade(conn)
            # Committed, and the connection is not left inside a transaction.
            assert not conn.in_transaction()
            assert migrations.current(conn) == migrations.heads()[0]
        assert tables(empty_url) == TOOLKIT_TABLES
    finally:
        engine.dispose()


NO_SUCH_REVISION = "No such revision or branch 'nope'"


@pytest.mark.parametrize(
    ("revision", "says"),
    [
        pytest.param("nope", NO_SUCH_REVISION, id="unknown"),
        pytest.param("", "revision must be a non-empty string", id="empty"),
        pytest.param("base:head", "is only for SQL output", id="range-without-sql"),
        pytest.param("tasktoolkit@nope", NO_SUCH_REVISION, id="unknown-in-branch"),
    ],
)
def test_upgrade_refuses_a_bad_revision(empty_url: URL, revision: str, says: str) -> None:
    with pytest.raises(InvalidRevisionError, match=re.escape(says)):
        migrations.upgrade(empty_url, revision)
    assert tables(empty_url) == set()
    assert migrations.current(empty_url) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("sqlite://", "DATETIME", id="sqlite"),
        pytest.param("postgresql+psycopg://", "TIMESTAMP WITH TIME ZONE", id="postgresql"),
        pytest.param("mysql+pymysql://", "DATETIME(6)", id="mariadb"),
    ],
)
def test_upgrade_writes_sql_without_a_database(url: str, expected: str) -> None:
    out = io.StringIO()
    migrations.upgrade(url, sql=True, output=out)
    sql = out.getvalue()
    assert "CREATE TABLE tasktoolkit_tasks" in sql
    assert f"created_at {expected} NOT NULL" in sql
    assert "CONSTRAINT ck_tasktoolkit_tasks_progress CHECK" in sql
    assert f"INSERT INTO {migrations.VERSION_TABLE}" in sql


def test_offline_downgrade_needs_a_range() -> None:
    with pytest.raises(InvalidRevisionError, match="<from>:<to>"):
        migrations.downgrade("sqlite://", "base", sql=True)
    out = io.StringIO()
    migrations.downgrade("sqlite://", "tasktoolkit_0001:base", sql=True, output=out)
    assert "DROP TABLE tasktoolkit_tasks" in out.getvalue()


@pytest.mark.parametrize(
    ("resource_type", "referent"),
    [
        pytest.param("cluster", "clusters.id", id="cluster"),
        pytest.param("node", "nodes.id", id="node"),
    ],
)
def test_resource_column_names_are_the_mixins(resource_type: str, referent: str) -> None:
    names = migrations.resource_column_names(resource_type, referent)
    column = tasks_table.c[names.column]
    (fk,) = column.foreign_keys
    assert fk.constraint is not None and fk.constraint.name == names.foreign_key
    assert fk.ondelete == "CASCADE"
    assert fk.target_fullname == referent
    (index,) = [i for i in tasks_table.indexes if list(i.columns) == [column]]
    assert index.name == names.index


@pytest.mark.parametrize(
    ("resource_type", "referent"),
    [
        pytest.param("Port", "ports.id", id="upper-case-type"),
        pytest.param("", "ports.id", id="empty-type"),
        pytest.param("port-x", "ports.id", id="dash-in-type"),
        pytest.param("port", "ports", id="referent-without-column"),
        pytest.param("port", "a.b.c.d", id="referent-too-deep"),
        pytest.param("port", "ports.", id="referent-empty-column"),
    ],
)
def test_resource_column_names_refuse_bad_input(resource_type: str, referent: str) -> None:
    with pytest.raises(ValueError):
        migrations.resource_column_names(resource_type, referent)

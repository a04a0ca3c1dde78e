"""A resource's tasks are deleted with it on every delete path, on every database.

Each delete path has its own test id, naming the path and the backend
(``test_cascade_node_delete[mariadb-raw-sql-delete]``). Every test also checks
that another resource's tasks survive, so a test cannot pass by deleting all.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tasktoolkit import orm
from tasktoolkit.orm import Task
from tasktoolkit.orm._records import tasks_table
from tests.cases import named_cases
from tests.models import Cluster, Node
from tests.orm._db import spawn, task_count

Spawned = tuple[Node, Node, list[str], list[str]]


def _two_nodes(session: Session, make_node: Callable[..., Node]) -> Spawned:
    """Two nodes with tasks: the one to delete and one that must keep its tasks."""
    doomed, kept = make_node("doomed"), make_node("kept")
    doomed_tasks = [t.id for t in spawn(session, doomed, "boot", "wire", "probe")]
    kept_tasks = [t.id for t in spawn(session, kept, "boot")]
    return doomed, kept, doomed_tasks, kept_tasks


def _assert_cascaded(engine: Engine, doomed: list[str], kept: list[str]) -> None:
    assert task_count(engine, tasks_table.c.id.in_(doomed)) == 0
    assert task_count(engine, tasks_table.c.id.in_(kept)) == len(kept)


def _session_delete(session: Session, engine: Engine, doomed: Node) -> None:
    session.expire(doomed, ["tasks"])  # tasks not loaded: the database must cascade
    session.delete(doomed)
    session.commit()


def _session_delete_with_tasks_loaded(session: Session, engine: Engine, doomed: Node) -> None:
    assert len(doomed.tasks) == 3  # loaded: the ORM deletes them itself
    session.delete(doomed)
    session.commit()


def _orm_bulk_delete(session: Session, engine: Engine, doomed: Node) -> None:
    session.execute(delete(Node).where(Node.id == doomed.id))
    session.commit()


def _core_delete(session: Session, engine: Engine, doomed: Node) -> None:
    nodes = Node.__table__
    with engine.begin() as conn:
        conn.execute(delete(nodes).where(nodes.c.id == doomed.id))


def _raw_sql_delete(session: Session, engine: Engine, doomed: Node) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM nodes WHERE id = :id"), {"id": doomed.id})


@pytest.mark.parametrize(
    "delete_node",
    named_cases(
        _session_delete,
        _session_delete_with_tasks_loaded,
        _orm_bulk_delete,
        _core_delete,
        _raw_sql_delete,
    ),
)
def test_cascade_node_delete(
    session: Session,
    engine: Engine,
    make_node: Callable[..., Node],
    delete_node: Callable[[Session, Engine, Node], None],
) -> None:
    doomed, _, doomed_tasks, kept_tasks = _two_nodes(session, make_node)
    delete_node(session, engine, doomed)
    _assert_cascaded(engine, doomed_tasks, kept_tasks)


def test_cascade_database_parent_delete(
    session: Session, engine: Engine, cluster: Cluster, make_node: Callable[..., Node]
) -> None:
    """Deleting a cluster row (raw SQL) deletes its nodes, their tasks and its own tasks."""
    other = Cluster(name="other")
    session.add(other)
    session.commit()
    nodes = [make_node("a"), make_node("b")]
    survivor = make_node("survivor", cluster_id=other.id)
    doomed = [t.id for n in nodes for t in spawn(session, n, "boot", "wire")]
    doomed += [t.id for t in spawn(session, cluster, "upgrade")]
    kept = [t.id for t in spawn(session, survivor, "boot")]
    kept += [t.id for t in spawn(session, other, "upgrade")]
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM clusters WHERE id = :id"), {"id": cluster.id})
    _assert_cascaded(engine, doomed, kept)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM nodes")).scalars().all() == [survivor.id]


def test_cascade_session_delete_parent(
    session: Session, engine: Engine, cluster: Cluster, make_node: Callable[..., Node]
) -> None:
    """``session.delete(cluster)``: the database cascades to nodes and on to their tasks."""
    doomed = [t.id for t in spawn(session, make_node("a"), "boot")]
    doomed += [t.id for t in spawn(session, cluster, "upgrade")]
    session.delete(cluster)
    session.commit()
    _assert_cascaded(engine, doomed, [])


def test_cascade_rolled_back_delete_keeps_tasks(
    session: Session, engine: Engine, make_node: Callable[..., Node]
) -> None:
    """The cascade is part of the deleting transaction: rolled back, the tasks stay."""
    doomed, _, doomed_tasks, kept_tasks = _two_nodes(session, make_node)
    session.execute(delete(Node).where(Node.id == doomed.id))
    assert session.scalar(text("SELECT count(*) FROM tasktoolkit_tasks")) == len(kept_tasks)
    session.rollback()
    assert task_count(engine) == len(doomed_tasks) + len(kept_tasks)


def test_cascade_engine_prepared_after_pooling(
    session: Session, engine: Engine, backend: str, make_node: Callable[..., Node]
) -> None:
    """An engine made without ``prepare_engine``, whose connections are already
    pooled, cascades once it is passed to ``prepare_engine``.

    On SQLite this is where it matters: a pooled connection without
    ``PRAGMA foreign_keys=ON`` would silently keep the tasks.
    """
    doomed, _, doomed_tasks, kept_tasks = _two_nodes(session, make_node)
    bare = create_engine(engine.url)
    try:
        with bare.connect() as conn:  # the connection goes back to the pool after this
            if backend == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
        assert bare.pool.checkedin() == 1
        assert orm.prepare_engine(bare) is bare
        orm.prepare_engine(bare)  # idempotent
        with bare.begin() as conn:
            if backend == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            conn.execute(text("DELETE FROM nodes WHERE id = :id"), {"id": doomed.id})
        assert bare.pool.checkedin() == 1  # the same, already pooled connection was used
    finally:
        bare.dispose()
    _assert_cascaded(engine, doomed_tasks, kept_tasks)


def test_cascade_engine_prepared_survives_dispose(
    session: Session, engine: Engine, make_node: Callable[..., Node]
) -> None:
    """``engine.dispose()`` makes a new pool; its connections still cascade."""
    doomed, _, doomed_tasks, kept_tasks = _two_nodes(session, make_node)
    prepared = orm.prepare_engine(create_engine(engine.url))
    try:
        prepared.dispose()
        with prepared.begin() as conn:
            conn.execute(text("DELETE FROM nodes WHERE id = :id"), {"id": doomed.id})
    finally:
        prepared.dispose()
    _assert_cascaded(engine, doomed_tasks, kept_tasks)


def test_cascade_leaves_no_stale_task_in_session(
    session: Session, make_node: Callable[..., Node]
) -> None:
    doomed, _, doomed_tasks, _ = _two_nodes(session, make_node)
    session.execute(delete(Node).where(Node.id == doomed.id))
    session.commit()
    assert session.get(Task, doomed_tasks[0], populate_existing=True) is None


def test_cascade_after_a_connection_is_invalidated(
    session: Session, engine: Engine, backend: str, make_node: Callable[..., Node]
) -> None:
    """A pooled connection replaced after an error (invalidated) cascades too."""
    doomed, _, doomed_tasks, kept_tasks = _two_nodes(session, make_node)
    prepared = orm.prepare_engine(create_engine(engine.url, pool_size=1))
    try:
        with prepared.connect() as conn:
            conn.invalidate()  # the DBAPI connection is closed; the pool entry reconnects
        with prepared.begin() as conn:
            if backend == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            conn.execute(text("DELETE FROM nodes WHERE id = :id"), {"id": doomed.id})
    finally:
        prepared.dispose()
    _assert_cascaded(engine, doomed_tasks, kept_tasks)

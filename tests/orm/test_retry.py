"""Retries: what is worth running again, as SQLAlchemy and as oslo.db's engines raise it.

oslo.db's engines turn driver errors into their own exceptions (``DBDeadlock``
is not a ``DBAPIError``); the toolkit recognises them by name. A host can add
its own rule with a predicate on every call that retries.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from oslo_db import exception as oslo_exc
from oslo_db.sqlalchemy import engines as oslo_engines
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from tasktoolkit import Settings, Toolkit
from tasktoolkit.orm import Worker, purge, reap
from tasktoolkit.orm._retry import is_retryable, retrying
from tests.models import Cluster

DEADLINE = 30.0


class _Orig(Exception):
    """A driver exception with the attributes drivers put on theirs."""

    def __init__(self, *args: Any, sqlstate: str | None = None) -> None:
        super().__init__(*args)
        self.sqlstate = sqlstate


def _dbapi(orig: Exception, *, invalidated: bool = False) -> OperationalError:
    return OperationalError("UPDATE t", {}, orig, connection_invalidated=invalidated)


class HostError(Exception):
    """What a host's own exception filter might raise."""


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(_dbapi(_Orig(sqlstate="40P01")), True, id="postgresql-deadlock"),
        pytest.param(_dbapi(_Orig(sqlstate="40001")), True, id="serialization-failure"),
        pytest.param(_dbapi(_Orig(1213, "Deadlock found")), True, id="mariadb-deadlock"),
        pytest.param(_dbapi(_Orig(1205, "Lock wait timeout")), True, id="mariadb-lock-wait"),
        pytest.param(_dbapi(_Orig("database is locked")), True, id="sqlite-busy"),
        pytest.param(
            _dbapi(_Orig(sqlstate="40P01"), invalidated=True), False, id="connection-lost"
        ),
        pytest.param(_dbapi(_Orig(sqlstate="23505")), False, id="unique-violation"),
        pytest.param(oslo_exc.DBDeadlock(), True, id="oslo-deadlock"),
        pytest.param(
            oslo_exc.DBError(_dbapi(_Orig(sqlstate="40001"))), True, id="oslo-wrapped-serialization"
        ),
        pytest.param(oslo_exc.DBError(ValueError("x")), False, id="oslo-wrapped-other"),
        pytest.param(
            oslo_exc.DBConnectionError(_dbapi(_Orig("database is locked"))),
            False,
            id="oslo-connection-error",
        ),
        pytest.param(
            oslo_exc.DBDuplicateEntry(inner_exception=_dbapi(_Orig(1062))),
            False,
            id="oslo-duplicate",
        ),
        pytest.param(ValueError("deadlock"), False, id="not-a-database-error"),
        pytest.param(HostError(), False, id="host-error-without-its-predicate"),
    ],
)
def test_what_is_retryable(exc: BaseException, expected: bool) -> None:
    assert is_retryable(exc) is expected


def test_a_host_predicate_adds_its_own_errors() -> None:
    def predicate(exc: BaseException) -> bool:
        return isinstance(exc, HostError)

    assert is_retryable(HostError(), predicate)
    assert not is_retryable(ValueError(), predicate)
    assert is_retryable(oslo_exc.DBDeadlock(), predicate)


@pytest.fixture
def oslo_engine(engine: Engine) -> Iterator[Engine]:
    """An oslo.db engine on the test module's database (its exception filters on)."""
    url = engine.url
    if engine.dialect.name == "sqlite":
        url = url.update_query_dict({"timeout": "0"})  # busy at once, not after 5 s
    oslo = oslo_engines.create_engine(url.render_as_string(hide_password=False))
    yield oslo
    oslo.dispose()


@pytest.fixture
def two_clusters(engine: Engine) -> Iterator[tuple[str, str]]:
    ids = ("c-retry-1", "c-retry-2")
    with engine.begin() as conn:
        for cluster_id in ids:
            conn.execute(Cluster.__table__.insert().values(id=cluster_id, name="", project_id="p"))
    yield ids
    with engine.begin() as conn:
        conn.execute(Cluster.__table__.delete().where(Cluster.__table__.c.id.in_(ids)))


def _lock(conn: Connection, cluster_id: str, *, nowait: bool = False) -> None:
    if conn.dialect.name == "sqlite":
        conn.execute(
            text("UPDATE clusters SET name = name || 'x' WHERE id = :id"), {"id": cluster_id}
        )
        return
    suffix = " NOWAIT" if nowait else ""
    conn.execute(
        text(f"SELECT id FROM clusters WHERE id = :id FOR UPDATE{suffix}"), {"id": cluster_id}
    )
    conn.execute(
        text("UPDATE clusters SET name = CONCAT(name, 'x') WHERE id = :id"), {"id": cluster_id}
    )


def _name(engine: Engine, cluster_id: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                text("SELECT name FROM clusters WHERE id = :id"), {"id": cluster_id}
            ).scalar_one()
        )


def test_a_locked_row_under_an_oslo_db_engine_is_retried(
    engine: Engine, oslo_engine: Engine, two_clusters: tuple[str, str]
) -> None:
    """Another transaction holds the row: the first attempt loses, the second wins."""
    target = two_clusters[0]
    holder = engine.connect()
    seen: list[str] = []
    if engine.dialect.name == "sqlite":
        # The whole database is the lock: hold it from a plain connection.
        raw = sqlite3.connect(engine.url.database or "", isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        release: Callable[[], None] = lambda: raw.execute("ROLLBACK")  # noqa: E731
    else:
        holder.begin()
        _lock(holder, target)
        release = holder.rollback

    def transaction() -> None:
        if seen:
            release()
        try:
            with oslo_engine.begin() as conn:
                _lock(conn, target, nowait=True)
        except Exception as exc:
            seen.append(type(exc).__name__)
            raise

    try:
        retrying(transaction)
    finally:
        holder.close()
    assert len(seen) == 1  # one lost attempt, then done
    assert _name(engine, target) == "x"


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
def test_a_real_deadlock_under_an_oslo_db_engine_is_retried(
    engine: Engine, oslo_engine: Engine, two_clusters: tuple[str, str]
) -> None:
    """Two transactions lock two rows in opposite orders: the database kills one, it runs again.

    Each first attempt waits, holding its first row, until the other holds its
    own; then each asks for the other's row. The loser's error reaches the retry
    as oslo.db's ``DBDeadlock``.
    """
    barrier = threading.Barrier(2, timeout=DEADLINE)
    errors: list[BaseException] = []
    seen: list[str] = []

    def run(first: str, second: str) -> None:
        attempts = 0

        def transaction() -> None:
            nonlocal attempts
            attempts += 1
            try:
                with oslo_engine.begin() as conn:
                    _lock(conn, first)
                    if attempts == 1:
                        barrier.wait()
                    _lock(conn, second)
            except Exception as exc:
                seen.append(type(exc).__name__)
                raise

        try:
            retrying(transaction)
        except BaseException as exc:
            errors.append(exc)

    a, b = two_clusters
    threads = [threading.Thread(target=run, args=pair) for pair in ((a, b), (b, a))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert not errors, errors
    assert seen == ["DBDeadlock"]
    assert (_name(engine, a), _name(engine, b)) == ("xx", "xx")


CALLS = [
    pytest.param(lambda engine, **kw: Worker(engine, ["build"], **kw).claim(), id="worker-claim"),
    pytest.param(lambda engine, **kw: reap(engine, **kw), id="reap"),
    pytest.param(lambda engine, **kw: purge(engine, **kw), id="purge"),
    pytest.param(
        lambda engine, **kw: Toolkit(engine, **kw).worker(["build"]).claim(),
        id="toolkit-worker-claim",
    ),
    pytest.param(lambda engine, **kw: Toolkit(engine, **kw).reap(), id="toolkit-reap"),
    pytest.param(lambda engine, **kw: Toolkit(engine, **kw).purge(), id="toolkit-purge"),
]


@pytest.fixture
def fails_once(engine: Engine) -> Iterator[None]:
    """The engine's next statement raises :class:`HostError` (as a host's filter would)."""
    raised = False

    def before(*_: Any) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise HostError("lost a race the toolkit cannot know of")

    event.listen(engine, "before_cursor_execute", before)
    yield
    event.remove(engine, "before_cursor_execute", before)


@pytest.mark.parametrize("call", CALLS)
def test_every_retrying_call_takes_the_host_predicate(
    engine: Engine, fails_once: None, call: Callable[..., object]
) -> None:
    call(engine, settings=Settings(retryable=lambda exc: isinstance(exc, HostError)))


@pytest.mark.parametrize("call", CALLS)
def test_without_the_predicate_the_host_error_propagates(
    engine: Engine, fails_once: None, call: Callable[..., object]
) -> None:
    with pytest.raises(HostError):
        call(engine)

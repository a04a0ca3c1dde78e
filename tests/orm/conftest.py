"""Fixtures for the ORM tests: saved resources, operations, request contexts, row counts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import context
from tasktoolkit.context import RequestContext, new_request_id
from tasktoolkit.orm import Task
from tasktoolkit.orm._expiry import DEFAULT_TTL
from tasktoolkit.orm._operations import OperationFields, open_operation
from tests.databases import engine_for
from tests.models import Cluster, Node
from tests.orm._db import InOperation, SpawnInOp, spawn
from tests.proxy import TcpProxy


@pytest.fixture
def cluster(session: Session) -> Cluster:
    """A committed cluster."""
    c = Cluster(name="c1", project_id="p1")
    session.add(c)
    session.commit()
    return c


@pytest.fixture
def make_node(session: Session, cluster: Cluster) -> Callable[..., Node]:
    """``make_node(name=...)``: a committed node of ``cluster``."""

    def make(name: str = "n", cluster_id: str | None = None) -> Node:
        n = Node(cluster_id=cluster_id or cluster.id, name=name, project_id="p1")
        session.add(n)
        session.commit()
        return n

    return make


@pytest.fixture
def node(make_node: Callable[..., Node]) -> Node:
    """A committed node."""
    return make_node("n1")


@pytest.fixture
def open_op(engine: Engine) -> Callable[..., str]:
    """``open_op(**fields)``: commit a running operation, return its id."""

    def make(*, ttl: timedelta | None = DEFAULT_TTL, **fields: Any) -> str:
        op_id = new_request_id()
        with engine.begin() as conn:
            open_operation(
                conn,
                OperationFields(
                    id=op_id,
                    method=fields.pop("method", "POST"),
                    path=fields.pop("path", "/nodes"),
                    **fields,
                ),
                ttl=ttl,
            )
        return op_id

    return make


@pytest.fixture
def in_request() -> Callable[..., AbstractContextManager[RequestContext | None]]:
    """``with in_request(op_id):`` binds a request context tied to that operation."""

    def bind(operation_id: str | None, **fields: Any) -> AbstractContextManager[Any]:
        ctx = RequestContext(
            request_id=operation_id or new_request_id(), operation_id=operation_id, **fields
        )
        return context.request_context(ctx)

    return bind


@pytest.fixture
def in_operation(
    open_op: Callable[..., str],
    in_request: Callable[..., AbstractContextManager[RequestContext | None]],
) -> InOperation:
    """``with in_operation(**context_fields) as op:`` commits a running operation and binds
    a request context tied to it (``open_op`` then ``in_request``, the usual pair)."""

    @contextmanager
    def bind(**fields: Any) -> Iterator[str]:
        op_id = open_op()
        with in_request(op_id, **fields):
            yield op_id

    return bind


@pytest.fixture
def spawn_in_op(session: Session, node: Node, in_operation: InOperation) -> SpawnInOp:
    """``op, tasks = spawn_in_op(*names)``: spawn ``names`` on ``node`` in a new operation's
    request and commit; the operation's id and the tasks."""

    def make(*names: str) -> tuple[str, list[Task]]:
        with in_operation() as op:
            tasks = spawn(session, node, *names)
        return op, tasks

    return make


@pytest.fixture
def other_session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A second session (its own connection) on the same database."""
    with session_factory() as s:
        yield s


@pytest.fixture
def proxied(backend: str, engine: Engine) -> Iterator[tuple[TcpProxy, Engine]]:
    """A proxy in front of the test's database server, and an engine through it."""
    if backend == "sqlite":
        pytest.skip("SQLite has no server to cut off: an embedded database cannot go away")
    url = engine.url
    assert url.host is not None and url.port is not None
    proxy = TcpProxy(url.host, url.port)
    through = engine_for(url.set(host="127.0.0.1", port=proxy.port))
    try:
        yield proxy, through
    finally:
        through.dispose()
        proxy.close()

"""Fixtures for the ORM tests: saved resources, operations, request contexts, row counts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import context
from tasktoolkit.context import RequestContext, new_request_id
from tasktoolkit.orm._expiry import DEFAULT_TTL
from tasktoolkit.orm._operations import OperationFields, open_operation
from tests.models import Cluster, Node


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
def other_session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A second session (its own connection) on the same database."""
    with session_factory() as s:
        yield s

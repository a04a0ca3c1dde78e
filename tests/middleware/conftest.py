"""Fixtures for the middleware tests: whole stacks on the test databases, captured logs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import webtest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import context
from tasktoolkit.middleware import RequestIdLogFilter
from tasktoolkit.orm import Operation, Task
from tests.middleware.apps import cluster_app
from tests.middleware.stacks import Stacks


@pytest.fixture
def stacks(engine: Engine) -> Iterator[Stacks]:
    """Whole stacks (``Toolkit(engine, Settings(...)).wsgi(app)``), closed after the test."""
    made = Stacks(engine)
    yield made
    made.close()


@pytest.fixture
def make_stack(
    stacks: Stacks, session_factory: sessionmaker[Session]
) -> Callable[..., webtest.TestApp]:
    """``make_stack(app=None, **settings)``: a TestApp (lint on) of the whole stack, which
    waits after each request until the request's end is written."""

    def make(app: Any = None, **options: Any) -> webtest.TestApp:
        return stacks.test_app(app or cluster_app(session_factory), **options)

    return make


@pytest.fixture
def stack(make_stack: Callable[..., webtest.TestApp]) -> webtest.TestApp:
    """The default stack: request ids, operations, the cluster app."""
    return make_stack()


@pytest.fixture
def operation(session_factory: sessionmaker[Session]) -> Callable[[str], Operation | None]:
    """``operation(id)``: the operation row as committed now, or ``None``."""

    def get(operation_id: str) -> Operation | None:
        with session_factory() as s:
            return s.get(Operation, operation_id)

    return get


@pytest.fixture
def tasks_of(session_factory: sessionmaker[Session]) -> Callable[[str], list[Task]]:
    """``tasks_of(request_id)``: the tasks spawned under that operation."""

    def get(request_id: str) -> list[Task]:
        with session_factory() as s:
            return list(s.scalars(select(Task).where(Task.request_id == request_id)))

    return get


class ListHandler(logging.Handler):
    """Keeps the records that pass its filters (appending to a list is thread safe)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def log_records() -> Iterator[list[logging.LogRecord]]:
    """Records of the test app's logger, through a handler carrying the request-id filter."""
    handler = ListHandler()
    handler.addFilter(RequestIdLogFilter())
    logger = logging.getLogger("tests.middleware.app")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture(autouse=True)
def no_context_leak() -> Iterator[None]:
    """Every test must leave no request context bound behind it."""
    assert context.current() is None
    yield
    assert context.current() is None, "a request context leaked out of the test"

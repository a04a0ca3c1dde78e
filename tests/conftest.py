"""Fixtures shared by every test: engines on three real databases, sessions, apps."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from sqlalchemy import delete
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import context, orm
from tasktoolkit.orm._engine import host_metadatas
from tests import models  # noqa: F401  (declares the test resource types)
from tests.databases import BACKENDS, engine_for, private_database


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Skipped tests, one line per reason with its count (``-r`` in pyproject.toml leaves
    skips out): without the database servers most of the suite skips for one of two
    reasons, and a line per test would bury the failures."""
    reasons = Counter(_skip_reason(r) for r in terminalreporter.stats.get("skipped", []))
    if reasons:
        terminalreporter.section("skipped, by reason", sep="-")
        for reason, count in reasons.most_common():
            terminalreporter.line(f"{count:5} {reason}")


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """``reason`` of ``pytest.skip(reason)``, without where it was raised."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


@pytest.fixture(autouse=True)
def _no_request_context_carried_over() -> Iterator[None]:
    """Each test starts and ends outside any request: a WSGI client that never
    closes a response's body (schemathesis's) leaves that request's context
    bound in this thread, as a server that never closed one would."""
    token = context.bind(None)
    yield
    context.reset(token)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], URL]]:
    """``database_url(backend)``: this run's private database on ``backend``."""
    tmp = tmp_path_factory.mktemp("db")
    urls: dict[str, URL] = {}
    with ExitStack() as stack:

        def get(backend: str) -> URL:
            if backend not in urls:
                urls[backend] = stack.enter_context(private_database(backend, tmp))
            return urls[backend]

        yield get


@pytest.fixture(scope="module", params=[pytest.param(b, id=b) for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the database backend under test."""
    return str(request.param)


@pytest.fixture(scope="module")
def engine(backend: str, database_url: Callable[[str], URL]) -> Iterator[Engine]:
    """An engine on a fresh schema (toolkit and host tables) for this test module."""
    eng = engine_for(database_url(backend))
    orm.drop_all(eng)
    orm.create_all(eng)
    yield eng
    orm.drop_all(eng)
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """A session factory on ``engine``; every row is deleted after the test."""
    factory = sessionmaker(engine, expire_on_commit=False)
    yield factory
    with engine.begin() as conn:
        for table in orm.metadata.sorted_tables:
            conn.execute(delete(table))
        for host in host_metadatas():
            for table in reversed(host.sorted_tables):
                conn.execute(delete(table))


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session on the test module's database."""
    with session_factory() as s:
        yield s

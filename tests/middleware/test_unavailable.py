"""A database that is down, dropped, restarted and back: 503s for writes, the process lives."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import webtest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import sessionmaker

from tasktoolkit import Settings, Toolkit, orm
from tasktoolkit.context import is_valid_request_id
from tasktoolkit.middleware import OperationMiddleware
from tests.databases import SERVER_URLS, engine_for, private_database
from tests.middleware.apps import cluster_app, seen
from tests.middleware.stacks import FlushingTestApp, operations_of


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CountingApp:
    """Answers 200 with what it saw; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.calls += 1
        body = json.dumps(seen(environ)).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]


@pytest.fixture
def unreachable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine whose database cannot be reached (``request.param``: the kind)."""
    kind = request.param
    if kind == "postgresql":
        url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/nowhere"
    elif kind == "mariadb":
        url = f"mysql+pymysql://root@127.0.0.1:{closed_port()}/nowhere"
    else:
        url = f"sqlite:///{tmp_path / 'missing-dir' / 'db.sqlite'}"
    engine = create_engine(url)
    yield engine
    engine.dispose()


def make(app: Any, engine: Engine, **options: Any) -> tuple[webtest.TestApp, OperationMiddleware]:
    toolkit = Toolkit(engine, Settings(**options))
    stack = toolkit.wsgi(app)
    return FlushingTestApp(stack, lint=True), operations_of(stack)


def assert_unrecorded(response: webtest.TestResponse, app: CountingApp, calls: int) -> None:
    """The app's own answer, without an ``Operation-Location`` it could not honour."""
    assert response.status_int == 200
    assert app.calls == calls
    assert "Operation-Location" not in response.headers
    assert is_valid_request_id(response.headers["X-Request-Id"])


UNREACHABLE = [
    pytest.param("postgresql", id="postgresql-closed-port"),
    pytest.param("mariadb", id="mariadb-closed-port"),
    pytest.param("sqlite", id="sqlite-missing-directory"),
]


@pytest.mark.parametrize("unreachable", UNREACHABLE, indirect=True)
def test_unreachable_database_leaves_the_apps_answer_without_an_operation(
    unreachable: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    app = CountingApp()
    stack, operations = make(app, unreachable)
    try:
        with caplog.at_level(logging.WARNING, logger="tasktoolkit.hooks"):
            for calls, method in enumerate(("POST", "DELETE", "POST"), start=1):
                # The middleware writes nothing before the app; the process keeps serving.
                assert_unrecorded(stack.request("/clusters", method=method), app, calls)
        response = stack.get("/clusters")
        assert response.status_int == 200 and app.calls == 4
    finally:
        operations.close()
    warnings = [r for r in caplog.records if r.name == "tasktoolkit.hooks"]
    assert len(warnings) == 1  # the one outage policy: one line for the outage, not one each
    assert all("database unavailable" in r.getMessage() for r in warnings)
    assert all(not r.exc_info and "\n" not in r.getMessage() for r in warnings)


# -- a real database that goes away and comes back ------------------------------


def _admin(backend: str) -> Engine:
    return create_engine(SERVER_URLS[backend], isolation_level="AUTOCOMMIT")


def kill_connections(backend: str, url: URL) -> int:
    """Kill every server connection to ``url``'s database (what a restart does to them)."""
    admin = _admin(backend)
    try:
        with admin.connect() as conn:
            if backend == "postgresql":
                killed = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": url.database},
                ).scalar_one()
                return int(killed)
            ids = conn.execute(
                text(
                    "SELECT id FROM information_schema.processlist "
                    "WHERE db = :db AND id <> connection_id()"
                ),
                {"db": url.database},
            ).scalars()
            count = 0
            for connection_id in ids:
                conn.execute(text(f"KILL {int(connection_id)}"))
                count += 1
            return count
    finally:
        admin.dispose()


def _on_server(backend: str, *, postgresql: str, mariadb: str) -> None:
    """Run one statement on ``backend``'s server: ``postgresql``'s or ``mariadb``'s."""
    admin = _admin(backend)
    try:
        with admin.connect() as conn:
            conn.execute(text(postgresql if backend == "postgresql" else mariadb))
    finally:
        admin.dispose()


def drop_database(backend: str, url: URL) -> None:
    if backend == "sqlite":
        Path(str(url.database)).unlink()
        return
    kill_connections(backend, url)
    _on_server(
        backend,
        postgresql=f'DROP DATABASE "{url.database}" WITH (FORCE)',
        mariadb=f"DROP DATABASE `{url.database}`",
    )


def create_database(backend: str, url: URL) -> None:
    if backend != "sqlite":
        _on_server(
            backend,
            postgresql=f'CREATE DATABASE "{url.database}"',
            mariadb=f"CREATE DATABASE `{url.database}` CHARACTER SET utf8mb4",
        )
    engine = engine_for(url)
    try:
        orm.create_all(engine)
    finally:
        engine.dispose()


@pytest.fixture
def own_database(backend: str, tmp_path: Path) -> Iterator[URL]:
    """A database of this test's own, with the schema, that the test may drop."""
    with private_database(backend, tmp_path) as url:
        engine = engine_for(url)
        orm.create_all(engine)
        engine.dispose()
        yield url


@pytest.fixture
def backend_engine(own_database: URL) -> Iterator[Engine]:
    engine = engine_for(own_database)
    yield engine
    engine.dispose()


def test_database_restart_and_drop_then_back(
    backend: str, own_database: URL, backend_engine: Engine
) -> None:
    app = CountingApp()
    stack, operations = make(app, backend_engine)

    def post() -> webtest.TestResponse:
        return stack.post("/clusters", expect_errors=True)

    try:
        assert post().status_int == 200
        if backend != "sqlite":
            # a restart: the pooled connections die; the next request still works
            assert kill_connections(backend, own_database) >= 1
            assert post().status_int == 200
        calls = app.calls

        drop_database(backend, own_database)
        if backend == "sqlite":
            # No server to restart: a new file is reached by new connections,
            # the app's and the middleware's own.
            backend_engine.dispose()
            operations.close()
        assert_unrecorded(post(), app, calls + 1)
        assert_unrecorded(post(), app, calls + 2)
        assert stack.get("/clusters").status_int == 200  # reads never touch the database here

        create_database(backend, own_database)
        response = post()
        assert response.status_int == 200, response.text
        assert response.json["operation_id"] == response.headers["X-Request-Id"]
        assert "Operation-Location" in response.headers
    finally:
        operations.close()


def test_database_lost_after_the_response_is_logged_not_raised(
    backend: str,
    own_database: URL,
    backend_engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spawning = cluster_app(sessionmaker(backend_engine))

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        # spawns, so its operation is written with its tasks and ended after the body
        spawning(environ, lambda status, headers, exc_info=None: None)
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"sent"
        drop_database(backend, own_database)  # between the app's answer and its end
        if backend == "sqlite":
            backend_engine.dispose()
        yield b"."

    stack, operations = make(app, backend_engine)
    try:
        with caplog.at_level(logging.WARNING, logger="tasktoolkit.hooks"):
            response = stack.post("/clusters")  # waits for the end writer's round
    finally:
        operations.close()
    assert (response.status_int, response.body) == (200, b"sent.")
    assert "the end of 1 request not recorded" in caplog.text
    assert response.headers["X-Request-Id"] in caplog.text

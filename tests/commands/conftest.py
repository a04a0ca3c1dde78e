"""Helpers of the command tests: running ``main``, records in the states they need, and the
task endpoints served over HTTP on the test's database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import routes
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import Settings, commands
from tasktoolkit.context import RequestContext, new_request_id, request_context
from tasktoolkit.endpoints import Router, mount
from tasktoolkit.orm import Job, TaskRules, Worker
from tasktoolkit.orm._clock import db_now, later
from tasktoolkit.orm._operations import OperationFields, end_request, open_operation
from tasktoolkit.orm._records import operations_table, tasks_table
from tests.middleware.test_concurrency import Served
from tests.models import Cluster


@pytest.fixture
def db_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)``: its exit status, standard output and standard error."""
    try:
        status = commands.main(list(argv))
    except SystemExit as exit:  # argparse's usage errors
        status = int(exit.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], status: int, says: str
) -> None:
    """``main(argv)`` exits ``status``, printing nothing but one line of error that ``says``."""
    got, out, err = run(capsys, *argv)
    assert got == status
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("tasktoolkit")
    assert says in err


def spawn(
    session_factory: sessionmaker[Session],
    names: list[str],
    *,
    status: int | None = 202,
    rules: TaskRules | None = None,
) -> tuple[str, list[str]]:
    """An operation whose request ended with ``status`` (``None``: never recorded its
    end), with one task per name (with ``rules`` instead of their names')."""
    rid = new_request_id()
    with session_factory() as s:
        open_operation(s.connection(), OperationFields(rid, "POST", "/clusters"))
        cluster = Cluster(name="c")
        s.add(cluster)
        s.flush()
        with request_context(RequestContext(rid, operation_id=rid)):
            tasks = cluster.spawn_tasks(names, rules=rules)
        if status is not None:
            end_request(s.connection(), rid, status)
        s.commit()
        return rid, [t.id for t in tasks]


def expire_all(engine: Engine, ago: timedelta) -> None:
    """Make every task and operation finished and expired ``ago`` (on the database's clock)."""
    moment = later(db_now(), -ago)
    with engine.begin() as conn:
        conn.execute(update(tasks_table).values(state="succeeded", expires_at=moment))
        conn.execute(update(operations_table).values(state="succeeded", expires_at=moment))


def count(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(tasks_table)).scalar_one(),
            conn.execute(select(func.count()).select_from(operations_table)).scalar_one(),
        )


def claim(engine: Engine, names: list[str]) -> Job:
    """The next pending task of these names, claimed by a worker."""
    job = Worker(engine, names, host="w").claim()
    assert job is not None
    return job


class Watch:
    """``main(argv)`` in a thread of its own, its standard output read as it comes."""

    def __init__(self, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
        self.capsys = capsys
        self.out = ""
        self.statuses: list[int] = []
        self.thread = threading.Thread(target=lambda: self.statuses.append(commands.main(argv)))
        self.thread.start()

    def until(self, text: str) -> str:
        """The output so far, once it has ``text`` (or 60 s passed)."""
        deadline = time.monotonic() + 60
        while text not in self.out and time.monotonic() < deadline:
            self.out += self.capsys.readouterr().out
            self.thread.join(timeout=0.05)
        return self.out

    def ended(self) -> int:
        """The exit status, once ``main`` returned (within 60 s); then ``out`` is all of it."""
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        self.out += self.capsys.readouterr().out
        [status] = self.statuses
        return status


class Counted:
    """A WSGI app counting the requests it was given (and keeping their ``X-Auth-Token``)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests = 0
        self.tokens: list[str | None] = []

    def __call__(self, environ: Any, start_response: Any) -> Any:
        self.requests += 1
        self.tokens.append(environ.get("HTTP_X_AUTH_TOKEN"))
        return self.app(environ, start_response)


@pytest.fixture
def served(session_factory: sessionmaker[Session]) -> Iterator[Callable[..., tuple[str, Counted]]]:
    """``served(**settings)``: the task endpoints over HTTP on this test's database, with
    these settings; their base URL and the requests they were given."""
    stop: list[Callable[[], None]] = []

    def serve(**settings: Any) -> tuple[str, Counted]:
        mapper = routes.Mapper()
        mounted = mount(
            mapper,
            collections={"clusters": Cluster},
            session_factory=session_factory,
            settings=Settings(**{"serve_openapi": True, **settings}),
        )
        counted = Counted(Router(mapper))
        server = Served(counted)
        stop.extend([server.stop, mounted.close])
        return f"http://{server.address[0]}:{server.address[1]}", counted

    yield serve
    for done in stop:
        done()


@pytest.fixture
def api(served: Callable[..., tuple[str, Counted]]) -> str:
    """The task endpoints served over HTTP with the default settings; their base URL."""
    return served()[0]


#: A system admin: the operations of these tests belong to no project.
ADMIN = "X-Roles: admin"
SYSTEM = "OpenStack-System-Scope: all"
AS_ADMIN = ("--header", ADMIN, "--header", SYSTEM)

"""Where an operation is written: with the app's first spawn, or finished as the response starts.

On SQLite, PostgreSQL and MariaDB: the operation commits with what its request
created or not at all, whatever the app does with its transactions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import webtest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.middleware import OPERATION_ID_KEY
from tasktoolkit.orm import Operation, Task, spawn_tasks
from tasktoolkit.orm._transitions import start_task, succeed_task
from tests.models import Cluster

OperationGetter = Callable[[str], Operation | None]
Stack = Callable[..., webtest.TestApp]
App = Callable[[dict[str, Any], Any], Any]


def _answer(start_response: Any, status: str = "202 Accepted") -> list[bytes]:
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", "2")])
    return [b"{}"]


def _spawn(session: Session, *names: str, clusters: int = 1) -> list[Task]:
    made = [Cluster(name=f"c{i}", project_id="p1") for i in range(clusters)]
    session.add_all(made)
    session.flush()
    return spawn_tasks(session, [(cluster, name) for cluster in made for name in names])


def _count(session_factory: sessionmaker[Session], model: type[Any]) -> int:
    with session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def post(make_stack: Stack) -> Callable[..., webtest.TestResponse]:
    """``post(app, status=...)``: one POST of ``app`` through the whole stack."""

    def call(app: App, **kwargs: Any) -> webtest.TestResponse:
        return make_stack(app).post("/clusters", **kwargs)

    return call


def test_an_app_that_raises_after_spawning_leaves_no_task_and_a_failed_operation(
    session_factory: sessionmaker[Session],
    post: Callable[..., webtest.TestResponse],
    operation: OperationGetter,
) -> None:
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ[OPERATION_ID_KEY])
        with session_factory() as session:
            _spawn(session, "a", "b")
            raise RuntimeError("the app broke before its commit")

    response = post(app, status=500)  # the request-id middleware's JSON 500
    assert response.headers["Operation-Location"].endswith(f"/operations/{seen[0]}")
    assert _count(session_factory, Task) == 0
    op = operation(seen[0])
    assert op is not None
    assert (op.state, op.http_status, op.task_counts["pending"]) == ("failed", 500, 0)


def _rolled_back_then_committed(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        _spawn(session, "dropped")
        session.rollback()
        _spawn(session, "kept-1", "kept-2")
        session.commit()


def _several_sessions_and_a_bulk_spawn(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as first:
        _spawn(first, "a", clusters=3)  # bulk: one statement over three resources
        first.commit()
    with session_factory() as second:  # a second session, one transaction after the other
        _spawn(second, "b", "c")
        second.commit()


@pytest.mark.parametrize(
    ("spawns", "kept"),
    [
        pytest.param(
            _rolled_back_then_committed,
            ["kept-1", "kept-2"],
            id="a-rolled-back-spawn-then-a-committed-one",
        ),
        pytest.param(
            _several_sessions_and_a_bulk_spawn,
            ["a", "a", "a", "b", "c"],
            id="several-sessions-and-a-bulk-spawn",
        ),
    ],
)
def test_every_committed_spawn_of_a_request_counts_in_its_one_operation(
    session_factory: sessionmaker[Session],
    post: Callable[..., webtest.TestResponse],
    operation: OperationGetter,
    tasks_of: Callable[[str], list[Task]],
    spawns: Callable[[sessionmaker[Session]], None],
    kept: list[str],
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        spawns(session_factory)
        return _answer(start_response)

    rid = post(app, status=202).headers["X-Request-Id"]
    assert sorted(t.name for t in tasks_of(rid)) == kept
    assert _count(session_factory, Operation) == 1
    op = operation(rid)
    assert op is not None
    assert (op.state, op.http_status, op.task_counts["pending"]) == ("running", 202, len(kept))


def test_a_spawn_outside_any_request_has_no_operation(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        tasks = _spawn(session, "periodic")
        session.commit()
    assert [t.request_id for t in tasks] == [None]
    assert _count(session_factory, Operation) == 0


def test_after_a_rollback_the_operation_says_how_the_request_ended_before_the_client_has_it(
    session_factory: sessionmaker[Session], make_stack: Stack, operation: OperationGetter
) -> None:
    readable: list[Operation | None] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with session_factory() as session:
            _spawn(session, "a")
            session.rollback()  # the app changed its mind
        return _answer(start_response, "409 Conflict")

    def server(environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            # what a client could read the moment the server sends the headers
            readable.append(operation(environ["tasktoolkit.request_id"]))
            return start_response(status, headers, exc_info)

        return stack.app(environ, start)

    stack = make_stack(app)
    response = webtest.TestApp(server).post("/clusters", status=409)
    assert "Operation-Location" in response.headers
    op = readable[0]
    assert op is not None
    assert (op.state, op.http_status, op.task_counts["pending"]) == ("failed", 409, 0)
    assert _count(session_factory, Task) == 0


def test_a_spawn_committed_after_the_response_started_runs_the_operation_again(
    session_factory: sessionmaker[Session],
    post: Callable[..., webtest.TestResponse],
    operation: OperationGetter,
    tasks_of: Callable[[str], list[Task]],
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        # The response starts before the app has spawned anything: the operation
        # is written finished; the app's later commit runs it again.
        start_response("202 Accepted", [("Content-Type", "application/json")])
        yield b"{"
        with session_factory() as session:
            _spawn(session, "late")
            session.commit()
        yield b"}"

    rid = post(app, status=202).headers["X-Request-Id"]
    op = operation(rid)
    assert op is not None
    assert (op.state, op.http_status, op.finished_at) == ("running", 202, None)
    (task,) = tasks_of(rid)
    with session_factory() as session:
        start_task(session, task.id, host="w1")
        succeed_task(session, task.id)
        session.commit()
    op = operation(rid)
    assert op is not None and (op.state, op.task_counts["succeeded"]) == ("succeeded", 1)


def test_an_app_that_answers_503_gets_no_operation(
    session_factory: sessionmaker[Session], post: Callable[..., webtest.TestResponse]
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return _answer(start_response, "503 Service Unavailable")

    response = post(app, status=503)
    assert "Operation-Location" not in response.headers
    assert _count(session_factory, Operation) == 0

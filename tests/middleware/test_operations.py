"""OperationMiddleware on SQLite, PostgreSQL and MariaDB: one operation per mutating request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import webob
import webtest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import context, signals
from tasktoolkit.context import is_valid_request_id, new_request_id
from tasktoolkit.middleware import OPERATION_ID_KEY, OperationMiddleware
from tasktoolkit.orm import Operation, Task, Worker, reap
from tasktoolkit.orm._transitions import fail_task, start_task, succeed_task
from tests.clock import passed
from tests.middleware.apps import Streaming, cluster_app
from tests.middleware.stacks import Stacks, operations_of
from tests.models import Cluster

OperationGetter = Callable[[str], Operation | None]
Stack = Callable[..., webtest.TestApp]


def operation_count(session_factory: sessionmaker[Session]) -> int:
    with session_factory() as s:
        return int(s.scalar(select(func.count()).select_from(Operation)) or 0)


def test_the_operation_commits_with_the_apps_first_spawn(
    make_stack: Stack, session_factory: sessionmaker[Session], operation: OperationGetter
) -> None:
    during: list[Operation | None] = []

    def look(environ: dict[str, Any]) -> None:
        # nothing is written before the app runs: its spawn writes the operation
        during.append(operation(environ[OPERATION_ID_KEY]))

    stack = make_stack(cluster_app(session_factory, on_request=look))
    response = stack.post(
        "/clusters",
        headers={
            "X-Project-Id": "p1",
            "X-User-Id": "u1",
            "X-Request-Id": (gid := new_request_id()),
        },
        status=201,
    )
    rid = response.headers["X-Request-Id"]
    assert response.json["operation_id"] == rid
    assert during == [None]
    op = operation(rid)
    assert op is not None
    assert (op.method, op.path, op.project_id, op.user_id) == ("POST", "/clusters", "p1", "u1")
    assert op.global_request_id == gid
    assert (op.resource_type, op.resource_id) == ("cluster", response.json["cluster"])
    assert op.http_status == 201


def test_operation_location_header(stack: webtest.TestApp) -> None:
    response = stack.post("/clusters", status=201)
    rid = response.headers["X-Request-Id"]
    assert (
        response.headers["Operation-Location"] == f"http://localhost:80/operations/{rid}"
    )  # the Host as sent


@pytest.mark.parametrize(
    ("environ", "options", "expected"),
    [
        pytest.param(
            {"SCRIPT_NAME": "/network/v2.0", "HTTP_HOST": "api.example:9696"},
            {},
            "http://api.example:9696/network/v2.0/operations/",
            id="script-name",
        ),
        pytest.param(
            {"HTTP_HOST": "evil\r\nX-Injected: 1"},
            {},
            "/operations/",
            id="bad-host-relative",
        ),
        pytest.param(
            {"SCRIPT_NAME": "/v2", "wsgi.url_scheme": "https", "HTTP_HOST": "h"},
            {"path_prefix": "/tasking"},
            "https://h/v2/tasking/operations/",
            id="path-prefix",
        ),
        pytest.param(
            {"HTTP_HOST": "internal:8080"},
            {"base_url": "https://public.example/net/"},
            "https://public.example/net/operations/",
            id="base-url",
        ),
    ],
)
def test_operation_location_respects_the_application_url(
    stacks: Stacks,
    session_factory: sessionmaker[Session],
    environ: dict[str, str],
    options: dict[str, Any],
    expected: str,
) -> None:
    request = webob.Request.blank("/clusters", method="POST", environ=environ)
    response = request.get_response(stacks.wsgi(cluster_app(session_factory), **options))
    response.body  # noqa: B018  (reading the body closes it, as a server would)
    assert response.status_int == 201
    rid = response.headers["X-Request-Id"]
    assert response.headers["Operation-Location"] == expected + rid


def test_read_requests_and_excluded_paths_write_nothing(
    make_stack: Stack, session_factory: sessionmaker[Session]
) -> None:
    stack = make_stack(exclude_paths=["/healthcheck"], methods=["post", "DELETE"])
    assert stack.get("/clusters").json["operation_id"] is None
    assert "Operation-Location" not in stack.get("/clusters").headers
    assert stack.post("/healthcheck").json["operation_id"] is None
    assert stack.post("/healthcheck/deep").json["operation_id"] is None
    assert stack.put("/clusters/1").json["operation_id"] is None  # PUT not configured
    assert operation_count(session_factory) == 0
    assert stack.post("/healthchecks").json["operation_id"] is not None
    assert stack.delete("/clusters/1").json["operation_id"] is not None
    assert operation_count(session_factory) == 2


@pytest.mark.parametrize(
    ("method", "path", "status", "state"),
    [
        pytest.param("PUT", "/things/1", 200, "succeeded", id="2xx-succeeds"),
        pytest.param("PATCH", "/fail", 409, "failed", id="4xx-fails"),
        pytest.param("DELETE", "/stream", 200, "succeeded", id="streamed"),
    ],
)
def test_request_without_tasks_ends_with_its_response(
    stack: webtest.TestApp,
    operation: OperationGetter,
    method: str,
    path: str,
    status: int,
    state: str,
) -> None:
    response = stack.request(path, method=method, expect_errors=True)
    assert response.status_int == status
    op = operation(response.headers["X-Request-Id"])
    assert op is not None
    assert (op.state, op.http_status) == (state, status)
    assert op.finished_at is not None and op.expires_at is not None


def test_app_that_raises_records_500_and_answers_it(
    stack: webtest.TestApp, session_factory: sessionmaker[Session]
) -> None:
    response = stack.post("/raise", status=500)
    rid = response.headers["X-Request-Id"]
    assert response.headers["Operation-Location"].endswith(f"/operations/{rid}")
    assert response.json["errors"][0]["code"] == "tasktoolkit.internal_error"
    assert context.current() is None
    with session_factory() as s:
        op = s.scalars(select(Operation)).one()
    assert (op.state, op.http_status, op.path) == ("failed", 500, "/raise")


@pytest.mark.parametrize(
    ("spawns", "expected"),
    [
        # Written, finished, when its response started: the status it started with.
        pytest.param(False, ("succeeded", 200), id="spawned-nothing"),
        # Its end is recorded after the body: the error is there, and the
        # operation fails once its tasks end.
        pytest.param(True, ("running", 500), id="spawned"),
    ],
)
def test_error_while_streaming(
    stacks: Stacks,
    engine: Engine,
    session_factory: sessionmaker[Session],
    operation: OperationGetter,
    spawns: bool,
    expected: tuple[str, int],
) -> None:
    spawning = cluster_app(session_factory)

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        if spawns:
            spawning(environ, lambda status, headers, exc_info=None: None)
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise RuntimeError("mid-body")

    stack = stacks.wsgi(app)
    environ = webob.Request.blank("/clusters", method="POST").environ
    result: Any = stack(environ, lambda status, headers, exc_info=None: None)
    with pytest.raises(RuntimeError, match="mid-body"):
        list(result)
    result.close()
    operations_of(stack).flush_ends()
    op = operation(environ[OPERATION_ID_KEY])
    assert op is not None and (op.state, op.http_status) == expected


def test_a_body_never_closed_leaves_the_request_to_the_reaper(
    stacks: Stacks,
    engine: Engine,
    session_factory: sessionmaker[Session],
    operation: OperationGetter,
) -> None:
    timeout = timedelta(minutes=3)
    stack = stacks.wsgi(cluster_app(session_factory), request_timeout=timeout)
    # webob's get_response hands the body over unclosed: the end is never recorded
    # (nor the request's context unbound, hence a context of the test's own).
    with context.request_context(None):
        reply = webob.Request.blank("/clusters", method="POST").get_response(stack)
    operations_of(stack).close()
    op = operation(reply.headers["X-Request-Id"])
    assert op is not None and (op.state, op.http_status, op.tasks_pending) == ("running", None, 2)
    assert op.request_deadline == op.created_at + timeout
    passed(engine, timeout - timedelta(seconds=1))
    assert reap(engine).requests == ()
    passed(engine, timedelta(seconds=1))
    assert reap(engine).requests == (op.id,)
    # The request is over; its tasks decide how the operation ends.
    op = operation(op.id)
    assert op is not None and (op.state, op.request_deadline) == ("running", None)
    worker = Worker(engine, ["provision", "configure"], host="w")
    while (job := worker.claim()) is not None:
        job.succeed()
    op = operation(op.id)
    assert op is not None and (op.state, op.http_status, op.error_code) == ("succeeded", None, None)


def test_streaming_body_is_not_buffered_and_closed_before_the_end_is_recorded(
    stacks: Stacks,
    engine: Engine,
    session_factory: sessionmaker[Session],
    operation: OperationGetter,
) -> None:
    stack = stacks.wsgi(cluster_app(session_factory))
    environ = webob.Request.blank("/stream", method="POST").environ
    result: Any = stack(environ, lambda status, headers, exc_info=None: None)
    rid = environ["tasktoolkit.request_id"]
    streaming: Streaming = environ["tests.streaming"]
    assert next(iter(result)) == b"one "  # one chunk at a time
    assert len(streaming.seen_while_iterating) == 1
    assert list(result) == [b"two ", b"three"]
    result.close()
    operations_of(stack).flush_ends()
    assert streaming.closed
    assert all(s["operation_id"] == rid for s in streaming.seen_while_iterating)
    op = operation(rid)
    assert op is not None and (op.state, op.http_status) == ("succeeded", 200)
    assert context.current() is None


def test_spawned_tasks_belong_to_the_operation_and_keep_it_running(
    stack: webtest.TestApp,
    session_factory: sessionmaker[Session],
    operation: OperationGetter,
    tasks_of: Callable[[str], list[Task]],
) -> None:
    response = stack.post("/clusters", headers={"X-Project-Id": "p9"}, status=201)
    rid = response.headers["X-Request-Id"]
    tasks = tasks_of(rid)
    assert sorted(t.name for t in tasks) == ["configure", "provision"]
    assert {t.project_id for t in tasks} == {"p9"}
    op = operation(rid)
    assert op is not None
    assert (op.state, op.http_status, op.task_counts["pending"]) == ("running", 201, 2)
    with session_factory() as s:
        for task in tasks:
            start_task(s, task.id, host="w1")
        succeed_task(s, tasks[0].id)
        s.commit()
    assert operation(rid).state == "running"  # type: ignore[union-attr]
    with session_factory() as s:
        fail_task(s, tasks[1].id, code="boom", message="no")
        s.commit()
    op = operation(rid)
    assert op is not None and op.state == "failed" and op.finished_at is not None


def test_route_action_is_recorded_from_routing_args(
    make_stack: Stack, operation: OperationGetter
) -> None:
    def routed(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        # what routes.middleware.RoutesMiddleware leaves in the environ
        environ["wsgiorg.routing_args"] = ((), {"controller": "nodes", "action": "reboot"})
        start_response("202 Accepted", [("Content-Type", "text/plain")])
        return [b""]

    response = make_stack(routed).post("/nodes/1/reboot", status=202)
    op = operation(response.headers["X-Request-Id"])
    assert op is not None and (op.action, op.state) == ("reboot", "succeeded")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # Written finished when its response starts: opened, then finished at once.
        pytest.param(
            "/things/1",
            [("opened", "running", "succeeded"), ("finished", "succeeded", "succeeded")],
            id="spawned-nothing",
        ),
        # Written by the app's commit; its tasks keep it running past the response.
        pytest.param("/clusters", [("opened", "running", "running")], id="spawned"),
    ],
)
def test_signals_are_sent_after_commit(
    stack: webtest.TestApp,
    operation: OperationGetter,
    path: str,
    expected: list[tuple[str, str, str]],
) -> None:
    heard: list[tuple[str, signals.OperationChange, str | None]] = []

    def opened(sender: object, change: signals.OperationChange) -> None:
        committed = operation(change.operation_id)
        heard.append(("opened", change, committed.state if committed else None))

    def finished(sender: object, change: signals.OperationChange) -> None:
        committed = operation(change.operation_id)
        heard.append(("finished", change, committed.state if committed else None))

    with (
        signals.operation_opened.connected_to(opened),
        signals.operation_finished.connected_to(finished),
    ):
        response = stack.post(path)
    rid = response.headers["X-Request-Id"]
    assert {c.operation_id for _, c, _ in heard} == {rid}
    assert [(k, c.state, s) for k, c, s in heard] == expected


def test_failing_signal_receiver_does_not_break_the_request(
    stack: webtest.TestApp, operation: OperationGetter
) -> None:
    def broken(sender: object, change: signals.OperationChange) -> None:
        raise RuntimeError("receiver bug")

    with signals.operation_opened.connected_to(broken):
        response = stack.put("/things/1")
    op = operation(response.headers["X-Request-Id"])
    assert op is not None and op.state == "succeeded"


@pytest.mark.parametrize(
    "inbound",
    [
        pytest.param("EXISTING", id="id-of-an-existing-operation"),
        pytest.param("EXISTING\r\nX-Evil: 1", id="existing-with-crlf"),
        pytest.param("EXISTING-upper", id="existing-upper-case"),
        pytest.param("req-\xff\xfe" + "0" * 34, id="non-ascii"),
        pytest.param("req-" + "f" * 10_240, id="10kb"),
    ],
)
def test_inbound_ids_never_attach_to_an_existing_operation(
    stack: webtest.TestApp,
    operation: OperationGetter,
    tasks_of: Callable[[str], list[Task]],
    inbound: str,
) -> None:
    existing = stack.put("/things/1").headers["X-Request-Id"]
    before = operation(existing)
    if inbound.startswith("EXISTING"):
        inbound = inbound.replace("EXISTING-upper", existing.upper()).replace("EXISTING", existing)
    response = stack.post("/clusters", extra_environ={"HTTP_X_REQUEST_ID": inbound}, status=201)
    rid = response.headers["X-Request-Id"]
    assert is_valid_request_id(rid) and rid not in (inbound, existing)
    assert response.json["operation_id"] == rid
    op = operation(rid)
    assert op is not None
    assert op.global_request_id == (inbound if inbound == existing else None)
    assert {t.request_id for t in tasks_of(rid)} == {rid}
    assert tasks_of(existing) == []
    after = operation(existing)
    assert after is not None and before is not None
    assert (after.state, after.http_status, after.updated_at) == (
        before.state,
        before.http_status,
        before.updated_at,
    )


@pytest.mark.parametrize(
    ("path_info", "stored"),
    [
        # as a server hands it over: %00 and %FF decoded, bytes as latin-1
        pytest.param("/things/a\x00b\xff", "/things/a\ufffdb\ufffd", id="nul-and-non-utf8"),
        # a server that decoded the path itself, keeping bad bytes as surrogates
        pytest.param("/things/\u20ac\udcff", "/things/\u20ac\ufffd", id="lone-surrogate"),
    ],
)
def test_path_the_database_cannot_store_is_stored_replaced_not_a_500(
    stack: webtest.TestApp, operation: OperationGetter, path_info: str, stored: str
) -> None:
    response = stack.put("/things/x", extra_environ={"PATH_INFO": path_info})
    assert response.status_int == 200
    op = operation(response.headers["X-Request-Id"])
    assert op is not None and op.path == stored


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"HTTP_X_PROJECT_ID": "p" * 65}, id="project-65-chars"),
        pytest.param({"HTTP_X_USER_ID": "u" * 65}, id="user-65-chars"),
        pytest.param({"HTTP_X_PROJECT_ID": "p\x00"}, id="project-nul"),
        pytest.param({"HTTP_X_USER_ID": "u\x1b[0m"}, id="user-control-character"),
    ],
)
def test_a_caller_id_that_does_not_fit_is_a_400_never_cut(
    stack: webtest.TestApp,
    session_factory: sessionmaker[Session],
    headers: dict[str, str],
) -> None:
    response = stack.post("/clusters", extra_environ=headers, status=400)
    assert response.json["errors"][0]["code"] == "tasktoolkit.invalid_caller"
    assert response.json["errors"][0]["request_id"] == response.headers["X-Request-Id"]
    assert "Operation-Location" not in response.headers
    with session_factory() as s:
        assert s.scalars(select(Operation)).all() == []
    # 64 characters fit exactly
    fits = {key: value[:64] if len(value) > 64 else "ok" for key, value in headers.items()}
    assert stack.post("/clusters", extra_environ=fits).status_int == 201


def test_outside_request_id_middleware_is_a_clear_error(
    stacks: Stacks, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    operations = operations_of(stacks.wsgi(cluster_app(session_factory)))
    with pytest.raises(RuntimeError, match="wrapped by RequestIdMiddleware"):
        webob.Request.blank("/clusters", method="POST").get_response(operations)
    # a read request does not need it
    response = webob.Request.blank("/x").get_response(operations)
    assert response.status_int == 200 and response.json["operation_id"] is None


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        pytest.param({"engine": "sqlite://"}, TypeError, id="engine-not-an-engine"),
        pytest.param({"settings": {"deadline": 2}}, TypeError, id="settings-not-settings"),
        pytest.param({"app": None}, TypeError, id="app-not-callable"),
    ],
)
def test_bad_arguments_fail_at_construction(
    engine: Engine, arguments: dict[str, Any], error: type[Exception]
) -> None:
    given: dict[str, Any] = {"app": cluster_app(sessionmaker(engine)), "engine": engine}
    given.update(arguments)
    app = given.pop("app")
    with pytest.raises(error):
        OperationMiddleware(app, **given)


@pytest.mark.parametrize(
    ("durable", "expected"),
    [pytest.param(False, "off", id="default-not-durable"), pytest.param(True, "on", id="durable")],
)
def test_durable_decides_postgresql_synchronous_commit(
    stacks: Stacks,
    engine: Engine,
    session_factory: sessionmaker[Session],
    operation: OperationGetter,
    durable: bool,
    expected: str,
) -> None:
    stack = stacks.wsgi(cluster_app(session_factory), durable=durable)
    operations = operations_of(stack)
    response = webtest.TestApp(stack).post("/clusters", status=201)
    operations.flush_ends()
    if engine.dialect.name == "postgresql":
        with operations._writer.connect() as conn:
            setting = conn.exec_driver_sql("SHOW synchronous_commit").scalar()
        assert setting == expected
        with engine.connect() as conn:  # the app's own connections are never touched
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    assert operation(response.headers["X-Request-Id"]) is not None


def test_the_apps_pooled_connections_are_the_apps_alone(
    stacks: Stacks,
    engine: Engine,
    session_factory: sessionmaker[Session],
    operation: OperationGetter,
) -> None:
    # The middleware's statements run on a pool of its own, on SQLite files too:
    # switching the app's connections in and out of AUTOCOMMIT costs every request.
    checkouts: list[object] = []

    def count(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checkouts.append(dbapi_connection)

    stack = stacks.wsgi(cluster_app(session_factory))
    event.listen(engine.pool, "checkout", count)
    try:
        response = webtest.TestApp(stack).post("/clusters", status=201)
    finally:
        event.remove(engine.pool, "checkout", count)
        operations_of(stack).close()
    assert len(checkouts) == 1  # the app's one session, not the operation's end
    found = operation(response.headers["X-Request-Id"])
    assert found is not None and found.http_status == 201


def test_tasks_done_before_the_request_ends_finish_the_operation_at_its_end(
    engine: Engine,
    session_factory: sessionmaker[Session],
    make_stack: Stack,
    operation: OperationGetter,
    tasks_of: Callable[[str], list[Task]],
) -> None:
    app = cluster_app(session_factory)

    def finishing(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        # the tasks end while the body streams, before the request's end is recorded
        yield from app(environ, start_response)
        rid = environ[OPERATION_ID_KEY]
        with session_factory() as s:
            for task in tasks_of(rid):
                start_task(s, task.id, host="w1")
                succeed_task(s, task.id)
            s.commit()
        op = operation(rid)
        assert op is not None and (op.state, op.http_status) == ("running", None)

    response = make_stack(finishing).post("/clusters", status=201)
    op = operation(response.headers["X-Request-Id"])
    assert op is not None
    assert (op.state, op.http_status, op.task_counts["succeeded"]) == ("succeeded", 201, 2)


@pytest.mark.parametrize(
    ("path", "in_app", "at_start", "after"),
    [
        # The app's spawn writes the operation in the app's transaction (it replaces
        # the count update a spawn sends anyway); the end is one statement after it, and
        # one more keeps the resources its tasks touched.
        pytest.param("/clusters", ["INSERT"], [], ["UPDATE", "INSERT"], id="spawning"),
        # Nothing spawned: the operation, finished, in one statement as the response starts.
        pytest.param("/things/1", [], ["INSERT"], [], id="spawning-nothing"),
    ],
)
def test_no_statement_before_the_response_and_one_for_the_operation(
    stacks: Stacks,
    engine: Engine,
    session_factory: sessionmaker[Session],
    path: str,
    in_app: list[str],
    at_start: list[str],
    after: list[str],
) -> None:
    executed: dict[str, list[str]] = {"before": [], "app": [], "start": [], "after": []}
    phase = ["before"]

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "tasktoolkit_operations" in statement:
            executed[phase[0]].append(statement.split()[0])

    def enter_app(environ: dict[str, Any]) -> None:
        phase[0] = "app"

    inner = cluster_app(session_factory, on_request=enter_app)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        def start(*args: Any) -> Any:
            phase[0] = "start"  # the app starts its response
            return start_response(*args)

        return inner(environ, start)

    stack = stacks.wsgi(app)
    operations = operations_of(stack)

    def rollbacks() -> int:
        # MariaDB counts them per connection; the pool holds one after a request
        with operations._writer.connect() as conn:
            return int(conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Com_rollback'").one()[1])

    try:
        webtest.TestApp(stack).post("/things/0")  # the pools have their connections now
        before = rollbacks() if engine.dialect.name == "mysql" else 0
        event.listen(Engine, "before_cursor_execute", count)
        try:
            environ = webob.Request.blank(path, method="POST").environ
            result: Any = stack(environ, lambda status, headers, exc_info=None: None)
            phase[0] = "after"
            list(result)
            result.close()
            operations.flush_ends()  # the end, written by the end writer's thread
        finally:
            event.remove(Engine, "before_cursor_execute", count)
        after_rollbacks = rollbacks() if engine.dialect.name == "mysql" else 0
    finally:
        operations.close()
    if engine.dialect.name == "mysql" and after:
        # MariaDB reads the resources, then inserts them (no locking read of the tasks).
        after = [*after[:-1], "SELECT"]
    assert executed == {"before": [], "app": in_app, "start": at_start, "after": after}
    assert after_rollbacks == before  # an AUTOCOMMIT connection is not rolled back on return


def _accepting(
    session_factory: sessionmaker[Session], status: str, *, spawn: bool, headers: tuple = ()
) -> Any:
    """An app answering ``status``, having spawned a task first when ``spawn``."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if spawn:
            with session_factory() as session:
                cluster = Cluster(name="c")
                session.add(cluster)
                session.flush()
                cluster.spawn_tasks(["provision"])
                session.commit()
        start_response(status, [("Content-Type", "text/plain"), *headers])
        return [b"ok"]

    return app


@pytest.mark.parametrize(
    ("status", "spawn", "headers", "options", "expected"),
    [
        pytest.param("202 Accepted", True, (), {}, "1", id="202-spawned"),
        pytest.param("202 Accepted", True, (), {"retry_after": "3s"}, "3", id="202-configured"),
        pytest.param("202 Accepted", True, (("Retry-After", "9"),), {}, "9", id="202-the-apps-own"),
        pytest.param("202 Accepted", False, (), {}, None, id="202-nothing-spawned"),
        pytest.param("201 Created", True, (), {}, None, id="201-spawned"),
    ],
)
def test_a_202_that_spawned_tasks_carries_retry_after(
    make_stack: Stack,
    session_factory: sessionmaker[Session],
    status: str,
    spawn: bool,
    headers: tuple,
    options: dict[str, Any],
    expected: str | None,
) -> None:
    stack = make_stack(_accepting(session_factory, status, spawn=spawn, headers=headers), **options)
    response = stack.post("/clusters", status=int(status[:3]))
    assert response.headers.get("Retry-After") == expected
    assert response.headers.getall("Retry-After") == ([] if expected is None else [expected])

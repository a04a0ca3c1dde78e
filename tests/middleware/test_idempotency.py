"""Idempotency-Key on mutating requests, on SQLite, PostgreSQL and MariaDB.

A repeat of a completed request is replayed without calling the app; a repeat
while the first runs is a 409; the key with another request is a 422; two
projects' keys never meet; of many identical requests at once exactly one runs.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import webob
import webtest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.middleware._idempotency import MAX_REPLAYED_BODY
from tasktoolkit.orm import Operation, purge, reap
from tasktoolkit.orm._records import idempotency_keys_table
from tasktoolkit.orm._types import utcnow
from tasktoolkit.wsgi_input import MAX_BODY
from tests.clock import passed
from tests.databases import engine_for
from tests.middleware.apps import cluster_app
from tests.middleware.stacks import Stacks
from tests.middleware.test_concurrency import Served
from tests.models import Cluster
from tests.orm._db import operation_row

Stack = Callable[..., webtest.TestApp]
P1 = {"X-Project-Id": "p1"}


def keyed(key: str, **headers: str) -> dict[str, str]:
    return {**P1, "Idempotency-Key": key, **headers}


def count(session_factory: sessionmaker[Session], model: Any) -> int:
    with session_factory() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def keys_of(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(idempotency_keys_table))]


def test_a_repeat_of_a_completed_request_is_replayed_without_calling_the_app(
    stack: webtest.TestApp, session_factory: sessionmaker[Session]
) -> None:
    first = stack.post("/clusters", "{}", headers=keyed("create-1"), status=201)
    assert "Idempotent-Replayed" not in first.headers
    again = stack.post("/clusters", "{}", headers=keyed("create-1"), status=201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.body == first.body
    for name in ("Operation-Location", "Content-Type"):
        assert again.headers[name] == first.headers[name]
    # A request of its own (its own id), answered with the first one's operation.
    assert again.headers["X-Request-Id"] != first.headers["X-Request-Id"]
    assert again.headers["Operation-Location"].endswith(first.headers["X-Request-Id"])
    assert count(session_factory, Cluster) == 1
    assert count(session_factory, Operation) == 1


def test_a_repeat_while_the_first_runs_is_409_and_runs_nothing(
    make_stack: Stack, session_factory: sessionmaker[Session]
) -> None:
    answers: list[webtest.TestResponse] = []

    def repeat_while_running(environ: dict[str, Any]) -> None:
        if not answers:  # the first request only: repeat it from inside its own run
            answers.append(stack.post("/clusters", "{}", headers=keyed("slow"), expect_errors=True))

    stack = make_stack(cluster_app(session_factory, on_request=repeat_while_running))
    stack.post("/clusters", "{}", headers=keyed("slow"), status=201)
    (during,) = answers
    assert during.status_int == 409
    (error,) = during.json["errors"]
    assert error["code"] == "tasktoolkit.idempotency_in_progress"
    assert error["request_id"] == during.headers["X-Request-Id"]
    assert count(session_factory, Cluster) == 1
    assert count(session_factory, Operation) == 1  # the 409 wrote none
    assert stack.post("/clusters", "{}", headers=keyed("slow")).headers["Idempotent-Replayed"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/clusters", "{'other': 1}", id="other-body"),
        pytest.param("POST", "/clusters?x=1", "{}", id="other-query"),
        pytest.param("POST", "/other", "{}", id="other-path"),
        pytest.param("PUT", "/clusters", "{}", id="other-method"),
    ],
)
def test_the_key_with_another_request_is_422(
    stack: webtest.TestApp,
    session_factory: sessionmaker[Session],
    method: str,
    path: str,
    body: str,
) -> None:
    stack.post("/clusters", "{}", headers=keyed("k"), status=201)
    response = stack.request(
        path, method=method, body=body.encode(), headers=keyed("k"), expect_errors=True
    )
    assert response.status_int == 422
    assert response.json["errors"][0]["code"] == "tasktoolkit.idempotency_key_reused"
    assert count(session_factory, Operation) == 1


def test_two_projects_sending_one_key_are_two_keys(
    stack: webtest.TestApp, session_factory: sessionmaker[Session]
) -> None:
    a = stack.post("/clusters", "{}", headers=keyed("same"), status=201)
    b = stack.post(
        "/clusters", "{}", headers={"X-Project-Id": "p2", "Idempotency-Key": "same"}, status=201
    )
    assert "Idempotent-Replayed" not in b.headers
    assert a.json["cluster"] != b.json["cluster"]
    assert b.json["project_id"] == "p2"
    replayed = stack.post(
        "/clusters", "{}", headers={"X-Project-Id": "p2", "Idempotency-Key": "same"}
    )
    assert replayed.json == b.json  # project p2's own response, never p1's
    assert count(session_factory, Cluster) == 2


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("k" * 256, id="256-characters"),
        pytest.param("a\x01b", id="control-character"),
        pytest.param("a\tb", id="tab"),
        pytest.param("a\x7fb", id="delete"),
        pytest.param("caf\xe9", id="non-ascii"),
    ],
)
def test_a_malformed_key_is_400_and_the_app_is_not_called(
    stack: webtest.TestApp, session_factory: sessionmaker[Session], engine: Engine, key: str
) -> None:
    # Sent as a server hands it over: latin-1 text of the header's bytes.
    environ = {"HTTP_X_PROJECT_ID": "p1", "HTTP_IDEMPOTENCY_KEY": key}
    response = stack.post("/clusters", "{}", extra_environ=environ, status=400)
    (error,) = response.json["errors"]
    assert error["code"] == "tasktoolkit.invalid_header"
    assert "Idempotency-Key" in error["detail"]
    assert count(session_factory, Cluster) == 0
    assert count(session_factory, Operation) == 0
    assert keys_of(engine) == []


def test_a_key_of_255_printable_characters_is_kept(stack: webtest.TestApp, engine: Engine) -> None:
    key = ("k y-" * 64)[:254] + "!"
    stack.post("/clusters", "{}", headers=keyed(key), status=201)
    assert [k["key"] for k in keys_of(engine)] == [key]
    stack.post("/clusters", "{}", headers=keyed(key.upper()), status=201)  # exact case


def test_reads_and_excluded_paths_ignore_the_key(
    make_stack: Stack, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    stack = make_stack(exclude_paths=["/clusters"])
    stack.get("/look", headers=keyed(""), status=200)  # not even checked on a GET
    stack.post("/clusters", "{}", headers=keyed("x"), status=201)
    stack.post("/clusters", "{}", headers=keyed("x"), status=201)
    assert count(session_factory, Cluster) == 2 and keys_of(engine) == []


def _answer(status: str, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> Any:
    calls: list[int] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        calls.append(1)
        environ["wsgi.input"].read()
        typed = [] if status.startswith("204") else [("Content-Type", "text/plain")]
        start_response(status, [*typed, *headers])
        return [body[: len(body) // 2], body[len(body) // 2 :]]

    app.calls = calls  # type: ignore[attr-defined]
    return app


def test_a_body_over_1_mib_is_replayed_as_status_and_headers(make_stack: Stack) -> None:
    app = _answer("200 OK", b"x" * (MAX_REPLAYED_BODY + 1), [("Location", "/big/1")])
    stack = make_stack(app)
    first = stack.post("/big", b"", headers=keyed("big"), status=200)
    assert len(first.body) == MAX_REPLAYED_BODY + 1
    again = stack.post("/big", b"", headers=keyed("big"), status=200)
    assert again.body == b""
    assert again.headers["Idempotent-Body-Omitted"] == "true"
    assert again.headers["Location"] == "/big/1"
    assert again.headers["Content-Type"] == "text/plain"
    assert len(app.calls) == 1


def test_a_body_of_exactly_1_mib_is_replayed_whole(make_stack: Stack) -> None:
    app = _answer("202 Accepted", b"y" * MAX_REPLAYED_BODY)
    stack = make_stack(app)
    first = stack.post("/big", b"z" * 300_000, headers=keyed("fits"), status=202)
    again = stack.post("/big", b"z" * 300_000, headers=keyed("fits"), status=202)
    assert again.body == first.body and "Idempotent-Body-Omitted" not in again.headers
    assert len(app.calls) == 1


@pytest.mark.parametrize(
    ("status", "replayed"),
    [
        pytest.param("503 Service Unavailable", 503, id="server-error-answered"),
        pytest.param("204 No Content", 204, id="no-content"),
    ],
)
def test_every_completed_response_is_replayed(
    make_stack: Stack, status: str, replayed: int
) -> None:
    app = _answer(status, b"" if replayed == 204 else b"no")
    stack = make_stack(app)
    first = stack.post("/things", b"{}", headers=keyed("once"), status=replayed)
    again = stack.post("/things", b"{}", headers=keyed("once"), status=replayed)
    assert again.body == first.body and again.headers["Idempotent-Replayed"] == "true"
    assert len(app.calls) == 1


def test_an_app_that_raised_is_replayed_as_the_500_its_operation_recorded(
    stack: webtest.TestApp, operation: Callable[[str], Operation | None]
) -> None:
    first = stack.post("/raise", b"", headers=keyed("boom"), status=500)
    again = stack.post("/raise", b"", headers=keyed("boom"), status=500)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.body == first.body
    (error,) = again.json["errors"]
    assert (error["status"], error["code"]) == (500, "tasktoolkit.internal_error")
    first_id = again.headers["Operation-Location"].rsplit("/", 1)[1]
    assert error["request_id"] == first_id
    op = operation(first_id)
    assert op is not None and (op.state, op.http_status) == ("failed", 500)


def state_of(engine: Engine, operation_id: str) -> str:
    return str(operation_row(engine, operation_id)["state"])


def post_hung(stack: webtest.TestApp, key: str) -> Callable[[], None]:
    """A keyed ``POST /clusters`` whose app committed, then hung before answering (its
    process died there, as far as the database knows): neither its response nor its
    end is ever recorded, until the returned function lets it answer after all.

    The app must be a :func:`hanging` one; the request runs on a thread of its own.
    """
    environ = webob.Request.blank("/clusters", method="POST", body=b"{}", headers=keyed(key))
    statuses: list[str] = []

    def serve() -> None:
        body = stack.app(environ.environ, lambda status, *_: statuses.append(status))
        try:
            b"".join(body)
        finally:
            body.close()

    thread = threading.Thread(target=serve)
    thread.start()
    assert HUNG.wait_hung(), "the keyed request did not reach its app"

    def answer() -> None:
        HUNG.release.set()
        thread.join(30)
        assert statuses == ["201 Created"]

    return answer


class _Hung:
    def __init__(self) -> None:
        self.hung = threading.Event()
        self.release = threading.Event()

    def wait_hung(self) -> bool:
        return self.hung.wait(30)


HUNG = _Hung()


def hanging(app: Any) -> Any:
    """``app``, whose first call hangs after the app's work, until :func:`post_hung` says."""
    calls: list[int] = []

    def hung(environ: dict[str, Any], start_response: Any) -> Any:
        calls.append(1)
        if len(calls) > 1:
            return app(environ, start_response)
        answered: list[Any] = []

        def late_start(*args: Any) -> None:
            answered.append(args)

        body = app(environ, late_start)
        HUNG.hung.set()
        HUNG.release.wait(60)
        start_response(*answered[0])
        return body

    return hung


@pytest.mark.parametrize(
    ("task_names", "still_running_at", "reaped_at"),
    [
        # The reaper ends the request once its timeout (10 minutes) has passed.
        pytest.param((), 9, 11, id="spawned-nothing"),
        # Its request ended, the operation runs on with its tasks (and keeps its
        # key) until the reaper fails them, not started within an hour.
        pytest.param(("provision", "configure"), 11, 61, id="its-tasks-never-started"),
    ],
)
def test_a_key_whose_operation_the_reaper_closed_is_free_again(
    make_stack: Stack,
    session_factory: sessionmaker[Session],
    engine: Engine,
    task_names: tuple[str, ...],
    still_running_at: int,
    reaped_at: int,
) -> None:
    runs: list[int] = []
    app = cluster_app(session_factory, task_names=task_names, on_request=lambda _: runs.append(1))
    stack = make_stack(hanging(app))
    HUNG.__init__()  # type: ignore[misc]
    late_close = post_hung(stack, "lost")
    (key,) = keys_of(engine)
    assert key["status"] is None and state_of(engine, key["operation_id"]) == "running"
    stack.post("/clusters", "{}", headers=keyed("lost"), status=409)

    passed(engine, timedelta(minutes=still_running_at))
    reap(engine)
    assert state_of(engine, key["operation_id"]) == "running"
    stack.post("/clusters", "{}", headers=keyed("lost"), status=409)

    # The reaper closes the operation whose request never ended.
    passed(engine, timedelta(minutes=reaped_at - still_running_at))
    reap(engine)
    assert state_of(engine, key["operation_id"]) == "failed"
    (key,) = keys_of(engine)  # as it is now (its times moved back with the clock)
    # Free for the request first sent with it; another request is still refused.
    other = stack.post("/clusters", "{'other': 1}", headers=keyed("lost"), status=422)
    assert other.json["errors"][0]["code"] == "tasktoolkit.idempotency_key_reused"
    assert keys_of(engine) == [key]
    taken = stack.post("/clusters", "{}", headers=keyed("lost"), status=201)
    assert "Idempotent-Replayed" not in taken.headers
    assert len(runs) == 2
    (after,) = keys_of(engine)
    assert after["operation_id"] == taken.headers["X-Request-Id"] != key["operation_id"]
    assert stack.post("/clusters", "{}", headers=keyed("lost")).json == taken.json

    # The lost request ending after all takes nothing back.
    late_close()
    stack.operations.flush_ends()
    assert keys_of(engine) == [after]
    assert state_of(engine, key["operation_id"]) == "failed"
    assert stack.post("/clusters", "{}", headers=keyed("lost")).json == taken.json
    assert len(runs) == 2


def test_a_key_is_purged_with_its_operation(stack: webtest.TestApp, engine: Engine) -> None:
    stack.post("/clusters", "{}", headers=keyed("short-lived"), status=201)
    stack.post("/look", "{}", headers=keyed("kept"), status=200)
    assert len(keys_of(engine)) == 2
    with engine.begin() as conn:
        conn.execute(
            update(Operation)
            .where(Operation.path == "/look")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert purge(engine).operations == 1
    assert [k["key"] for k in keys_of(engine)] == ["short-lived"]
    # Purged, the key is a new one.
    assert "Idempotent-Replayed" not in stack.post("/look", "{}", headers=keyed("kept")).headers


CLIENTS = 8


def test_of_8_identical_keyed_posts_at_once_exactly_one_runs_the_app(
    engine: Engine,
    session_factory: sessionmaker[Session],
    stack: webtest.TestApp,
    stacks: Stacks,
) -> None:
    """Two servers with engines of their own (two processes, as far as the database
    knows), four clients each; the first to reserve holds its app until every other
    request has been answered, so all of them overlap with it."""
    answered = threading.Semaphore(0)
    released = threading.Event()

    def hold(environ: dict[str, Any]) -> None:
        for _ in range(CLIENTS - 1):
            assert answered.acquire(timeout=60), "the other requests were not answered"
        released.set()

    servers, owns = [], []
    for _ in range(2):
        own = engine_for(engine.url)
        owns.append(own)
        app = cluster_app(sessionmaker(own, expire_on_commit=False), on_request=hold)
        servers.append(Served(stacks.wsgi(app, engine=own)))
    start = threading.Barrier(CLIENTS)

    def client(n: int) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(*servers[n % 2].address, timeout=60)
        try:
            start.wait(timeout=30)
            connection.request("POST", "/clusters", body=b"{}", headers=keyed("together"))
            response = connection.getresponse()
            result = response.status, dict(response.headers), response.read()
        finally:
            connection.close()
        if result[0] != 201:
            answered.release()
        return result

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(client, range(CLIENTS)))
    finally:
        for server in servers:
            server.stop()
        stacks.close()
        for own in owns:
            own.dispose()
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [201] + [409] * (CLIENTS - 1), statuses
    assert released.is_set()
    assert count(session_factory, Cluster) == 1
    assert count(session_factory, Operation) == 1
    (winner,) = [body for status, _, body in results if status == 201]
    for status, _, body in results:
        if status == 409:
            assert json.loads(body)["errors"][0]["code"] == "tasktoolkit.idempotency_in_progress"
    # Once it has ended, every repeat is its replay.
    assert stack.post("/clusters", "{}", headers=keyed("together")).body == winner


# -- kept before the last byte, and nothing kept for a refusal ---------------------


RETRIES = 200


def _post(address: tuple[str, int], key: str) -> tuple[int, dict[str, str], bytes]:
    """One keyed POST on a connection of its own, its answer read whole, then closed."""
    connection = http.client.HTTPConnection(*address, timeout=30)
    try:
        connection.request("POST", "/clusters", body=b"{}", headers=keyed(key))
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        connection.close()


def test_a_client_that_read_the_whole_answer_and_retries_gets_the_replay(
    stacks: Stacks, session_factory: sessionmaker[Session]
) -> None:
    """200 times: the answer read whole, the retry sent at once on a fresh connection."""
    served = Served(stacks.wsgi(cluster_app(session_factory)))
    outcomes: list[tuple[int, str | None]] = []
    try:
        for n in range(RETRIES):
            status, _, body = _post(served.address, f"retry-{n}")
            assert status == 201, body
            again, headers, replayed = _post(served.address, f"retry-{n}")
            outcomes.append((again, headers.get("Idempotent-Replayed")))
            assert replayed == body or again != 201
    finally:
        served.stop()
    assert outcomes == [(201, "true")] * RETRIES


def test_a_streamed_keyed_response_is_kept_before_its_last_chunk(
    make_stack: Stack, engine: Engine
) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield from (b"one ", b"two ", b"three")

    stack = make_stack(app)
    environ = webob.Request.blank("/things", method="POST", headers=keyed("streamed")).environ
    body = stack.app(environ, lambda status, headers, exc_info=None: None)
    chunks = iter(body)
    assert [next(chunks), next(chunks)] == [b"one ", b"two "]
    (key,) = keys_of(engine)
    assert key["status"] is None  # more may come
    assert next(chunks) == b"three"  # the last: the client may have it all now
    (key,) = keys_of(engine)
    assert (key["status"], key["body"]) == (200, b"one two three")
    assert list(chunks) == []
    body.close()


def _refusing(status: str, spawn: bool, session_factory: sessionmaker[Session]) -> Any:
    calls: list[int] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        calls.append(1)
        if spawn:
            spawning = {**environ, "PATH_INFO": "/clusters"}
            cluster_app(session_factory)(spawning, lambda *args: None)
        start_response(status, [("Content-Type", "application/json")])
        return [b'{"errors": []}']

    app.calls = calls  # type: ignore[attr-defined]
    return app


@pytest.mark.parametrize(
    ("status", "spawn", "kept"),
    [
        pytest.param("400 Bad Request", False, False, id="400-validation"),
        pytest.param("404 Not Found", False, False, id="404-no-such-path"),
        pytest.param("405 Method Not Allowed", False, False, id="405-not-served"),
        pytest.param("409 Conflict", True, True, id="409-after-spawning"),
        pytest.param("500 Internal Server Error", False, True, id="500-kept"),
    ],
)
def test_a_refusal_before_the_app_did_anything_keeps_nothing_and_frees_the_key(
    make_stack: Stack,
    engine: Engine,
    session_factory: sessionmaker[Session],
    operation: Callable[[str], Operation | None],
    status: str,
    spawn: bool,
    kept: bool,
) -> None:
    app = _refusing(status, spawn, session_factory)
    stack = make_stack(app)
    code = int(status[:3])
    first = stack.post("/things", b'{"bad": 1}', headers=keyed("fix-me"), status=code)
    op = operation(first.headers["X-Request-Id"])
    state = "running" if spawn else "failed"  # one that spawned runs on with its tasks
    assert op is not None and (op.state, op.http_status) == (state, code)
    assert first.headers["Operation-Location"].endswith(op.id)
    again = stack.post("/things", b'{"bad": 1}', headers=keyed("fix-me"), status=code)
    if kept:
        assert again.headers["Idempotent-Replayed"] == "true" and len(app.calls) == 1
        return
    # Nothing kept: the same request runs again, and so does a fixed one with the key.
    assert "Idempotent-Replayed" not in again.headers and len(app.calls) == 2
    assert keys_of(engine) == []
    fixed = make_stack(cluster_app(session_factory))
    made = fixed.post("/things", b'{"good": 1}', headers=keyed("fix-me"), status=200)
    (key,) = keys_of(engine)
    assert key["operation_id"] == made.headers["X-Request-Id"] and key["status"] == 200


class _Endless:
    """A request body that never ends (a chunked upload), counting what was read of it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        size = 65536 if size is None or size < 0 else size
        self.read_bytes += size
        return b"x" * size


@pytest.mark.parametrize(
    "chunked",
    [pytest.param(False, id="content-length-over"), pytest.param(True, id="chunked-endless")],
)
def test_a_keyed_body_over_the_limit_is_413_without_spooling(
    make_stack: Stack,
    engine: Engine,
    session_factory: sessionmaker[Session],
    chunked: bool,
) -> None:
    app = _refusing("201 Created", False, session_factory)
    stack = make_stack(app)
    endless = _Endless()
    request = webob.Request.blank("/things", method="POST", headers=keyed("huge"))
    request.environ["wsgi.input"] = endless
    if chunked:
        request.environ.pop("CONTENT_LENGTH", None)
        request.environ["wsgi.input_terminated"] = True
    else:
        request.environ["CONTENT_LENGTH"] = str(256 * 1024 * 1024)
    reply = request.get_response(stack.app)
    assert reply.status_int == 413
    assert reply.json["errors"][0]["code"] == "tasktoolkit.body_too_large"
    assert reply.json["errors"][0]["request_id"] == reply.headers["X-Request-Id"]
    assert endless.read_bytes <= (MAX_BODY + 65536 if chunked else 0)
    assert app.calls == [] and keys_of(engine) == [] and count(session_factory, Operation) == 0

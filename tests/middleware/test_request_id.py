"""RequestIdMiddleware: fresh ids, the inbound global id, the environ, the context, headers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import webob
import webtest

from tasktoolkit import Settings, context
from tasktoolkit.caller import Caller
from tasktoolkit.context import is_valid_request_id, new_request_id
from tasktoolkit.hooks import Hook, RequestInfo
from tasktoolkit.middleware import (
    GLOBAL_REQUEST_ID_KEY,
    OPENSTACK_GLOBAL_REQUEST_ID_KEY,
    OPENSTACK_REQUEST_ID_KEY,
    REQUEST_ID_KEY,
    RequestIdMiddleware,
    fast_request_id,
)
from tests.middleware.stacks import Stacks


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers with the ids it saw in the environ and the context."""
    ctx = context.current()
    assert ctx is not None
    body = " ".join(
        str(v)
        for v in (
            environ[REQUEST_ID_KEY],
            environ[GLOBAL_REQUEST_ID_KEY],
            environ[OPENSTACK_REQUEST_ID_KEY],
            environ[OPENSTACK_GLOBAL_REQUEST_ID_KEY],
            ctx.request_id,
            ctx.global_request_id,
            ctx.project_id,
            ctx.user_id,
        )
    ).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def test_fast_request_id_is_a_valid_uuid4() -> None:
    import uuid

    ids = {fast_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    for value in ids:
        assert is_valid_request_id(value)
        parsed = uuid.UUID(value[4:])
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_every_request_gets_a_fresh_id_everywhere() -> None:
    app = webtest.TestApp(RequestIdMiddleware(echo))
    first, second = app.get("/"), app.get("/")
    for response in (first, second):
        rid = response.headers["X-Request-Id"]
        assert is_valid_request_id(rid)
        env_id, env_gid, os_id, os_gid, ctx_id, ctx_gid, *_ = response.text.split()
        assert env_id == os_id == ctx_id == rid
        assert env_gid == os_gid == ctx_gid == "None"
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


def test_valid_inbound_id_is_kept_only_as_global() -> None:
    inbound = new_request_id()
    response = webtest.TestApp(RequestIdMiddleware(echo)).get(
        "/", headers={"X-Request-Id": inbound}
    )
    rid = response.headers["X-Request-Id"]
    assert rid != inbound and is_valid_request_id(rid)
    env_id, env_gid, os_id, os_gid, ctx_id, ctx_gid, *_ = response.text.split()
    assert env_gid == os_gid == ctx_gid == inbound
    assert env_id == os_id == ctx_id == rid


@pytest.mark.parametrize(
    "inbound",
    [
        pytest.param("req-" + "a" * 8 + "-aaaa-4aaa-8aaa-" + "a" * 12 + "\r\nX-Evil: 1", id="crlf"),
        pytest.param(
            "req-\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9-aaaa-4aaa-8aaa-aaaaaaaaaaaa", id="non-ascii"
        ),
        pytest.param(new_request_id().upper().replace("REQ-", "req-"), id="upper-case-hex"),
        pytest.param("req-" + "0" * 10_240, id="10kb"),
        pytest.param("", id="empty"),
        pytest.param("not-an-id", id="garbage"),
        pytest.param(new_request_id() + "\n", id="trailing-newline"),
        pytest.param(str(__import__("uuid").uuid4()), id="bare-uuid"),
    ],
)
def test_invalid_inbound_ids_are_dropped(inbound: str) -> None:
    request = webob.Request.blank("/", environ={"HTTP_X_REQUEST_ID": inbound})
    response = request.get_response(RequestIdMiddleware(echo))
    assert response.status_int == 200
    rid = response.headers["X-Request-Id"]
    assert is_valid_request_id(rid) and rid != inbound
    env_id, env_gid, *_ = response.text.split()
    assert env_id == rid and env_gid == "None"


def test_compat_headers_answer_and_are_read() -> None:
    inbound = new_request_id()
    app = webtest.TestApp(
        RequestIdMiddleware(
            echo,
            settings=Settings(compat_headers=["X-OpenStack-Request-ID", "x-request-id"]),
        )
    )
    response = app.get("/", headers={"X-OpenStack-Request-ID": inbound})
    rid = response.headers["X-Request-Id"]
    assert response.headers["X-OpenStack-Request-ID"] == rid
    # a compat header that repeats the main one (in another case) is sent once
    assert len(response.headers.getall("X-Request-Id")) == 1
    assert response.text.split()[1] == inbound


def test_header_name_is_configurable() -> None:
    app = webtest.TestApp(
        RequestIdMiddleware(echo, settings=Settings(request_id_header="X-OpenStack-Request-ID"))
    )
    response = app.get("/")
    assert is_valid_request_id(response.headers["X-OpenStack-Request-ID"])
    assert "X-Request-Id" not in response.headers


def test_existing_response_header_is_never_overwritten() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("x-request-id", "theirs")])
        return [b""]

    response = webtest.TestApp(RequestIdMiddleware(app)).get("/")
    assert response.headers.getall("X-Request-Id") == ["theirs"]


def test_caller_getter_fills_the_context() -> None:
    app = webtest.TestApp(RequestIdMiddleware(echo))
    response = app.get("/", headers={"X-Project-Id": " p1 ", "X-User-Id": "u" * 64})
    *_, project, user = response.text.split()
    assert project == "p1" and user == "u" * 64
    # An id that does not fit is never cut: the context gets no caller at all
    # (the operation middleware and the endpoints answer such a request 400).
    response = app.get("/", headers={"X-Project-Id": "p1", "X-User-Id": "u" * 65})
    assert response.text.split()[-2:] == ["None", "None"]

    custom = webtest.TestApp(
        RequestIdMiddleware(
            echo, settings=Settings(caller_getter=lambda environ: Caller("proj", "usr"))
        )
    )
    assert custom.get("/").text.split()[-2:] == ["proj", "usr"]
    nobody = webtest.TestApp(
        RequestIdMiddleware(
            echo, settings=Settings(caller_getter=lambda environ: Caller(None, None))
        )
    )
    assert nobody.get("/", headers={"X-Project-Id": "p1"}).text.split()[-2:] == ["None", "None"]


def test_context_is_reset_when_the_app_raises() -> None:
    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        assert context.current() is not None
        raise RuntimeError("boom")

    response = webob.Request.blank("/").get_response(RequestIdMiddleware(broken))
    assert response.status_int == 500
    assert context.current() is None


def _raises_at_once(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    raise RecursionError("maximum recursion depth exceeded")


def _raises_after_start_response(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise ValueError("after start_response")


def _raises_before_the_first_byte(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b""  # an empty chunk sends nothing: the status can still change
    raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")


@pytest.mark.parametrize(
    "app",
    [
        pytest.param(_raises_at_once, id="raises-at-once"),
        pytest.param(_raises_after_start_response, id="raises-after-start_response"),
        pytest.param(_raises_before_the_first_byte, id="raises-before-the-first-byte"),
    ],
)
def test_an_app_that_raises_before_its_response_gets_the_contracts_500(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    stack = webtest.TestApp(
        RequestIdMiddleware(app, settings=Settings(compat_headers=["X-OpenStack-Request-ID"])),
        lint=True,
    )
    with caplog.at_level(logging.ERROR, logger="tasktoolkit.middleware"):
        response = stack.get("/", status=500)
    rid = response.headers["X-Request-Id"]
    assert is_valid_request_id(rid)
    assert response.headers["X-OpenStack-Request-ID"] == rid
    assert response.content_type == "application/json"
    assert response.json == {
        "errors": [
            {
                "request_id": rid,
                "code": "tasktoolkit.internal_error",
                "status": 500,
                "title": "Internal Server Error",
                "detail": "the server failed to answer; the error is logged with this id",
            }
        ]
    }
    assert "Operation-Location" not in response.headers
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and rid in errors[0].getMessage()
    assert errors[0].exc_info is not None  # the traceback is logged
    assert context.current() is None


def test_an_error_after_the_first_byte_is_logged_and_left_to_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"partial"
            raise RuntimeError("mid-body")

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    sent: list[str] = []
    result: Any = RequestIdMiddleware(app)(
        webob.Request.blank("/").environ, lambda status, headers, exc_info=None: sent.append(status)
    )
    chunks = iter(result)
    assert next(chunks) == b"partial"
    with caplog.at_level(logging.ERROR, logger="tasktoolkit.middleware"):
        with pytest.raises(RuntimeError, match="mid-body"):
            next(chunks)
    result.close()
    assert sent == ["200 OK"] and closed == [True]
    assert "while its body was sent" in caplog.text
    assert context.current() is None


def test_an_app_that_raises_keeps_the_operations_location(stacks: Stacks) -> None:
    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("boom")

    response = stacks.test_app(broken).post("/clusters", status=500)
    rid = response.headers["X-Request-Id"]
    assert response.json["errors"][0]["request_id"] == rid
    assert response.headers["Operation-Location"] == f"http://localhost:80/operations/{rid}"


def test_streaming_body_keeps_the_context_until_closed_and_is_closed() -> None:
    events: list[tuple[str, str | None]] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            for chunk in (b"a", b"b"):
                ctx = context.current()
                events.append(("chunk", ctx.request_id if ctx else None))
                yield chunk

        def close(self) -> None:
            ctx = context.current()
            events.append(("close", ctx.request_id if ctx else None))

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    response = webtest.TestApp(RequestIdMiddleware(app)).get("/")
    rid = response.headers["X-Request-Id"]
    assert response.body == b"ab"
    assert events == [("chunk", rid), ("chunk", rid), ("close", rid)]
    assert context.current() is None


def test_unstarted_body_is_still_closed_and_context_reset() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"never"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body()

    result: Any = RequestIdMiddleware(app)(
        webob.Request.blank("/").environ, lambda status, headers, exc_info=None: None
    )
    assert context.current() is not None  # bound until the server closes the body
    result.close()
    result.close()  # a second close is harmless
    assert closed == [True]
    assert context.current() is None


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({"request_id_header": "X Bad"}, ValueError, id="header-with-space"),
        pytest.param({"request_id_header": "X-Id\r\n"}, ValueError, id="header-with-crlf"),
        pytest.param({"compat_headers": "X-One"}, TypeError, id="compat-as-string"),
        pytest.param({"compat_headers": ["ok", ""]}, ValueError, id="empty-compat"),
        pytest.param({"caller_getter": "keystone"}, TypeError, id="getter-not-callable"),
    ],
)
def test_bad_configuration_fails_at_construction(
    options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        RequestIdMiddleware(echo, settings=Settings(**options))


# -- under oslo.middleware's RequestId ---------------------------------------


def _oslo_request_id(app: Any) -> Any:
    from oslo_middleware import request_id as oslo

    return oslo.RequestId(app)


def failing(environ: dict[str, Any], start_response: Any) -> Any:
    """Answers with the toolkit's contract error body (as the endpoints do)."""
    from tasktoolkit.http_errors import error_response

    response = error_response(environ, 404, "tasktoolkit.not_found", "no such thing")
    return response(environ, start_response)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("X-Request-Id", id="default-header"),
        pytest.param("X-OpenStack-Request-ID", id="openstack-header"),
    ],
)
def test_under_oslo_request_id_a_request_has_one_id(header: str) -> None:
    """oslo's RequestId names the request first: the toolkit uses its id and global id."""
    app = webtest.TestApp(
        _oslo_request_id(RequestIdMiddleware(echo, settings=Settings(request_id_header=header)))
    )
    inbound = new_request_id()
    response = app.get("/", headers={"X-OpenStack-Request-ID": inbound})
    oslo_id = response.headers["x-openstack-request-id"]
    assert response.headers[header] == oslo_id
    assert response.text.split() == [
        oslo_id,
        inbound,
        oslo_id,
        inbound,
        oslo_id,
        inbound,
        "None",
        "None",
    ]


def test_under_oslo_request_id_the_error_body_carries_the_header_id() -> None:
    app = webtest.TestApp(_oslo_request_id(RequestIdMiddleware(failing)))
    response = app.get("/", status=404)
    (error,) = response.json["errors"]
    assert error["request_id"] == response.headers["X-Request-Id"]
    assert error["request_id"] == response.headers["x-openstack-request-id"]


def test_under_oslo_a_bad_inbound_global_id_is_dropped() -> None:
    app = webtest.TestApp(_oslo_request_id(RequestIdMiddleware(echo)))
    response = app.get("/", headers={"X-OpenStack-Request-ID": "req-forged"})
    assert response.text.split()[1] == "None"


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({OPENSTACK_REQUEST_ID_KEY: "not-an-id"}, id="malformed-upstream-id"),
        pytest.param({OPENSTACK_REQUEST_ID_KEY: None}, id="no-upstream-id"),
    ],
)
def test_an_upstream_id_that_is_not_an_id_is_replaced(environ: dict[str, Any]) -> None:
    response = webob.Request.blank("/", environ=environ).get_response(RequestIdMiddleware(echo))
    request_id = response.text.split()[0]
    assert is_valid_request_id(request_id) and request_id != environ[OPENSTACK_REQUEST_ID_KEY]


def test_keystoneauths_global_id_header_is_read_with_the_default_header() -> None:
    """keystoneauth sends a global id as X-OpenStack-Request-ID: kept, whatever the header."""
    inbound = new_request_id()
    app = webtest.TestApp(RequestIdMiddleware(echo))
    response = app.get("/", headers={"X-OpenStack-Request-ID": inbound})
    ids = response.text.split()
    assert ids[1] == inbound and ids[0] != inbound
    assert response.headers["X-Request-Id"] == ids[0]
    assert "X-OpenStack-Request-ID" not in response.headers


class Around(Hook):
    """Notes each request it is around, and when it is left."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str | None]] = []

    @contextmanager
    def _around(self, request: RequestInfo) -> Iterator[None]:
        self.events.append((f"enter {request.method} {request.path}", request.operation_id))
        try:
            yield
        finally:
            self.events.append(("leave", None))

    def around_request(self, request: RequestInfo) -> Any:
        return self._around(request)


def test_every_request_runs_inside_the_hooks_around_request() -> None:
    hook = Around()
    settings = Settings(hooks=[hook], exclude_paths=["/health"])
    app = webtest.TestApp(RequestIdMiddleware(echo, settings=settings))
    rid = app.post("/things").headers["X-Request-Id"]
    app.get("/things")
    app.post("/health")
    assert hook.events == [
        ("enter POST /things", rid),  # a mutating request: its operation's id
        ("leave", None),  # once the body is closed
        ("enter GET /things", None),
        ("leave", None),
        ("enter POST /health", None),  # excluded: no operation
        ("leave", None),
    ]
    assert context.current() is None

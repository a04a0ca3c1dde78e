"""RequestIdLogFilter: the ids on every record made while a request runs."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import webtest

from tasktoolkit.context import RequestContext, new_request_id, request_context
from tasktoolkit.middleware import RequestIdLogFilter, RequestIdMiddleware

#: The format string docs/middleware.md shows.
FORMAT = "%(levelname)s [%(request_id)s %(global_request_id)s] %(name)s: %(message)s"


def record(message: str = "hello", **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("x", logging.INFO, __file__, 1, message, None, None)
    made.__dict__.update(extra)
    return made


def formatted(log_filter: RequestIdLogFilter, made: logging.LogRecord) -> str:
    assert log_filter.filter(made) is True
    return logging.Formatter(FORMAT).format(made)


def test_outside_a_request_the_fields_are_placeholders() -> None:
    assert formatted(RequestIdLogFilter(), record()) == "INFO [- -] x: hello"
    assert formatted(RequestIdLogFilter(placeholder=""), record()) == "INFO [ ] x: hello"


@pytest.mark.parametrize(
    ("ctx", "expected"),
    [
        pytest.param(RequestContext("req-1"), "[req-1 -]", id="local-only"),
        pytest.param(RequestContext("req-1", "req-g"), "[req-1 req-g]", id="with-global"),
    ],
)
def test_inside_a_request_the_fields_are_the_ids(ctx: RequestContext, expected: str) -> None:
    with request_context(ctx.with_operation("req-1")):
        made = record()
        line = formatted(RequestIdLogFilter(), made)
    assert line == f"INFO {expected} x: hello"
    assert made.operation_id == "req-1"  # type: ignore[attr-defined]


def test_values_passed_with_extra_are_kept() -> None:
    with request_context(RequestContext("req-1")):
        line = formatted(RequestIdLogFilter(), record(request_id="mine"))
    assert line == "INFO [mine -] x: hello"


def test_every_logger_through_the_handler_gets_the_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.handler.addFilter(RequestIdLogFilter())
    logger = logging.getLogger("some.library")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        logger.warning("inside")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    gid = new_request_id()
    response = webtest.TestApp(RequestIdMiddleware(app)).get("/", headers={"X-Request-Id": gid})
    logger.warning("outside")
    inside, outside = caplog.records
    assert inside.request_id == response.headers["X-Request-Id"]  # type: ignore[attr-defined]
    assert inside.global_request_id == gid  # type: ignore[attr-defined]
    assert outside.request_id == "-"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("method", "operation"),
    [
        pytest.param("POST", True, id="a-mutating-request-names-its-operation"),
        pytest.param("GET", False, id="a-read-has-none"),
    ],
)
def test_the_line_of_an_app_that_raised_names_the_operation(
    caplog: pytest.LogCaptureFixture, stack: webtest.TestApp, method: str, operation: bool
) -> None:
    caplog.handler.addFilter(RequestIdLogFilter())
    response = stack.request("/raise", method=method, status=500)
    request_id = response.headers["X-Request-Id"]
    (raised,) = [r for r in caplog.records if "the application raised" in r.getMessage()]
    assert raised.request_id == request_id  # type: ignore[attr-defined]
    assert raised.operation_id == (request_id if operation else "-")  # type: ignore[attr-defined]

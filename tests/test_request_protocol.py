"""The request's operation protocol, without I/O: what each event asks of its adapter."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tasktoolkit import signals
from tasktoolkit._request_protocol import (
    MAX_REPLAYED_BODY,
    OperationFields,
    RequestOperation,
    RequestProtocol,
    Step,
    Target,
)
from tasktoolkit.hooks import Hook, Hooks
from tasktoolkit.signals import OperationChange

LOCATION = "http://h/operations/req-1"


class Seen(Hook):
    def __init__(self) -> None:
        self.changes: list[OperationChange] = []

    def operation_changed(self, change: OperationChange) -> None:
        self.changes.append(change)


def protocol(*, keyed: bool = False, hook: Hook | None = None) -> RequestProtocol:
    operation = RequestOperation(
        OperationFields(id="req-1", method="POST", path="/ports"),
        ttl_seconds=60,
        request_timeout=timedelta(minutes=10),
        hooks=Hooks(hook) if hook is not None else Hooks(),
    )
    return RequestProtocol(operation, location=LOCATION, retry_after="2", keyed=keyed)


@pytest.mark.parametrize(
    ("keyed", "spawned", "status", "step"),
    [
        pytest.param(False, False, "201 Created", Step.WRITE_FINISHED, id="nothing-spawned"),
        pytest.param(False, False, "503 Service Unavailable", Step.NOTHING, id="503-none"),
        pytest.param(False, True, "202 Accepted", Step.NOTHING, id="spawned-written"),
        pytest.param(True, False, "201 Created", Step.NOTHING, id="keyed-reserved"),
        pytest.param(True, False, "400 Bad Request", Step.FREE_KEY, id="keyed-refused"),
        pytest.param(True, False, "405 Method Not Allowed", Step.FREE_KEY, id="keyed-405"),
        pytest.param(True, True, "409 Conflict", Step.NOTHING, id="keyed-after-spawning"),
        pytest.param(True, False, "500 Internal Server Error", Step.NOTHING, id="keyed-500"),
    ],
)
def test_what_the_response_start_asks(keyed: bool, spawned: bool, status: str, step: Step) -> None:
    request = protocol(keyed=keyed)
    if keyed:
        request.reserved()
    if spawned:
        request.operation.spawn_committed()
    assert request.response_started(status) is step


def test_a_spawning_request_is_located_and_ends_through_the_writer() -> None:
    hook = Seen()
    request = protocol(hook=hook)
    request.operation.spawn_committed()
    assert hook.changes == [OperationChange("req-1", "running", None, "POST", "/ports")]
    request.operation.spawn_committed()  # a second transaction: announced once
    assert len(hook.changes) == 1
    assert request.response_started("202 Accepted") is Step.NOTHING
    headers = request.headers([("Content-Type", "application/json")])
    assert ("Operation-Location", LOCATION) in headers and ("Retry-After", "2") in headers
    keep, end = request.body_closed(Target("create", "port", "p1"))
    assert not keep and end is not None
    assert (end.operation_id, end.http_status, end.ttl_seconds) == ("req-1", 202, 60)
    assert request.body_closed(Target()) == (False, None)  # ended once


def test_the_finished_write_announces_the_opening_then_the_finish() -> None:
    hook = Seen()
    finished = OperationChange("req-1", "succeeded", 201, "POST", "/ports")
    opened: list[OperationChange] = []
    request = protocol(hook=hook)
    with signals.operation_opened.connected_to(lambda sender, change: opened.append(change)):
        assert request.response_started("201 Created") is Step.WRITE_FINISHED
        request.wrote_finished(finished, written=True)
    assert [c.state for c in hook.changes] == ["running", "succeeded"] and len(opened) == 1
    assert request.located and request.body_closed(Target()) == (False, None)


def test_a_failed_write_leaves_the_response_without_a_location() -> None:
    request = protocol()
    request.response_started("200 OK")
    request.wrote_finished(None, written=False)
    assert not request.located
    assert all(name != "Operation-Location" for name, _ in request.headers([]))


def test_a_keyed_response_is_kept_once_before_its_last_byte() -> None:
    request = protocol(keyed=True)
    request.reserved()
    request.response_started("201 Created")
    request.headers([("Content-Type", "text/plain"), ("X-Other", "no")])
    for chunk in (b"a", b"b"):
        request.body(chunk)
    assert request.keeps_early
    stored = request.body_complete()
    assert stored is not None and (stored.status, stored.body) == (201, b"ab")
    assert stored.headers == (("Content-Type", "text/plain"), ("Operation-Location", LOCATION))
    assert request.body_complete() is None  # kept once
    keep, end = request.body_closed(Target())
    assert not keep and end is not None


def test_a_large_keyed_body_is_kept_at_its_close_without_its_body() -> None:
    request = protocol(keyed=True)
    request.reserved()
    request.response_started("200 OK")
    request.headers([])
    request.body(b"x" * (MAX_REPLAYED_BODY + 1))
    assert not request.keeps_early
    keep, _ = request.body_closed(Target())
    assert keep and request.stored().body is None


def test_a_keyed_refusal_keeps_nothing() -> None:
    request = protocol(keyed=True)
    request.reserved()
    assert request.response_started("404 Not Found") is Step.FREE_KEY
    request.wrote_finished(OperationChange("req-1", "failed", 404, "POST", "/x"), written=True)
    request.headers([])
    request.body(b"{}")
    assert request.body_complete() is None
    assert request.body_closed(Target()) == (False, None)

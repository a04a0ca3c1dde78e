"""The Tracing hook: one trace from a request to every attempt of the tasks it spawned."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import select
from sqlalchemy.orm import Session

from tasktoolkit import Toolkit
from tasktoolkit.context import RequestContext
from tasktoolkit.errors import TaskFailure
from tasktoolkit.hooks import Delivery, RequestInfo, decode_trace_context
from tasktoolkit.orm import TaskRules, spawn_tasks
from tasktoolkit.orm._events import dispatchers
from tasktoolkit.orm._records import tasks_table
from tasktoolkit.signals import TaskChange
from tasktoolkit.views import task_view
from tests.models import Node

#: An inbound ``traceparent``: the client's trace and span.
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
CLIENT_SPAN = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{CLIENT_SPAN:016x}-01"
RETRY_AT_ONCE = TaskRules(max_attempts=2, backoff=timedelta(0), jitter=0)


def _post(
    toolkit: Toolkit,
    in_request: Callable[..., AbstractContextManager[RequestContext | None]],
    operation_id: str,
    environ: dict[str, Any],
) -> AbstractContextManager[object]:
    """What the middleware runs a mutating request inside."""
    info = RequestInfo(operation_id, "POST", "/nodes", environ, operation_id)
    return toolkit.settings.hooks.around_request(info)


def _named(spans: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def _run(toolkit: Toolkit, *names: str) -> None:
    """``broken`` fails; ``flaky`` fails retryably once; the others succeed."""
    worker = toolkit.worker(names)
    while (job := worker.claim()) is not None:
        with job:
            if job.name == "broken":
                raise TaskFailure("wiring_failed", "no port")
            if job.name == "flaky" and job.attempts == 1:
                raise TaskFailure("agent_busy", "try again", retryable=True)


def test_every_attempt_is_in_the_trace_of_the_request_that_spawned_it(
    toolkit: Toolkit,
    session: Session,
    node: Node,
    open_op: Callable[..., str],
    in_request: Callable[..., AbstractContextManager[RequestContext | None]],
    spans: InMemorySpanExporter,
) -> None:
    operation_id = open_op()
    with (
        _post(toolkit, in_request, operation_id, {"HTTP_TRACEPARENT": TRACEPARENT}),
        in_request(operation_id),
    ):
        node.spawn_tasks(["fine", "broken"])
        spawn_tasks(session, [(node, "flaky")], rules=RETRY_AT_ONCE)
        session.commit()
    _run(toolkit, "fine", "broken", "flaky")

    named = _named(spans)
    (request,) = named["tasktoolkit.request POST"]
    assert request.kind == SpanKind.SERVER
    assert request.parent is not None and request.parent.span_id == CLIENT_SPAN
    assert request.attributes is not None
    assert request.attributes["tasktoolkit.operation_id"] == operation_id
    spawns = named["tasktoolkit.spawn"]
    assert [s.parent.span_id for s in spawns if s.parent] == [request.context.span_id] * 2
    attempts = [
        s for name, found in named.items() if name.startswith("tasktoolkit.attempt") for s in found
    ]
    assert len(attempts) == 4  # fine, broken, flaky twice
    assert {s.context.trace_id for s in [request, *spawns, *attempts]} == {TRACE_ID}
    spawn_ids = {s.context.span_id for s in spawns}
    assert all(s.parent is not None and s.parent.span_id in spawn_ids for s in attempts)
    ended = {
        (a.attributes["tasktoolkit.task_name"], a.attributes["tasktoolkit.attempt"]): a
        for a in attempts
        if a.attributes is not None
    }
    broken = ended[("broken", 1)]
    assert broken.attributes is not None
    assert broken.attributes["tasktoolkit.outcome"] == "failed"
    assert broken.attributes["tasktoolkit.error_code"] == "wiring_failed"
    assert broken.attributes["tasktoolkit.operation_id"] == operation_id
    assert broken.status.status_code == StatusCode.ERROR
    retried = ended[("flaky", 1)]
    assert retried.attributes is not None
    assert (
        retried.attributes["tasktoolkit.outcome"],
        retried.attributes["tasktoolkit.task_state"],
    ) == ("failed", "pending")
    fine = ended[("fine", 1)]
    assert fine.attributes is not None and fine.attributes["tasktoolkit.outcome"] == "succeeded"
    assert fine.status.status_code == StatusCode.UNSET
    assert ended[("flaky", 2)].kind == SpanKind.CONSUMER


def test_a_task_keeps_its_trace_context_and_never_shows_it(
    toolkit: Toolkit,
    session: Session,
    node: Node,
    open_op: Callable[..., str],
    in_request: Callable[..., AbstractContextManager[RequestContext | None]],
    spans: InMemorySpanExporter,
) -> None:
    operation_id = open_op()
    with _post(toolkit, in_request, operation_id, {"HTTP_TRACEPARENT": TRACEPARENT}):
        (task,) = node.spawn_tasks(["fine"])
        session.commit()
    stored = session.execute(select(tasks_table.c.trace_context)).scalar_one()
    (spawn,) = _named(spans)["tasktoolkit.spawn"]
    carrier = decode_trace_context(stored)
    assert carrier == {"traceparent": f"00-{TRACE_ID:032x}-{spawn.context.span_id:016x}-01"}
    assert "trace_context" not in task_view(task, admin=True)


def test_a_delivery_span_is_linked_not_the_parent(
    toolkit: Toolkit,
    session: Session,
    node: Node,
    open_op: Callable[..., str],
    in_request: Callable[..., AbstractContextManager[RequestContext | None]],
    spans: InMemorySpanExporter,
) -> None:
    operation_id = open_op()
    with _post(toolkit, in_request, operation_id, {"HTTP_TRACEPARENT": TRACEPARENT}):
        (task,) = node.spawn_tasks(["fine"])
        session.commit()
    with toolkit.settings.hooks.around_delivery(Delivery("celery", task.id, "fine")):
        with toolkit.worker(["fine"]).start(task.id):
            pass
    named = _named(spans)
    (delivery,) = named["tasktoolkit.deliver fine"]
    (attempt,) = named["tasktoolkit.attempt fine"]
    assert delivery.context.trace_id != TRACE_ID
    assert attempt.context.trace_id == TRACE_ID
    assert [link.context.span_id for link in attempt.links] == [delivery.context.span_id]


def test_a_task_spawned_outside_a_request_starts_its_trace_at_the_spawn(
    toolkit: Toolkit, session: Session, node: Node, spans: InMemorySpanExporter
) -> None:
    node.spawn_tasks(["fine"])  # a periodic job's, say
    session.commit()
    _run(toolkit, "fine")
    named = _named(spans)
    (spawn,) = named["tasktoolkit.spawn"]
    (attempt,) = named["tasktoolkit.attempt fine"]
    assert spawn.parent is None
    assert attempt.parent is not None and attempt.parent.span_id == spawn.context.span_id
    assert attempt.context.trace_id == spawn.context.trace_id


def test_a_read_gets_no_span(toolkit: Toolkit, spans: InMemorySpanExporter) -> None:
    info = RequestInfo("req-x", "GET", "/nodes", {"HTTP_TRACEPARENT": TRACEPARENT})
    with toolkit.settings.hooks.around_request(info):
        pass
    assert spans.get_finished_spans() == ()


class Recording:
    """A queue bridge's side of the dispatcher seam that sends nothing: what it was given,
    and the span it was given it in."""

    def __init__(self) -> None:
        self.published: list[tuple[list[str], int]] = []

    def publish(self, tasks: Sequence[TaskChange]) -> None:
        span = trace.get_current_span().get_span_context().span_id
        self.published.append(([t.task_id for t in tasks], span))

    def revoke(self, tasks: Sequence[TaskChange]) -> None:
        pass


def test_a_bridges_publish_is_a_span_of_the_request(
    toolkit: Toolkit,
    session: Session,
    node: Node,
    open_op: Callable[..., str],
    in_request: Callable[..., AbstractContextManager[RequestContext | None]],
    spans: InMemorySpanExporter,
) -> None:
    bridge = Recording()
    for name in ("fine", "broken"):
        dispatchers(toolkit.engine).bind(name, bridge)
    try:
        operation_id = open_op()
        with _post(toolkit, in_request, operation_id, {"HTTP_TRACEPARENT": TRACEPARENT}):
            tasks = node.spawn_tasks(["fine", "broken"])
            session.commit()
    finally:
        dispatchers(toolkit.engine).release(bridge)
    named = _named(spans)
    (publish,) = named["tasktoolkit.publish"]
    (request,) = named["tasktoolkit.request POST"]
    assert publish.kind == SpanKind.PRODUCER
    assert publish.parent is not None and publish.parent.span_id == request.context.span_id
    assert publish.attributes is not None and publish.attributes["tasktoolkit.task_count"] == 2
    assert bridge.published == [([t.id for t in tasks], publish.context.span_id)]

"""The :class:`Tracing` hook: OpenTelemetry spans from a request to every attempt of its tasks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tasktoolkit import __version__
from tasktoolkit.hooks import Delivery, Hook, JobInfo, PublishInfo, RequestInfo, SpawnInfo
from tasktoolkit.signals import OperationChange, TaskChange

__all__ = ["ATTRIBUTES", "Tracing"]

#: The attributes the toolkit's spans carry, where they apply.
ATTRIBUTES = (
    "tasktoolkit.request_id",
    "tasktoolkit.operation_id",
    "tasktoolkit.task_id",
    "tasktoolkit.task_name",
    "tasktoolkit.attempt",
    "tasktoolkit.queue",
    "tasktoolkit.outcome",
    "tasktoolkit.error_code",
)
#: What a task stores: the W3C trace context alone, whatever the host propagates.
_W3C = TraceContextTextMapPropagator()


class _EnvironGetter(Getter[Mapping[str, Any]]):
    """Request headers out of a WSGI environ (``traceparent`` is ``HTTP_TRACEPARENT``)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


_ENVIRON = _EnvironGetter()
_Value = str | int


def _present(attributes: dict[str, _Value | None]) -> dict[str, _Value]:
    """The attributes that have a value (a task of no operation has no operation id)."""
    return {k: v for k, v in attributes.items() if v is not None}


@dataclass(frozen=True, slots=True)
class _Running:
    """The attempt span of the task whose ``with job:`` block runs in this context."""

    task_id: str
    span: Span


class Tracing(Hook):
    """OpenTelemetry spans of the toolkit's work (extra ``[otel]``: the API only).

    The host configures the SDK (``opentelemetry-instrument`` and the standard
    ``OTEL_*`` variables, or its own ``TracerProvider``); without one every
    span is the API's no-op. The spans:

    - ``tasktoolkit.request <METHOD>``: a mutating request, its operation's
      (``SERVER``, the child of an inbound ``traceparent``; ``INTERNAL`` under
      a span the host's own instrumentation started);
    - ``tasktoolkit.spawn``: the insert of a spawn's tasks. Its W3C trace
      context is stored on each task (its ``trace_context``, never shown);
    - ``tasktoolkit.publish``: a queue bridge's publish of tasks, after the
      commit that made them pending (``PRODUCER``);
    - ``tasktoolkit.deliver <name>``: a bridge's delivery of a task's message;
    - ``tasktoolkit.attempt <name>``: each attempt of a task in its worker
      (``CONSUMER``), with the outcome and error code it ended with.

    An attempt's **parent** is the spawn's span, restored from the task (by a
    database worker, a bridge, a re-run alike): the request, its spawn and
    every attempt of every task it spawned are one trace, however many
    processes, retries and hours lie between them, which is what an operator
    follows ("why did this POST take 40 s to be done?"). The span the worker
    was in when it started the task (a delivery's, a Celery instrumentation's)
    is a **link** of the attempt, not its parent: it belongs to the worker's
    own trace. A spawn outside any request (a periodic job's) starts a trace
    of its own, which its tasks' attempts join.

    :param tracer_provider: the provider to trace with; the global one by default.

    Example::

        toolkit = Toolkit(engine, Settings(hooks=[Tracing()]))
    """

    def __init__(self, *, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("tasktoolkit", __version__, tracer_provider)
        self._running: ContextVar[_Running | None] = ContextVar(
            "tasktoolkit.tracing.attempt", default=None
        )

    # -- around ------------------------------------------------------------

    def around_request(self, request: RequestInfo) -> AbstractContextManager[object] | None:
        if request.operation_id is None:
            return None  # no operation: a read, left to the host's HTTP instrumentation
        parent: Context | None = None
        kind = SpanKind.INTERNAL
        if not trace.get_current_span().get_span_context().is_valid:
            parent = propagate.extract(request.environ, getter=_ENVIRON)
            kind = SpanKind.SERVER
        attributes = {
            "http.request.method": request.method,
            "url.path": request.path,
            "tasktoolkit.request_id": request.request_id,
            "tasktoolkit.operation_id": request.operation_id,
        }
        return self._tracer.start_as_current_span(
            f"tasktoolkit.request {request.method}", parent, kind, attributes
        )

    def around_spawn(self, spawn: SpawnInfo) -> AbstractContextManager[object] | None:
        # Few attributes: a spawn is on the request's path (each attempt names its task).
        attributes: dict[str, str | int] = {"tasktoolkit.task_count": len(spawn.names)}
        if spawn.operation_id is not None:
            attributes["tasktoolkit.operation_id"] = spawn.operation_id
        return self._tracer.start_as_current_span("tasktoolkit.spawn", attributes=attributes)

    def trace_context(self) -> Mapping[str, str] | None:
        carrier: dict[str, str] = {}
        _W3C.inject(carrier)
        return carrier or None

    def around_publish(self, publish: PublishInfo) -> AbstractContextManager[object] | None:
        return self._tracer.start_as_current_span(
            "tasktoolkit.publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "tasktoolkit.bridge": publish.bridge,
                "tasktoolkit.task_count": len(publish.task_ids),
            },
        )

    def around_delivery(self, delivery: Delivery) -> AbstractContextManager[object] | None:
        return self._tracer.start_as_current_span(
            f"tasktoolkit.deliver {delivery.name}",
            kind=SpanKind.CONSUMER,
            attributes={
                "tasktoolkit.bridge": delivery.bridge,
                "tasktoolkit.task_id": delivery.task_id,
                "tasktoolkit.task_name": delivery.name,
            },
        )

    def around_job(self, job: JobInfo) -> AbstractContextManager[object] | None:
        return self._attempt(job)

    @contextmanager
    def _attempt(self, job: JobInfo) -> Iterator[None]:
        parent: Context | None = None
        links: list[Link] = []
        if job.trace_context:
            parent = _W3C.extract(job.trace_context)
            if not trace.get_current_span(parent).get_span_context().is_valid:
                parent = None  # stored, but not a trace context: the current one is the parent
        here = trace.get_current_span().get_span_context()
        if parent is not None and here.is_valid:
            links.append(Link(here))
        attributes = _present(
            {
                "tasktoolkit.task_id": job.task_id,
                "tasktoolkit.task_name": job.name,
                "tasktoolkit.attempt": job.attempt,
                "tasktoolkit.operation_id": job.request_id,
                "tasktoolkit.queue": job.queue,
                "tasktoolkit.resource_type": job.resource_type,
                "tasktoolkit.resource_id": job.resource_id,
            }
        )
        with self._tracer.start_as_current_span(
            f"tasktoolkit.attempt {job.name}",
            parent,
            SpanKind.CONSUMER,
            attributes,
            links,
            set_status_on_exception=False,  # the outcome says how it ended (task_moved)
        ) as span:
            token = self._running.set(_Running(job.task_id, span))
            try:
                yield
            finally:
                self._running.reset(token)

    # -- on ----------------------------------------------------------------

    def task_moved(self, change: TaskChange) -> None:
        running = self._running.get()
        if running is None or running.task_id != change.task_id or change.outcome is None:
            return
        span = running.span
        span.set_attribute("tasktoolkit.outcome", change.outcome)
        span.set_attribute("tasktoolkit.task_state", change.new_state)
        if change.error_code is not None:
            span.set_attribute("tasktoolkit.error_code", change.error_code)
        if change.outcome == "failed":
            span.set_status(Status(StatusCode.ERROR, change.error_code or "failed"))

    def operation_changed(self, change: OperationChange) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            finished = {
                "tasktoolkit.operation_id": change.operation_id,
                "tasktoolkit.outcome": change.state,
            }
            span.add_event("tasktoolkit.operation_finished", finished)

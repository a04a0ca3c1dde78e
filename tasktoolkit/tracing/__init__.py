"""OpenTelemetry tracing of the toolkit (extra ``[otel]``: ``opentelemetry-api`` only).

The :class:`Tracing` hook makes a span for each mutating request's operation,
each spawn, delivery and attempt, all in the trace of the request that spawned
the tasks: the spawn stores its W3C trace context on each task, and whoever
starts the task (a database worker, a queue bridge, a re-run) restores it as
the parent of the attempt's span. The host configures the SDK; the standard
``OTEL_*`` variables under ``opentelemetry-instrument`` do::

    OTEL_TRACES_EXPORTER=console opentelemetry-instrument python -m myservice

Example::

    from tasktoolkit.tracing import Tracing

    toolkit = Toolkit(engine, Settings(hooks=[Tracing()]))
"""

from __future__ import annotations

try:
    import opentelemetry.trace  # noqa: F401
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "tasktoolkit.tracing needs opentelemetry-api: pip install 'tasktoolkit[otel]'"
    ) from exc

from tasktoolkit.tracing._hook import ATTRIBUTES, Tracing

__all__ = ["ATTRIBUTES", "Tracing"]

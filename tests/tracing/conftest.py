"""Fixtures for the tracing tests: the real OpenTelemetry SDK, spans kept in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.engine import Engine

from tasktoolkit import Settings, Toolkit
from tasktoolkit.tracing import Tracing
from tests.orm.conftest import cluster, in_operation, in_request, make_node, node, open_op

__all__ = ["cluster", "in_operation", "in_request", "make_node", "node", "open_op"]


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """Where the spans of :func:`toolkit` end up, once finished."""
    return InMemorySpanExporter()


@pytest.fixture
def toolkit(engine: Engine, spans: InMemorySpanExporter) -> Iterator[Toolkit]:
    """A toolkit on the test module's database tracing with the SDK into ``spans``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    toolkit = Toolkit(engine, Settings(hooks=[Tracing(tracer_provider=provider)]))
    yield toolkit
    toolkit.close()
    provider.shutdown()

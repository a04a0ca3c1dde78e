"""Across processes: a worker started under ``opentelemetry-instrument`` (the console
exporter) continues the trace of the request that spawned its tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tasktoolkit import Toolkit
from tasktoolkit.context import RequestContext
from tasktoolkit.hooks import RequestInfo
from tasktoolkit.orm import TaskRules, spawn_tasks
from tests.models import Node
from tests.tracing.test_hook import TRACE_ID, TRACEPARENT

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("fine", "broken", "flaky")


def console_spans(text: str) -> list[dict[str, Any]]:
    """The spans the SDK's console exporter printed (one JSON object each)."""
    decoder = json.JSONDecoder()
    found, at = [], 0
    while (start := text.find("{", at)) != -1:
        span, at = decoder.raw_decode(text, start)
        found.append(span)
    return found


def test_the_workers_attempts_continue_the_requests_trace(
    toolkit: Toolkit,
    engine: Engine,
    session: Session,
    node: Node,
    open_op: Callable[..., str],
    in_request: Callable[..., AbstractContextManager[RequestContext | None]],
    spans: InMemorySpanExporter,
) -> None:
    operation_id = open_op()
    info = RequestInfo(
        operation_id, "POST", "/nodes", {"HTTP_TRACEPARENT": TRACEPARENT}, operation_id
    )
    with toolkit.settings.hooks.around_request(info), in_request(operation_id):
        node.spawn_tasks(["fine", "broken"])
        spawn_tasks(
            session,
            [(node, "flaky")],
            rules=TaskRules(max_attempts=2, backoff=timedelta(0), jitter=0),
        )
        session.commit()
    spawned = {
        s.context.span_id for s in spans.get_finished_spans() if s.name == "tasktoolkit.spawn"
    }

    environment = {
        **os.environ,
        "TRACING_TEST_DB_URL": engine.url.render_as_string(hide_password=False),
        "TRACING_TEST_NAMES": ",".join(NAMES),
        "OTEL_SERVICE_NAME": "tasktoolkit-test-worker",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("opentelemetry-instrument")),
            sys.executable,
            "-m",
            "tests.tracing.worker_process",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    attempts = [
        s for s in console_spans(done.stdout) if s["name"].startswith("tasktoolkit.attempt")
    ]
    assert sorted(
        (s["attributes"]["tasktoolkit.task_name"], s["attributes"]["tasktoolkit.attempt"])
        for s in attempts
    ) == [
        ("broken", 1),
        ("fine", 1),
        ("flaky", 1),
        ("flaky", 2),
    ]
    assert {s["context"]["trace_id"] for s in attempts} == {f"0x{TRACE_ID:032x}"}
    assert {s["parent_id"] for s in attempts} <= {f"0x{span_id:016x}" for span_id in spawned}
    assert {s["resource"]["attributes"]["service.name"] for s in attempts} == {
        "tasktoolkit-test-worker"
    }

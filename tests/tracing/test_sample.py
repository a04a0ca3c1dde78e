"""The sample under ``opentelemetry-instrument`` (console exporter): a client's POST (its
``traceparent``) to the API process, which spawns a port's tasks, and the agents process,
which runs them: one trace from the POST to every attempt."""

from __future__ import annotations

import queue
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from tests.sample_app.conftest import Http, ServerProcess, sample_db, start_process
from tests.sample_app.servers import port_status
from tests.tracing.test_hook import CLIENT_SPAN, TRACE_ID, TRACEPARENT
from tests.tracing.test_processes import console_spans

__all__ = ["sample_db"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _instrumented(
    service: str, args: list[str], log: Path, monkeypatch: pytest.MonkeyPatch
) -> ServerProcess:
    for name, value in {
        "OTEL_SERVICE_NAME": service,
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }.items():
        monkeypatch.setenv(name, value)
    launcher = str(Path(sys.executable).with_name("opentelemetry-instrument"))
    return start_process([launcher, sys.executable, "-m", "sample_app", *args], log)


def _printed(process: ServerProcess) -> str:
    lines = []
    while True:
        try:
            lines.append(process.lines.get_nowait())
        except queue.Empty:
            return "".join(lines)


@pytest.fixture
def processes(
    sample_db: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Http, ServerProcess, ServerProcess]]:
    url = sample_db.render_as_string(hide_password=False)
    api = _instrumented(
        "sample-api",
        ["serve", "--port", "0", "--agents", "0", "--db-url", url],
        tmp_path / "api.log",
        monkeypatch,
    )
    agents = _instrumented(
        "sample-agents",
        ["agents", "--agents", "2", "--task-delay", "0.01", "--db-url", url],
        tmp_path / "agents.log",
        monkeypatch,
    )
    first = api.first_line("sample_app serve")
    assert first.startswith("Serving on http://127.0.0.1:"), api.stderr()
    try:
        yield Http(first.split()[2].rstrip("/")), api, agents
    finally:
        api.stop()
        agents.stop()


def test_one_trace_from_the_post_to_every_attempt(
    processes: tuple[Http, ServerProcess, ServerProcess],
) -> None:
    client, api, agents = processes
    network = client.post("/networks", {"network": {"name": "net"}}).body["network"]["id"]
    body = {"port": {"network_id": network, "name": "flaky-l2_wiring"}}
    reply = client.request("POST", "/ports", body, headers={"traceparent": TRACEPARENT})
    port = reply.body["port"]["id"]
    port_status(client, port, "ACTIVE")
    assert api.stop() == 0, api.stderr()
    assert agents.stop() == 0, agents.stderr()

    served = console_spans(_printed(api))
    (request,) = [s for s in served if s["name"] == "tasktoolkit.request POST" and s["parent_id"]]
    (spawn,) = [s for s in served if s["name"] == "tasktoolkit.spawn"]
    attempts: list[dict[str, Any]] = [
        s for s in console_spans(_printed(agents)) if s["name"].startswith("tasktoolkit.attempt")
    ]
    assert request["parent_id"] == f"0x{CLIENT_SPAN:016x}"
    assert request["attributes"]["tasktoolkit.operation_id"] == reply.header("x-request-id")
    assert spawn["parent_id"] == request["context"]["span_id"]
    assert spawn["context"]["trace_id"] == f"0x{TRACE_ID:032x}"
    assert spawn["resource"]["attributes"]["service.name"] == "sample-api"
    assert len(attempts) == 5  # four tasks, l2_wiring twice
    assert {s["context"]["trace_id"] for s in attempts} == {spawn["context"]["trace_id"]}
    assert {s["parent_id"] for s in attempts} == {spawn["context"]["span_id"]}
    assert {s["resource"]["attributes"]["service.name"] for s in attempts} == {"sample-agents"}
    outcomes = sorted(
        (s["attributes"]["tasktoolkit.task_name"], s["attributes"]["tasktoolkit.outcome"])
        for s in attempts
    )
    assert ("l2_wiring", "failed") in outcomes

"""Serving the metrics: a worker's own port, and a toolkit that counts nothing."""

from __future__ import annotations

import http.client
from collections.abc import Callable

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tasktoolkit import Settings, Toolkit
from tasktoolkit.errors import ConfigurationError
from tasktoolkit.metrics import metrics_app, serve_metrics
from tests.metrics.scrapes import Scrape, family, parse
from tests.models import Node


def test_a_worker_serves_its_own_port(
    toolkit: Toolkit, session: Session, node: Node, scrape: Callable[[], Scrape]
) -> None:
    node.spawn_tasks(["boot"])
    session.commit()
    worker = toolkit.worker(["boot"])
    while (job := worker.claim()) is not None:
        with job:
            pass
    server = serve_metrics(toolkit, 0, database=False)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        read = parse(response.read().decode())
        connection.close()
    finally:
        server.shutdown()
        server.server_close()
    assert response.status == 200
    assert family(read, "tasktoolkit_task_finished_total") == {
        (("error_code", ""), ("name", "boot"), ("outcome", "succeeded")): 1.0
    }
    assert "tasktoolkit_tasks" not in {name for name, _ in read}


def test_a_toolkit_without_the_metrics_hook_is_refused(engine: Engine) -> None:
    toolkit = Toolkit(engine, Settings())
    with pytest.raises(ConfigurationError, match=r"add tasktoolkit\.metrics\.Metrics\(\)"):
        metrics_app(toolkit)

"""The sample on Celery, as docs/sample_app.md runs it: ``agents --broker`` (a Celery
worker) and ``serve --agents 0 --broker`` (the API, publishing), on RabbitMQ and Redis."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.sample_app.conftest import Http, start_process
from tests.sample_app.servers import port_status


def test_the_sample_runs_its_agents_on_celery(broker_url: str, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'sample.db'}"
    common = ["--db-url", db_url, "--task-delay", "0.05", "--broker", broker_url]
    sample = [sys.executable, "-m", "sample_app"]
    serve = start_process(
        [*sample, "serve", "--port", "0", "--agents", "0", *common], tmp_path / "serve.log"
    )
    agents = None
    try:
        line = serve.first_line("sample_app serve")
        assert line.startswith("Serving on http://127.0.0.1:"), serve.stderr()
        agents = start_process(
            [*sample, "agents", "--agents", "2", *common], tmp_path / "agents.log"
        )
        client = Http(line.split()[2].rstrip("/"), project="cp")
        network = client.post("/networks", {"network": {"name": "n"}}).body["network"]
        reply = client.post("/ports", {"port": {"network_id": network["id"], "name": "p"}})
        assert reply.status == 202
        port_id = reply.body["port"]["id"]
        port_status(client, port_id, "ACTIVE")  # the Celery agents ran its tasks
        tasks = client.get(f"/ports/{port_id}/tasks").body["tasks"]
        assert {t["state"] for t in tasks} == {"succeeded"}
        assert all(t["result"] == {"port_name": "p"} for t in tasks)  # no agent's host in it
    finally:
        assert serve.stop() == 0, serve.stderr()
        if agents is not None:
            agents.stop()
    assert "ready." in agents.stderr()  # a Celery worker it was

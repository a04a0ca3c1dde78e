"""``serve --notify-url``: the sample process emits ``tasktoolkit.operation.end`` through a real
RabbitMQ (a vhost of this run's own) to a real oslo.messaging notification listener."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL

from tests.notifications import listening, rabbit_transport_url
from tests.sample_app.conftest import TASK_DELAY, serving
from tests.sample_app.servers import port_status


def test_serve_notifies_each_operation_end(sample_db: URL, tmp_path: Path) -> None:
    with (
        rabbit_transport_url() as url,
        listening(url) as heard,
        serving(
            sample_db,
            tmp_path / "serve.log",
            *("--task-delay", TASK_DELAY, "--agents", "1", "--notify-url", url),
        ) as api,
    ):
        client = api.as_project("told")
        created = client.post("/networks", {"network": {"name": "n"}})
        network = heard.wait_for(created.header("X-Request-Id"))
        assert network["event_type"] == "tasktoolkit.operation.end"
        data = network["payload"]["tasktoolkit_object.data"]
        assert (data["method"], data["path"], data["state"]) == ("POST", "/networks", "succeeded")
        assert data["resource_id"] == created.body["network"]["id"]

        reply = client.post("/ports", {"port": {"network_id": data["resource_id"], "name": "p"}})
        port_status(client, reply.body["port"]["id"], "ACTIVE")
        port = heard.wait_for(reply.header("X-Request-Id"))  # ended by its agent's last task
        counts = port["payload"]["tasktoolkit_object.data"]["task_counts"]
        assert (counts["succeeded"], counts["running"], counts["pending"]) == (4, 0, 0)
        assert port["ctxt"]["project_id"] == "told"

"""Service to service: one sample's agent calls another sample over HTTP, and the second
records the first's request id as its operation's global request id (two real processes).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL

from tests.databases import private_database
from tests.sample_app.conftest import TASK_DELAY, serving, wait_for
from tests.sample_app.servers import port_status


def test_the_peer_records_the_port_requests_id_as_its_global_request_id(
    sample_db: URL, backend: str, tmp_path: Path
) -> None:
    with (
        private_database(backend, tmp_path) as peer_db,
        serving(peer_db, tmp_path / "peer.log", "--agents", "0") as peer,
        serving(
            sample_db,
            tmp_path / "api.log",
            *("--task-delay", TASK_DELAY, "--agents", "1", "--peer-url", peer.base_url),
        ) as api,
    ):
        client = api.as_project("peered")
        network = client.post("/networks", {"network": {"name": "n"}}).body["network"]
        reply = client.post("/ports", {"port": {"network_id": network["id"], "name": "p"}})
        assert reply.status == 202
        request_id, port_id = reply.header("X-Request-Id"), reply.body["port"]["id"]
        port_status(client, port_id, "ACTIVE")
        tasks = {t["name"]: t for t in client.get(f"/ports/{port_id}/tasks").body["tasks"]}
        peer_network_id = tasks["l2_wiring"]["result"]["peer_network_id"]

        on_peer = peer.as_project("peered")
        assert on_peer.get(f"/networks/{peer_network_id}").status == 200
        operations = wait_for(
            lambda: on_peer.get("/operations").body["operations"],
            lambda found: any(o["resource_id"] == peer_network_id for o in found),
            "the peer's operation",
        )
        (made,) = [o for o in operations if o["resource_id"] == peer_network_id]
        assert (made["method"], made["path"], made["state"]) == ("POST", "/networks", "succeeded")
        assert made["global_request_id"] == request_id
        assert made["id"] != request_id  # the peer's own request id

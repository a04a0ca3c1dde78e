"""The sample's ``/metrics`` after a run of ports (some failing, one retried), read as
Prometheus reads it, on SQLite and PostgreSQL."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL

from sample_app.models import PORT_CREATE_TASKS
from tests.metrics.scrapes import Scrape, family, parse, value
from tests.sample_app.conftest import Http, sample_db, serving
from tests.sample_app.servers import port_status

__all__ = ["sample_db"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def server(sample_db: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    """``python -m sample_app serve``, two agents, each task taking a second."""
    log = tmp_path_factory.mktemp("serve") / "stderr.log"
    with serving(sample_db, log, "--task-delay", "1", "--agents", "2") as client:
        yield client


def test_every_family_after_a_run_of_ports(server: Http) -> None:
    network = server.post("/networks", {"network": {"name": "net"}}).body["network"]["id"]
    names = ["plain", "fail-dhcp_provisioning", "flaky-l2_wiring"]
    ports = [
        server.post("/ports", {"port": {"network_id": network, "name": name}}).body["port"]["id"]
        for name in names
    ]
    # While the first tasks run (a second each, two agents), none has ended yet.
    busy = scrape_of(server)
    active = family(busy, "tasktoolkit_tasks")
    assert sum(active.values()) == 4 * len(ports)
    assert {dict(labels)["name"] for labels in active} == set(PORT_CREATE_TASKS)

    for port, status in zip(ports, ["ACTIVE", "ERROR", "ACTIVE"], strict=True):
        port_status(server, port, status)
    done = scrape_of(server)
    finished = family(done, "tasktoolkit_task_finished_total")
    assert (
        finished.pop(
            (
                ("error_code", "injected_failure"),
                ("name", "dhcp_provisioning"),
                ("outcome", "failed"),
            )
        )
        == 1
    )
    assert finished == {
        (("error_code", ""), ("name", name), ("outcome", "succeeded")): 3.0
        - (name == "dhcp_provisioning")
        for name in PORT_CREATE_TASKS
    }
    for name in PORT_CREATE_TASKS:
        assert value(done, "tasktoolkit_task_queue_seconds_count", name=name) == 3
        ran = value(done, "tasktoolkit_task_run_seconds_sum", name=name, outcome="succeeded")
        assert ran is not None and ran >= 1.0 * (3 - (name == "dhcp_provisioning"))
    # The flaky port's first l2_wiring attempt failed and was retried.
    assert (
        value(done, "tasktoolkit_task_run_seconds_count", name="l2_wiring", outcome="failed") == 1
    )
    assert (
        value(done, "tasktoolkit_task_run_seconds_count", name="l2_wiring", outcome="succeeded")
        == 3
    )
    operations = family(done, "tasktoolkit_operations_finished_total")
    assert operations[(("outcome", "failed"),)] == 1
    assert operations[(("outcome", "succeeded"),)] >= 2  # the ports' (and the network's)
    assert operations[(("outcome", "cancelled"),)] == 0
    assert set(family(done, "tasktoolkit_reaped_total").values()) == {0.0}
    assert family(done, "tasktoolkit_tasks") == {}
    assert family(done, "tasktoolkit_oldest_pending_age_seconds") == {}
    assert family(done, "tasktoolkit_database_unavailable_total") == {}


def scrape_of(client: Http) -> Scrape:
    """``GET /metrics``, parsed."""
    host, port = client.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        return parse(response.read().decode())
    finally:
        connection.close()

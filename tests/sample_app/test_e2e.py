"""End to end: ``python -m sample_app serve`` on each database, driven over HTTP.

Each test makes its own project, so tests share the server without seeing
each other's resources.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL

from sample_app.models import PORT_CREATE_AFTER, PORT_CREATE_TASKS
from tasktoolkit.orm import Task
from tests.databases import engine_for, private_database
from tests.sample_app.conftest import Http, Reply, serving, wait_for
from tests.sample_app.servers import port_status


@pytest.fixture
def client(server: Http) -> Http:
    """A client in a project of its own."""
    return server.as_project(f"p-{uuid.uuid4().hex[:12]}")


def new_network(client: Http, name: str = "net") -> dict[str, Any]:
    reply = client.post("/networks", {"network": {"name": name}})
    assert reply.status == 201, reply.body
    return dict(reply.body["network"])


def create_port(client: Http, network_id: str, name: str) -> Reply:
    reply = client.post("/ports", {"port": {"network_id": network_id, "name": name}})
    assert reply.status == 202, reply.body
    return reply


def active_port(client: Http, name: str) -> tuple[str, Reply]:
    """A port ``name`` on a new network, polled until ACTIVE: its id and the create reply."""
    created = create_port(client, new_network(client)["id"], name)
    port_id = created.body["port"]["id"]
    port_status(client, port_id, "ACTIVE")
    return port_id, created


def finished(client: Http, location: str) -> dict[str, Any]:
    """Poll an operation until it is no longer running."""
    reply = wait_for(
        lambda: client.get(location),
        lambda r: r.status == 200 and r.body["operation"]["state"] != "running",
        f"operation {location} finished",
    )
    return dict(reply.body["operation"])


def test_port_moves_from_build_to_active(client: Http) -> None:
    network = new_network(client)
    reply = create_port(client, network["id"], "web")
    port = reply.body["port"]
    assert port["status"] == "BUILD"
    assert port["network_id"] == network["id"]
    request_id = reply.header("X-Request-Id")
    assert reply.header("Operation-Location").endswith(f"/operations/{request_id}")

    assert port_status(client, port["id"], "ACTIVE")["name"] == "web"
    tasks = client.get(f"/ports/{port['id']}/tasks").body["tasks"]
    assert sorted(t["name"] for t in tasks) == sorted(PORT_CREATE_TASKS)
    assert {t["state"] for t in tasks} == {"succeeded"}
    assert {t["request_id"] for t in tasks} == {request_id}
    assert {t["progress"] for t in tasks} == {100}
    operation = finished(client, reply.header("Operation-Location"))
    assert operation["state"] == "succeeded"
    assert operation["task_counts"]["succeeded"] == 4
    assert operation["action"] == "create_ports"
    assert (operation["resource_type"], operation["resource_id"]) == ("port", port["id"])


def test_network_create_operation_ends_with_its_response(client: Http) -> None:
    reply = client.post("/networks", {"network": {"name": "n1"}})
    assert reply.status == 201
    assert reply.body["network"]["status"] == "ACTIVE"
    # It ends once the response is sent, with no task to wait for.
    operation = finished(client, reply.header("Operation-Location"))
    assert operation["state"] == "succeeded"
    assert operation["http_status"] == 201
    assert sum(operation["task_counts"].values()) == 0


@pytest.mark.parametrize(
    "task",
    [pytest.param(name, id=name) for name in PORT_CREATE_TASKS],
)
def test_failure_injection_puts_the_port_in_error(client: Http, task: str) -> None:
    network = new_network(client)
    reply = create_port(client, network["id"], f"fail-{task}-please")
    port_id = reply.body["port"]["id"]

    port_status(client, port_id, "ERROR")
    tasks = {t["name"]: t for t in client.get(f"/ports/{port_id}/tasks").body["tasks"]}
    assert tasks[task]["state"] == "failed"
    assert tasks[task]["error"]["code"] == "injected_failure"
    assert f"'fail-{task}'" in tasks[task]["error"]["message"]
    # What runs after it failed with it (dependency_failed); the rest succeeded.
    after = {name for name, before in PORT_CREATE_AFTER.items() if task in before}
    others = {name: (t["state"], (t["error"] or {}).get("code")) for name, t in tasks.items()}
    del others[task]
    assert others == {
        name: ("failed", "dependency_failed") if name in after else ("succeeded", None)
        for name in others
    }
    assert finished(client, reply.header("Operation-Location"))["state"] == "failed"


def test_bulk_create_is_one_operation(client: Http) -> None:
    network = new_network(client)
    names = ["a", "b", "c"]
    reply = client.post(
        "/ports", {"ports": [{"network_id": network["id"], "name": n} for n in names]}
    )
    assert reply.status == 202, reply.body
    ports = reply.body["ports"]
    assert [p["name"] for p in ports] == names
    location = reply.header("Operation-Location") or ""

    operation = finished(client, location)
    assert operation["state"] == "succeeded"
    assert operation["task_counts"]["succeeded"] == 12
    assert operation["resource_id"] is None  # many resources: no single target
    tasks = client.get(location).body["operation"]["tasks"]
    assert len(tasks) == 12
    assert {t["resource_id"] for t in tasks} == {p["id"] for p in ports}
    for port in ports:
        assert port_status(client, port["id"], "ACTIVE")


def test_update_renames_and_spawns_security_groups(client: Http) -> None:
    port_id, _ = active_port(client, "old")

    reply = client.put(f"/ports/{port_id}", {"port": {"name": "new"}})
    assert reply.status == 202, reply.body
    assert reply.body["port"]["name"] == "new"
    operation = finished(client, reply.header("Operation-Location"))
    assert operation["state"] == "succeeded"
    assert operation["task_counts"]["succeeded"] == 1
    assert [t["name"] for t in operation["tasks"]] == ["security_groups"]
    assert port_status(client, port_id, "ACTIVE")["name"] == "new"
    assert len(client.get(f"/ports/{port_id}/tasks").body["tasks"]) == 5


def test_update_failure_then_recovery(client: Http) -> None:
    port_id, _ = active_port(client, "ok")

    reply = client.put(f"/ports/{port_id}", {"port": {"name": "fail-security_groups"}})
    assert reply.status == 202
    port_status(client, port_id, "ERROR")
    # The latest run of security_groups decides: a good rename repairs the port.
    assert client.put(f"/ports/{port_id}", {"port": {"name": "fine"}}).status == 202
    port_status(client, port_id, "ACTIVE")


def test_delete_port_removes_row_and_tasks_keeps_operations(client: Http) -> None:
    port_id, created = active_port(client, "doomed")

    reply = client.delete(f"/ports/{port_id}")
    assert reply.status == 202, reply.body
    assert reply.body["port"]["status"] == "BUILD"
    wait_for(lambda: client.get(f"/ports/{port_id}"), lambda r: r.status == 404, "port gone")

    assert client.get(f"/tasks?resource_id={port_id}").body["tasks"] == []
    assert client.get(f"/ports/{port_id}/tasks").status == 404
    deleted = finished(client, reply.header("Operation-Location"))
    assert deleted["state"] == "succeeded"
    assert deleted["task_counts"]["succeeded"] == 1
    assert deleted["tasks"] == []
    create_op = client.get(created.header("Operation-Location")).body["operation"]
    assert create_op["task_counts"]["succeeded"] == 4
    assert create_op["tasks"] == []


def test_failed_unbind_keeps_the_port(client: Http) -> None:
    port_id, _ = active_port(client, "fail-unbind")

    reply = client.delete(f"/ports/{port_id}")
    assert reply.status == 202
    assert finished(client, reply.header("Operation-Location"))["state"] == "failed"
    assert port_status(client, port_id, "ERROR")["name"] == "fail-unbind"


def test_network_delete_cascades_to_ports_and_tasks(client: Http) -> None:
    network = new_network(client)
    other = new_network(client, "kept")
    reply = client.post(
        "/ports",
        {
            "ports": [
                {"network_id": network["id"], "name": "x"},
                {"network_id": network["id"], "name": "y"},
                {"network_id": other["id"], "name": "z"},
            ]
        },
    )
    ports = reply.body["ports"]
    finished(client, reply.header("Operation-Location"))

    deleted = client.delete(f"/networks/{network['id']}")
    assert deleted.status == 204
    assert deleted.body is None
    assert client.get(f"/networks/{network['id']}").status == 404
    for port in ports[:2]:
        assert client.get(f"/ports/{port['id']}").status == 404
        assert client.get(f"/tasks?resource_id={port['id']}").body["tasks"] == []
    assert [p["id"] for p in client.get("/ports").body["ports"]] == [ports[2]["id"]]
    assert len(client.get(f"/ports/{ports[2]['id']}/tasks").body["tasks"]) == 4
    operation = client.get(reply.header("Operation-Location")).body["operation"]
    assert operation["task_counts"]["succeeded"] == 12


def test_projects_are_isolated(client: Http) -> None:
    port_id, created = active_port(client, "mine")
    network_id = created.body["port"]["network_id"]
    stranger = client.as_project(f"other-{uuid.uuid4().hex[:8]}")

    assert stranger.get("/networks").body["networks"] == []
    assert stranger.get("/ports").body["ports"] == []
    assert stranger.get(f"/tasks?resource_id={port_id}").body["tasks"] == []
    for path in (
        f"/networks/{network_id}",
        f"/ports/{port_id}",
        f"/ports/{port_id}/tasks",
        f"/operations/{created.header('X-Request-Id')}",
    ):
        assert stranger.get(path).status == 404, path
    assert stranger.put(f"/ports/{port_id}", {"port": {"name": "x"}}).status == 404
    assert stranger.delete(f"/ports/{port_id}").status == 404
    assert stranger.delete(f"/networks/{network_id}").status == 404
    reply = stranger.post("/ports", {"port": {"network_id": network_id, "name": "sneak"}})
    assert reply.status == 404
    assert reply.body["errors"][0]["code"] == "sample_app.network_not_found"
    # Nothing the stranger tried changed the port.
    assert client.get(f"/ports/{port_id}").body["port"]["name"] == "mine"

    admin = client.as_system(roles="admin")
    assert admin.get(f"/ports/{port_id}").status == 200
    assert len(admin.get(f"/ports/{port_id}/tasks").body["tasks"]) == 4
    assert port_id in {p["id"] for p in admin.get("/ports").body["ports"]}


def test_default_project_is_demo(server: Http) -> None:
    reply = server.post("/networks", {"network": {"name": "anonymous"}})
    assert reply.status == 201
    assert reply.body["network"]["project_id"] == "demo"


@pytest.mark.parametrize(
    ("method", "path", "raw", "status", "code"),
    [
        pytest.param("POST", "/networks", b"{", 400, "sample_app.invalid_body", id="bad-json"),
        pytest.param("POST", "/networks", b"[]", 400, "sample_app.invalid_body", id="not-object"),
        pytest.param(
            "POST",
            "/networks",
            b'{"network": {"nom": 1}}',
            400,
            "sample_app.invalid_body",
            id="unknown-attribute",
        ),
        pytest.param(
            "POST",
            "/ports",
            b'{"port": {"name": "x"}}',
            400,
            "sample_app.invalid_body",
            id="no-network-id",
        ),
        pytest.param(
            "POST",
            "/ports",
            b'{"port": {"network_id": "nope"}}',
            400,
            "sample_app.invalid_body",
            id="network-id-not-uuid",
        ),
        pytest.param(
            "POST", "/ports", b'{"ports": []}', 400, "sample_app.invalid_body", id="empty-bulk"
        ),
        pytest.param(
            "POST",
            "/ports",
            b'{"port": {"network_id": "' + str(uuid.uuid4()).encode() + b'"}}',
            404,
            "sample_app.network_not_found",
            id="unknown-network",
        ),
        pytest.param("GET", "/ports?bogus=1", None, 400, "sample_app.invalid_filter", id="filter"),
        pytest.param("GET", "/ports/not-a-uuid", None, 404, "sample_app.port_not_found", id="id"),
        pytest.param("PATCH", "/ports", None, 405, "sample_app.method_not_allowed", id="405"),
        pytest.param("GET", "/tasks?limit=0", None, 400, "tasktoolkit.invalid_filter", id="limit"),
    ],
)
def test_bad_requests_answer_in_the_contract_format(
    client: Http, method: str, path: str, raw: bytes | None, status: int, code: str
) -> None:
    reply = client.request(method, path, raw=raw)
    assert reply.status == status, reply.body
    (error,) = reply.body["errors"]
    assert error["code"] == code
    assert error["status"] == status
    assert error["request_id"] == reply.header("X-Request-Id")
    assert error["detail"]


def test_a_keyed_create_is_replayed_waited_for_and_filtered(client: Http) -> None:
    network = new_network(client)
    body = {"port": {"network_id": network["id"], "name": "keyed"}}
    key = {"Idempotency-Key": f"create-{uuid.uuid4()}"}
    first = client.request("POST", "/ports", body, headers=key)
    assert first.status == 202, first.body
    assert first.header("Retry-After") == "1"  # it spawned tasks
    # Until the first response is kept (just after it was sent), a repeat is a 409.
    again = wait_for(
        lambda: client.request("POST", "/ports", body, headers=key),
        lambda reply: reply.status != 409,
        "the keyed request's replay",
    )
    assert (again.status, again.body) == (202, first.body)
    assert again.header("Idempotent-Replayed") == "true"
    assert again.header("Operation-Location") == first.header("Operation-Location")
    reused = client.request("POST", "/ports", {"port": {**body["port"], "name": "x"}}, headers=key)
    assert reused.status == 422
    assert reused.body["errors"][0]["code"] == "tasktoolkit.idempotency_key_reused"
    assert [p["id"] for p in client.get("/ports").body["ports"]] == [first.body["port"]["id"]]

    waited = client.request(
        "GET", first.header("Operation-Location"), headers={"Prefer": "wait=30"}
    )
    assert waited.status == 200 and waited.header("Preference-Applied") == "wait=30"
    operation = waited.body["operation"]
    assert operation["state"] == "succeeded"
    assert {t["name"] for t in operation["tasks"]} == set(PORT_CREATE_TASKS)
    # What the agent did, without its host (which is for admins only, as the task's own).
    assert all(t["result"] == {"port_name": "keyed"} for t in operation["tasks"])

    listed = client.get(f"/operations?action=create_ports&resource_id={first.body['port']['id']}")
    assert [o["id"] for o in listed.body["operations"]] == [operation["id"]]
    assert client.get("/operations?method=PUT").body["operations"] == []
    cancel = client.request("POST", f"/operations/{operation['id']}/cancel")
    assert cancel.status == 409
    assert client.request("GET", "/operations", headers={"Prefer": "x"}).status == 200
    bad = client.request("GET", first.header("Operation-Location"), headers={"Prefer": "wait=-1"})
    assert bad.status == 400


def test_cancel_an_operation_over_http(client: Http) -> None:
    network = new_network(client)
    reply = create_port(client, network["id"], "to-cancel")
    cancel = client.request("POST", reply.header("Operation-Location") + "/cancel")
    # Its tasks may all have finished already (the agents are quick): then it is a 409.
    assert cancel.status in (202, 409), cancel.body
    final = finished(client, reply.header("Operation-Location"))
    assert final["state"] in ("succeeded", "cancelled")
    if cancel.status == 202:
        assert cancel.body["operation"]["id"] == final["id"]


def test_a_flaky_port_task_fails_once_then_succeeds(client: Http) -> None:
    network = new_network(client)
    reply = create_port(client, network["id"], "flaky-dhcp_provisioning")
    port_id = reply.body["port"]["id"]
    assert finished(client, reply.header("Operation-Location"))["state"] == "succeeded"
    assert port_status(client, port_id, "ACTIVE")
    tasks = client.get(f"/ports/{port_id}/tasks").body["tasks"]
    flaky = next(t for t in tasks if t["name"] == "dhcp_provisioning")
    assert [(a["number"], a["outcome"]) for a in flaky["attempts"]] == [
        (1, "failed"),
        (2, "succeeded"),
    ]
    assert flaky["attempts"][0]["error"]["code"] == "injected_failure"
    assert all(len(t["attempts"]) == 1 for t in tasks if t is not flaky)


@pytest.fixture
def own_db(backend: str, tmp_path: Path) -> Iterator[URL]:
    """A database of its own, where no other server's agents run (serve creates the tables)."""
    with private_database(backend, tmp_path) as url:
        yield url


def test_with_no_agent_a_ports_tasks_fail_not_started(own_db: URL, tmp_path: Path) -> None:
    options = ("--agents", "0", "--start-timeout", "2")
    with serving(own_db, tmp_path / "stderr.log", *options) as server:
        client = server.as_project(f"p-{uuid.uuid4().hex[:12]}")
        reply = create_port(client, new_network(client)["id"], "nobody-runs-me")
        port_id = reply.body["port"]["id"]
        operation = finished(client, reply.header("Operation-Location"))
        assert port_status(client, port_id, "ERROR")
        tasks = client.get(f"/ports/{port_id}/tasks").body["tasks"]
    assert operation["state"] == "failed"
    assert operation["task_counts"]["failed"] == len(PORT_CREATE_TASKS)
    codes = {t["name"]: (t["state"], t["error"]["code"]) for t in tasks}
    # What waits on the wiring never became ready: it failed with the wiring.
    assert codes == {
        name: ("failed", "dependency_failed" if name in PORT_CREATE_AFTER else "not_started")
        for name in PORT_CREATE_TASKS
    }


def test_a_sigtermed_server_hands_its_running_tasks_back(own_db: URL, tmp_path: Path) -> None:
    options = ("--agents", "1", "--task-delay", "120")
    with serving(own_db, tmp_path / "stderr.log", *options) as server:
        client = server.as_project(f"p-{uuid.uuid4().hex[:12]}")
        port_id = create_port(client, new_network(client)["id"], "slow").body["port"]["id"]
        wait_for(
            lambda: client.get(f"/ports/{port_id}/tasks").body["tasks"],
            lambda tasks: any(t["state"] == "running" for t in tasks),
            "an agent started a task",
        )
    # Stopped with SIGTERM (and exited 0): the running task went back at once.
    engine = engine_for(own_db)
    try:
        with engine.connect() as conn:
            states = conn.execute(select(Task.state).where(Task.resource_id == port_id))
            assert set(states.scalars()) == {"pending"}
    finally:
        engine.dispose()

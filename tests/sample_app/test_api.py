"""The sample's API through WebTest (whole stack, no agents), and its agents' job runner.

Tasks only move when a test runs them (``run_job``), so the busy paths can be
shown without racing a worker.
"""

from __future__ import annotations

import io
import uuid
from datetime import timedelta
from typing import Any

import pytest
import webob
import webtest
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from sample_app import agents
from sample_app.agents import (
    INJECTED_FAILURE,
    UNEXPECTED_ERROR,
    Agents,
    run_job,
)
from sample_app.app import MAX_BULK
from sample_app.models import HEARTBEAT_TIMEOUT, PORT_TASKS, Port
from tasktoolkit.orm import Operation, Task, Worker
from tasktoolkit.orm._reaper import WORKER_LOST
from tasktoolkit.orm._workers import WORKER_ERROR_MESSAGE
from tests.clock import age, watched
from tests.sample_app.conftest import wait_for


@pytest.fixture
def worker(engine: Engine) -> Worker:
    return Worker(engine, PORT_TASKS, host="test-agent")


def run_all(worker: Worker, *, delay: float = 0.0) -> int:
    """Run every pending port task to its end, as the agents would; how many ran."""
    count = 0
    while (job := worker.claim()) is not None:
        run_job(worker, job, task_delay=delay)
        count += 1
    return count


def network(api: webtest.TestApp, project: str = "demo") -> str:
    reply = api.post_json(
        "/networks", {"network": {"name": "n"}}, headers={"X-Project-Id": project}
    )
    return str(reply.json["network"]["id"])


def port(api: webtest.TestApp, network_id: str, name: str = "p") -> dict[str, Any]:
    reply = api.post_json("/ports", {"port": {"network_id": network_id, "name": name}})
    assert reply.status_int == 202
    return dict(reply.json["port"])


def status(api: webtest.TestApp, port_id: str) -> str:
    return str(api.get(f"/ports/{port_id}").json["port"]["status"])


def test_status_follows_the_tasks(api: webtest.TestApp, worker: Worker) -> None:
    port_id = port(api, network(api))["id"]
    assert status(api, port_id) == "BUILD"
    job = worker.claim()
    assert job is not None
    assert status(api, port_id) == "BUILD"  # one running, three pending
    run_job(worker, job, task_delay=0)
    assert run_all(worker) == 3
    assert status(api, port_id) == "ACTIVE"
    assert [p["status"] for p in api.get("/ports").json["ports"]] == ["ACTIVE"]

    api.put_json(f"/ports/{port_id}", {"port": {"name": "fail-security_groups"}})
    assert status(api, port_id) == "BUILD"
    run_all(worker)
    assert status(api, port_id) == "ERROR"
    assert [p["status"] for p in api.get("/ports").json["ports"]] == ["ERROR"]


def test_injected_failure_says_why(api: webtest.TestApp, worker: Worker) -> None:
    port_id = port(api, network(api), "fail-l2_wiring")["id"]
    run_all(worker)
    tasks = {t["name"]: t for t in api.get(f"/ports/{port_id}/tasks").json["tasks"]}
    assert tasks["l2_wiring"]["state"] == "failed"
    assert tasks["l2_wiring"]["error"] == {
        "code": INJECTED_FAILURE,
        "message": "l2_wiring failed on purpose: the port's name 'fail-l2_wiring' "
        "starts with 'fail-l2_wiring'",
    }
    # Progress stopped half way, where the failure was injected.
    assert tasks["l2_wiring"]["progress"] == 40
    # What runs after the wiring failed with it; the rest ran.
    assert tasks["anti_spoofing"]["state"] == "succeeded"
    for name in ("dhcp_provisioning", "security_groups"):
        assert tasks[name]["state"] == "failed"
        assert tasks[name]["error"]["code"] == "dependency_failed"
        assert tasks[name]["after"] == ["l2_wiring"]


def test_dhcp_waits_on_the_wiring_and_the_port_is_built_meanwhile(
    api: webtest.TestApp, worker: Worker
) -> None:
    port_id = port(api, network(api))["id"]
    first = worker.claim()
    assert first is not None and first.name == "l2_wiring"
    tasks = {t["name"]: t for t in api.get(f"/ports/{port_id}/tasks").json["tasks"]}
    assert (tasks["dhcp_provisioning"]["waiting"], tasks["anti_spoofing"]["waiting"]) == (
        "dependency",
        None,
    )
    second = worker.claim()
    assert second is not None and second.name == "anti_spoofing"  # not dhcp: it waits
    assert worker.claim() is None
    run_job(worker, second, task_delay=0)
    assert status(api, port_id) == "BUILD"  # dhcp still waits on the wiring
    run_job(worker, first, task_delay=0)
    assert run_all(worker) == 2
    assert status(api, port_id) == "ACTIVE"


def test_two_quick_updates_of_a_port_run_their_security_groups_one_after_the_other(
    api: webtest.TestApp, worker: Worker
) -> None:
    port_id = port(api, network(api))["id"]
    run_all(worker)
    for name in ("one", "two"):
        api.put_json(f"/ports/{port_id}", {"port": {"name": name}})
    first = worker.claim()
    assert first is not None and first.name == "security_groups"
    assert worker.claim() is None  # the second waits for the first
    waits = [t["waiting"] for t in api.get(f"/ports/{port_id}/tasks?state=pending").json["tasks"]]
    assert waits == ["exclusive"]
    run_job(worker, first, task_delay=0)
    assert run_all(worker) == 1
    assert status(api, port_id) == "ACTIVE"


def test_delete_of_a_busy_port_is_refused(
    api: webtest.TestApp, session_factory: sessionmaker[Session]
) -> None:
    port_id = port(api, network(api))["id"]
    reply = api.delete(f"/ports/{port_id}", status=409)
    (error,) = reply.json["errors"]
    assert error["code"] == "sample_app.port_busy"
    assert "l2_wiring (pending)" in error["detail"]
    with session_factory() as session:
        names = session.execute(select(Task.name).where(Task.resource_id == port_id)).scalars()
        assert "unbind" not in set(names)


def test_delete_of_a_network_with_busy_ports_is_refused(api: webtest.TestApp) -> None:
    network_id = network(api)
    port(api, network_id)
    reply = api.delete(f"/networks/{network_id}", status=409)
    assert reply.json["errors"][0]["code"] == "sample_app.network_busy"
    assert api.get(f"/networks/{network_id}").status_int == 200
    assert len(api.get("/ports").json["ports"]) == 1


def test_update_while_deleting_is_refused(api: webtest.TestApp, worker: Worker) -> None:
    port_id = port(api, network(api))["id"]
    run_all(worker)
    api.delete(f"/ports/{port_id}", status=202)
    reply = api.put_json(f"/ports/{port_id}", {"port": {"name": "late"}}, status=409)
    assert reply.json["errors"][0]["code"] == "sample_app.port_deleting"
    assert api.delete(f"/ports/{port_id}", status=409).json["errors"][0]["code"] == (
        "sample_app.port_busy"
    )


def test_unbind_deletes_the_port_and_its_tasks_with_its_success(
    api: webtest.TestApp, worker: Worker, session_factory: sessionmaker[Session]
) -> None:
    port_id = port(api, network(api))["id"]
    run_all(worker)
    reply = api.delete(f"/ports/{port_id}", status=202)
    operation_id = reply.headers["X-Request-Id"]
    assert run_all(worker) == 1

    with session_factory() as session:
        assert session.get(Port, port_id) is None
        remaining = session.scalar(
            select(func.count()).select_from(Task).where(Task.resource_id == port_id)
        )
        assert remaining == 0
        operation = session.get(Operation, operation_id)
        assert operation is not None
        assert operation.state == "succeeded"
        assert operation.task_counts["succeeded"] == 1
    api.get(f"/ports/{port_id}", status=404)


def test_a_stopping_agent_hands_its_task_back(api: webtest.TestApp, worker: Worker) -> None:
    port_id = port(api, network(api))["id"]
    job = worker.claim()
    assert job is not None
    worker.stop(grace=0)
    run_job(worker, job, task_delay=1.0)
    task = api.get(f"/ports/{port_id}/tasks/{job.id}").json["task"]
    # Pending at once, for another agent; not a failed attempt.
    assert (task["state"], task["progress"]) == ("pending", None)
    assert [(a["number"], a["outcome"]) for a in task["attempts"]] == [(1, "handed_back")]
    assert worker.claim() is None  # a stopping worker claims no more


def test_a_flaky_port_task_fails_once_and_succeeds_on_its_second_attempt(
    api: webtest.TestApp, engine: Engine
) -> None:
    port_id = port(api, network(api), name="flaky-l2_wiring")["id"]
    agent = Worker(engine, ["l2_wiring"], host="agent")
    first = agent.claim()
    assert first is not None
    run_job(agent, first, task_delay=0)
    task = api.get(f"/ports/{port_id}/tasks/{first.id}").json["task"]
    assert task["state"] == "pending" and task["not_before"] is not None
    assert agent.claim() is None  # not before its backoff
    second = wait_for(agent.claim, lambda job: job is not None, "the retry became claimable")
    run_job(agent, second, task_delay=0)
    task = api.get(f"/ports/{port_id}/tasks/{first.id}").json["task"]
    assert task["state"] == "succeeded"
    assert [(a["outcome"], (a["error"] or {}).get("code")) for a in task["attempts"]] == [
        ("failed", INJECTED_FAILURE),
        ("succeeded", None),
    ]


@pytest.mark.parametrize(
    "task", [pytest.param("l2_wiring", id="create"), pytest.param("unbind", id="unbind")]
)
def test_an_unexpected_error_fails_the_task_and_keeps_the_port(
    api: webtest.TestApp, worker: Worker, monkeypatch: pytest.MonkeyPatch, task: str
) -> None:
    port_id = port(api, network(api))["id"]
    if task == "unbind":
        run_all(worker)
        api.delete(f"/ports/{port_id}", status=202)

    def broken(*args: Any) -> None:
        raise RuntimeError("the wire was cut")

    monkeypatch.setattr(agents, "_work", broken)
    job = worker.claim([task])
    assert job is not None
    with pytest.raises(RuntimeError, match="the wire was cut"):
        run_job(worker, job, task_delay=0)
    failed = api.get(f"/ports/{port_id}/tasks/{job.id}").json["task"]
    assert failed["state"] == "failed"
    # The exception's text is for admins; a member reads what kind of failure it was.
    assert failed["error"] == {"code": UNEXPECTED_ERROR, "message": WORKER_ERROR_MESSAGE}
    assert status(api, port_id) == ("ERROR" if task == "unbind" else "BUILD")


def _after_reaping(api: webtest.TestApp, engine: Engine, path: str, key: str) -> Any:
    """``GET path``'s ``key`` once the sample's reaper (agents with no workers) has moved it
    out of ``running``."""
    with Agents(engine, count=0, reap_interval=0.01):
        return wait_for(
            lambda: api.get(path).json[key],
            lambda value: value["state"] != "running",
            f"the reaper moved {path} out of running",
        )


def test_the_reaper_fails_a_dead_agents_task(
    api: webtest.TestApp, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    port_id = port(api, network(api))["id"]
    dead = Worker(engine, ["l2_wiring"], host="dead-agent")
    job = dead.claim()
    assert job is not None
    # Its last heartbeat was longer ago than the sample's timeout, reapers watching.
    silent = timedelta(seconds=HEARTBEAT_TIMEOUT + 1)
    age(engine, Task.__table__, Task.id == job.id, heartbeat_at=silent)
    watched(engine, silent)
    task = _after_reaping(api, engine, f"/ports/{port_id}/tasks/{job.id}", "task")
    # The sample's tasks have two attempts: the lost one is the first.
    assert task["state"] == "pending"
    assert [(a["outcome"], a["error"]["code"]) for a in task["attempts"]] == [
        ("failed", WORKER_LOST)
    ]


def test_the_reaper_settles_an_operation_whose_tasks_vanished(
    api: webtest.TestApp, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    reply = api.post_json("/ports", {"port": {"network_id": network(api), "name": "p"}}, status=202)
    operation_id = reply.headers["X-Request-Id"]
    with session_factory.begin() as session:
        # An operator deletes the row behind the API's back: the tasks go with it.
        session.execute(delete(Port).where(Port.id == reply.json["port"]["id"]))
    operation = _after_reaping(api, engine, f"/operations/{operation_id}", "operation")
    assert operation["state"] == "cancelled"
    assert operation["task_counts"]["cancelled"] == 4


def test_cancelled_pending_task(api: webtest.TestApp, worker: Worker) -> None:
    port_id = port(api, network(api))["id"]
    tasks = api.get(f"/ports/{port_id}/tasks").json["tasks"]
    target = next(t for t in tasks if t["name"] == "anti_spoofing")
    reply = api.post(f"/ports/{port_id}/tasks/{target['id']}/cancel", status=202)
    assert reply.json["task"]["state"] == "cancelled"
    assert run_all(worker) == 3
    states = {t["name"]: t["state"] for t in api.get(f"/ports/{port_id}/tasks").json["tasks"]}
    assert states["anti_spoofing"] == "cancelled"
    assert status(api, port_id) == "DOWN"  # never fully wired


def test_a_port_whose_create_was_cancelled_is_down_until_wired_again(
    api: webtest.TestApp, worker: Worker
) -> None:
    reply = api.post_json("/ports", {"port": {"network_id": network(api), "name": "p"}})
    port_id = reply.json["port"]["id"]
    api.post(f"/operations/{reply.headers['X-Request-Id']}/cancel", status=202)
    assert {t["state"] for t in api.get(f"/ports/{port_id}/tasks").json["tasks"]} == {"cancelled"}
    assert status(api, port_id) == "DOWN"
    api.put_json(f"/ports/{port_id}", {"port": {"name": "again"}}, status=202)
    assert status(api, port_id) == "BUILD"
    run_all(worker)
    assert status(api, port_id) == "DOWN"  # security_groups ran again; l2_wiring did not


def test_a_project_reader_may_not_cancel(api: webtest.TestApp) -> None:
    reply = api.post_json("/ports", {"port": {"network_id": network(api), "name": "p"}})
    port_id, operation_id = reply.json["port"]["id"], reply.headers["X-Request-Id"]
    task_id = api.get(f"/ports/{port_id}/tasks").json["tasks"][0]["id"]
    reader = {"X-Roles": "reader"}
    assert len(api.get(f"/ports/{port_id}/tasks", headers=reader).json["tasks"]) == 4
    refused = api.post(f"/ports/{port_id}/tasks/{task_id}/cancel", headers=reader, status=403)
    assert refused.json["errors"][0]["code"] == "tasktoolkit.forbidden"
    api.post(f"/operations/{operation_id}/cancel", headers=reader, status=403)
    assert status(api, port_id) == "BUILD"


def test_bulk_create_is_all_or_nothing(api: webtest.TestApp) -> None:
    network_id = network(api)
    body = {"ports": [{"network_id": network_id, "name": "ok"}, {"network_id": network_id, "x": 1}]}
    reply = api.post_json("/ports", body, status=400)
    assert reply.json["errors"][0]["detail"].startswith("ports[1]: unknown attribute 'x'")
    assert api.get("/ports").json["ports"] == []
    assert api.get("/tasks").json["tasks"] == []


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param({"port": {"name": "x" * 256}}, "port.name: at most 255", id="long-name"),
        pytest.param({"port": {"name": "a\nb"}}, "port.name: control characters", id="newline"),
        pytest.param({"port": {"name": 7}}, "port.name: must be a string", id="number"),
        pytest.param({"port": {}}, "port: 'name' is required", id="no-name"),
        pytest.param({"port": {"network_id": "x"}}, "port.network_id: a port cannot", id="move"),
        pytest.param({"ports": [{"name": "x"}]}, 'one key, "port"', id="bulk-update"),
        pytest.param({"port": "x"}, "port: must be an object", id="not-object"),
    ],
)
def test_bad_updates(
    api: webtest.TestApp, worker: Worker, body: dict[str, Any], detail: str
) -> None:
    created = port(api, network(api), "kept")
    run_all(worker)
    reply = api.put_json(f"/ports/{created['id']}", body, status=400)
    assert detail in reply.json["errors"][0]["detail"]
    assert api.get(f"/ports/{created['id']}").json["port"]["name"] == "kept"
    assert len(api.get(f"/ports/{created['id']}/tasks").json["tasks"]) == 4


def test_bulk_limit(api: webtest.TestApp) -> None:
    network_id = network(api)
    ports = [{"network_id": network_id} for _ in range(MAX_BULK + 1)]
    reply = api.post_json("/ports", {"ports": ports}, status=400)
    assert f"1 to {MAX_BULK} ports" in reply.json["errors"][0]["detail"]


def test_body_too_large(api: webtest.TestApp) -> None:
    body = b'{"network": {"name": "' + b"x" * (1 << 20) + b'"}}'
    reply = api.post("/networks", body, content_type="application/json", status=413)
    assert reply.json["errors"][0]["code"] == "tasktoolkit.body_too_large"


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("/networks?x=%ff", id="value-not-utf8"),
        pytest.param("/networks?%ff=1", id="name-not-utf8"),
        pytest.param("/ports?network_id=%ff", id="filter-not-utf8"),
        pytest.param(f"/networks/{uuid.uuid4()}?%c3%28=1", id="show-not-utf8"),
    ],
)
def test_a_query_that_is_not_utf8_is_a_400_with_the_request_id(
    api: webtest.TestApp, query: str
) -> None:
    reply = api.get(query, status=400)
    (error,) = reply.json["errors"]
    assert error["code"] == "tasktoolkit.invalid_filter"
    assert error["request_id"] == reply.headers["X-Request-Id"]


def test_a_body_shorter_than_its_content_length_is_a_400_with_the_request_id(
    api: webtest.TestApp,
) -> None:
    sent = b'{"network": {"name": "cut'
    request = webob.Request.blank("/networks", method="POST", content_type="application/json")
    request.environ["wsgi.input"] = io.BytesIO(sent)
    request.environ["CONTENT_LENGTH"] = str(len(sent) + 100)  # the client stopped sending
    reply = request.get_response(api.app)
    assert reply.status_int == 400
    (error,) = reply.json["errors"]
    assert error["code"] == "tasktoolkit.incomplete_body"
    assert error["request_id"] == reply.headers["X-Request-Id"]


def test_405_lists_the_allowed_methods(api: webtest.TestApp) -> None:
    reply = api.request(f"/ports/{uuid.uuid4()}", method="POST", status=405)
    assert reply.headers["Allow"] == "GET, PUT, DELETE"
    assert reply.json["errors"][0]["request_id"] == reply.headers["X-Request-Id"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        pytest.param("PATCH", "/networks", 405, "sample_app.method_not_allowed", id="sample-405"),
        pytest.param("PUT", "/networks/{id}", 405, "sample_app.method_not_allowed", id="item-405"),
        pytest.param("POST", "/nowhere", 404, "tasktoolkit.not_found", id="no-route-404"),
        pytest.param("DELETE", "/tasks", 405, "tasktoolkit.method_not_allowed", id="toolkit-405"),
        pytest.param("POST", "/ports", 422, "tasktoolkit.idempotency_key_reused", id="served-422"),
    ],
)
def test_a_key_reused_for_a_request_the_app_does_not_serve_is_answered_as_without_it(
    api: webtest.TestApp, method: str, path: str, status: int, code: str
) -> None:
    key = {"X-Project-Id": "demo", "Idempotency-Key": "reused"}
    first = api.post_json("/networks", {"network": {"name": "n"}}, headers=key, status=201)
    path = path.format(id=first.json["network"]["id"])
    reply = api.request(path, method=method, body=b"{}", headers=key, status=status)
    (error,) = reply.json["errors"]
    assert error["code"] == code
    assert error["request_id"] == reply.headers["X-Request-Id"]
    again = api.post_json("/networks", {"network": {"name": "n"}}, headers=key, status=201)
    assert again.headers["Idempotent-Replayed"] == "true"  # the key still the first request's
    assert again.json == first.json


def test_admin_port_on_another_projects_network_belongs_to_that_project(
    api: webtest.TestApp,
) -> None:
    network_id = network(api, project="tenant-a")
    reply = api.post_json(
        "/ports",
        {"port": {"network_id": network_id}},
        headers={"X-Roles": "admin", "OpenStack-System-Scope": "all"},
    )
    assert reply.json["port"]["project_id"] == "tenant-a"
    listed = api.get("/ports", headers={"X-Project-Id": "tenant-a"}).json["ports"]
    assert [p["id"] for p in listed] == [reply.json["port"]["id"]]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param(b"[" * 100_000, "nested too deeply", id="nested-100000-deep"),
        pytest.param(
            b'{"network": {"name": "\\ud800"}}',
            "network.name: lone surrogates",
            id="lone-surrogate",
        ),
        pytest.param(b'{"network": {"name": "a\\u0000b"}}', "control characters", id="nul"),
    ],
)
def test_hostile_bodies_are_400_with_the_request_id(
    api: webtest.TestApp, body: bytes, detail: str
) -> None:
    reply = api.post("/networks", body, content_type="application/json", status=400)
    error = reply.json["errors"][0]
    assert detail in error["detail"]
    assert error["request_id"] == reply.headers["X-Request-Id"]
    assert reply.headers["Operation-Location"].endswith(reply.headers["X-Request-Id"])
    assert api.get("/networks").json["networks"] == []


@pytest.mark.parametrize(
    "path",
    [pytest.param("/networks", id="sample-api"), pytest.param("/tasks", id="task-endpoints")],
)
def test_a_project_id_over_64_characters_is_a_400_not_cut(api: webtest.TestApp, path: str) -> None:
    # Two 70-character project ids sharing their first 64: cut, they would be one project.
    mine, theirs = "p" * 64 + "mine..", "p" * 64 + "theirs"
    for project in (mine, theirs):
        reply = api.get(path, headers={"X-Project-Id": project}, status=400)
        assert reply.json["errors"][0]["code"] == "tasktoolkit.invalid_caller"
    reply = api.post_json("/networks", {"network": {}}, headers={"X-Project-Id": mine}, status=400)
    assert reply.json["errors"][0]["code"] == "tasktoolkit.invalid_caller"
    assert api.get(path, headers={"X-Project-Id": "p" * 64}).status_int == 200


def test_a_failed_port_task_is_re_run_and_the_port_goes_from_error_to_active(
    api: webtest.TestApp, worker: Worker, session_factory: sessionmaker[Session]
) -> None:
    port_id = port(api, network(api))["id"]
    run_all(worker)
    api.put_json(f"/ports/{port_id}", {"port": {"name": "fail-security_groups"}})
    run_all(worker)
    assert status(api, port_id) == "ERROR"
    failed = [t for t in api.get(f"/ports/{port_id}/tasks?state=failed").json["tasks"]]
    [task_id] = [t["id"] for t in failed]
    failed_operation = failed[0]["request_id"]
    assert api.get(f"/operations/{failed_operation}").json["operation"]["error"]["task_id"] == (
        task_id
    )
    reader = {"X-Roles": "reader"}
    api.post(f"/ports/{port_id}/tasks/{task_id}/retry", headers=reader, status=403)
    # The injected failure is in the port's name: fixed (behind the API's back, which
    # would spawn tasks), the re-run can succeed.
    with session_factory.begin() as session:
        session.execute(update(Port).where(Port.id == port_id).values(name="fixed"))
    assert status(api, port_id) == "ERROR"
    reply = api.post(f"/operations/{failed_operation}/retry", status=202)
    assert reply.json["operation"]["retry_of"] == failed_operation
    assert status(api, port_id) == "BUILD"
    run_all(worker)
    assert status(api, port_id) == "ACTIVE"
    rerun = api.get(f"/operations/{reply.headers['X-Request-Id']}").json["operation"]
    assert (rerun["state"], rerun["resources"]) == (
        "succeeded",
        [{"type": "port", "id": port_id}],
    )
    api.post(f"/tasks/{task_id}/retry", status=409)


def test_a_port_created_in_bulk_finds_its_operation(api: webtest.TestApp) -> None:
    network_id = network(api)
    body = {"ports": [{"network_id": network_id, "name": f"p{i}"} for i in range(3)]}
    reply = api.post_json("/ports", body, status=202)
    for created in reply.json["ports"]:
        found = api.get(f"/operations?resource_id={created['id']}").json["operations"]
        assert [o["id"] for o in found] == [reply.headers["X-Request-Id"]]

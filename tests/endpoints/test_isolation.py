"""A second project learns nothing of the first's tasks or operations, through any endpoint.

Each probe is made twice by project B: once naming project A's records, once
naming made-up ids of the same shape. The two answers must be the same (status
and body, ids aside), and no answer may contain any of A's ids: B cannot tell
A's records from records that do not exist.
"""

from __future__ import annotations

import re

import pytest
from webtest import TestApp

from tasktoolkit.context import new_request_id
from tests.endpoints.conftest import Seeded, caller, random_task_id

B = caller("project-b")
_REQUEST_ID = re.compile(r'"request_id":"req-[0-9a-f-]{36}"')

PROBES = [
    pytest.param("GET", "/clusters/{cluster}/tasks", id="resource-tasks"),
    pytest.param("GET", "/clusters/{cluster}/tasks?state=active", id="resource-tasks-active"),
    pytest.param("GET", "/clusters/{cluster}/tasks?marker={task}", id="resource-tasks-marker"),
    pytest.param("GET", "/clusters/{cluster}/tasks?sort_key=name", id="resource-tasks-sort"),
    pytest.param("GET", "/clusters/{cluster}/tasks/{task}", id="resource-task"),
    pytest.param("POST", "/clusters/{cluster}/tasks/{task}/cancel", id="cancel"),
    pytest.param("POST", "/clusters/{own_cluster}/tasks/{task}/cancel", id="cancel-via-own"),
    pytest.param("GET", "/clusters/{own_cluster}/tasks/{task}", id="task-via-own-resource"),
    pytest.param("GET", "/nodes/{node}/tasks", id="node-tasks"),
    pytest.param("GET", "/nodes/{node}/tasks/{node_task}", id="node-task"),
    pytest.param("GET", "/tasks/{task}", id="task"),
    pytest.param("GET", "/tasks/{running}", id="running-task"),
    pytest.param("GET", "/tasks/{failed}", id="failed-task"),
    pytest.param("GET", "/tasks", id="tasks"),
    pytest.param("GET", "/tasks?request_id={operation}", id="tasks-by-request"),
    pytest.param("GET", "/tasks?resource_type=cluster&resource_id={cluster}", id="by-resource"),
    pytest.param("GET", "/tasks?resource_type=node&resource_id={node}", id="by-node"),
    pytest.param("GET", "/tasks?marker={task}", id="tasks-marker"),
    pytest.param("GET", "/tasks?marker={running}&state=running", id="tasks-marker-state"),
    pytest.param("GET", "/operations", id="operations"),
    pytest.param("GET", "/operations?request_id={operation}", id="operations-by-id"),
    pytest.param("GET", "/operations?marker={operation}", id="operations-marker"),
    pytest.param("GET", "/operations/{operation}", id="operation"),
    *[
        pytest.param("GET", f"/tasks?state={state}", id=f"tasks-state-{state}")
        for state in ("pending", "running", "succeeded", "failed", "cancelled", "active")
    ],
    *[
        pytest.param("GET", f"/tasks?name={name}", id=f"tasks-name-{name}")
        for name in ("l2_wiring", "dhcp", "boot")
    ],
    *[
        pytest.param("GET", f"/{what}?sort_key={key}&sort_dir={way}", id=f"{what}-{key}-{way}")
        for what in ("tasks", "operations")
        for key in ("created_at", "updated_at", "finished_at", "state")
        for way in ("asc", "desc")
    ],
    pytest.param("GET", "/tasks?sort_key=name&sort_dir=asc&limit=1", id="tasks-name-page"),
    pytest.param("GET", "/tasks?changes-since=2000-01-01T00:00:00Z", id="changes-since"),
    pytest.param("GET", "/operations?state=running", id="operations-running"),
    pytest.param("GET", "/operations?resource_type=cluster", id="operations-by-type"),
]


def _names(a: Seeded, b: Seeded) -> dict[str, str]:
    return {
        "cluster": a.cluster_id,
        "node": str(a.node_id),
        "task": a.pending_id,
        "running": a.running_id,
        "failed": a.failed_id,
        "node_task": a.task_ids[4],
        "operation": a.operation_id,
        "own_cluster": b.cluster_id,
    }


def _ghosts(b: Seeded) -> dict[str, str]:
    return {
        "cluster": random_task_id(),
        "node": "987654",
        "task": random_task_id(),
        "running": random_task_id(),
        "failed": random_task_id(),
        "node_task": random_task_id(),
        "operation": new_request_id(),
        "own_cluster": b.cluster_id,
    }


def _ask(app: TestApp, method: str, path: str, names: dict[str, str]) -> tuple[int, str]:
    url = path.format(**names)
    response = app.request(url, method=method, headers=B, expect_errors=True)
    body = _REQUEST_ID.sub('"request_id":"req-X"', response.text)
    for key, value in sorted(names.items(), key=lambda kv: -len(kv[1])):
        # Only what the request itself named can be echoed back (in a 404's detail).
        if key != "own_cluster" and "{" + key + "}" in path:
            token = re.compile(rf"(?<![0-9A-Za-z-]){re.escape(value)}(?![0-9A-Za-z-])")
            body = token.sub("{" + key + "}", body)
    # Next links embed the request's own URL: the same after the replacement.
    return response.status_int, body


@pytest.mark.parametrize(("method", "path"), PROBES)
def test_project_b_cannot_tell_a_records_from_missing_ones(
    app: TestApp, projects: tuple[Seeded, Seeded], method: str, path: str
) -> None:
    a, b = projects
    real = _ask(app, method, path, _names(a, b))
    ghost = _ask(app, method, path, _ghosts(b))
    assert real == ghost
    assert real[0] in (200, 400, 404)
    url = path.format(**_names(a, b))
    echoed = {v for v in _names(a, b).values() if v in url}
    leaked = [
        v
        for v in (*a.task_ids, a.cluster_id, a.operation_id, a.expired_id, "project-a")
        if v not in echoed and v in real[1]
    ]
    assert leaked == []
    # Nothing of A's changed (a cancel attempt included).
    assert (
        app.get(f"/tasks/{a.pending_id}", headers=caller("project-a")).json["task"]["state"]
        == "pending"
    )


def test_admin_sees_both_projects(app: TestApp, projects: tuple[Seeded, Seeded]) -> None:
    a, b = projects
    admin = caller("elsewhere", admin=True)
    ids = {t["id"] for t in app.get("/tasks", headers=admin).json["tasks"]}
    assert set(a.task_ids) | set(b.task_ids) == ids
    operations = {o["id"] for o in app.get("/operations", headers=admin).json["operations"]}
    assert operations == {a.operation_id, b.operation_id}
    app.get(f"/clusters/{a.cluster_id}/tasks/{a.pending_id}", headers=admin, status=200)


def test_each_project_sees_only_its_own(app: TestApp, projects: tuple[Seeded, Seeded]) -> None:
    a, b = projects
    for own, headers in ((a, caller("project-a")), (b, B)):
        ids = {t["id"] for t in app.get("/tasks", headers=headers).json["tasks"]}
        assert ids == set(own.task_ids)


def test_caller_without_project_sees_nothing(app: TestApp, projects: tuple[Seeded, Seeded]) -> None:
    a, _ = projects
    assert app.get("/tasks").json["tasks"] == []
    assert app.get("/operations").json["operations"] == []
    app.get(f"/tasks/{a.pending_id}", status=404)
    app.get(f"/clusters/{a.cluster_id}/tasks", status=404)

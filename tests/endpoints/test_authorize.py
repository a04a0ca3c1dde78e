"""Authorization by rule: the hook is asked ``(caller, rule, target)``; keystone's system scope."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from webtest import TestApp

from tasktoolkit.caller import (
    OPERATIONS_LIST,
    OPERATIONS_SHOW,
    RULES,
    TASKS_CANCEL,
    TASKS_LIST,
    TASKS_SHOW,
    TASKS_SHOW_HOST,
    Caller,
    keystone_caller,
)
from tasktoolkit.endpoints import ENDPOINTS, Endpoint
from tests.endpoints.conftest import Seeded, build_app, caller

SYSTEM_READER = {"OpenStack-System-Scope": "all", "X-Roles": "reader", "X-User-Id": "auditor"}
A, B = "project-a", "project-b"


def test_keystone_caller_reads_the_system_scope() -> None:
    found = keystone_caller({"HTTP_OPENSTACK_SYSTEM_SCOPE": "all", "HTTP_X_ROLES": "Reader"})
    assert found == Caller(roles=frozenset({"reader"}), system_scope="all")


def test_a_system_reader_sees_every_project_read_only(
    app: TestApp, projects: tuple[Seeded, Seeded]
) -> None:
    a, b = projects
    tasks = app.get("/tasks", headers=SYSTEM_READER).json["tasks"]
    assert {t["id"] for t in tasks} == set(a.task_ids) | set(b.task_ids)
    assert all("host" not in t for t in tasks)
    operations = app.get("/operations", headers=SYSTEM_READER).json["operations"]
    assert {o["id"] for o in operations} == {a.operation_id, b.operation_id}
    failed = app.get(f"/tasks/{a.failed_id}", headers=SYSTEM_READER).json["task"]
    assert "traceback" not in failed["error"]
    app.get(f"/operations/{b.operation_id}", headers=SYSTEM_READER, status=200)
    app.get(f"/clusters/{a.cluster_id}/tasks/{a.pending_id}", headers=SYSTEM_READER, status=200)
    refused = app.post(
        f"/clusters/{a.cluster_id}/tasks/{a.pending_id}/cancel", headers=SYSTEM_READER, status=403
    )
    assert refused.json["errors"][0]["code"] == "tasktoolkit.forbidden"
    assert (
        app.get(f"/tasks/{a.pending_id}", headers=SYSTEM_READER).json["task"]["state"] == "pending"
    )


def test_a_project_reader_reads_and_a_caller_without_a_role_gets_nothing(
    app: TestApp, projects: tuple[Seeded, Seeded]
) -> None:
    a, _ = projects
    reader = {"X-Project-Id": a.project, "X-User-Id": "r", "X-Roles": "reader"}
    nobody = {"X-Project-Id": a.project, "X-User-Id": "n"}
    cancel = f"/clusters/{a.cluster_id}/tasks/{a.pending_id}/cancel"

    assert {t["id"] for t in app.get("/tasks", headers=reader).json["tasks"]} == set(a.task_ids)
    assert app.post(cancel, headers=reader, status=403).json["errors"][0]["code"] == (
        "tasktoolkit.forbidden"
    )
    assert app.get("/tasks", headers=nobody).json["tasks"] == []
    assert app.get("/operations", headers=nobody).json["operations"] == []
    app.get(f"/tasks/{a.pending_id}", headers=nobody, status=404)
    app.post(cancel, headers=nobody, status=404)
    assert app.get(f"/tasks/{a.pending_id}", headers=reader).json["task"]["state"] == "pending"


def test_a_project_admin_administers_its_project_only(
    app: TestApp, projects: tuple[Seeded, Seeded]
) -> None:
    a, b = projects
    admin = {"X-Project-Id": a.project, "X-User-Id": "pa", "X-Roles": "admin,member,reader"}
    tasks = app.get("/tasks", headers=admin).json["tasks"]
    assert {t["id"] for t in tasks} == set(a.task_ids)
    assert all("host" in t for t in tasks)
    app.get(f"/tasks/{b.pending_id}", headers=admin, status=404)
    app.post(f"/clusters/{b.cluster_id}/tasks/{b.pending_id}/cancel", headers=admin, status=404)


class Recorder:
    """An authorization hook that says what it is told to, and remembers what it was asked."""

    def __init__(self, *, allow: frozenset[str] = frozenset(RULES)) -> None:
        self.allow = allow
        self.asked: list[tuple[str, Any]] = []

    def __call__(self, who: Caller, rule: str, target: Mapping[str, Any]) -> bool:
        self.asked.append((rule, target.get("project_id")))
        return rule in self.allow and (target.get("project_id") in (who.project_id, None))


@pytest.mark.parametrize(
    ("method", "path", "rules"),
    [
        pytest.param("GET", "/tasks", [TASKS_LIST, TASKS_SHOW_HOST], id="tasks"),
        pytest.param("GET", "/tasks/{pending}", [TASKS_SHOW, TASKS_SHOW_HOST], id="task"),
        pytest.param("GET", "/operations", [OPERATIONS_LIST, TASKS_SHOW_HOST], id="operations"),
        pytest.param(
            "GET",
            "/operations/{operation}",
            [OPERATIONS_SHOW, TASKS_SHOW, TASKS_SHOW_HOST],
            id="operation",
        ),
        pytest.param(
            "GET",
            "/clusters/{cluster}/tasks",
            [TASKS_LIST, TASKS_LIST, TASKS_SHOW_HOST],
            id="resource-tasks",
        ),
        pytest.param(
            "POST",
            "/clusters/{cluster}/tasks/{pending}/cancel",
            [TASKS_SHOW, TASKS_CANCEL, TASKS_SHOW_HOST],
            id="cancel",
        ),
    ],
)
def test_each_endpoint_asks_its_rules(
    session_factory: sessionmaker[Session],
    projects: tuple[Seeded, Seeded],
    method: str,
    path: str,
    rules: list[str],
) -> None:
    a, _ = projects
    hook = Recorder()
    app = build_app(session_factory, authorize=hook)
    url = path.format(pending=a.pending_id, operation=a.operation_id, cluster=a.cluster_id)
    app.request(url, method=method, headers=caller(A), status="2*")
    assert [rule for rule, _ in hook.asked] == rules
    # A list is asked for every project (None) first; a record, with its own project.
    assert {project for _, project in hook.asked} <= {None, A}


@pytest.mark.parametrize(
    ("allow", "url", "status"),
    [
        pytest.param(RULES, "/tasks/{pending}", 200, id="all-rules"),
        pytest.param(set(RULES) - {TASKS_SHOW}, "/tasks/{pending}", 404, id="no-show-is-404"),
        pytest.param(
            set(RULES) - {OPERATIONS_SHOW}, "/operations/{operation}", 404, id="no-op-show"
        ),
        pytest.param(
            set(RULES) - {TASKS_CANCEL},
            "/clusters/{cluster}/tasks/{pending}/cancel",
            403,
            id="no-cancel",
        ),
    ],
)
def test_a_refusal_is_a_404_or_a_403(
    session_factory: sessionmaker[Session],
    projects: tuple[Seeded, Seeded],
    allow: set[str],
    url: str,
    status: int,
) -> None:
    a, _ = projects
    app = build_app(session_factory, authorize=Recorder(allow=frozenset(allow)))
    method = "POST" if url.endswith("/cancel") else "GET"
    full = url.format(pending=a.pending_id, operation=a.operation_id, cluster=a.cluster_id)
    app.request(full, method=method, headers=caller(A), status=status if status != 200 else "2*")
    state = app.get(f"/tasks/{a.pending_id}", headers=caller(A), status="*")
    if state.status_int == 200:
        assert state.json["task"]["state"] == "pending"  # a refused cancel changed nothing


def test_a_hook_may_show_hosts_to_a_project(
    session_factory: sessionmaker[Session], projects: tuple[Seeded, Seeded]
) -> None:
    a, _ = projects
    app = build_app(session_factory, authorize=Recorder())
    failed = app.get(f"/tasks/{a.failed_id}", headers=caller(A)).json["task"]
    assert "dhcp agent unreachable" in failed["error"]["traceback"]
    listed = app.get("/tasks", headers=caller(A)).json["tasks"]
    assert {t["host"] for t in listed if t["id"] == a.running_id} == {"worker-1"}


@pytest.mark.parametrize(
    "endpoint", [pytest.param(e, id=e.name) for e in ENDPOINTS if e.described is not None]
)
def test_the_table_names_every_rule_an_endpoint_asks(
    session_factory: sessionmaker[Session], projects: tuple[Seeded, Seeded], endpoint: Endpoint
) -> None:
    """What the policy defaults document of each rule (its requests) is what is asked."""
    a, _ = projects
    hook = Recorder()
    app = build_app(session_factory, authorize=hook)
    path = endpoint.path_of("clusters") if endpoint.of_resource else endpoint.path
    task_id = a.failed_id if path.endswith("/retry") else a.pending_id  # one that may be re-run
    url = path.format(resource_id=a.cluster_id, task_id=task_id, operation_id=a.operation_id)
    app.request(url, method=endpoint.methods[0], headers=caller(A), status="2*")
    assert {rule for rule, _ in hook.asked} == set(endpoint.rules)


def test_every_rule_is_asked_by_an_endpoint_of_the_table() -> None:
    assert set(RULES) == {rule for endpoint in ENDPOINTS for rule in endpoint.rules}

"""The endpoints through a whole WSGI stack (Router + Routes + webob), on every database."""

from __future__ import annotations

import logging
import re
import traceback
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import create_engine, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from webtest import TestApp

from tasktoolkit import context, orm
from tasktoolkit.errors import InvalidFilterError
from tasktoolkit.hooks import Hook
from tasktoolkit.orm import ListParams, Scope, Task, TaskRules, Worker
from tasktoolkit.orm._operations import end_request
from tasktoolkit.orm._resource import resource_class
from tasktoolkit.orm._transitions import fail_task, start_task, succeed_task
from tasktoolkit.orm._types import utcnow
from tasktoolkit.orm._workers import WORKER_ERROR_MESSAGE
from tests.endpoints.conftest import Seeded, build_app, caller, random_task_id, seed_project
from tests.middleware.stacks import Stacks
from tests.models import Cluster

ISO_Z = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")
A = caller("project-a")
ADMIN = caller("project-admin", admin=True)


@pytest.fixture
def seeded(session: Session) -> Seeded:
    return seed_project(session, "project-a")


def test_resource_tasks_lists_live_tasks_newest_first(app: TestApp, seeded: Seeded) -> None:
    body = app.get(f"/clusters/{seeded.cluster_id}/tasks", headers=A).json
    ids = [t["id"] for t in body["tasks"]]
    assert sorted(ids) == sorted(seeded.task_ids[:4])
    assert body["tasks_links"] == []
    keys = [(t["created_at"], t["id"]) for t in body["tasks"]]
    assert keys == sorted(keys, reverse=True)
    node_ids = [t["id"] for t in app.get(f"/nodes/{seeded.node_id}/tasks", headers=A).json["tasks"]]
    assert seeded.expired_id not in node_ids and len(node_ids) == 1


def test_task_view_fields_and_times(app: TestApp, seeded: Seeded) -> None:
    task = app.get(f"/tasks/{seeded.failed_id}", headers=A).json["task"]
    assert set(task) == {
        "id",
        "request_id",
        "resource_type",
        "resource_id",
        "name",
        "state",
        "progress",
        "message",
        "error",
        "created_at",
        "started_at",
        "updated_at",
        "finished_at",
        "expires_at",
        "result",
        "not_before",
        "queue",
        "after",
        "waiting",
        "attempts",
    }
    assert (task["result"], task["queue"], task["waiting"]) == (None, None, None)
    assert task["error"] == {"code": "dhcp_down", "message": "no dhcp agent"}
    assert (task["attempts"], task["not_before"]) == ([], None)  # failed before it started
    assert (task["after"], task["waiting"]) == ([], None)
    assert task["request_id"] == seeded.operation_id
    assert (task["resource_type"], task["resource_id"]) == ("cluster", seeded.cluster_id)
    for key in ("created_at", "updated_at", "finished_at", "expires_at"):
        assert ISO_Z.match(task[key]), task[key]
    assert task["started_at"] is None


@pytest.mark.parametrize(
    ("headers", "shown"),
    [pytest.param(A, False, id="member"), pytest.param(ADMIN, True, id="admin")],
)
def test_traceback_and_host_only_for_admins(
    app: TestApp, seeded: Seeded, headers: dict[str, str], shown: bool
) -> None:
    failed = app.get(f"/tasks/{seeded.failed_id}", headers=headers).json["task"]
    running = app.get(f"/tasks/{seeded.running_id}", headers=headers).json["task"]
    assert ("traceback" in failed["error"]) is shown
    assert ("host" in running) is shown
    if shown:
        assert "dhcp agent unreachable" in failed["error"]["traceback"]
        assert running["host"] == "worker-1"
    listed = app.get("/tasks", headers=headers).json["tasks"]
    assert any(("host" in t) is shown for t in listed)
    body = app.get(f"/operations/{seeded.operation_id}", headers=headers).text
    assert ("dhcp agent unreachable" in body) is shown and ("worker-1" in body) is shown


def retried(session: Session, seeded: Seeded) -> str:
    """A task of ``seeded``'s operation whose first attempt, on worker-3, failed retryably
    with a traceback, and whose second runs on worker-4; its id."""
    cluster = session.get(Cluster, seeded.cluster_id)
    assert cluster is not None
    ctx = context.RequestContext(
        seeded.operation_id, project_id=seeded.project, operation_id=seeded.operation_id
    )
    with context.request_context(ctx):
        [task] = cluster.spawn_tasks(["resize"], rules=TaskRules(max_attempts=2))
    session.commit()
    start_task(session, task.id, host="worker-3")
    try:
        raise RuntimeError("disk controller hung")
    except RuntimeError:
        tb = traceback.format_exc()
    fail_task(session, task.id, code="io_timeout", message="no disk", traceback=tb, retry=True)
    start_task(session, task.id, host="worker-4")
    session.commit()
    return task.id


@pytest.mark.parametrize(
    ("headers", "shown"),
    [pytest.param(A, False, id="member"), pytest.param(ADMIN, True, id="admin")],
)
def test_an_attempts_traceback_and_host_only_for_admins(
    app: TestApp, session: Session, seeded: Seeded, headers: dict[str, str], shown: bool
) -> None:
    task_id = retried(session, seeded)

    task = app.get(f"/tasks/{task_id}", headers=headers).json["task"]

    assert [(a["number"], a["outcome"]) for a in task["attempts"]] == [(1, "failed"), (2, None)]
    first, second = task["attempts"]
    assert (first["error"]["code"], first["error"]["message"], second["error"]) == (
        "io_timeout",
        "no disk",
        None,
    )
    assert ("traceback" in first["error"]) is shown
    assert ("host" in first) is shown and ("host" in second) is shown
    if shown:
        assert "disk controller hung" in first["error"]["traceback"]
        assert (first["host"], second["host"]) == ("worker-3", "worker-4")
    # Listed too; the first attempt's traceback and host are in nothing but its attempt row.
    for path in ("/tasks", f"/operations/{seeded.operation_id}"):
        body = app.get(path, headers=headers).text
        assert task_id in body
        assert ("disk controller hung" in body) is shown and ("worker-3" in body) is shown


@pytest.mark.parametrize(
    ("headers", "shown"),
    [pytest.param(A, False, id="member"), pytest.param(ADMIN, True, id="admin")],
)
def test_an_unexpected_worker_errors_text_only_for_admins(
    app: TestApp,
    engine: Engine,
    session: Session,
    seeded: Seeded,
    headers: dict[str, str],
    shown: bool,
) -> None:
    cluster = session.get(Cluster, seeded.cluster_id)
    assert cluster is not None
    ctx = context.RequestContext(
        seeded.operation_id, project_id=seeded.project, operation_id=seeded.operation_id
    )
    with context.request_context(ctx):
        [task] = cluster.spawn_tasks(["inspect"])
    session.commit()
    job = Worker(engine, host="worker-9").start(task.id)
    text = "could not connect to server at db-internal.example:5432"
    with pytest.raises(RuntimeError), job:  # the job's own code: an unexpected error
        raise RuntimeError(text)

    view = app.get(f"/tasks/{task.id}", headers=headers).json["task"]

    expected = text if shown else WORKER_ERROR_MESSAGE
    assert view["error"]["code"] == "worker_error" and view["error"]["message"] == expected
    [attempt] = view["attempts"]
    assert attempt["error"]["message"] == expected
    for path in ("/tasks", f"/operations/{seeded.operation_id}"):
        assert (text in app.get(path, headers=headers).text) is shown


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("state=active", {"running_id", "pending_id", "boot"}, id="active"),
        pytest.param("state=running", {"running_id"}, id="running"),
        pytest.param("state=failed,succeeded", {"failed_id", "succeeded_id"}, id="comma"),
        pytest.param("state=failed&state=succeeded", {"failed_id", "succeeded_id"}, id="repeated"),
        pytest.param("name=dhcp", {"failed_id"}, id="name"),
        pytest.param("resource_type=node", {"boot"}, id="resource_type"),
        pytest.param("state=pending&resource_type=cluster", {"pending_id"}, id="combined"),
    ],
)
def test_task_filters(app: TestApp, seeded: Seeded, query: str, expected: set[str]) -> None:
    names = {
        seeded.running_id: "running_id",
        seeded.pending_id: "pending_id",
        seeded.failed_id: "failed_id",
        seeded.succeeded_id: "succeeded_id",
        seeded.task_ids[4]: "boot",
    }
    got = {names[t["id"]] for t in app.get(f"/tasks?{query}", headers=A).json["tasks"]}
    assert got == expected


def test_filters_by_resource_id_request_id_and_time(app: TestApp, seeded: Seeded) -> None:
    by_resource = app.get(
        f"/tasks?resource_type=cluster&resource_id={seeded.cluster_id}", headers=A
    ).json["tasks"]
    assert len(by_resource) == 4
    by_request = app.get(f"/tasks?request_id={seeded.operation_id}", headers=A).json["tasks"]
    assert len(by_request) == 5
    task = app.get(f"/tasks/{seeded.failed_id}", headers=A).json["task"]
    since = app.get(f"/tasks?changes-since={task['updated_at']}", headers=A).json["tasks"]
    assert seeded.failed_id in {t["id"] for t in since}
    assert all(t["updated_at"] >= task["updated_at"] for t in since)
    before = app.get(f"/tasks?changes-before={task['created_at']}", headers=A).json["tasks"]
    assert {t["id"] for t in before} <= {seeded.pending_id, seeded.task_ids[4]}
    assert app.get("/tasks?changes-since=2999-01-01T00:00:00Z", headers=A).json["tasks"] == []


def _walk(app: TestApp, url: str, headers: dict[str, str]) -> list[str]:
    """Every id of a list, following next links."""
    seen: list[str] = []
    for _ in range(100):
        body = app.get(url, headers=headers).json
        key = "operations" if "operations" in body else "tasks"
        seen += [r["id"] for r in body[key]]
        nexts = [link["href"] for link in body[f"{key}_links"] if link["rel"] == "next"]
        if not nexts:
            return seen
        url = nexts[0]
    raise AssertionError("pagination did not end")


@pytest.mark.parametrize("sort_key", ["created_at", "updated_at", "finished_at", "name", "state"])
@pytest.mark.parametrize("sort_dir", ["asc", "desc"])
def test_pages_follow_the_sort_without_gaps_or_repeats(
    app: TestApp, seeded: Seeded, sort_key: str, sort_dir: str
) -> None:
    whole = app.get(f"/tasks?sort_key={sort_key}&sort_dir={sort_dir}", headers=A).json["tasks"]
    paged = _walk(app, f"/tasks?sort_key={sort_key}&sort_dir={sort_dir}&limit=2", headers=A)
    assert paged == [t["id"] for t in whole]
    assert sorted(paged) == sorted(seeded.task_ids)
    present = [t for t in whole if t[sort_key] is not None]
    values = [(t[sort_key], t["id"]) for t in present]
    assert values == sorted(values, reverse=sort_dir == "desc")
    # NULLs (unfinished tasks) come last in both directions.
    assert [t[sort_key] for t in whole[len(present) :]] == [None] * (len(whole) - len(present))


def test_next_link_keeps_every_filter(app: TestApp, seeded: Seeded) -> None:
    query = "state=pending&state=running,failed&name=l2_wiring&limit=1&sort_dir=asc"
    app.get(f"/tasks?{query}", headers=A)
    query = "state=pending&state=running,failed&limit=1&sort_key=name&resource_type=cluster"
    body = app.get(f"/tasks?{query}", headers=A).json
    href = body["tasks_links"][0]["href"]
    parts = urlsplit(href)
    assert parts.path == "/tasks"
    pairs = parse_qsl(parts.query)
    assert pairs[:-1] == parse_qsl(query)
    assert pairs[-1] == ("marker", body["tasks"][0]["id"])
    assert _walk(app, f"/tasks?{query}", A) == [
        t["id"]
        for t in app.get(f"/tasks?{query.replace('limit=1', 'limit=50')}", headers=A).json["tasks"]
    ]


def test_limit_is_clamped_to_1000(app: TestApp, seeded: Seeded, session: Session) -> None:
    cluster = session.get(resource_class("cluster"), seeded.cluster_id)  # type: ignore[arg-type]
    assert cluster is not None
    cluster.spawn_tasks([f"bulk_{n}" for n in range(1005)])
    session.commit()
    for limit in ("1001", "1000000000000", "9" * 200):
        body = app.get(f"/tasks?limit={limit}", headers=A).json
        assert len(body["tasks"]) == 1000 and body["tasks_links"]
    assert len(app.get("/tasks", headers=A).json["tasks"]) == 100


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/clusters/{cluster_id}/tasks/{task_id}", id="resource-task"),
        pytest.param("/tasks/{task_id}", id="task"),
        pytest.param("/operations/{operation_id}", id="operation"),
    ],
)
def test_etag_and_if_none_match(
    app: TestApp, seeded: Seeded, session_factory: sessionmaker[Session], path: str
) -> None:
    url = path.format(
        cluster_id=seeded.cluster_id, task_id=seeded.pending_id, operation_id=seeded.operation_id
    )
    first = app.get(url, headers=A)
    etag = first.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    again = app.get(url, headers={**A, "If-None-Match": etag}, status=304)
    assert again.body == b"" and again.headers["ETag"] == etag
    app.get(url, headers={**A, "If-None-Match": f'"other", W/{etag}'}, status=304)
    app.get(url, headers={**A, "If-None-Match": '"other"'}, status=200)
    with session_factory() as session:
        orm.cancel_task(session, seeded.pending_id)
        session.commit()
    changed = app.get(url, headers={**A, "If-None-Match": etag}, status=200)
    assert changed.headers["ETag"] != etag


def test_operation_with_tasks_counts_and_retry_after(app: TestApp, seeded: Seeded) -> None:
    response = app.get(f"/operations/{seeded.operation_id}", headers=A)
    operation = response.json["operation"]
    assert operation["state"] == "running"
    assert response.headers["Retry-After"] == "1"
    unchanged = app.get(
        f"/operations/{seeded.operation_id}",
        headers={**A, "If-None-Match": response.headers["ETag"]},
        status=304,
    )
    assert unchanged.headers["Retry-After"] == "1"
    assert operation["task_counts"] == {
        "pending": 2,
        "running": 1,
        "succeeded": 2,
        "failed": 1,
        "cancelled": 0,
    }
    assert sorted(t["id"] for t in operation["tasks"]) == sorted(seeded.task_ids)
    assert operation["project_id"] == "project-a" and operation["method"] == "POST"
    assert operation["action"] == "create"
    listed = app.get("/operations", headers=A).json
    assert [o["id"] for o in listed["operations"]] == [seeded.operation_id]
    assert "tasks" not in listed["operations"][0]
    assert listed["operations_links"] == []


def test_finished_operation_has_no_retry_after(
    app: TestApp, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        for task_id in (seeded.running_id,):
            succeed_task(session, task_id)
        for task_id in (seeded.pending_id, seeded.task_ids[4]):
            orm.cancel_task(session, task_id)
        end_request(session.connection(), seeded.operation_id, 202)
        session.commit()
    response = app.get(f"/operations/{seeded.operation_id}", headers=A)
    assert response.json["operation"]["state"] == "failed"
    assert "Retry-After" not in response.headers
    states = app.get("/operations?state=failed", headers=A).json["operations"]
    assert [o["id"] for o in states] == [seeded.operation_id]
    assert app.get("/operations?state=active", headers=A).json["operations"] == []


def test_expired_records_are_never_shown(app: TestApp, seeded: Seeded) -> None:
    app.get(f"/tasks/{seeded.expired_id}", headers=ADMIN, status=404)
    app.get(f"/nodes/{seeded.node_id}/tasks/{seeded.expired_id}", headers=A, status=404)
    app.get(f"/operations/{seeded.expired_operation_id}", headers=ADMIN, status=404)
    everything = app.get("/tasks?limit=1000", headers=ADMIN).text
    assert seeded.expired_id not in everything
    assert seeded.expired_operation_id not in app.get("/operations", headers=ADMIN).text
    body = app.get(f"/tasks?marker={seeded.expired_id}", headers=ADMIN, status=400).json
    assert body["errors"][0]["code"] == "tasktoolkit.invalid_filter"


def test_running_and_pending_tasks_never_expire(
    app: TestApp, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        # Even a bogus past expiry on an active task must not hide it.
        session.execute(
            update(Task)
            .where(Task.id.in_([seeded.running_id, seeded.pending_id]))
            .values(expires_at=utcnow() - timedelta(days=1))
        )
        session.commit()
    ids = {t["id"] for t in app.get("/tasks?state=active", headers=A).json["tasks"]}
    assert {seeded.running_id, seeded.pending_id} <= ids
    app.get(f"/tasks/{seeded.running_id}", headers=A, status=200)


@pytest.mark.parametrize(
    ("task", "status", "state", "requested"),
    [
        pytest.param("pending_id", 202, "cancelled", False, id="pending-cancelled-at-once"),
        pytest.param("running_id", 202, "running", True, id="running-asked-to-stop"),
        pytest.param("failed_id", 409, "failed", False, id="terminal-409"),
        pytest.param("succeeded_id", 409, "succeeded", False, id="succeeded-409"),
    ],
)
def test_cancel(
    app: TestApp,
    seeded: Seeded,
    session_factory: sessionmaker[Session],
    task: str,
    status: int,
    state: str,
    requested: bool,
) -> None:
    task_id = getattr(seeded, task)
    url = f"/clusters/{seeded.cluster_id}/tasks/{task_id}/cancel"
    response = app.post(url, headers=A, status=status)
    if status == 202:
        assert response.json["task"]["state"] == state
    else:
        assert response.json["errors"][0]["code"] == "tasktoolkit.invalid_transition"
    with session_factory() as session:
        stored = session.get(Task, task_id)
        assert stored is not None
        assert (stored.state, stored.cancel_requested) == (state, requested)


def test_cancel_checks_the_task_belongs_to_the_resource(app: TestApp, seeded: Seeded) -> None:
    boot = seeded.task_ids[4]
    app.post(f"/clusters/{seeded.cluster_id}/tasks/{boot}/cancel", headers=A, status=404)
    app.get(f"/clusters/{seeded.cluster_id}/tasks/{boot}", headers=A, status=404)
    app.post(f"/nodes/{seeded.node_id}/tasks/{boot}/cancel", headers=A, status=202)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        pytest.param("DELETE", "/tasks", "GET, HEAD", id="delete-tasks"),
        pytest.param("POST", "/tasks", "GET, HEAD", id="post-tasks"),
        pytest.param("PUT", "/tasks/{task}", "GET, HEAD", id="put-task"),
        pytest.param("PATCH", "/operations", "GET, HEAD", id="patch-operations"),
        pytest.param("DELETE", "/operations/{op}", "GET, HEAD", id="delete-operation"),
        pytest.param("POST", "/clusters/{cluster}/tasks", "GET, HEAD", id="post-resource-tasks"),
        pytest.param("GET", "/clusters/{cluster}/tasks/{task}/cancel", "POST", id="get-cancel"),
        pytest.param("DELETE", "/clusters/{cluster}/tasks/{task}", "GET, HEAD", id="delete-task"),
    ],
)
def test_other_methods_are_405(
    app: TestApp, seeded: Seeded, method: str, path: str, allow: str
) -> None:
    url = path.format(task=seeded.pending_id, op=seeded.operation_id, cluster=seeded.cluster_id)
    response = app.request(url, method=method, headers=A, status=405)
    assert response.headers["Allow"] == allow
    assert response.json["errors"][0]["status"] == 405
    assert app.get(f"/tasks/{seeded.pending_id}", headers=A).json["task"]["state"] == "pending"


def test_head_is_a_get_without_body(app: TestApp, seeded: Seeded) -> None:
    response = app.head(f"/tasks/{seeded.pending_id}", headers=A)
    assert response.body == b"" and response.headers["ETag"]


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/clusters/{random}/tasks", id="unknown-cluster"),
        pytest.param("/nodes/999999/tasks", id="unknown-node"),
        pytest.param("/nodes/not-a-number/tasks", id="bad-integer-key"),
        pytest.param("/nodes/99999999999999999999999/tasks", id="huge-integer-key"),
        pytest.param("/nodes/%00/tasks", id="nul"),
        pytest.param("/clusters/%FF%FE/tasks", id="not-utf8"),
        pytest.param("/clusters/{cluster}/tasks/{random}", id="unknown-task"),
        pytest.param("/clusters/{cluster}/tasks/not-a-uuid", id="bad-task-id"),
        pytest.param("/tasks/{random}", id="unknown-task-global"),
        pytest.param("/tasks/{upper}", id="upper-case-task-id"),
        pytest.param("/operations/req-{random}", id="unknown-operation"),
        pytest.param("/operations/x%27%20OR%201=1", id="sql-operation-id"),
        pytest.param("/networks/{random}/tasks", id="unmounted-collection"),
    ],
)
def test_unknown_records_are_404(app: TestApp, seeded: Seeded, path: str) -> None:
    url = path.format(
        random=random_task_id(), cluster=seeded.cluster_id, upper=seeded.pending_id.upper()
    )
    body = app.get(url, headers=ADMIN, status=404).json
    assert body["errors"][0]["status"] == 404
    assert body["errors"][0]["code"].startswith("tasktoolkit.")


def test_host_routes_compose(app: TestApp) -> None:
    assert app.get("/clusters").text == "the host's own route"


def test_links_under_a_prefix_and_script_name(
    session_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    prefixed = build_app(session_factory, path_prefix="/v2.0")
    body = prefixed.get(
        f"/v2.0/clusters/{seeded.cluster_id}/tasks?limit=1",
        headers=A,
        extra_environ={"SCRIPT_NAME": "/network"},
    ).json
    href = body["tasks_links"][0]["href"]
    assert href.startswith(f"http://localhost/network/v2.0/clusters/{seeded.cluster_id}/tasks?")
    parts = urlsplit(href)
    following = prefixed.get(
        f"{parts.path.removeprefix('/network')}?{parts.query}",
        headers=A,
        extra_environ={"SCRIPT_NAME": "/network"},
    ).json
    assert following["tasks"] and following["tasks"][0]["id"] != body["tasks"][0]["id"]
    prefixed.get(f"/clusters/{seeded.cluster_id}/tasks", headers=A, status=404)


@pytest.mark.parametrize("prefix", [pytest.param("", id="root"), pytest.param("/v2.0", id="v2.0")])
def test_whole_stack_with_the_middleware(
    engine: Engine, session_factory: sessionmaker[Session], seeded: Seeded, prefix: str
) -> None:
    # Under a prefix the middleware is told where the operations are: it sits
    # outside the router and cannot know.
    stacks = Stacks(engine)
    try:
        app = build_app(session_factory, path_prefix=prefix).app
        _drive_whole_stack(stacks.test_app(app, path_prefix=prefix), seeded, prefix)
    finally:
        stacks.close()  # its writer pool is its own


def _drive_whole_stack(app: TestApp, seeded: Seeded, prefix: str) -> None:
    bad = app.get(f"{prefix}/tasks?state=bogus", headers=A, status=400)
    assert bad.json["errors"][0]["request_id"] == bad.headers["X-Request-Id"]
    url = f"{prefix}/clusters/{seeded.cluster_id}/tasks/{seeded.pending_id}/cancel"
    cancelled = app.post(url, headers=A, status=202)
    location = cancelled.headers["Operation-Location"]
    assert location.endswith(f"{prefix}/operations/{cancelled.headers['X-Request-Id']}")
    operation = app.get(urlsplit(location).path, headers=A).json["operation"]
    assert (operation["method"], operation["path"], operation["state"]) == (
        "POST",
        url,
        "succeeded",
    )
    assert operation["http_status"] == 202 and operation["project_id"] == "project-a"
    listed = app.get(f"{prefix}/operations?state=succeeded", headers=A).json["operations"]
    assert [o["id"] for o in listed] == [operation["id"]]
    app.get(urlsplit(location).path, headers=caller("project-b"), status=404)


def test_queries_refuse_bad_params_directly(session: Session, seeded: Seeded) -> None:
    scope = Scope(project_id="project-a")
    for params in (
        ListParams(limit=0),
        ListParams(limit=1001),
        ListParams(sort_key="id; DROP TABLE"),
        ListParams(sort_dir="sideways"),
        ListParams(marker=random_task_id()),
        ListParams(states=("bogus",)),
    ):
        with pytest.raises(InvalidFilterError):
            orm.list_tasks(session, params, scope=scope)
    with pytest.raises(InvalidFilterError):
        orm.list_operations(session, ListParams(names=("x",)), scope=scope)
    assert orm.list_tasks(session, ListParams(), scope=Scope()).records == []


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        pytest.param("/clusters/{random}/tasks", "no cluster '{random}'", id="unknown-cluster"),
        pytest.param("/nodes/999999/tasks", "no node '999999'", id="unknown-node"),
    ],
)
def test_an_unknown_resource_is_named_by_its_type(app: TestApp, path: str, detail: str) -> None:
    random = random_task_id()
    body = app.get(path.format(random=random), headers=ADMIN, status=404).json
    assert body["errors"][0]["detail"] == detail.format(random=random)


class Outages(Hook):
    """A hook that keeps where the toolkit met an unavailable database."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def database_unavailable(self, where: str, error: BaseException) -> None:
        self.seen.append(where)


def test_a_database_outage_is_a_503_told_to_the_hooks_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outages = Outages()
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    app = build_app(sessionmaker(engine), hooks=[outages], unavailable_retry_after=7)
    with caplog.at_level(logging.INFO, "tasktoolkit"):
        response = app.get("/tasks", headers=caller("project-a"), status=503)
    engine.dispose()
    assert response.headers["Retry-After"] == "7"
    assert response.json["errors"][0]["code"] == "tasktoolkit.database_unavailable"
    assert outages.seen == ["endpoints"]
    [line] = [r for r in caplog.records if r.name.startswith("tasktoolkit")]
    assert "GET /tasks answered 503" in line.getMessage() and not line.exc_info

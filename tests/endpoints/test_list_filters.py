"""The lists' filters by who asked and how it failed, bulk operations found by any of their
resources, and the lists' weak ETags, on every database."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy.orm import Session
from webtest import TestApp

from tasktoolkit import context
from tasktoolkit.orm._transitions import fail_task
from tests.endpoints.conftest import caller, open_post
from tests.models import Cluster

A = caller("project-a")
ADMIN = caller("project-admin", admin=True)


@dataclass
class Bulk:
    """Two operations of project-a: a bulk create of three clusters (one task failed),
    and a single create by another user, traced under a global request id."""

    bulk_id: str
    single_id: str
    cluster_ids: list[str]
    failed_id: str
    first_id: str
    queued_id: str
    global_request_id: str


def _spawning(session: Session, project: str, user: str, **fields: str) -> str:
    rid = context.new_request_id()
    open_post(session, rid, project, user_id=user, **fields)
    return rid


@pytest.fixture
def bulk(session: Session) -> Bulk:
    bulk_id = _spawning(session, "project-a", "alice")
    clusters = [Cluster(name=f"c{i}", project_id="project-a") for i in range(3)]
    session.add_all(clusters)
    session.flush()
    ctx = context.RequestContext(request_id=bulk_id, project_id="project-a", operation_id=bulk_id)
    with context.request_context(ctx):
        spawned = [c.spawn_tasks(["boot"])[0] for c in clusters]
    traced = context.new_request_id()
    single_id = _spawning(session, "project-a", "bob", global_request_id=traced)
    single = Cluster(name="single", project_id="project-a")
    session.add(single)
    session.flush()
    ctx = context.RequestContext(
        request_id=single_id, project_id="project-a", operation_id=single_id, user_id="bob"
    )
    with context.request_context(ctx):
        [queued] = single.spawn_tasks(["boot"], queue="host-1")
    session.commit()
    fail_task(session, spawned[1].id, code="no_capacity", message="full")
    session.commit()
    return Bulk(
        bulk_id,
        single_id,
        [c.id for c in clusters],
        spawned[1].id,
        spawned[0].id,
        queued.id,
        traced,
    )


def test_a_bulk_operation_is_found_by_any_of_its_resources(app: TestApp, bulk: Bulk) -> None:
    for cluster_id in bulk.cluster_ids:
        found = app.get(f"/operations?resource_id={cluster_id}", headers=A).json["operations"]
        assert [o["id"] for o in found] == [bulk.bulk_id]
    [operation] = app.get(f"/operations?request_id={bulk.bulk_id}", headers=A).json["operations"]
    assert sorted(r["id"] for r in operation["resources"]) == sorted(bulk.cluster_ids)
    assert {r["type"] for r in operation["resources"]} == {"cluster"}
    assert operation["error"] == {
        "code": "no_capacity",
        "message": "full",
        "task_id": bulk.failed_id,
        "task_name": "boot",
    }
    typed = f"/operations?resource_type=node&resource_id={bulk.cluster_ids[0]}"
    assert app.get(typed, headers=A).json["operations"] == []


def _ids(app: TestApp, url: str) -> set[str]:
    key = "tasks" if url.startswith("/tasks") else "operations"
    return {record["id"] for record in app.get(url, headers=ADMIN).json[key]}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("/operations?user_id=alice", ["bulk_id"], id="operations-user"),
        pytest.param("/operations?user_id=carol", [], id="operations-nobody"),
        pytest.param(
            "/operations?global_request_id={global_request_id}",
            ["single_id"],
            id="operations-global",
        ),
        pytest.param("/operations?error_code=no_capacity", ["bulk_id"], id="operations-error"),
        pytest.param("/tasks?user_id=bob", ["queued_id"], id="tasks-user"),
        pytest.param(
            "/tasks?global_request_id={global_request_id}", ["queued_id"], id="tasks-global"
        ),
        pytest.param("/tasks?error_code=no_capacity", ["failed_id"], id="tasks-error"),
        pytest.param("/tasks?queue=host-1", ["queued_id"], id="tasks-queue"),
        pytest.param("/tasks?queue=host-2", [], id="tasks-other-queue"),
    ],
)
def test_lists_filter_by_who_asked_and_how_it_failed(
    app: TestApp, bulk: Bulk, url: str, expected: list[str]
) -> None:
    found = _ids(app, url.format(global_request_id=bulk.global_request_id))
    assert found == {getattr(bulk, name) for name in expected}


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("/tasks?global_request_id=abc", id="not-a-request-id"),
        pytest.param("/tasks?queue=a%20b", id="queue-with-space"),
        pytest.param("/tasks?user_id=", id="empty-user"),
        pytest.param("/tasks?error_code=%01", id="control-character"),
        pytest.param("/operations?queue=host-1", id="operations-have-no-queue"),
    ],
)
def test_a_bad_filter_is_a_400(app: TestApp, url: str) -> None:
    body = app.get(url, headers=A, status=400).json
    assert body["errors"][0]["code"] == "tasktoolkit.invalid_filter"


@pytest.mark.parametrize("path", ["/tasks", "/operations", "/clusters/{cluster}/tasks"])
def test_a_list_carries_a_weak_etag_and_answers_304(
    app: TestApp, session: Session, bulk: Bulk, path: str
) -> None:
    url = path.format(cluster=bulk.cluster_ids[0])
    first = app.get(url, headers=A)
    etag = first.headers["ETag"]
    assert etag.startswith('W/"')
    again = app.get(url, headers={**A, "If-None-Match": etag}, status=304)
    assert again.headers["ETag"] == etag and not again.body
    # Another page, or a change on this one, is another tag.
    assert app.get(f"{url}?state=succeeded", headers=A).headers["ETag"] != etag
    fail_task(session, bulk.first_id, code="late", message="changed")
    session.commit()
    changed = app.get(url, headers={**A, "If-None-Match": etag}, status=200)
    assert changed.headers["ETag"] != etag

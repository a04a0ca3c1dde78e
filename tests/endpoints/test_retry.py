"""Re-running failed work through the whole stack: a new operation, attempts kept, 409s,
authorization, keyed replays, the resource's derived status, on every database."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from webtest import TestApp

from tasktoolkit import context
from tasktoolkit.orm import ResourceStatus, Task
from tasktoolkit.orm._transitions import cancel_task, fail_task, start_task, succeed_task
from tasktoolkit.orm._workers import WORKER_ERROR, WORKER_ERROR_MESSAGE
from tests.endpoints.conftest import Seeded, build_app, caller, open_post, seed_project
from tests.middleware.stacks import Stacks
from tests.models import Cluster

A = caller("project-a")
ADMIN = caller("project-admin", admin=True)
READER = {"X-Project-Id": "project-a", "X-User-Id": "reader-a", "X-Roles": "reader"}


@pytest.fixture
def stack(engine: Engine, session_factory: sessionmaker[Session]) -> Iterator[TestApp]:
    """The endpoints behind both middlewares: a re-run is a request's own operation."""
    stacks = Stacks(engine)
    try:
        yield stacks.test_app(build_app(session_factory).app)
    finally:
        stacks.close()


@pytest.fixture
def seeded(session: Session) -> Seeded:
    return seed_project(session, "project-a")


def _ran_and_failed(session: Session, seeded: Seeded) -> str:
    """The seeded running task, failed by its worker: one attempt on record."""
    fail_task(session, seeded.running_id, code="l2_down", message="no agent", host="worker-1")
    session.commit()
    return seeded.running_id


def _stored(session_factory: sessionmaker[Session], task_id: str) -> Task:
    with session_factory() as session:
        return session.execute(select(Task).where(Task.id == task_id)).scalar_one()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/tasks/{task}/retry", id="tasks"),
        pytest.param("/clusters/{cluster}/tasks/{task}/retry", id="under-the-resource"),
    ],
)
def test_a_failed_task_is_re_run_as_the_requests_own_operation(
    stack: TestApp,
    session: Session,
    session_factory: sessionmaker[Session],
    seeded: Seeded,
    path: str,
) -> None:
    task_id = _ran_and_failed(session, seeded)
    url = path.format(task=task_id, cluster=seeded.cluster_id)
    response = stack.post(url, headers=A, status=202)
    rerun = response.json["task"]
    assert (rerun["state"], rerun["error"], rerun["request_id"]) == (
        "pending",
        None,
        response.headers["X-Request-Id"],
    )
    assert [a["error"]["code"] for a in rerun["attempts"]] == ["l2_down"]  # kept
    # The re-run is the request's operation, naming the one it re-ran.
    location = urlsplit(response.headers["Operation-Location"]).path
    operation = stack.get(location, headers=A).json["operation"]
    assert (operation["retry_of"], operation["state"]) == (seeded.operation_id, "running")
    assert [t["id"] for t in operation["tasks"]] == [task_id]
    assert operation["resources"] == [{"type": "cluster", "id": seeded.cluster_id}]
    # Its worker runs it again: a second attempt, and the re-run succeeds.
    start_task(session, task_id, host="worker-2")
    succeed_task(session, task_id, host="worker-2")
    session.commit()
    done = stack.get(location, headers=A).json["operation"]
    assert (done["state"], done["error"]) == ("succeeded", None)
    assert [a["outcome"] for a in done["tasks"][0]["attempts"]] == ["failed", "succeeded"]
    # The operation it ended in keeps its counts and its first failure.
    old = stack.get(f"/operations/{seeded.operation_id}", headers=A).json["operation"]
    assert old["task_counts"]["failed"] == 2 and old["state"] == "running"
    assert _stored(session_factory, task_id).max_attempts == 2  # its attempts counted afresh


def test_an_operation_re_runs_its_failed_and_cancelled_tasks(
    stack: TestApp, session: Session, session_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    cancel_task(session, seeded.pending_id)
    session.commit()
    response = stack.post(f"/operations/{seeded.operation_id}/retry", headers=A, status=202)
    operation = response.json["operation"]
    assert operation["id"] == response.headers["X-Request-Id"]
    assert operation["retry_of"] == seeded.operation_id
    assert sorted(t["id"] for t in operation["tasks"]) == sorted(
        [seeded.failed_id, seeded.pending_id]
    )
    assert {t["state"] for t in operation["tasks"]} == {"pending"}
    assert operation["task_counts"]["pending"] == 2
    # Nothing failed or cancelled is left: a second re-run has nothing to do.
    again = stack.post(f"/operations/{seeded.operation_id}/retry", headers=A, status=409)
    assert again.json["errors"][0]["code"] == "tasktoolkit.nothing_to_rerun"
    assert _stored(session_factory, seeded.running_id).state == "running"  # untouched


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        pytest.param(
            "/tasks/{pending}/retry", A, 409, "tasktoolkit.nothing_to_rerun", id="pending"
        ),
        pytest.param(
            "/tasks/{succeeded}/retry", A, 409, "tasktoolkit.nothing_to_rerun", id="succeeded"
        ),
        pytest.param("/tasks/{failed}/retry", READER, 403, "tasktoolkit.forbidden", id="reader"),
        pytest.param(
            "/operations/{operation}/retry", READER, 403, "tasktoolkit.forbidden", id="reader-op"
        ),
        pytest.param(
            "/tasks/{failed}/retry",
            caller("project-b"),
            404,
            "tasktoolkit.task_not_found",
            id="other-project",
        ),
    ],
)
def test_a_refused_re_run_changes_nothing(
    stack: TestApp,
    session_factory: sessionmaker[Session],
    seeded: Seeded,
    path: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    url = path.format(
        pending=seeded.pending_id,
        succeeded=seeded.succeeded_id,
        failed=seeded.failed_id,
        operation=seeded.operation_id,
    )
    refused = stack.post(url, headers=headers, status=status)
    assert refused.json["errors"][0]["code"] == code
    assert _stored(session_factory, seeded.failed_id).state == "failed"


def test_a_keyed_re_run_is_replayed(
    stack: TestApp, session_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    keyed = {**A, "Idempotency-Key": "rerun-1"}
    first = stack.post(f"/tasks/{seeded.failed_id}/retry", headers=keyed, status=202)
    replay = stack.post(f"/tasks/{seeded.failed_id}/retry", headers=keyed, status=202)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json == first.json
    assert replay.headers["Operation-Location"] == first.headers["Operation-Location"]
    assert _stored(session_factory, seeded.failed_id).request_id == first.headers["X-Request-Id"]


def test_the_resources_derived_status_follows_a_re_run(
    stack: TestApp, session: Session
) -> None:
    rid = context.new_request_id()
    open_post(session, rid, "project-a")
    cluster = Cluster(name="c", project_id="project-a")
    session.add(cluster)
    session.flush()
    with context.request_context(
        context.RequestContext(request_id=rid, project_id="project-a", operation_id=rid)
    ):
        [task] = cluster.spawn_tasks(["l2_wiring"])
    session.commit()
    start_task(session, task.id, host="worker-1")
    fail_task(session, task.id, code="l2_down", message="no agent", host="worker-1")
    session.commit()
    assert cluster.task_status == ResourceStatus.ERROR
    stack.post(f"/clusters/{cluster.id}/tasks/{task.id}/retry", headers=A, status=202)
    session.commit()  # a new snapshot (MariaDB reads under REPEATABLE READ)
    assert cluster.task_status == ResourceStatus.BUSY
    start_task(session, task.id, host="worker-1")
    succeed_task(session, task.id, host="worker-1")
    session.commit()
    assert cluster.task_status == ResourceStatus.IDLE


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        pytest.param(A, WORKER_ERROR_MESSAGE, id="member"),
        pytest.param(ADMIN, "KeyError: 'mac'", id="admin"),
    ],
)
def test_an_operations_error_is_its_first_failure(
    stack: TestApp, session: Session, seeded: Seeded, headers: dict[str, str], message: str
) -> None:
    fail_task(session, seeded.running_id, code=WORKER_ERROR, message="KeyError: 'mac'")
    session.commit()
    operation = stack.get(f"/operations/{seeded.operation_id}", headers=headers).json
    # The seeded dhcp failure came first; the unexpected one is the error of its re-run.
    assert operation["operation"]["error"] == {
        "code": "dhcp_down",
        "message": "no dhcp agent",
        "task_id": seeded.failed_id,
        "task_name": "dhcp",
    }
    response = stack.post(f"/tasks/{seeded.running_id}/retry", headers=A, status=202)
    location = urlsplit(response.headers["Operation-Location"]).path
    start_task(session, seeded.running_id, host="worker-1")
    fail_task(session, seeded.running_id, code=WORKER_ERROR, message="KeyError: 'mac'")
    session.commit()
    rerun = stack.get(location, headers=headers).json["operation"]
    assert rerun["state"] == "failed"
    assert rerun["error"] == {
        "code": WORKER_ERROR,
        "message": message,
        "task_id": seeded.running_id,
        "task_name": "l2_wiring",
    }

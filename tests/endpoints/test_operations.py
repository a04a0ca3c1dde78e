"""Operations through the endpoints: filters, cancelling one as a whole, on every database."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from webtest import TestApp

from tasktoolkit import context
from tasktoolkit.orm import Operation, Task, Worker
from tasktoolkit.orm._operations import OperationFields, Target, end_request, open_operation
from tasktoolkit.orm._transitions import succeed_task
from tests.endpoints.conftest import Seeded, caller, seed_project

A = caller("project-a")
B = caller("project-b")
ADMIN = caller("project-admin", admin=True)


@pytest.fixture
def seeded(session: Session) -> Seeded:
    return seed_project(session, "project-a")


def _operation(
    session: Session, project: str, method: str, action: str | None, **target: str
) -> str:
    """A finished operation of ``project``, as the middleware records one."""
    rid = context.new_request_id()
    fields = OperationFields(id=rid, method=method, path="/x", project_id=project)
    open_operation(session.connection(), fields)
    end_request(session.connection(), rid, 204, target=Target(action, **target))
    session.commit()
    return rid


@pytest.fixture
def history(session: Session, seeded: Seeded) -> dict[str, str]:
    """Operations of project-a (and one of project-b) with actions, methods and targets
    (ids no node of the seeded create, whose operation touched it, can have)."""
    return {
        "create": seeded.operation_id,  # POST, action create, target cluster/None
        "update": _operation(
            session, "project-a", "PUT", "update", resource_type="node", resource_id="n7"
        ),
        "delete": _operation(
            session, "project-a", "DELETE", "delete", resource_type="node", resource_id="n7"
        ),
        "other-node": _operation(
            session, "project-a", "DELETE", "delete", resource_type="node", resource_id="n8"
        ),
        "other-project": _operation(
            session, "project-b", "DELETE", "delete", resource_type="node", resource_id="n7"
        ),
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("action=delete", {"delete", "other-node"}, id="action"),
        pytest.param("action=create", {"create"}, id="action-create"),
        pytest.param("action=Delete", set(), id="action-exact-case"),
        pytest.param("method=DELETE", {"delete", "other-node"}, id="method"),
        pytest.param("method=put", {"update"}, id="method-any-case"),
        pytest.param("resource_type=node", {"update", "delete", "other-node"}, id="type"),
        pytest.param("resource_type=node&resource_id=n7", {"update", "delete"}, id="type-and-id"),
        pytest.param("resource_id=n8", {"other-node"}, id="resource-id"),
        pytest.param("action=delete&resource_id=n7", {"delete"}, id="combined"),
        pytest.param("state=running", {"create"}, id="state"),
        pytest.param("state=succeeded&method=PUT", {"update"}, id="state-and-method"),
    ],
)
def test_operation_filters(
    app: TestApp, history: dict[str, str], query: str, expected: set[str]
) -> None:
    body = app.get(f"/operations?{query}", headers=A).json
    names = {name for name, rid in history.items() if rid in {o["id"] for o in body["operations"]}}
    assert names == expected


def test_operation_filters_page_with_every_filter_kept(
    app: TestApp, history: dict[str, str]
) -> None:
    first = app.get("/operations?method=DELETE&limit=1", headers=A).json
    (link,) = first["operations_links"]
    assert "method=DELETE" in link["href"] and "marker=" in link["href"]
    second = app.get(link["href"], headers=A).json
    assert second["operations_links"] == []
    seen = {o["id"] for o in first["operations"] + second["operations"]}
    assert seen == {history["delete"], history["other-node"]}


def test_admins_filter_across_projects(app: TestApp, history: dict[str, str]) -> None:
    body = app.get("/operations?resource_type=node&resource_id=n7&method=DELETE", headers=ADMIN)
    assert {o["id"] for o in body.json["operations"]} == {
        history["delete"],
        history["other-project"],
    }


def _stored(session_factory: sessionmaker[Session], task_id: str) -> Task:
    with session_factory() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task


def test_cancel_an_operation_cancels_pending_and_asks_running_to_stop(
    app: TestApp, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    response = app.post(f"/operations/{seeded.operation_id}/cancel", headers=A, status=202)
    operation = response.json["operation"]
    states = {t["id"]: t["state"] for t in operation["tasks"]}
    assert states[seeded.pending_id] == "cancelled"
    assert states[seeded.running_id] == "running"
    assert states[seeded.failed_id] == "failed" and states[seeded.succeeded_id] == "succeeded"
    assert operation["task_counts"]["cancelled"] == 2  # the cluster's pending one, the node's
    assert _stored(session_factory, seeded.running_id).cancel_requested
    assert not _stored(session_factory, seeded.succeeded_id).cancel_requested
    # Asked again while the running task has not stopped: still 202, nothing more moves.
    again = app.post(f"/operations/{seeded.operation_id}/cancel", headers=A, status=202)
    assert again.json["operation"]["task_counts"] == operation["task_counts"]


def test_cancel_a_finished_operation_is_409(
    app: TestApp, history: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    response = app.post(f"/operations/{history['update']}/cancel", headers=A, status=409)
    (error,) = response.json["errors"]
    assert error["code"] == "tasktoolkit.invalid_transition"
    assert "'succeeded'" in error["detail"]
    with session_factory() as session:
        assert session.get(Operation, history["update"]).state == "succeeded"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        pytest.param("/operations/{operation}/cancel", B, id="other-project"),
        pytest.param("/operations/{operation}/cancel", {}, id="no-project"),
        pytest.param("/operations/{expired}/cancel", A, id="expired"),
        pytest.param(
            "/operations/req-00000000-0000-4000-8000-000000000000/cancel", A, id="unknown"
        ),
        pytest.param("/operations/not-a-request-id/cancel", A, id="malformed"),
    ],
)
def test_cancel_an_operation_the_caller_cannot_see_is_404(
    app: TestApp,
    seeded: Seeded,
    session_factory: sessionmaker[Session],
    path: str,
    headers: dict[str, str],
) -> None:
    url = path.format(operation=seeded.operation_id, expired=seeded.expired_operation_id)
    response = app.post(url, headers=headers, status=404)
    assert response.json["errors"][0]["status"] == 404
    assert _stored(session_factory, seeded.pending_id).state == "pending"


def test_cancel_an_operation_with_parameters_is_400(app: TestApp, seeded: Seeded) -> None:
    app.post(f"/operations/{seeded.operation_id}/cancel?force=1", headers=A, status=400)
    app.get(f"/operations/{seeded.operation_id}/cancel", headers=A, status=405)


@pytest.mark.parametrize("round_", range(4))
def test_cancel_racing_a_workers_finish_loses_no_count(
    app: TestApp,
    seeded: Seeded,
    engine: Engine,
    session_factory: sessionmaker[Session],
    round_: int,
) -> None:
    worker = Worker(engine, host="worker-1")  # the seeded running task's worker
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def finish() -> None:
        try:
            barrier.wait()
            with worker.transaction() as session:  # as the task's job would
                succeed_task(session, seeded.running_id, host=worker.host, result={"round": round_})
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=finish)
    thread.start()
    barrier.wait()
    response = app.post(f"/operations/{seeded.operation_id}/cancel", headers=A)
    thread.join(timeout=30)
    assert not errors, errors
    assert response.status_int == 202
    # Whoever came first, the worker's finish lands: a cancel only asks a running task to stop.
    finished = _stored(session_factory, seeded.running_id)
    assert (finished.state, finished.result) == ("succeeded", {"round": round_})
    with session_factory() as session:
        operation = session.get(Operation, seeded.operation_id)
        assert operation is not None
        assert operation.task_counts == {
            "pending": 0,
            "running": 0,
            "succeeded": 3,  # with the expired one, still counted
            "failed": 1,
            "cancelled": 2,
        }

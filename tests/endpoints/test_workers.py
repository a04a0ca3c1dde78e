"""``GET /workers`` (admins and system readers), and why a pending task waits."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from webtest import TestApp

from tasktoolkit.orm import Worker
from tasktoolkit.orm._records import tasks_table, workers_table
from tests.clock import age
from tests.endpoints.conftest import Seeded, caller, seed_project

ADMIN = caller("project-a", admin=True)
MEMBER = caller("project-a")
SYSTEM_READER = {"OpenStack-System-Scope": "all", "X-Roles": "reader", "X-User-Id": "auditor"}
PROJECT_ADMIN = {"X-Project-Id": "project-a", "X-User-Id": "boss", "X-Roles": "admin"}


@pytest.fixture
def seeded(session: Session) -> Seeded:
    return seed_project(session, "project-a")


@pytest.fixture
def worker(engine: Engine, seeded: Seeded) -> Worker:
    """A live worker of ``security_groups`` (the seeded pending task's name), claiming nothing."""
    found = Worker(engine, ["security_groups"], queues=[None], host="node-1:4242")
    found.claim(["nothing"])  # announced with its names; it takes no seeded task

    return found


@pytest.mark.parametrize(
    ("who", "status"),
    [
        pytest.param(ADMIN, 200, id="system-admin"),
        pytest.param(SYSTEM_READER, 200, id="system-reader"),
        pytest.param(MEMBER, 403, id="member"),
        pytest.param(PROJECT_ADMIN, 403, id="project-admin"),
        pytest.param({}, 403, id="no-role"),
    ],
)
def test_workers_are_listed_to_admins_and_system_readers(
    app: TestApp, worker: Worker, who: dict[str, str], status: int
) -> None:
    response = app.get("/workers", headers=who, status=status)
    if status == 403:
        assert response.json["errors"][0]["code"] == "tasktoolkit.forbidden"
        return
    (listed,) = response.json["workers"]
    assert listed["id"] == "node-1:4242"
    assert (listed["kind"], listed["names"], listed["queues"]) == (
        "database",
        ["security_groups"],
        [None],
    )
    assert listed["live"] is True and listed["timeout"] == 60
    assert listed["beat_at"].endswith("Z") and listed["started_at"] == listed["beat_at"]


def test_workers_take_no_query_parameters(app: TestApp, worker: Worker) -> None:
    app.get("/workers?limit=1", headers=ADMIN, status=400)


def test_a_worker_gone_stale_is_listed_not_live(
    app: TestApp, engine: Engine, worker: Worker
) -> None:
    age(engine, workers_table, beat_at=timedelta(minutes=2))
    (listed,) = app.get("/workers", headers=ADMIN).json["workers"]
    assert listed["live"] is False


def _waiting(app: TestApp, seeded: Seeded) -> str | None:
    found: str | None = app.get(f"/tasks/{seeded.pending_id}", headers=MEMBER).json["task"][
        "waiting"
    ]
    return found


def test_a_pending_task_nobody_serves_waits_for_a_worker(
    app: TestApp, engine: Engine, seeded: Seeded
) -> None:
    assert _waiting(app, seeded) == "no_worker"
    listed = app.get("/tasks?state=active", headers=MEMBER).json["tasks"]
    waiting = {t["name"]: t["waiting"] for t in listed}
    assert waiting == {"security_groups": "no_worker", "boot": "no_worker", "l2_wiring": None}
    operation = app.get(f"/operations/{seeded.operation_id}", headers=MEMBER).json["operation"]
    assert {t["waiting"] for t in operation["tasks"] if t["state"] == "pending"} == {"no_worker"}
    assert {t["waiting"] for t in operation["tasks"] if t["state"] != "pending"} == {None}


def test_a_live_worker_serving_it_ends_the_wait_and_a_stale_one_does_not(
    app: TestApp, engine: Engine, seeded: Seeded, worker: Worker
) -> None:
    assert _waiting(app, seeded) is None
    age(engine, workers_table, beat_at=timedelta(minutes=2))
    assert _waiting(app, seeded) == "no_worker"


def test_a_worker_on_another_queue_does_not_serve_it(
    app: TestApp, engine: Engine, seeded: Seeded
) -> None:
    Worker(engine, ["security_groups"], queues=["node-9"], host="node-9:1").claim()
    assert _waiting(app, seeded) == "no_worker"


def test_a_worker_that_stopped_serves_it_no_more(
    app: TestApp, seeded: Seeded, worker: Worker
) -> None:
    worker.stop(0)
    worker.close()
    assert _waiting(app, seeded) == "no_worker"


@pytest.mark.parametrize(
    ("not_before", "waiting"),
    [
        pytest.param(timedelta(minutes=-5), "backoff", id="backoff-not-over"),
        pytest.param(timedelta(minutes=5), None, id="backoff-over"),
    ],
)
def test_a_pending_task_waits_out_its_backoff_on_the_database_clock(
    app: TestApp,
    engine: Engine,
    seeded: Seeded,
    worker: Worker,
    not_before: timedelta,
    waiting: str | None,
) -> None:
    # age() sets the time that long before the database's now: a negative age is ahead.
    age(engine, tasks_table, tasks_table.c.id == seeded.pending_id, not_before=not_before)
    assert _waiting(app, seeded) == waiting


@pytest.mark.parametrize(
    ("who", "boot_pending", "security_groups_pending"),
    [
        pytest.param(MEMBER, 1, 1, id="member-own-project"),
        pytest.param(ADMIN, 2, 2, id="admin-every-project"),
        pytest.param(SYSTEM_READER, 2, 2, id="system-reader-every-project"),
    ],
)
def test_task_stats_count_the_projects_the_caller_may_list(
    app: TestApp,
    projects: tuple[Seeded, Seeded],
    who: dict[str, str],
    boot_pending: int,
    security_groups_pending: int,
) -> None:
    stats = app.get("/tasks/stats", headers=who).json["stats"]
    by_name = {s["name"]: s for s in stats}
    assert by_name["boot"]["pending"] == boot_pending
    assert by_name["security_groups"]["pending"] == security_groups_pending
    assert by_name["l2_wiring"]["running"] == boot_pending
    assert by_name["dhcp"]["failed_last_hour"] == {"dhcp_down": boot_pending}
    assert by_name["boot"]["oldest_pending_seconds"] >= 0
    assert by_name["anti_spoofing"]["attempts_last_hour"] == boot_pending


def test_task_stats_of_a_caller_without_a_role_are_empty(
    app: TestApp, projects: tuple[Seeded, Seeded]
) -> None:
    assert app.get("/tasks/stats", headers={}).json == {"stats": []}
    app.get("/tasks/stats?name=boot", headers=ADMIN, status=400)

"""Bad input on every endpoint is a 400 in the contract's error format, nothing else."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from webtest import TestApp, TestRequest

from tasktoolkit.orm import Operation, Task
from tests.endpoints.conftest import Seeded, caller, random_task_id, seed_project

REQUEST_ID = re.compile(r"\Areq-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
A = caller("project-a")


@pytest.fixture
def projects(session: Session) -> tuple[Seeded, Seeded]:
    return seed_project(session, "project-a"), seed_project(session, "project-b")


LIST_CASES = [
    pytest.param("foo=1", id="unknown-parameter"),
    pytest.param("State=running", id="parameter-case"),
    pytest.param("state=bogus", id="bogus-state"),
    pytest.param("state=RUNNING", id="upper-case-state"),
    pytest.param("state=", id="empty-state"),
    pytest.param("state=running,", id="trailing-comma"),
    pytest.param("state=running&state=bogus", id="repeated-with-bogus"),
    pytest.param("name=", id="empty-name"),
    pytest.param("name=x'%20OR%20'1'='1", id="sql-in-name"),
    pytest.param("name=a&name=b", id="repeated-name"),
    pytest.param("request_id=abc", id="bad-request-id"),
    pytest.param(
        "request_id=req-1'%3B%20DROP%20TABLE%20tasktoolkit_tasks%3B--", id="sql-request-id"
    ),
    pytest.param("resource_type=Cluster", id="upper-case-resource-type"),
    pytest.param("resource_type=spaceship", id="unknown-resource-type"),
    pytest.param("resource_id=1%3BDROP%20TABLE%20clusters", id="sql-resource-id"),
    pytest.param("resource_id=", id="empty-resource-id"),
    pytest.param("changes-since=yesterday", id="bad-date"),
    pytest.param("changes-since=2024-13-01", id="month-13"),
    pytest.param("changes-since=2024-01-01T00:00:00%2B25:00", id="bad-offset"),
    pytest.param("changes-since=0001-01-01T00:00:00%2B05:00", id="offset-before-year-1"),
    pytest.param("changes-before=9999-12-31T23:59:59-05:00", id="offset-past-year-9999"),
    pytest.param("changes-before=2024-01-01T00:00:00Z%27--", id="sql-in-date"),
    pytest.param(
        "changes-since=2024-02-01T00:00:00Z&changes-before=2024-01-01T00:00:00Z",
        id="before-earlier-than-since",
    ),
    pytest.param("changes-since=2024-01-01&changes-since=2024-01-02", id="repeated-since"),
    pytest.param("limit=0", id="limit-0"),
    pytest.param("limit=-1", id="limit-negative"),
    pytest.param("limit=10**12", id="limit-10**12-literal"),
    pytest.param("limit=" + "0" * 19, id="limit-nineteen-zeros"),
    pytest.param("limit=abc", id="limit-not-a-number"),
    pytest.param("limit=1.5", id="limit-float"),
    pytest.param("limit=", id="limit-empty"),
    pytest.param("limit=%205", id="limit-space"),
    pytest.param("limit=0x10", id="limit-hex"),
    pytest.param("limit=%EF%BC%95", id="limit-fullwidth-digit"),
    pytest.param("limit=1&limit=2", id="repeated-limit"),
    pytest.param("marker={random}", id="marker-unknown"),
    pytest.param("marker={other}", id="marker-other-project"),
    pytest.param("marker={expired}", id="marker-expired"),
    pytest.param("marker={failed}&state=running", id="marker-filtered-out"),
    pytest.param("marker=not-a-uuid", id="marker-malformed"),
    pytest.param("marker={failed}&marker={failed}", id="repeated-marker"),
    pytest.param("sort_key=id", id="sort-key-id"),
    pytest.param("sort_key=created_at%20desc", id="sort-key-with-direction"),
    pytest.param("sort_key=created_at%3BDROP%20TABLE%20tasktoolkit_tasks", id="sql-in-sort-key"),
    pytest.param("sort_key=name&sort_key=state", id="repeated-sort-key"),
    pytest.param("sort_dir=up", id="bad-sort-dir"),
    pytest.param("sort_dir=asc&sort_dir=desc", id="repeated-sort-dir"),
    pytest.param("name=%FF", id="percent-encoded-non-utf8"),
    pytest.param("name=%C3%28", id="invalid-utf8-sequence"),
    pytest.param("&".join(f"state=running{n}" for n in range(100)), id="too-many-parameters"),
]


def _check(response_json: dict[str, object]) -> None:
    errors = response_json["errors"]
    assert isinstance(errors, list) and len(errors) == 1
    error = errors[0]
    assert set(error) == {"request_id", "code", "status", "title", "detail"}
    assert REQUEST_ID.match(error["request_id"])
    assert error["code"] == "tasktoolkit.invalid_filter"
    assert (error["status"], error["title"]) == (400, "Bad Request")
    assert error["detail"]


def _fill(template: str, a: Seeded, b: Seeded) -> str:
    """``template`` with project ``a``'s records (and ``b``'s as the other project's)."""
    return template.format(
        random=random_task_id(),
        other=b.pending_id,
        expired=a.expired_id,
        failed=a.failed_id,
        cluster=a.cluster_id,
        task=a.pending_id,
        operation=a.operation_id,
        other_operation=b.operation_id,
        expired_operation=a.expired_operation_id,
    )


def _counts(session: Session) -> tuple[int, int]:
    tasks = session.scalar(select(func.count()).select_from(Task))
    operations = session.scalar(select(func.count()).select_from(Operation))
    return int(tasks or 0), int(operations or 0)


TASK_LIST_CASES = [
    pytest.param(where, case.values[0], id=f"{name}-{case.id}")
    for name, where in (("tasks", "/tasks"), ("resource", "/clusters/{cluster}/tasks"))
    for case in LIST_CASES
    # On a resource's list the resource filters are unknown parameters (tested below).
    if where == "/tasks" or not str(case.values[0]).startswith("resource_")
]


@pytest.mark.parametrize(("where", "query"), TASK_LIST_CASES)
def test_bad_task_list_queries_are_400(
    app: TestApp,
    session: Session,
    projects: tuple[Seeded, Seeded],
    where: str,
    query: str,
) -> None:
    a, b = projects
    before = _counts(session)
    url = where.format(cluster=a.cluster_id) + "?" + _fill(query, a, b)
    _check(app.get(url, headers=A, status=400).json)
    session.expire_all()
    assert _counts(session) == before
    assert len(app.get("/tasks", headers=A).json["tasks"]) == len(a.task_ids)


OPERATION_LIST_CASES = [
    pytest.param("name=dhcp", id="operations-have-no-name"),
    pytest.param("state=pending", id="task-state"),
    pytest.param("state=bogus", id="bogus-state"),
    pytest.param("sort_key=name", id="sort-by-name"),
    pytest.param("marker={failed}", id="task-id-as-marker"),
    pytest.param("marker=req-{random}", id="marker-unknown"),
    pytest.param("marker={other_operation}", id="marker-other-project"),
    pytest.param("marker={expired_operation}", id="marker-expired"),
    pytest.param("limit=0", id="limit-0"),
    pytest.param("limit=-1", id="limit-negative"),
    pytest.param("limit=10**12", id="limit-10**12-literal"),
    pytest.param("request_id=x'%20OR%201=1", id="sql-request-id"),
    pytest.param("resource_id=x'%20OR%201=1", id="sql-resource-id"),
    pytest.param("changes-since=2024-02-01&changes-before=2024-01-01", id="before-since"),
    pytest.param("sort_dir=asc&sort_dir=asc", id="repeated"),
    pytest.param("nope=1", id="unknown"),
    pytest.param("state=%FF", id="non-utf8"),
    pytest.param("action=", id="action-empty"),
    pytest.param("action=x'%20OR%201=1", id="sql-action"),
    pytest.param("action=" + "a" * 65, id="action-too-long"),
    pytest.param("action=create&action=delete", id="action-repeated"),
    pytest.param("method=", id="method-empty"),
    pytest.param("method=GET%20", id="method-space"),
    pytest.param("method=P%00ST", id="method-nul"),
    pytest.param("method=" + "P" * 17, id="method-too-long"),
]
SINGLE_RECORD_CASES = [
    pytest.param("/clusters/{cluster}/tasks?resource_type=cluster", id="resource-filter"),
    pytest.param("/clusters/{cluster}/tasks/{task}?foo=1", id="resource-task"),
    pytest.param("/tasks/{task}?fields=id", id="task"),
    pytest.param("/operations/{operation}?foo=", id="operation"),
    pytest.param("/tasks/{task}?%FF=1", id="task-non-utf8-name"),
]
GET_CASES = [
    pytest.param(f"/operations?{case.values[0]}", id=f"operation-list-{case.id}")
    for case in OPERATION_LIST_CASES
] + [pytest.param(case.values[0], id=f"single-record-{case.id}") for case in SINGLE_RECORD_CASES]


@pytest.mark.parametrize("url", GET_CASES)
def test_bad_operation_list_and_single_record_queries_are_400(
    app: TestApp, projects: tuple[Seeded, Seeded], url: str
) -> None:
    _check(app.get(_fill(url, *projects), headers=A, status=400).json)


def test_cancel_with_parameters_is_400_and_cancels_nothing(
    app: TestApp, projects: tuple[Seeded, Seeded]
) -> None:
    a, _ = projects
    url = f"/clusters/{a.cluster_id}/tasks/{a.pending_id}/cancel?force=1"
    _check(app.post(url, headers=A, status=400).json)
    assert app.get(f"/tasks/{a.pending_id}", headers=A).json["task"]["state"] == "pending"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("name=\xff\xfe", id="raw-latin1-bytes"),
        pytest.param("state=run\xe9", id="raw-e-acute"),
    ],
)
def test_raw_non_utf8_query_strings_are_400(
    app: TestApp, projects: tuple[Seeded, Seeded], raw: str
) -> None:
    request = TestRequest.blank("/tasks", headers=A)
    request.environ["QUERY_STRING"] = raw
    _check(app.do_request(request, status=400).json)

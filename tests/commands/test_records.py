"""``tasktoolkit tasks|operations list|show|cancel``: on the database and over HTTP, the same
views, filters and errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import commands
from tests.commands.conftest import AS_ADMIN, Counted, claim, run, spawn

#: The variables that would send a command to a service instead of the database.
SERVICE_ENV = (
    "TASKTOOLKIT_DB_URL",
    "TASKTOOLKIT_URL",
    "OS_CLOUD",
    "OS_AUTH_URL",
    "OS_AUTH_TYPE",
    "OS_TOKEN",
)
UNKNOWN_TASK = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(autouse=True)
def _no_service_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SERVICE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["database", "http"])
def where(
    request: pytest.FixtureRequest, db_url: str, served: Callable[..., tuple[str, Counted]]
) -> list[str]:
    """The options of a command that asks the database, or the endpoints over HTTP (as a
    system admin, who sees what an operator sees)."""
    if request.param == "database":
        return ["--db-url", db_url]
    return ["--url", served()[0], *AS_ADMIN]


@pytest.fixture
def records(engine: Engine, session_factory: sessionmaker[Session]) -> Iterator[dict[str, str]]:
    """A running operation (``rid``) whose task ``build`` failed and ``wire`` is pending."""
    rid, (build, wire) = spawn(session_factory, ["build", "wire"])
    job = claim(engine, ["build"])
    assert job.id == build
    job.fail("no_capacity", "the rack is full")
    yield {"rid": rid, "build": build, "wire": wire}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(
            [
                "tasks",
                "list",
                "--request-id",
                "{rid}",
                "--sort-key",
                "name",
                "--sort-dir",
                "asc",
                "-f",
                "value",
                "-c",
                "name",
                "-c",
                "state",
            ],
            "build failed\nwire pending\n",
            id="tasks-list-value",
        ),
        pytest.param(
            ["tasks", "list", "--state", "failed", "-f", "csv", "-c", "name", "-c", "error"],
            'name,error\nbuild,"{{""code"":""no_capacity"",""message"":""the rack is full"",'
            '""traceback"":null}}"\n',
            id="tasks-list-csv-nested-as-json",
        ),
        pytest.param(
            ["tasks", "list", "--name", "wire", "--state", "active", "-c", "name", "-c", "state"],
            "+------+---------+\n"
            "| name | state   |\n"
            "+------+---------+\n"
            "| wire | pending |\n"
            "+------+---------+\n",
            id="tasks-list-table",
        ),
        pytest.param(["tasks", "list", "--name", "nothing"], "", id="tasks-list-empty"),
        pytest.param(
            ["tasks", "show", "{build}", "-c", "name", "-c", "state"],
            "+-------+--------+\n"
            "| Field | Value  |\n"
            "+-------+--------+\n"
            "| name  | build  |\n"
            "| state | failed |\n"
            "+-------+--------+\n",
            id="tasks-show-table",
        ),
        pytest.param(
            ["tasks", "show", "{build}", "-f", "value", "-c", "state", "-c", "progress"],
            "failed\n\n",
            id="tasks-show-value",
        ),
        pytest.param(
            [
                "operations",
                "list",
                "--request-id",
                "{rid}",
                "-f",
                "value",
                "-c",
                "id",
                "-c",
                "state",
                "-c",
                "task_counts",
            ],
            '{rid} running {{"cancelled":0,"failed":1,"pending":1,"running":0,"succeeded":0}}\n',
            id="operations-list-value",
        ),
        pytest.param(
            ["operations", "show", "{rid}", "-f", "json", "-c", "state", "-c", "http_status"],
            '{{\n  "state": "running",\n  "http_status": 202\n}}\n',
            id="operations-show-json",
        ),
        pytest.param(
            ["tasks", "cancel", "{wire}", "-f", "value", "-c", "state"],
            "cancelled\n",
            id="tasks-cancel",
        ),
        pytest.param(
            ["operations", "cancel", "{rid}", "-f", "value", "-c", "state", "-c", "task_counts"],
            'failed\n{{"cancelled":1,"failed":1,"pending":0,"running":0,"succeeded":0}}\n',
            id="operations-cancel",
        ),
        pytest.param(
            ["tasks", "retry", "{build}", "-f", "value", "-c", "name", "-c", "state"],
            "build\npending\n",
            id="tasks-retry",
        ),
    ],
)
def test_each_action_prints_its_view(
    capsys: pytest.CaptureFixture[str],
    where: list[str],
    records: dict[str, str],
    argv: list[str],
    expected: str,
) -> None:
    status, out, err = run(capsys, *[a.format(**records) for a in argv], *where)
    assert (status, err) == (commands.EXIT_OK, "")
    assert out == expected.format(**records)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        pytest.param(["tasks", "show", UNKNOWN_TASK], f"no task '{UNKNOWN_TASK}'", id="no-task"),
        pytest.param(
            ["operations", "show", "req-00000000-0000-4000-8000-000000000000"],
            "no operation 'req-00000000-0000-4000-8000-000000000000'",
            id="no-operation",
        ),
        pytest.param(
            ["tasks", "cancel", "{build}"],
            "task {build} cannot go from 'failed' to 'cancelled'",
            id="cancel-an-ended-task",
        ),
        pytest.param(
            ["tasks", "retry", "{wire}"],
            "task {wire} is pending: only a failed or cancelled task is re-run",
            id="retry-an-active-task",
        ),
        pytest.param(
            ["tasks", "list", "--state", "bogus"], "state: 'bogus' is not one of", id="bad-state"
        ),
        pytest.param(
            ["operations", "list", "--changes-since", "yesterday"],
            "changes-since: 'yesterday' is not an ISO 8601 time",
            id="bad-time",
        ),
        pytest.param(
            ["tasks", "list", "-c", "bogus"], "no column 'bogus'; the columns are: id,", id="column"
        ),
    ],
)
def test_each_refusal_is_one_line(
    capsys: pytest.CaptureFixture[str],
    where: list[str],
    records: dict[str, str],
    argv: list[str],
    says: str,
) -> None:
    status, out, err = run(capsys, *[a.format(**records) for a in argv], *where)
    assert (status, out) == (commands.EXIT_ERROR, "")
    assert len(err.splitlines()) == 1 and err.startswith("tasktoolkit: error: ")
    assert says.format(**records) in err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["tasks", "show", "{build}"], id="task"),
        pytest.param(["operations", "show", "{rid}"], id="operation-with-its-tasks"),
        pytest.param(["tasks", "list"], id="tasks"),
        pytest.param(["operations", "list"], id="operations"),
    ],
)
def test_the_database_and_the_api_show_the_same_views(
    capsys: pytest.CaptureFixture[str],
    db_url: str,
    served: Callable[..., tuple[str, Counted]],
    records: dict[str, str],
    argv: list[str],
) -> None:
    argv = [a.format(**records) for a in argv]
    shown = []
    for where in (["--db-url", db_url], ["--url", served()[0], *AS_ADMIN]):
        status, out, err = run(capsys, *argv, "-f", "json", *where)
        assert (status, err) == (0, "")
        shown.append(json.loads(out))
    assert shown[0] == shown[1]


def test_a_task_is_cancelled_under_the_collection_given(
    capsys: pytest.CaptureFixture[str],
    served: Callable[..., tuple[str, Counted]],
    records: dict[str, str],
) -> None:
    url, _ = served(serve_openapi=False)
    argv = [
        "tasks",
        "cancel",
        records["wire"],
        "--url",
        url,
        *AS_ADMIN,
        "-f",
        "value",
        "-c",
        "state",
    ]
    status, out, err = run(capsys, *argv)
    assert (status, out) == (commands.EXIT_ERROR, "") and "pass --collection" in err
    assert run(capsys, *argv, "--collection", "clusters") == (0, "cancelled\n", "")


@pytest.mark.parametrize(
    "variable",
    [pytest.param("TASKTOOLKIT_URL", id="url"), pytest.param("OS_CLOUD", id="cloud")],
)
def test_a_database_given_wins_over_a_service_in_the_environment(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    records: dict[str, str],
    variable: str,
) -> None:
    monkeypatch.setenv(variable, "http://127.0.0.1:1" if variable.endswith("URL") else "nowhere")
    argv = ["operations", "list", "--db-url", db_url, "-f", "value", "-c", "id"]
    assert run(capsys, *argv) == (0, f"{records['rid']}\n", "")


def test_without_a_database_the_service_in_the_environment_is_asked(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    served: Callable[..., tuple[str, Counted]],
    records: dict[str, str],
) -> None:
    url, counted = served()
    monkeypatch.delenv("TASKTOOLKIT_DB_URL", raising=False)
    monkeypatch.setenv("TASKTOOLKIT_URL", url)
    argv = ["operations", "list", *AS_ADMIN, "-f", "value", "-c", "id"]
    assert run(capsys, *argv) == (0, f"{records['rid']}\n", "")
    assert counted.requests == 1


@pytest.mark.parametrize("kind", ["tasks", "operations"])
def test_a_page_with_more_after_it_says_the_next_marker_beside_the_list(
    capsys: pytest.CaptureFixture[str],
    where: list[str],
    session_factory: sessionmaker[Session],
    kind: str,
) -> None:
    spawn(session_factory, ["build"])
    spawn(session_factory, ["build"])
    listed = [kind, "list", *where, "-f", "value", "-c", "id"]
    status, out, err = run(capsys, *listed, "--limit", "1")
    assert status == 0 and len(out.splitlines()) == 1
    assert err == f"tasktoolkit: more {kind} follow: --marker {out.strip()}\n"
    status, last, err = run(capsys, *listed, "--limit", "1", "--marker", out.strip())
    assert (status, err) == (0, "") and len(last.splitlines()) == 1 and last != out


def test_an_operation_is_retried_and_its_failed_task_runs_again(
    capsys: pytest.CaptureFixture[str], where: list[str], records: dict[str, str]
) -> None:
    status, _, err = run(capsys, "operations", "retry", records["rid"], *where)
    assert (status, err) == (commands.EXIT_OK, "")
    shown = run(capsys, "tasks", "show", records["build"], "-f", "value", "-c", "state", *where)
    assert shown == (commands.EXIT_OK, "pending\n", "")
    again = run(capsys, "operations", "retry", records["rid"], *where)
    assert again[0] == commands.EXIT_ERROR and "no failed or cancelled task" in again[2]

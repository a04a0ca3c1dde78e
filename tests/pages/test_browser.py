"""The pages in a real browser (headless chromium), served by a real threaded server.

On SQLite and PostgreSQL: the timeline renders a row per task and a bar per
attempt; a page opened while tasks run follows them to the end without a
reload (its script waits on the JSON with ``Prefer: wait``, one wait at a
time), and so does a page without script (its refresh); hostile text runs
nothing; another project's page is a 404; no console error anywhere.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import routes
from sqlalchemy.orm import Session, sessionmaker

from sample_app._server import BackgroundServer
from tasktoolkit import Settings, context
from tasktoolkit.endpoints import Router, mount
from tasktoolkit.middleware import RequestIdMiddleware
from tasktoolkit.orm import TaskRules
from tasktoolkit.orm._operations import OperationFields, end_request, open_operation
from tasktoolkit.orm._transitions import fail_task, report_progress, start_task, succeed_task
from tests.endpoints.conftest import COLLECTIONS, caller
from tests.models import Cluster
from tests.pages.conftest import HOSTILE, Drawn, seed_operation

#: Longest a page may take to show a change.
SHOWN = 20_000


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql")],
)
def backend(request: pytest.FixtureRequest) -> str:
    """The pages are tested in the browser on SQLite (polling waits) and PostgreSQL (LISTEN)."""
    return str(request.param)


@pytest.fixture
def server(request: pytest.FixtureRequest, session_factory: sessionmaker[Session]) -> Iterator[str]:
    """The endpoints behind the request-id middleware, on a threaded server; its URL.

    Parametrized indirectly, its parameter is the :class:`Settings`' options. Its
    waits are short (2 s), and it stops once the waits it held are over, before
    the test's database goes.
    """
    settings = Settings(**{"max_wait": 2, **getattr(request, "param", {})})
    mapper = routes.Mapper()
    endpoints = mount(
        mapper, collections=COLLECTIONS, session_factory=session_factory, settings=settings
    )
    try:
        with BackgroundServer(RequestIdMiddleware(Router(mapper))) as served:
            yield served.url
        deadline = time.monotonic() + 10
        while endpoints.waiting and time.monotonic() < deadline:
            time.sleep(0.05)
        assert endpoints.waiting == 0, "a wait outlived its page"
    finally:
        endpoints.close()


@dataclass
class Tab:
    """A browser page and what it reported: console errors, dialogs, navigations, waits."""

    page: Any
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    navigations: int = 0
    waits: int = 0
    most_waits: int = 0


@pytest.fixture
def open_tab(browser: Any, server: str) -> Iterator[Callable[..., Tab]]:
    """``open_tab(path, project, admin=False, script=True)``: a fresh context at ``path``."""
    contexts: list[Any] = []

    def open_(path: str, project: str, *, admin: bool = False, script: bool = True) -> Tab:
        context_ = browser.new_context(
            extra_http_headers=caller(project, admin=admin), java_script_enabled=script
        )
        contexts.append(context_)
        tab = Tab(context_.new_page())
        tab.page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
        tab.page.on("pageerror", lambda e: tab.errors.append(str(e)))
        tab.page.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))

        def sent(request: Any) -> None:
            if request.is_navigation_request():
                tab.navigations += 1
            if "prefer" in request.headers:
                tab.waits += 1
                tab.most_waits = max(tab.most_waits, tab.waits)

        def ended(request: Any) -> None:
            if "prefer" in request.headers:
                tab.waits -= 1

        tab.page.on("request", sent)
        tab.page.on("requestfinished", ended)
        tab.page.on("requestfailed", ended)
        tab.response = tab.page.goto(server + path)  # type: ignore[attr-defined]
        return tab

    yield open_
    for context_ in contexts:
        context_.close()


def json_of(server: str, path: str, project: str) -> Any:
    request = urllib.request.Request(server + path, headers=caller(project))
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def running_operation(session: Session, project: str) -> tuple[str, list[str]]:
    """A ``POST`` of ``project``'s whose two tasks (two attempts each) are still pending."""
    rid = context.new_request_id()
    open_operation(
        session.connection(),
        OperationFields(id=rid, method="POST", path="/clusters", project_id=project),
    )
    cluster = Cluster(name="c", project_id=project)
    session.add(cluster)
    session.flush()
    ctx = context.RequestContext(request_id=rid, project_id=project, operation_id=rid)
    with context.request_context(ctx):
        tasks = cluster.spawn_tasks(["l2_wiring", "dhcp"], rules=TaskRules(max_attempts=2))
    end_request(session.connection(), rid, 202)
    session.commit()
    return rid, [task.id for task in tasks]


def row(task_id: str, state: str) -> str:
    return f'g.tt-row[data-task="{task_id}"][data-state="{state}"]'


def test_the_timeline_has_a_row_per_task_and_a_bar_per_attempt(
    session: Session, server: str, open_tab: Callable[..., Tab]
) -> None:
    drawn = seed_operation(session, "project-a")
    path = f"/operations/{drawn.operation_id}"
    tab = open_tab(path, "project-a")
    view = json_of(server, path, "project-a")["operation"]
    page = tab.page
    page.wait_for_selector("g.tt-row")
    assert page.locator("g.tt-row").count() == len(view["tasks"]) == 5
    for task in view["tasks"]:
        bars = page.locator(f'g.tt-row[data-task="{task["id"]}"] rect[data-kind="attempt"]')
        assert bars.count() == len(task["attempts"]), task["name"]
    retried = page.locator(f'g.tt-row[data-task="{drawn.tasks["dhcp"]}"] rect[data-kind="attempt"]')
    assert retried.count() == 2
    assert page.locator("svg.tt-timeline").first.is_visible()
    # the script ran: times are local, with UTC kept on hover
    assert page.locator("time[title$='UTC']").count() >= 1
    assert tab.errors == [] and tab.dialogs == []


def test_a_page_opened_while_tasks_run_moves_to_the_end_without_a_reload(
    session: Session, open_tab: Callable[..., Tab]
) -> None:
    rid, (first, second) = running_operation(session, "project-a")
    tab = open_tab(f"/operations/{rid}", "project-a", admin=True)
    page = tab.page
    page.wait_for_selector(row(first, "pending"), state="attached")

    def move(*moves: Callable[[], object]) -> None:
        for made in moves:
            made()
            session.commit()

    move(lambda: start_task(session, first, host="agent-1"))
    page.wait_for_selector(row(first, "running"), state="attached", timeout=SHOWN)
    move(lambda: report_progress(session, first, 50, message="halfway there"))
    page.get_by_text("50% halfway there").first.wait_for(timeout=SHOWN)
    move(lambda: succeed_task(session, first))
    page.wait_for_selector(row(first, "succeeded"), state="attached", timeout=SHOWN)

    move(
        lambda: start_task(session, second, host="agent-2"),
        lambda: fail_task(
            session, second, code="busy", message="again", traceback="Traceback: x", retry=True
        ),
    )
    page.wait_for_selector(f'{row(second, "pending")} rect[data-attempt="1"]', timeout=SHOWN)
    traceback = f'tr[data-task="{second}"] [data-attempt="1"] details'
    page.click(f"{traceback} summary")  # opened by the reader: it stays open across redraws
    move(lambda: start_task(session, second, host="agent-3"), lambda: succeed_task(session, second))

    page.wait_for_selector("main#tt-live:not([data-watch])", state="attached", timeout=SHOWN)
    assert page.locator("h1 .tt-state").inner_text() == "succeeded"
    assert page.locator(f'{row(second, "succeeded")} rect[data-kind="attempt"]').count() == 2
    assert page.locator(traceback).get_attribute("open") is not None
    assert tab.navigations == 1  # never reloaded
    assert tab.most_waits == 1  # one wait at a time
    assert tab.errors == []


def test_a_page_without_script_refreshes_to_the_end(
    session: Session, open_tab: Callable[..., Tab]
) -> None:
    rid, tasks = running_operation(session, "project-a")
    tab = open_tab(f"/operations/{rid}", "project-a", script=False)
    tab.page.wait_for_selector(row(tasks[0], "pending"), state="attached")
    for task_id in tasks:
        start_task(session, task_id)
        succeed_task(session, task_id)
    session.commit()
    tab.page.wait_for_selector(row(tasks[1], "succeeded"), state="attached", timeout=SHOWN)
    assert tab.page.locator("h1 .tt-state").inner_text() == "succeeded"
    assert tab.navigations >= 2  # its refresh
    assert tab.errors == []


@pytest.mark.parametrize(
    "admin", [pytest.param(False, id="member"), pytest.param(True, id="admin")]
)
def test_hostile_text_runs_nothing_and_shows_as_text(
    session: Session, open_tab: Callable[..., Tab], admin: bool
) -> None:
    drawn = seed_operation(
        session, "project-a", cluster_id=HOSTILE, message=HOSTILE, path=f"/clusters/{HOSTILE}"
    )
    for path in (f"/operations/{drawn.operation_id}", "/tasks", "/operations"):
        tab = open_tab(path, "project-a", admin=admin)
        page = tab.page
        page.wait_for_selector("main#tt-live", state="attached")
        assert page.locator("img").count() == 0, path
        assert page.get_by_text(HOSTILE).count() >= 1, path
        assert tab.dialogs == [] and tab.errors == [], path


def test_another_projects_page_is_a_404(session: Session, open_tab: Callable[..., Tab]) -> None:
    drawn = seed_operation(session, "project-a")
    tab = open_tab(f"/operations/{drawn.operation_id}", "project-b")
    assert tab.response.status == 404  # type: ignore[attr-defined]
    assert "404" in tab.page.locator("h1").inner_text()
    assert tab.page.get_by_text("wiring the port").count() == 0
    # the only console line is the browser's own note of the 404
    assert all("404" in error for error in tab.errors), tab.errors
    own = open_tab(f"/operations/{drawn.operation_id}", "project-a")
    assert own.response.status == 200  # type: ignore[attr-defined]


def test_the_operations_list_filters_with_its_form(
    session: Session, open_tab: Callable[..., Tab]
) -> None:
    drawn: Drawn = seed_operation(session, "project-a")
    rid, _ = running_operation(session, "project-a")
    tab = open_tab("/operations", "project-a")
    page = tab.page
    assert page.locator("tr[data-operation]").count() == 2
    page.fill("input[name=action]", "create")  # the other fields are left blank
    page.click("form.tt-filters button[type=submit]")
    page.wait_for_url("**/operations?state=&action=create*")
    page.wait_for_selector(f'tr[data-operation="{drawn.operation_id}"]')
    assert page.locator(f'tr[data-operation="{rid}"]').count() == 0
    assert page.locator("input[name=action]").input_value() == "create"
    assert tab.errors == []


def test_a_list_follows_its_active_records_to_the_end(
    session: Session, open_tab: Callable[..., Tab]
) -> None:
    rid, tasks = running_operation(session, "project-a")
    tab = open_tab("/operations", "project-a")
    page = tab.page
    page.wait_for_selector(f'tr[data-operation="{rid}"][data-state="running"]')
    for task_id in tasks:
        start_task(session, task_id)
        succeed_task(session, task_id)
    session.commit()
    page.wait_for_selector(f'tr[data-operation="{rid}"][data-state="succeeded"]', timeout=SHOWN)
    page.wait_for_selector("main#tt-live:not([data-watch])", state="attached", timeout=SHOWN)
    assert tab.navigations == 1 and tab.most_waits == 1
    assert tab.errors == []


@pytest.mark.parametrize("server", [pytest.param({"max_waiting": 0}, id="no-waits")], indirect=True)
def test_a_page_the_server_holds_no_wait_for_still_reaches_the_end(
    session: Session, open_tab: Callable[..., Tab]
) -> None:
    rid, tasks = running_operation(session, "project-a")
    tab = open_tab(f"/operations/{rid}", "project-a")
    tab.page.wait_for_selector(row(tasks[0], "pending"), state="attached")
    for task_id in tasks:
        start_task(session, task_id)
        succeed_task(session, task_id)
    session.commit()
    tab.page.wait_for_selector("main#tt-live:not([data-watch])", state="attached", timeout=SHOWN)
    assert tab.navigations == 1 and tab.errors == []

"""The pages through the endpoint stack: negotiation, scoping, escaping, assets, live marks."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
import routes
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from webtest import TestApp

from tasktoolkit import Settings, Toolkit
from tasktoolkit.pages import CONTENT_SECURITY_POLICY
from tests.endpoints.conftest import COLLECTIONS, build_app, caller
from tests.pages.conftest import BROWSER_ACCEPT, HOSTILE, Drawn, html_headers, seed_operation
from tests.pages.html import Page, read

ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"


@pytest.fixture
def drawn(session: Session) -> Drawn:
    return seed_operation(session, "project-a")


def page_paths(drawn: Drawn) -> dict[str, str]:
    """Each endpoint with a page, at a record of ``drawn``."""
    cluster = f"/clusters/{quote(drawn.cluster_id, safe='')}"
    return {
        "operation": f"/operations/{drawn.operation_id}",
        "operations": "/operations",
        "tasks": "/tasks",
        "resource_tasks": f"{cluster}/tasks",
        "task": f"/tasks/{drawn.tasks['dhcp']}",
        "resource_task": f"{cluster}/tasks/{drawn.tasks['dhcp']}",
    }


def get_page(app: TestApp, path: str, project: str = "project-a", **options: object) -> Page:
    response = app.get(path, headers=html_headers(project, **options))  # type: ignore[arg-type]
    assert response.content_type == "text/html", response.text[:300]
    return read(response.text)


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        pytest.param(None, "application/json", id="no-accept"),
        pytest.param("*/*", "application/json", id="anything"),
        pytest.param("application/json", "application/json", id="json"),
        pytest.param("text/html, application/json", "application/json", id="tie"),
        pytest.param(BROWSER_ACCEPT, "text/html", id="browser"),
    ],
)
def test_a_page_only_for_a_request_that_prefers_html(
    app: TestApp, drawn: Drawn, accept: str | None, kind: str
) -> None:
    headers = caller("project-a") | ({"Accept": accept} if accept else {})
    for name, path in page_paths(drawn).items():
        response = app.get(path, headers=headers)
        assert response.content_type == kind, name
        assert response.headers["Vary"] == "Accept", name
        if kind == "application/json":
            assert "Content-Security-Policy" not in response.headers
            json.loads(response.body)


def test_a_page_runs_only_the_apps_own_script_and_style(app: TestApp, drawn: Drawn) -> None:
    for name, path in page_paths(drawn).items():
        response = app.get(path, headers=html_headers("project-a"))
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        page = read(response.text)
        [script] = page.find("script")
        assert re.fullmatch(r"/_tasktoolkit/[0-9a-f]{12}/page\.js", script.attrs["src"]), name
        assert not script.text.strip()
        [sheet] = page.find("link", rel="stylesheet")
        assert re.fullmatch(r"/_tasktoolkit/[0-9a-f]{12}/page\.css", sheet.attrs["href"])
        assert not page.find("style")
        for element in page.elements:
            handlers = [a for a in element.attrs if a.startswith("on") or a == "style"]
            assert not handlers, (name, element)
            for attr in ("href", "src", "action"):
                assert not element.attrs.get(attr, "").lower().startswith(("http", "//", "java"))


def test_the_timeline_has_a_row_per_task_and_a_bar_per_attempt(app: TestApp, drawn: Drawn) -> None:
    path = f"/operations/{drawn.operation_id}"
    view = app.get(path, headers=caller("project-a")).json["operation"]
    page = get_page(app, path)
    rows = [g for g in page.find("g", class_="tt-row")]
    assert [r.attrs["data-task"] for r in rows] == [t["id"] for t in view["tasks"]]
    bars = page.find("rect", **{"data-kind": "attempt"})
    assert len(bars) == sum(len(t["attempts"]) for t in view["tasks"]) == 5
    # grouped by resource (a cluster's and a node's tasks)
    groups = page.find("g", class_="tt-group")
    assert len(groups) == 2
    retried = app.get(f"/tasks/{drawn.tasks['dhcp']}", headers=html_headers("project-a"))
    attempts = read(retried.text).find("rect", **{"data-kind": "attempt"})
    assert [a.attrs["data-attempt"] for a in attempts] == ["1", "2"]
    assert [a.classes() & {"o-failed", "o-succeeded"} for a in attempts] == [
        {"o-failed"},
        {"o-succeeded"},
    ]
    assert "60% wiring the port" in page.text  # the running bar's progress and message
    assert "dhcp_down: wiring the port" in page.text  # the failed attempt's error


def test_hostile_text_is_text_on_every_page(session: Session, app: TestApp) -> None:
    drawn = seed_operation(
        session, "project-a", cluster_id=HOSTILE, message=HOSTILE, path=f"/clusters/{HOSTILE}"
    )
    for name, path in page_paths(drawn).items():
        for admin in (False, True):
            response = app.get(path, headers=html_headers("project-a", admin=admin))
            assert HOSTILE not in response.text, name
            assert not read(response.text).find("img"), name
        if name != "operations":
            assert ESCAPED in response.text, name


def test_hosts_and_tracebacks_are_for_admins_only(app: TestApp, drawn: Drawn) -> None:
    path = f"/operations/{drawn.operation_id}"
    member = app.get(path, headers=html_headers("project-a")).text
    admin = app.get(path, headers=html_headers("project-a", admin=True)).text
    for secret in ("agent-1", "Traceback (most recent call last)", "the dhcp agent is gone"):
        assert secret not in member
        assert secret in admin


@pytest.mark.parametrize("name", ["operation", "resource_tasks", "task", "resource_task"])
def test_another_projects_page_is_a_404_page(app: TestApp, drawn: Drawn, name: str) -> None:
    path = page_paths(drawn)[name]
    response = app.get(path, headers=html_headers("project-b"), status=404)
    assert response.content_type == "text/html"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    page = read(response.text)
    assert "404" in page.find("h1")[0].text
    for secret in ("wiring the port", "agent_busy", "l2_wiring", "user-project-a"):
        assert secret not in response.text


def test_the_lists_pages_show_only_the_projects_records(app: TestApp, drawn: Drawn) -> None:
    other = get_page(app, "/tasks", "project-b")
    assert not other.find("tr", **{"data-task": drawn.tasks["dhcp"]})
    own = get_page(app, "/tasks", "project-a")
    assert {r.attrs["data-task"] for r in own.find("tr") if "data-task" in r.attrs} == set(
        drawn.tasks.values()
    )
    assert get_page(app, "/operations", "project-a").find(
        "tr", **{"data-operation": drawn.operation_id}
    )
    assert not get_page(app, "/operations", "project-b").find(
        "tr", **{"data-operation": drawn.operation_id}
    )


def test_a_lists_form_leaves_blank_what_it_does_not_filter_by(app: TestApp, drawn: Drawn) -> None:
    blank = "?state=&action=&method=&resource_type=&resource_id="
    page = get_page(app, "/operations" + blank)
    assert page.find("tr", **{"data-operation": drawn.operation_id})
    # the JSON keeps refusing a blank filter, as the contract says
    app.get("/operations" + blank, headers=caller("project-a"), status=400)
    failed = get_page(app, "/tasks?state=failed&name=&resource_type=&resource_id=")
    assert [r.attrs["data-task"] for r in failed.find("tr") if "data-task" in r.attrs] == [
        drawn.tasks["ports"]
    ]
    [selected] = [o for o in failed.find("option") if "selected" in o.attrs]
    assert selected.attrs["value"] == "failed"
    named = get_page(app, f"/clusters/{drawn.cluster_id}/tasks?name=dhcp&state=")
    assert [r.attrs["data-task"] for r in named.find("tr") if "data-task" in r.attrs] == [
        drawn.tasks["dhcp"]
    ]


def test_a_lists_pages_follow_its_next_links(app: TestApp, drawn: Drawn) -> None:
    seen: list[str] = []
    path = "/tasks?limit=2"
    while path:
        page = get_page(app, path)
        seen += [r.attrs["data-task"] for r in page.find("tr") if "data-task" in r.attrs]
        following = page.find("a", rel="next")
        assert len(following) <= 1
        path = "/tasks" + following[0].attrs["href"] if following else ""
        assert not path or path.startswith("/tasks?")  # a query on this page, never a host
    assert sorted(seen) == sorted(drawn.tasks.values())


def test_a_page_with_anything_active_says_what_its_script_waits_on(
    app: TestApp, drawn: Drawn
) -> None:
    path = f"/operations/{drawn.operation_id}"
    etag = app.get(path, headers=caller("project-a")).headers["ETag"]
    page = get_page(app, path)
    [live] = page.find("main")
    assert live.attrs["data-watch"] == path
    assert live.attrs["data-etag"] == etag
    assert int(live.attrs["data-wait"]) > 0
    assert page.find("meta", **{"http-equiv": "refresh"})  # inside <noscript>
    listed = get_page(app, "/tasks?state=active")
    [live] = listed.find("main")
    assert live.attrs["data-watch"] in (
        f"/tasks/{drawn.tasks['boot']}",
        f"/tasks/{drawn.tasks['security_groups']}",
    )
    final = get_page(app, f"/tasks/{drawn.tasks['dhcp']}")
    [live] = final.find("main")
    assert "data-watch" not in live.attrs
    assert not final.find("meta", **{"http-equiv": "refresh"})


def test_the_assets_are_served_versioned_small_and_for_ever(app: TestApp, drawn: Drawn) -> None:
    page = get_page(app, "/operations")
    urls = [
        page.find("script")[0].attrs["src"],
        page.find("link", rel="stylesheet")[0].attrs["href"],
    ]
    total = 0
    for url, kind in zip(urls, ("text/javascript", "text/css"), strict=True):
        response = app.get(url)
        assert response.content_type == kind
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        total += len(response.body)
        stale = re.sub(r"/[0-9a-f]{12}/", "/000000000000/", url)
        app.get(stale, status=404)
        app.post(url, status=405)
    assert total < 30 * 1024
    app.get(urls[0].rsplit("/", 1)[0] + "/other.js", status=404)


def test_pages_under_a_path_prefix(session_factory: sessionmaker[Session], drawn: Drawn) -> None:
    app = build_app(session_factory, path_prefix="/v2.0")
    page = get_page(app, f"/v2.0/operations/{drawn.operation_id}")
    assert page.find("script")[0].attrs["src"].startswith("/v2.0/_tasktoolkit/")
    app.get(page.find("script")[0].attrs["src"])
    links = {a.attrs["href"] for a in page.find("a")}
    assert f"/v2.0/tasks/{drawn.tasks['dhcp']}" in links
    assert f"/v2.0/clusters/{drawn.cluster_id}/tasks" in links
    assert page.find("main")[0].attrs["data-watch"] == f"/v2.0/operations/{drawn.operation_id}"


def test_pages_can_be_turned_off(session_factory: sessionmaker[Session], drawn: Drawn) -> None:
    app = build_app(session_factory, pages=False)
    response = app.get(f"/operations/{drawn.operation_id}", headers=html_headers("project-a"))
    assert response.content_type == "application/json"
    assert "Vary" not in response.headers
    assert not [r for r in app.app.mapper.matchlist if r.name == "tasktoolkit.page_assets"]


@pytest.mark.parametrize("pages", [pytest.param(True, id="on"), pytest.param(False, id="off")])
def test_the_settings_turn_the_pages_on_and_off(engine: Engine, pages: bool) -> None:
    toolkit = Toolkit(engine, Settings(pages=pages))
    mapper = routes.Mapper()
    endpoints = toolkit.mount(mapper, collections=COLLECTIONS)
    assert (endpoints.pages is not None) is pages
    assert any(r.name == "tasktoolkit.page_assets" for r in mapper.matchlist) is pages
    assert Settings.from_strings({"pages": "false"}).pages is False

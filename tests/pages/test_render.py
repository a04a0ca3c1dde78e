"""Pages rendered straight from documents: what a view carries is drawn, and nothing else."""

from __future__ import annotations

from typing import Any

from tasktoolkit.pages import PageRequest, Pages
from tests.pages.html import read
from tests.pages.views import at, attempt, task


def operation(*tasks: Any, state: str = "running") -> dict[str, Any]:
    return {
        "operation": {
            "id": "req-00000000-0000-4000-8000-000000000000",
            "method": "POST",
            "path": "/ports",
            "state": state,
            "created_at": at(0),
            "finished_at": None,
            "task_counts": {"running": 1},
            "tasks": list(tasks),
        }
    }


def render(document: dict[str, Any], name: str = "operation") -> str:
    request = PageRequest(base="/v2.0", path="/v2.0/operations/req-1", etag='"ab"')
    return Pages(collections={"port": "ports"}).render(name, document, request)


def test_ordering_is_drawn_when_the_views_carry_it() -> None:
    wiring = task("l2_wiring", "running", attempt(1, 1, None, None))
    dhcp = task("dhcp", "pending", after=["l2_wiring"], waiting="after")
    page = read(render(operation(wiring, dhcp)))
    [link] = page.find("path", class_="tt-after")
    assert "after l2_wiring" in page.text and "waiting: after" in page.text
    assert link.attrs["d"].startswith("M")
    plain = read(render(operation(task("l2_wiring", "running", attempt(1, 1, None, None)))))
    assert not plain.find("path", class_="tt-after")


def test_hosts_and_tracebacks_are_drawn_only_when_the_view_has_them() -> None:
    error = {"code": "boom", "message": "it broke", "traceback": "Traceback: line 1"}
    admin = task("a", "failed", attempt(1, 1, 2, "failed", error=error, host="agent-7"))
    member = task(
        "a", "failed", attempt(1, 1, 2, "failed", error={"code": "boom", "message": "it broke"})
    )
    shown = render(operation(admin, state="failed"))
    assert "agent-7" in shown and "Traceback: line 1" in shown
    hidden = render(operation(member, state="failed"))
    assert "agent-7" not in hidden and "Traceback" not in hidden and "it broke" in hidden


def test_links_stay_under_the_prefix_with_each_segment_quoted() -> None:
    odd = task("a", "succeeded", attempt(1, 1, 2, "succeeded"), resource="a/b?c")
    other = task("b", "succeeded", attempt(1, 1, 2, "succeeded"), resource="r2")
    page = read(render(operation(odd, other, state="succeeded")))
    hrefs = {a.attrs["href"] for a in page.find("a")}
    assert "/v2.0/ports/a%2Fb%3Fc/tasks" in hrefs
    assert "/v2.0/tasks/id-a" in hrefs
    assert all(h.startswith(("/v2.0/", "?")) for h in hrefs)

"""Fixtures for the pages: an operation drawn in every shape, hostile text, and a real browser.

The browser is Debian's ``/usr/bin/chromium`` driven by Playwright (which
downloads no browser of its own): missing, its tests are skipped with the
reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from tasktoolkit import context
from tasktoolkit.orm import TaskRules
from tasktoolkit.orm._operations import OperationFields, end_request, open_operation
from tasktoolkit.orm._transitions import fail_task, report_progress, start_task, succeed_task
from tests.databases import in_ci
from tests.endpoints.conftest import app, caller
from tests.models import Cluster, Node

__all__ = ["app"]  # the endpoints' whole stack, a fixture here too

CHROMIUM = Path(os.environ.get("TASKTOOLKIT_TEST_CHROMIUM", "/usr/bin/chromium"))
#: Chromium's options for a headless run on a machine without a network or a GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Text a user or a worker could write, that would run if it were not escaped.
HOSTILE = "<img src=x onerror=alert(1)>"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@dataclass
class Drawn:
    """An operation whose tasks are in every shape the timeline draws."""

    project: str
    operation_id: str
    cluster_id: str
    node_id: int
    #: name -> task id
    tasks: dict[str, str] = field(default_factory=dict)


def seed_operation(
    session: Session,
    project: str,
    *,
    cluster_id: str | None = None,
    message: str = "wiring the port",
    path: str = "/clusters",
) -> Drawn:
    """A ``POST`` of ``project``'s that spawned, on a cluster and a node: a succeeded task,
    a retried one (failed, then succeeded: two attempts), a failed one (with a
    traceback), a running one (60 %, ``message``) and a pending one. Commits."""
    rid = context.new_request_id()
    fields = OperationFields(
        id=rid,
        method="POST",
        path=path,
        project_id=project,
        user_id=f"user-{project}",
        action="create",
        resource_type="cluster",
    )
    open_operation(session.connection(), fields)
    cluster = Cluster(name="c", project_id=project, **({"id": cluster_id} if cluster_id else {}))
    session.add(cluster)
    session.flush()
    node = Node(cluster_id=cluster.id, name="n", project_id=project)
    session.add(node)
    session.flush()
    ctx = context.RequestContext(request_id=rid, project_id=project, operation_id=rid)
    retried = TaskRules(max_attempts=2)
    with context.request_context(ctx):
        done, again, failed = cluster.spawn_tasks(["l2_wiring", "dhcp", "ports"], rules=retried)
        running, waiting = node.spawn_tasks(["boot", "security_groups"])
    end_request(session.connection(), rid, 202)
    session.commit()
    start_task(session, done.id, host="agent-1")
    succeed_task(session, done.id, message="wired")
    start_task(session, again.id, host="agent-2")
    fail_task(session, again.id, code="agent_busy", message=f"busy: {message}", retry=True)
    start_task(session, again.id, host="agent-3")
    succeed_task(session, again.id)
    start_task(session, failed.id, host="agent-1")
    try:
        raise RuntimeError("the dhcp agent is gone")
    except RuntimeError:
        trace = traceback.format_exc()
    fail_task(session, failed.id, code="dhcp_down", message=message, traceback=trace)
    start_task(session, running.id, host="agent-4")
    report_progress(session, running.id, 60, message=message)
    session.commit()
    return Drawn(
        project=project,
        operation_id=rid,
        cluster_id=cluster.id,
        node_id=node.id,
        tasks={
            "l2_wiring": done.id,
            "dhcp": again.id,
            "ports": failed.id,
            "boot": running.id,
            "security_groups": waiting.id,
        },
    )


def html_headers(project: str, *, admin: bool = False) -> dict[str, str]:
    """A browser's ``Accept``, as a caller of ``project``."""
    return {**caller(project, admin=admin), "Accept": BROWSER_ACCEPT}


def chromium_or_skip() -> None:
    """Skip when there is no chromium to drive (fail under ``CI=true``)."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"no chromium at {CHROMIUM} (apt-get install chromium)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            reason = "Playwright is not installed (pip install -e '.[test]')"
    if reason is None:
        return
    if in_ci():
        pytest.fail(reason + " (CI=true: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless chromium for the run."""
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()

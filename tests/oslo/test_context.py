"""oslo.context: the caller from the environ, and every log line with its own request."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import webtest
from oslo_context import context as oslo
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import Toolkit, context
from tasktoolkit.caller import Caller
from tasktoolkit.context import RequestContext, new_request_id
from tasktoolkit.middleware import RequestIdMiddleware
from tasktoolkit.orm import Worker
from tasktoolkit.oslo import job_context, oslo_caller
from tests.endpoints.conftest import open_post
from tests.models import Cluster

host_log = logging.getLogger("tests.oslo.host")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param(
            {"HTTP_X_PROJECT_ID": "p1", "HTTP_X_USER_ID": "u1", "HTTP_X_ROLES": "Member,reader"},
            Caller("p1", "u1", frozenset({"member", "reader"})),
            id="project-scoped",
        ),
        pytest.param(
            {
                "HTTP_OPENSTACK_SYSTEM_SCOPE": "all",
                "HTTP_X_USER_ID": "u2",
                "HTTP_X_ROLES": "reader",
            },
            Caller(None, "u2", frozenset({"reader"}), "all"),
            id="system-scoped",
        ),
        pytest.param(
            {"HTTP_X_TENANT_ID": "old", "HTTP_X_USER": "legacy"},
            Caller("old", "legacy", frozenset()),
            id="older-headers",
        ),
        pytest.param({}, Caller(), id="anonymous"),
    ],
)
def test_oslo_caller(environ: dict[str, str], expected: Caller, clean_oslo_store: None) -> None:
    assert oslo_caller(environ) == expected
    assert oslo.get_current() is None  # nothing put in oslo's store


def host_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A host: on /own-context it makes its oslo context (stored, as services do), then logs."""
    if environ["PATH_INFO"] == "/own-context":
        oslo.RequestContext.from_environ(environ, user_name="named-user")
    host_log.info("handled %s", environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.fixture
def unreachable(tmp_path: Path) -> Engine:
    return create_engine(f"sqlite:///{tmp_path / 'missing' / 'db.sqlite'}")


def test_the_toolkits_own_lines_carry_their_request_not_the_previous_one(
    oslo_lines: Callable[[], list[str]], unreachable: Engine
) -> None:
    """The host's context of request 1 stays in oslo's store; request 2's warning is its own."""
    stack = webtest.TestApp(Toolkit(unreachable).wsgi(host_app))
    first = stack.get("/own-context", headers={"X-User-Id": "u1", "X-Project-Id": "p1"})
    # The database is away: the operation cannot be written, a warning says so.
    second = stack.post("/ports", headers={"X-User-Id": "u2", "X-Project-Id": "p2"})
    one, two = first.headers["X-Request-Id"], second.headers["X-Request-Id"]
    (warning,) = [line for line in oslo_lines() if line.startswith("WARNING")]
    assert f"[None {two} u2 p2] middleware.finished: database unavailable" in warning
    assert f"operation {two} not written" in warning
    assert one not in warning
    (handled,) = [line for line in oslo_lines() if "handled /own-context" in line]
    assert f"[None {one} u1 p1]" in handled


def test_a_hosts_own_context_of_the_request_is_used(oslo_lines: Callable[[], list[str]]) -> None:
    """The host's richer context (names, roles) is kept when it is this request's."""
    stack = webtest.TestApp(RequestIdMiddleware(host_app))
    global_id = new_request_id()
    first = stack.get(
        "/own-context", headers={"X-User-Id": "u1", "X-Project-Id": "p1", "X-Request-Id": global_id}
    )
    second = stack.get("/plain", headers={"X-User-Id": "u3", "X-Project-Id": "p3"})
    lines = oslo_lines()
    rid = first.headers["X-Request-Id"]
    assert any(f"[{global_id} {rid} u1 p1] handled /own-context" in line for line in lines)
    rid = second.headers["X-Request-Id"]
    assert any(f"[None {rid} u3 p3] handled /plain" in line for line in lines), lines


def test_a_record_with_its_own_context_keeps_it(oslo_lines: Callable[[], list[str]]) -> None:
    own = oslo.RequestContext(request_id="req-own", user_id="x", project_id="y", overwrite=False)
    with context.request_context(RequestContext(request_id=new_request_id())):
        host_log.info("explicit", extra={"context": own})
    (line,) = oslo_lines()
    assert "[None req-own x y] explicit" in line


def test_worker_lines_carry_the_request_that_spawned_the_task(
    oslo_lines: Callable[[], list[str]], engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    rid, global_id = new_request_id(), new_request_id()
    with session_factory() as session:
        open_post(session, rid, "p1", global_request_id=global_id, user_id="u1")
        cluster = Cluster(name="c", project_id="p1")
        session.add(cluster)
        session.flush()
        ctx = RequestContext(request_id=rid, project_id="p1", user_id="u1", operation_id=rid)
        with context.request_context(ctx):
            cluster.spawn_tasks(["build"])
        session.commit()
    worker = Worker(engine, ["build"])
    job = worker.claim()
    assert job is not None
    with job, job_context(job) as bound:
        host_log.info("building %s", job.resource_id)
        assert bound.operation_id == rid  # what the job spawns joins its operation
    assert context.current() is None
    (line,) = [line for line in oslo_lines() if "building" in line]
    assert f"[{global_id} {rid} u1 p1] building {cluster.id}" in line

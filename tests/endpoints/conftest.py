"""Fixtures for the endpoint tests: a whole WSGI stack over the test models, and seeded records."""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import routes
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from webtest import TestApp

from tasktoolkit import Settings, context, orm
from tasktoolkit.endpoints import Router, mount
from tasktoolkit.orm import Task
from tasktoolkit.orm._operations import OperationFields, end_request, open_operation
from tasktoolkit.orm._transitions import fail_task, start_task, succeed_task
from tasktoolkit.orm._types import utcnow
from tests.models import Cluster, Node

COLLECTIONS = {"clusters": Cluster, "nodes": Node}


def build_app(session_factory: sessionmaker[Session], **settings: Any) -> TestApp:
    """The endpoints for clusters and nodes on a mapper beside a host route, behind a Router.

    :param settings: the :class:`~tasktoolkit.Settings` the endpoints read.
    """
    mapper = routes.Mapper()
    mapper.connect("/clusters", controller=_host_app, action="index")
    mount(
        mapper,
        collections=COLLECTIONS,
        session_factory=session_factory,
        settings=Settings(**settings),
    )
    return TestApp(Router(mapper))


def _host_app(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
    """A host controller sharing the mapper, to show the mount composes with it."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the host's own route"]


@pytest.fixture
def app(session_factory: sessionmaker[Session]) -> TestApp:
    """The endpoints mounted at the root of a Router."""
    return build_app(session_factory)


def caller(project: str, *, admin: bool = False) -> dict[str, str]:
    """Headers of a caller in ``project`` (as keystonemiddleware would set them)."""
    headers = {"X-Project-Id": project, "X-User-Id": f"user-{project}"}
    if admin:
        headers["X-Roles"] = "admin,member"
    return headers


@dataclass
class Seeded:
    """The records seeded for one project."""

    project: str
    cluster_id: str
    node_id: int
    operation_id: str
    task_ids: list[str] = field(default_factory=list)
    running_id: str = ""
    failed_id: str = ""
    succeeded_id: str = ""
    pending_id: str = ""
    expired_id: str = ""
    expired_operation_id: str = ""


def open_post(session: Session, rid: str, project: str, **fields: Any) -> None:
    """Open the operation of request ``rid``, a ``POST /clusters`` of ``project``'s
    (with ``fields``: its user, action, ...), as the middleware does."""
    open_operation(
        session.connection(),
        OperationFields(
            id=rid,
            method="POST",
            path="/clusters",
            project_id=project,
            **fields,
        ),
    )


def seed_project(session: Session, project: str) -> Seeded:
    """A cluster with a node, an operation whose request spawned tasks in every state,
    plus one expired task and one expired operation. Commits."""
    rid = context.new_request_id()
    open_post(
        session, rid, project, user_id=f"user-{project}", action="create", resource_type="cluster"
    )
    cluster = Cluster(name=f"c-{project}", project_id=project)
    session.add(cluster)
    session.flush()
    node = Node(cluster_id=cluster.id, name="n", project_id=project)
    session.add(node)
    session.flush()
    ctx = context.RequestContext(request_id=rid, project_id=project, operation_id=rid)
    with context.request_context(ctx):
        tasks = cluster.spawn_tasks(["l2_wiring", "dhcp", "anti_spoofing", "security_groups"])
        tasks += node.spawn_tasks(["boot", "old"])
    session.commit()
    running, failed, succeeded, pending, _boot, expired = tasks
    start_task(session, running.id, host="worker-1")
    start_task(session, succeeded.id, host="worker-2")
    succeed_task(session, succeeded.id)
    try:
        raise RuntimeError("dhcp agent unreachable")
    except RuntimeError:
        tb = traceback.format_exc()
    fail_task(session, failed.id, code="dhcp_down", message="no dhcp agent", traceback=tb)
    start_task(session, expired.id)
    succeed_task(session, expired.id)
    session.execute(
        update(Task)
        .where(Task.id == expired.id)
        .values(expires_at=utcnow() - timedelta(seconds=1)),
        execution_options={"synchronize_session": False},
    )
    old = context.new_request_id()
    open_operation(
        session.connection(),
        OperationFields(id=old, method="DELETE", path="/clusters/x", project_id=project),
    )
    end_request(session.connection(), old, 204)
    session.execute(
        update(orm.Operation)
        .where(orm.Operation.id == old)
        .values(expires_at=utcnow() - timedelta(seconds=1)),
        execution_options={"synchronize_session": False},
    )
    session.commit()
    return Seeded(
        project=project,
        cluster_id=cluster.id,
        node_id=node.id,
        operation_id=rid,
        task_ids=[t.id for t in tasks if t.id != expired.id],
        running_id=running.id,
        failed_id=failed.id,
        succeeded_id=succeeded.id,
        pending_id=pending.id,
        expired_id=expired.id,
        expired_operation_id=old,
    )


@pytest.fixture
def projects(session: Session) -> tuple[Seeded, Seeded]:
    """Two projects' records: ``project-a``'s and ``project-b``'s."""
    return seed_project(session, "project-a"), seed_project(session, "project-b")


def random_task_id() -> str:
    return str(uuid.uuid4())

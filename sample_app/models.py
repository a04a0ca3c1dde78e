"""The sample's models: networks and their ports, each a task resource.

A port has no stored ``PENDING_*`` status: its ``status`` is derived from its
tasks through the toolkit's :attr:`~tasktoolkit.orm.TaskResource.task_status`
(``BUILD`` while a task is pending or running, ``ERROR`` when the latest run of
a task failed, ``DOWN`` when none failed but the latest run of a task was
cancelled, ``ACTIVE`` otherwise). ``ports.network_id`` references networks
with ``ON DELETE CASCADE``, so deleting a network deletes its ports in the
database, and the toolkit's own cascade deletes their tasks.

Example::

    port = Port(network_id=net.id, name="web", project_id="demo")
    session.add(port)
    port.spawn_tasks(PORT_CREATE_TASKS)
    session.commit()
    port.status                                        # "BUILD"
    session.execute(select(Port, Port.status_expression())).all()
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import ForeignKey, MetaData, String, case
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement

from tasktoolkit.orm import NAMING_CONVENTION, ResourceStatus, TaskResource, TaskRules, UTCDateTime

__all__ = [
    "HEARTBEAT_TIMEOUT",
    "PORT_CREATE_AFTER",
    "PORT_CREATE_TASKS",
    "PORT_DELETE_TASK",
    "PORT_TASKS",
    "PORT_UPDATE_TASK",
    "Base",
    "Network",
    "Port",
    "port_task_rules",
    "status_of",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


#: The tasks that wire a new port, in the order a newcomer would expect them.
PORT_CREATE_TASKS = ("l2_wiring", "dhcp_provisioning", "anti_spoofing", "security_groups")
#: The tasks of a new port that run once its wiring succeeded (after ``l2_wiring``).
PORT_CREATE_AFTER = {"dhcp_provisioning": ["l2_wiring"], "security_groups": ["l2_wiring"]}
#: The task an update of a port spawns: exclusive per port, so two quick updates
#: of one port run theirs one after the other.
PORT_UPDATE_TASK = "security_groups"
#: The task a delete spawns; when it succeeds the port row is deleted.
PORT_DELETE_TASK = "unbind"
#: Every task name the agents run.
PORT_TASKS = (*PORT_CREATE_TASKS, PORT_DELETE_TASK)
#: Seconds a running task may go without a heartbeat before the reaper takes it
#: (the agents heartbeat every two seconds at most).
HEARTBEAT_TIMEOUT = 30
#: A task waits this long before its second attempt (doubling after, jittered).
RETRY_BACKOFF = timedelta(seconds=1)

# Neutron's words for the toolkit's derived statuses: a port whose latest run of some
# task was cancelled (and none failed) was never wired, so it is DOWN, not ACTIVE.
_STATUS = {
    ResourceStatus.BUSY: "BUILD",
    ResourceStatus.ERROR: "ERROR",
    ResourceStatus.CANCELLED: "DOWN",
    ResourceStatus.IDLE: "ACTIVE",
}


def status_of(task_status: str | None) -> str:
    """The API status (``BUILD``, ``ACTIVE``, ``DOWN``, ``ERROR``) for a toolkit task status."""
    return _STATUS.get(task_status or ResourceStatus.IDLE, "ACTIVE")


def port_task_rules(
    start_timeout: timedelta | None = timedelta(hours=1),
) -> dict[str, TaskRules]:
    """The rules of the port tasks, by name: two attempts, a short backoff, the agents'
    heartbeat; ``security_groups`` exclusive per port.

    :param start_timeout: a task no agent starts within it (from when it became
        ready) fails ``not_started``.
    """
    rules = TaskRules(
        start_timeout=start_timeout,
        heartbeat_timeout=timedelta(seconds=HEARTBEAT_TIMEOUT),
        max_attempts=2,
        backoff=RETRY_BACKOFF,
        backoff_cap=RETRY_BACKOFF * 4,
    )
    return {"*": rules, PORT_UPDATE_TASK: replace(rules, exclusive=True)}


def _new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    """The sample's own declarative base (the toolkit's records have theirs)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class _SampleResource(TaskResource):
    """A task resource whose ``status`` is derived from its tasks (a plain mixin)."""

    @property
    def status(self) -> str:
        """``BUILD``, ``ACTIVE``, ``DOWN`` or ``ERROR``, derived from the tasks (one query)."""
        return status_of(self.task_status)

    @classmethod
    def status_expression(cls) -> ColumnElement[str]:
        """``status`` in SQL, to list many rows with their status in one query."""
        return case(_STATUS, value=cls.task_status, else_="ACTIVE").label("status")


class Network(_SampleResource, Base):
    """A network. Creating one spawns no task, so its operation ends with the response."""

    __tablename__ = "networks"
    __resource_type__ = "network"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=_new_id)
    name: Mapped[str] = mapped_column(String(255), default="")
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    ports: Mapped[list[Port]] = relationship(
        back_populates="network", cascade="all, delete-orphan", passive_deletes=True
    )


class Port(_SampleResource, Base):
    """A port on a network; four tasks wire it, one ``unbind`` task deletes it."""

    __tablename__ = "ports"
    __resource_type__ = "port"
    __task_rules__ = port_task_rules()

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=_new_id)
    network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255), default="")
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    network: Mapped[Network] = relationship(back_populates="ports")

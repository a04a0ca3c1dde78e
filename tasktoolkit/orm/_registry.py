"""The live workers: each announces itself, beats while it runs, and leaves when it stops.

A worker (a database :class:`~tasktoolkit.orm.Worker` with task names, a
Celery worker running a bridge, a reaper) has one row in
``tasktoolkit_workers``: its identity, host, pid, kind, the task names and
queues it serves, its timeout, when it started and when it last beat. Every
time is the database's (:mod:`tasktoolkit.orm._clock`). A row whose last beat
is older than its timeout is not live: its worker died, hangs, or lost the
database. :func:`purge_gone` deletes such rows (the reaper and purge call it);
a worker that stops cleanly deletes its own (:func:`leave`).

Who reads it: ``GET /workers`` and ``tasktoolkit workers`` (:func:`list_workers`),
``tasktoolkit health`` (a probe: is this host's worker live?), and the task
views, whose ``waiting`` says ``no_worker`` when no live worker serves a
pending task's name and queue (:func:`serves`). The table holds one row per
worker process, so each of them reads it whole, in one statement.

Example::

    beat(connection, Announcement("node-1:4242", "database", ("l2_wiring",), (None,), 60))
    live = [w for w in list_workers(connection) if w.live]
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import case, delete, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.orm import Session

from tasktoolkit.orm._clock import db_now, later, read_now
from tasktoolkit.orm._ready import waiting
from tasktoolkit.orm._records import Task
from tasktoolkit.orm._records import workers_table as _W

__all__ = [
    "BACKOFF",
    "KINDS",
    "NO_WORKER",
    "Announcement",
    "LiveWorker",
    "Waits",
    "beat",
    "leave",
    "list_workers",
    "purge_gone",
    "serves",
    "waits_of",
]

#: What a worker is: one that claims from the database, a Celery worker, a reaper.
KINDS = ("database", "celery", "reaper")
#: A pending task's ``waiting``: its retry's backoff is not over.
BACKOFF = "backoff"
#: A pending task's ``waiting``: no live worker serves its name and queue.
NO_WORKER = "no_worker"


@dataclass(frozen=True, slots=True)
class Announcement:
    """What a worker says of itself with each beat.

    :param id: its identity (unique among the workers of a deployment).
    :param kind: one of :data:`KINDS`.
    :param names: the task names it runs.
    :param queues: the queues it serves (``None``: the default queue).
    :param timeout: seconds without a beat after which it is not live.
    :param host: its machine; default: this one's hostname.
    :param pid: its process; default: this one.
    """

    id: str
    kind: str
    names: Sequence[str]
    queues: Sequence[str | None]
    timeout: int
    host: str | None = None
    pid: int | None = None

    def values(self) -> dict[str, Any]:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        return {
            "host": self.host or socket.gethostname(),
            "pid": os.getpid() if self.pid is None else self.pid,
            "kind": self.kind,
            "names": json.dumps(sorted(self.names)),
            "queues": json.dumps(list(self.queues)),
            "timeout": max(1, int(self.timeout)),
        }


@dataclass(frozen=True, slots=True)
class LiveWorker:
    """A worker's row as read: ``live`` when it beat within its timeout (the database's
    clock); ``age`` is the seconds since that beat."""

    id: str
    host: str
    pid: int
    kind: str
    names: tuple[str, ...]
    queues: tuple[str | None, ...]
    timeout: int
    started_at: datetime
    beat_at: datetime
    age: float
    live: bool


def beat(connection: Connection, announcement: Announcement) -> None:
    """Record that the worker is alive, now (the database's time): announce it on its
    first beat (or after its row was purged), else move its last beat. One statement,
    an upsert: two beats of one id at once (two reapers' threads) both land."""
    values = {**announcement.values(), "beat_at": db_now()}
    row = {"id": announcement.id, "started_at": db_now(), **values}
    dialect = connection.dialect.name
    if dialect in ("mysql", "mariadb"):
        connection.execute(mysql.insert(_W).values(row).on_duplicate_key_update(**values))
        return
    upsert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_W).values(row)
    connection.execute(upsert.on_conflict_do_update(index_elements=[_W.c.id], set_=values))


def leave(connection: Connection, worker_id: str) -> None:
    """The worker stops cleanly: its row goes."""
    connection.execute(delete(_W).where(_W.c.id == worker_id))


def _gone() -> Any:
    return later(_W.c.beat_at, _W.c.timeout) < db_now()


def purge_gone(connection: Connection) -> int:
    """Delete the rows of workers that are not live; how many.

    Found by a plain read first, then deleted by key (still gone): a delete that
    scanned the table would lock every live worker's row (InnoDB locks what it
    reads), and their beats would wait for the reaper's transaction.
    """
    gone = connection.execute(select(_W.c.id).where(_gone())).scalars().all()
    if not gone:
        return 0
    result = cast(
        CursorResult[Any], connection.execute(delete(_W).where(_W.c.id.in_(gone), _gone()))
    )
    return int(result.rowcount)


def list_workers(connection: Connection) -> list[LiveWorker]:
    """Every worker's row (live or not yet purged), by host then id: one statement."""
    now = db_now()
    rows = connection.execute(
        select(_W, now.label("now"), case((_gone(), 0), else_=1).label("live")).order_by(
            _W.c.host, _W.c.id
        )
    ).all()
    return [
        LiveWorker(
            row.id,
            row.host,
            row.pid,
            row.kind,
            tuple(json.loads(row.names)),
            tuple(json.loads(row.queues)),
            row.timeout,
            row.started_at,
            row.beat_at,
            max(0.0, (row.now - row.beat_at).total_seconds()),
            bool(row.live),
        )
        for row in rows
    ]


def serves(workers: Iterable[LiveWorker], name: str, queue: str | None) -> bool:
    """Whether a live worker among ``workers`` runs task ``name`` from ``queue``."""
    return any(w.live and name in w.names and queue in w.queues for w in workers)


@dataclass(frozen=True, slots=True)
class Waits:
    """What says why pending tasks wait: the database's now, the workers, and the
    tasks held by their order (:func:`~tasktoolkit.orm._ready.waiting`), read once for
    a whole list (:func:`waits_of`)."""

    now: datetime
    workers: Sequence[LiveWorker]
    #: ``dependency`` or ``exclusive``, by task id, for the tasks their order holds.
    ordered: Mapping[str, str] = field(default_factory=dict)

    def why(self, task: Task) -> str | None:
        """A task's ``waiting``: ``dependency`` or ``exclusive`` while its order holds
        it, :data:`BACKOFF` while its retry's backoff lasts, :data:`NO_WORKER` while no
        live worker serves its name and queue; ``None`` when it is not pending or
        nothing holds it."""
        if task.state != "pending":
            return None
        if task.id in self.ordered:
            return self.ordered[task.id]
        if task.not_before is not None and task.not_before > self.now:
            return BACKOFF
        if not serves(self.workers, task.name, task.queue):
            return NO_WORKER
        return None


def waits_of(session: Session, tasks: Sequence[Task]) -> Waits | None:
    """What says why the pending ones among ``tasks`` wait (their views' ``waiting``):
    read once for the list (the database's now, the workers, what their order holds:
    a few statements, whatever its length), and only when one of them is pending."""
    if not any(task.state == "pending" for task in tasks):
        return None
    connection = session.connection()
    return Waits(read_now(connection), list_workers(connection), waiting(session, tasks))

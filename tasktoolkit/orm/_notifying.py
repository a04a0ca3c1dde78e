"""What a sender of notifications reads and marks: operations that ended and were not told.

An operation whose end was handed to the broker gets ``notified_at``; one that
finished and has none was never told (the broker was down, the process died
between the commit and the send, or nothing sent notifications then). A
sender reads the operations it was told of (:func:`operations_to_notify` with
``ids``), or sweeps those nobody told (``ids=None``): finished at least
``settled`` ago, so that the process that finished them had its chance first,
and at most ``within`` ago, so that a sweep that starts sending for the first
time does not announce the whole history. Both bounds are on the database's
clock, computed in SQL.

Marking is a compare-and-set on ``notified_at IS NULL``: two senders that
both sent an operation's end mark it once (and the consumer saw it twice:
at least once, never at most once).

Example::

    with sessions.begin() as session:
        found = operations_to_notify(session, ids=None, settled=timedelta(minutes=1),
                                     within=timedelta(days=1), limit=100)
    sent = send(found)
    with engine.begin() as connection:
        mark_notified(connection, [operation.id for operation in sent])
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, selectinload

from tasktoolkit.orm._clock import db_now, later
from tasktoolkit.orm._records import Operation, operations_table

__all__ = ["mark_notified", "operations_to_notify"]


def operations_to_notify(
    session: Session,
    *,
    ids: Sequence[str] | None,
    settled: timedelta,
    within: timedelta,
    limit: int,
) -> list[Operation]:
    """Finished operations not notified yet: of ``ids``, or (``None``) the sweep's.

    :param settled: the sweep's: finished at least this long ago.
    :param within: the sweep's: finished at most this long ago.
    :param limit: at most this many, those finished first.
    """
    query = select(Operation).where(
        Operation.notified_at.is_(None), Operation.finished_at.is_not(None)
    )
    if ids is not None:
        query = query.where(Operation.id.in_(ids))
    else:
        # Seeks (notified_at IS NULL, finished_at in the window) on its index.
        query = query.where(
            Operation.finished_at >= later(db_now(), -within.total_seconds()),
            Operation.finished_at <= later(db_now(), -settled.total_seconds()),
        )
    query = query.order_by(Operation.finished_at, Operation.id).limit(limit)
    # Their views are made once the session is closed: with what they show, loaded.
    query = query.options(selectinload(Operation.resource_records))
    return list(session.scalars(query))


def mark_notified(connection: Connection, ids: Sequence[str]) -> int:
    """Mark ``ids`` notified, now (those not marked yet); how many were marked."""
    if not ids:
        return 0
    o = operations_table.c
    result = connection.execute(
        update(operations_table)
        .where(o.id.in_(ids), o.notified_at.is_(None))
        .values(notified_at=db_now())
    )
    return result.rowcount

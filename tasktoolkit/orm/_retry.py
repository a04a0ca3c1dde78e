"""Short transactions of the toolkit's own, run again when they lose a race.

Which database errors are worth running a whole transaction again for is
decided here, once (:func:`is_retryable`); whether one means the database is
unavailable is :func:`tasktoolkit.errors.database_unavailable`.

Example::

    sessions = short_sessions(engine)
    moved = in_transaction(sessions, lambda session: reap_batch(session))
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.errors import raised_by_oslo_db
from tasktoolkit.orm._deadline import deadline
from tasktoolkit.orm._engine import prepare_engine, read_committed

__all__ = [
    "RETRIES",
    "RetryPredicate",
    "in_transaction",
    "is_retryable",
    "retrying",
    "short_sessions",
]

#: Attempts of a transaction that lost to another one.
RETRIES = 5
#: A host's own answer to "did this transaction lose a race, so that running it again is safe?".
RetryPredicate = Callable[[BaseException], bool]
_R = TypeVar("_R")


def is_retryable(exc: BaseException, predicate: RetryPredicate | None = None) -> bool:
    """A deadlock, serialization failure, lock wait timeout or a busy SQLite database.

    Each means another transaction won and this one was rolled back, whole:
    running it again is safe. Recognised as SQLAlchemy raises them, and as
    oslo.db's engines do (``DBDeadlock``, or a ``DBError`` wrapping one of the
    above), without importing oslo.db.

    :param predicate: the host's own rule, asked when none of the above says yes
        (an error of its driver or its exception filters).
    """
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return False
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if sqlstate in ("40P01", "40001", "55P03"):
            return True
        args = getattr(orig, "args", ())
        if args and args[0] in (1205, 1213):
            return True
        if "database is locked" in str(orig):
            return True
    elif raised_by_oslo_db(exc, "DBDeadlock"):
        return True
    elif raised_by_oslo_db(exc, "DBError") and not raised_by_oslo_db(exc, "DBConnectionError"):
        inner = getattr(exc, "inner_exception", None)
        if isinstance(inner, DBAPIError) and is_retryable(inner):
            return True
    return predicate is not None and bool(predicate(exc))


def retrying(
    transaction: Callable[[], _R],
    *,
    seconds: float | None = None,
    predicate: RetryPredicate | None = None,
) -> _R:
    """Run ``transaction`` (which must roll back on error), again when it loses to another.

    :param seconds: a deadline for each attempt (:func:`~tasktoolkit.orm.deadline`).
        An attempt whose connection was lost (the server restarted, or did not
        answer in time) is run once more, on a fresh connection.
    :param predicate: more errors to retry (see :func:`is_retryable`).
    """
    lost_once = False
    for attempt in range(RETRIES):
        try:
            with deadline(seconds):
                return transaction()
        except Exception as exc:
            lost = isinstance(exc, DBAPIError) and exc.connection_invalidated
            if seconds is not None and lost and not lost_once:
                lost_once = True
                continue
            if attempt == RETRIES - 1 or not is_retryable(exc, predicate):
                raise
            # A short, jittered pause, so the winners of the race finish first.
            time.sleep(random.uniform(0, 0.02 * 2**attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def short_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions for the toolkit's own short transactions on ``engine`` (READ COMMITTED)."""
    return sessionmaker(read_committed(prepare_engine(engine)), expire_on_commit=False)


def in_transaction(
    sessions: sessionmaker[Session],
    work: Callable[[Session], _R],
    *,
    seconds: float | None = None,
    predicate: RetryPredicate | None = None,
) -> _R:
    """``work`` in a transaction of its own, committed; run again when it loses a lock race.

    :param seconds: the deadline of each attempt (see :func:`retrying`).
    :param predicate: more errors to retry (see :func:`is_retryable`).
    """

    def transaction() -> _R:
        with sessions() as session, session.begin():
            return work(session)

    return retrying(transaction, seconds=seconds, predicate=predicate)

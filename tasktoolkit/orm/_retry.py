"""Which database errors are worth running the whole transaction again for."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

__all__ = ["RETRIES", "is_retryable", "retrying"]

#: Attempts of a transaction that lost to another one.
RETRIES = 5
_R = TypeVar("_R")


def is_retryable(exc: DBAPIError) -> bool:
    """A deadlock, serialization failure, lock wait timeout or a busy SQLite database.

    Each means another transaction won and this one was rolled back, whole:
    running it again is safe.
    """
    if exc.connection_invalidated:
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in ("40P01", "40001", "55P03"):
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in (1205, 1213):
        return True
    return "database is locked" in str(orig)


def retrying(transaction: Callable[[], _R]) -> _R:
    """Run ``transaction`` (which must roll back on error), again when it loses to another."""
    for attempt in range(RETRIES):
        try:
            return transaction()
        except DBAPIError as exc:
            if attempt == RETRIES - 1 or not is_retryable(exc):
                raise
            # A short, jittered pause, so the winners of the race finish first.
            time.sleep(random.uniform(0, 0.02 * 2**attempt))
    raise AssertionError("unreachable")  # pragma: no cover

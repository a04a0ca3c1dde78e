"""Waiting requests (RFC 7240 ``Prefer: wait=<seconds>``): woken by PostgreSQL, or polling.

A ``GET`` of an operation or a task with ``Prefer: wait=<n>`` answers when the
record is terminal, or (with ``If-None-Match``) as soon as it differs from
that ETag, or when the wait is over. Between two reads it holds no
transaction and no pooled connection: it sleeps on a :class:`Subscription`.

- On PostgreSQL one :class:`Listener` per mounted app (so one per process)
  keeps a connection of its own outside the pool, ``LISTEN``\\ s on
  :data:`~tasktoolkit.orm._operations.CHANGES_CHANNEL` and wakes the
  subscriptions of the ids it hears of: every move of a task and every change
  of an operation sends one in its own transaction. While that connection is
  down, waiters poll.
- Elsewhere, a waiter polls: it reads again after 50 ms, then twice as long
  each time, up to 1 s.

Example::

    wait = parse_prefer(request.headers.get("Prefer"), cap=30)
    with waiter.subscribe(operation_id) as changes:
        while not done():
            changes.wait(remaining)
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from tasktoolkit.errors import InvalidHeaderError
from tasktoolkit.orm._operations import CHANGES_CHANNEL

__all__ = [
    "FIRST_POLL",
    "LAST_POLL",
    "Listener",
    "Polling",
    "Subscription",
    "Waiter",
    "parse_prefer",
    "waiter_for",
]

#: The first pause of a polling waiter, in seconds; each next one is twice as long.
FIRST_POLL = 0.05
#: The longest pause of a polling waiter.
LAST_POLL = 1.0
_PREFER = re.compile(r"\A\s*wait\s*=\s*(\d{1,9})\s*\Z", re.IGNORECASE)
_log = logging.getLogger("tasktoolkit.endpoints")


def parse_prefer(header: str | None, *, cap: int) -> int | None:
    """The seconds a request asks to wait (``Prefer: wait=<n>``), capped; ``None`` if none.

    :raises InvalidHeaderError: anything but one ``wait`` of a whole number of
        seconds (other preferences, a negative or non-numeric wait, two waits).
    """
    if header is None:
        return None
    found = _PREFER.match(header)
    if found is None:
        shown = header if len(header) <= 64 else header[:64] + "..."
        raise InvalidHeaderError(
            f"Prefer: {shown!r} is not wait=<seconds> (a whole number; no other preference)"
        )
    return min(int(found.group(1)), cap)


class Subscription:
    """Changes of one record, heard of (or polled for) while it is held."""

    def __init__(self, listener: Listener | None) -> None:
        self.event = threading.Event()
        self._listener = listener
        self._pause = FIRST_POLL

    def wait(self, timeout: float) -> None:
        """Sleep until the record may have changed, or ``timeout`` seconds at most."""
        pushed = self._listener is not None and self._listener.healthy
        if not pushed:
            timeout = min(timeout, self._pause)
            self._pause = min(self._pause * 2, LAST_POLL)
        self.event.wait(timeout)
        self.event.clear()


class Waiter(Protocol):
    """Hands out subscriptions to the changes of a record, by its id."""

    def subscribe(self, record_id: str) -> Any: ...  # a context manager of a Subscription

    def close(self) -> None: ...


class Polling:
    """The waiter of a database that cannot push: every subscription polls."""

    @contextmanager
    def subscribe(self, record_id: str) -> Iterator[Subscription]:
        yield Subscription(None)

    def close(self) -> None:
        pass


class Listener:
    """One PostgreSQL connection, outside the pool, ``LISTEN``\\ ing for changed ids.

    A thread of its own reads the notifications and wakes the subscriptions
    of each id. When the connection fails it is made again (every waiter is
    woken then: a change may have gone unheard), and waiters poll meanwhile.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._waiting: dict[str, set[threading.Event]] = {}
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._connection: Any = None
        self._thread = threading.Thread(
            target=self._listen, name="tasktoolkit-listener", daemon=True
        )
        self._thread.start()

    @property
    def healthy(self) -> bool:
        """Whether notifications are heard now."""
        return self._connected.is_set()

    @contextmanager
    def subscribe(self, record_id: str) -> Iterator[Subscription]:
        subscription = Subscription(self)
        with self._lock:
            self._waiting.setdefault(record_id, set()).add(subscription.event)
        try:
            yield subscription
        finally:
            with self._lock:
                events = self._waiting.get(record_id)
                if events is not None:
                    events.discard(subscription.event)
                    if not events:
                        del self._waiting[record_id]

    def close(self) -> None:
        """Stop listening and close the connection."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _wake(self, record_id: str | None) -> None:
        with self._lock:
            if record_id is None:
                events = [e for group in self._waiting.values() for e in group]
            else:
                events = list(self._waiting.get(record_id, ()))
        for event in events:
            event.set()

    def _connect(self) -> Any:
        # A connection made as the engine makes them (same arguments and
        # hooks), but never returned to its pool.
        pooled = self._engine.pool.recreate().connect()
        pooled.detach()
        connection: Any = pooled.dbapi_connection
        connection.rollback()
        connection.autocommit = True
        connection.execute(f"LISTEN {CHANGES_CHANNEL}")
        return connection

    def _listen(self) -> None:
        pause = FIRST_POLL
        while not self._stop.is_set():
            try:
                self._connection = self._connect()
                self._connected.set()
                self._wake(None)
                pause = FIRST_POLL
                while not self._stop.is_set():
                    for notification in self._connection.notifies(timeout=1.0):
                        self._wake(notification.payload)
            except Exception:
                if not self._stop.is_set():
                    _log.warning("not listening for changes; waiting requests poll", exc_info=True)
            finally:
                self._connected.clear()
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None
            self._stop.wait(pause)
            pause = min(pause * 2, 5.0)


def waiter_for(engine: Engine) -> Waiter:
    """A :class:`Listener` on PostgreSQL (with psycopg 3), else :class:`Polling`."""
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return Listener(engine)
    return Polling()

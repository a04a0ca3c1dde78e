"""Waiting for changes without polling where PostgreSQL can push them, polling elsewhere.

Two kinds of waiters share this: requests waiting for a record
(``Prefer: wait``, keyed by the record's id) and idle database workers waiting
for a task to claim (keyed by :func:`~tasktoolkit.orm._operations.pending_key`
of their queues).

- On PostgreSQL (psycopg 3) one :class:`Listener` per engine and process
  keeps a connection of its own outside the pool, ``LISTEN``\\ s on
  :data:`~tasktoolkit.orm._operations.CHANGES_CHANNEL` and wakes the
  subscriptions of the keys it hears of: every move of a task, every change of
  an operation and every task made pending sends one in its own transaction
  (:func:`~tasktoolkit.orm._operations.notify_changed`, the one place that
  sends them). While that connection is down, waiters poll, and it is made
  again every few seconds (one log line when it is lost, one when it is back).
- Elsewhere, a waiter polls: it looks again after 50 ms, then twice as long
  each time, up to 1 s.

Example::

    waiter = waiter_for(engine)
    with waiter.subscribe(operation_id) as changes:
        while not done():
            changes.wait(remaining)
    waiter.close()
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from tasktoolkit.hooks import Outage
from tasktoolkit.orm._operations import CHANGES_CHANNEL

__all__ = [
    "FIRST_POLL",
    "LAST_POLL",
    "Listener",
    "Polling",
    "Subscription",
    "Waiter",
    "waiter_for",
]

#: The first pause of a polling waiter, in seconds; each next one is twice as long.
FIRST_POLL = 0.05
#: The longest pause of a polling waiter.
LAST_POLL = 1.0
#: The longest pause between two tries to make the ``LISTEN`` connection again.
_RECONNECT = 5.0
_log = logging.getLogger("tasktoolkit.orm")
#: The engine attribute holding its process's shared :class:`Listener`.
_SHARED = "_tasktoolkit_listener"
# Guards the making and the closing of shared listeners (a lock, not data).
_SHARING = threading.Lock()


class Subscription:
    """Changes of some keys (a record's id, a queue's pending key), heard of (or
    polled for) while it is held."""

    def __init__(self, listener: Listener | None) -> None:
        self.event = threading.Event()
        self._listener = listener
        self._pause = FIRST_POLL

    @property
    def pushed(self) -> bool:
        """Whether changes are pushed now (a healthy listener), rather than polled for."""
        return self._listener is not None and self._listener.healthy

    def wait(self, timeout: float) -> bool:
        """Sleep until the record may have changed, or ``timeout`` seconds at most;
        whether a change was heard of (``False`` after a polling pause)."""
        if not self.pushed:
            timeout = min(timeout, self._pause)
            self._pause = min(self._pause * 2, LAST_POLL)
        heard = self.event.wait(timeout)
        self.event.clear()
        return heard


class Waiter(Protocol):
    """Hands out subscriptions to the changes of records (or queues), by their keys."""

    def subscribe(self, *keys: str) -> Any: ...  # a context manager of a Subscription

    def close(self) -> None: ...


class Polling:
    """The waiter of a database that cannot push: every subscription polls."""

    @contextmanager
    def subscribe(self, *keys: str) -> Iterator[Subscription]:
        yield Subscription(None)

    def close(self) -> None:
        pass


class Listener:
    """One PostgreSQL connection, outside the pool, ``LISTEN``\\ ing for changed keys.

    A thread of its own reads the notifications and wakes the subscriptions
    of each key. When the connection fails it is made again (every waiter is
    woken then: a change may have gone unheard), and waiters poll meanwhile.
    Shared by the users :func:`waiter_for` hands it to: it stops when the last
    of them closes it.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.pid = os.getpid()
        self.users = 1
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
    def subscribe(self, *keys: str) -> Iterator[Subscription]:
        subscription = Subscription(self)
        with self._lock:
            for key in keys:
                self._waiting.setdefault(key, set()).add(subscription.event)
        try:
            yield subscription
        finally:
            with self._lock:
                for key in keys:
                    events = self._waiting.get(key)
                    if events is not None:
                        events.discard(subscription.event)
                        if not events:
                            del self._waiting[key]

    def close(self) -> None:
        """Let go of the listener; the last user stops it and closes its connection."""
        with _SHARING:
            self.users -= 1
            if self.users > 0:
                return
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
        outage = Outage(_log, "LISTEN connection")
        while not self._stop.is_set():
            try:
                self._connection = self._connect()
                self._connected.set()
                outage.over()
                self._wake(None)
                pause = FIRST_POLL
                while not self._stop.is_set():
                    for notification in self._connection.notifies(timeout=1.0):
                        self._wake(notification.payload)
            except Exception as exc:
                if not self._stop.is_set():
                    # One line when it is lost and one when it is back, not one a try.
                    outage.failed(exc, f"waiters poll; it is made again every {_RECONNECT:.0f} s")
            finally:
                self._connected.clear()
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None
            self._stop.wait(pause)
            pause = min(pause * 2, _RECONNECT)


def waiter_for(engine: Engine) -> Waiter:
    """The engine's :class:`Listener` in this process on PostgreSQL (with psycopg 3),
    else :class:`Polling`. Close it when done with it."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return Polling()
    with _SHARING:
        shared = getattr(engine, _SHARED, None)
        # Not one its parent process made (a fork has no listening thread).
        if isinstance(shared, Listener) and shared.pid == os.getpid() and shared.users > 0:
            shared.users += 1
            return shared
        listener = Listener(engine)
        setattr(engine, _SHARED, listener)
        return listener

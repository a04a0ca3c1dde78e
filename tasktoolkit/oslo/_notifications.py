"""Notifications out of the process: ``tasktoolkit.operation.end`` on oslo.messaging.

:class:`Notifications` is a :class:`~tasktoolkit.hooks.Hook`: when an
operation's end is committed, it emits ``tasktoolkit.operation.end`` (priority
``INFO``) on the notification bus, as Nova emits its versioned notifications,
so other services learn that an operation ended without polling. The payload
is the operation's view (what ``GET /operations/<id>`` shows, without its
tasks) in a versioned envelope (:func:`operation_payload`).

**At least once, never in the request's way.** The hook only hands the
operation's id to a thread of the process, which reads the operation, sends
it, and marks it ``notified_at`` in the database. An end that could not be
sent (the broker was down, the process died first, or it ended in a process
without this hook, such as a worker's) is left unmarked, and
:meth:`Notifications.sweep`, called beside the reaper, sends what finished at
least ``sweep_after`` ago and was never marked. A consumer may see an end
twice (a sweep and a late send); the payload's ``id`` says which operation it
is.

oslo.messaging's ``Notifier`` logs a send that failed and drops it, which
would make a notification at most once; so the toolkit sends through the
notification transport as the Notifier's ``messagingv2`` driver does (the
same message, the same topics ``<topic>.info``), where a failure raises and
the operation stays unmarked. Any oslo.messaging notification listener reads
it.

Example::

    notifications = Notifications(engine, url="rabbit://user:pass@rabbit:5672/")
    toolkit = Toolkit(engine, Settings(hooks=[notifications]))
    ...
    toolkit.reap(); notifications.sweep()        # in the periodic job
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from tasktoolkit.durations import DurationLike, duration
from tasktoolkit.errors import database_unavailable
from tasktoolkit.hooks import Hook, Outage, first_line
from tasktoolkit.orm import Operation, OperationState, deadline, prepare_engine
from tasktoolkit.orm._notifying import mark_notified, operations_to_notify
from tasktoolkit.signals import OperationChange
from tasktoolkit.views import operation_view

__all__ = ["EVENT_TYPE", "PAYLOAD_VERSION", "Notifications", "operation_payload"]

_log = logging.getLogger("tasktoolkit.notifications")

#: The event type of an operation's end.
EVENT_TYPE = "tasktoolkit.operation.end"
#: The payload's version: the minor grows when a field is added, the major when
#: one is removed or changes meaning (Nova's rule for its versioned notifications).
#: 1.1: ``resources`` and ``retry_of``; ``error`` may name the first failed task.
PAYLOAD_VERSION = "1.1"
_PAYLOAD_NAME = "OperationPayload"
_NAMESPACE = "tasktoolkit"
#: The longest a process keeps ends waiting for its sender; past it, the sweep sends them.
_MAX_WAITING = 10000


def operation_payload(operation: Operation) -> dict[str, Any]:
    """The versioned payload of an operation's end, as Nova's ``nova_object`` envelope.

    Example::

        {"tasktoolkit_object.name": "OperationPayload",
         "tasktoolkit_object.namespace": "tasktoolkit",
         "tasktoolkit_object.version": "1.1",
         "tasktoolkit_object.data": {"id": "req-...", "state": "succeeded", ...}}
    """
    return {
        f"{_NAMESPACE}_object.name": _PAYLOAD_NAME,
        f"{_NAMESPACE}_object.namespace": _NAMESPACE,
        f"{_NAMESPACE}_object.version": PAYLOAD_VERSION,
        f"{_NAMESPACE}_object.data": operation_view(operation, admin=False),
    }


class Notifications(Hook):
    """Emit ``tasktoolkit.operation.end`` for every operation that ends (a hook).

    :param engine: the database of the operations (the toolkit's engine).
    :param url: the transport URL (``rabbit://user:pass@host:5672/vhost``); default
        ``conf``'s (``[oslo_messaging_notifications] transport_url``, else
        ``[DEFAULT] transport_url``).
    :param conf: the service's parsed ``oslo_config.cfg.ConfigOpts``; default an
        empty one (then give ``url``).
    :param topics: where to send (``<topic>.info`` on the bus): a listener on
        ``notifications`` reads it.
    :param publisher_id: who sends; default ``tasktoolkit:<host name>``.
    :param retry: how often a send tries to reconnect to an unreachable broker
        before it fails (0: not at all; the sweep sends it later).
    :param sweep_after: how long after its end an operation not notified is the
        sweep's (the process that finished it had that long to send it).
    :param sweep_within: how long after its end the sweep still sends it: a sweep
        that starts on an old database does not announce its history.
    :param batch_size: the most operations one read (and one mark) handles.
    :param deadline: seconds the sender's own database work may take.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        url: str | None = None,
        conf: Any | None = None,
        topics: Sequence[str] = ("notifications",),
        publisher_id: str | None = None,
        retry: int = 0,
        sweep_after: DurationLike = 60,
        sweep_within: DurationLike = "1d",
        batch_size: int = 100,
        deadline: float | None = 5.0,
    ) -> None:
        import oslo_messaging
        from oslo_config import cfg

        if isinstance(topics, str) or not topics or not all(isinstance(t, str) for t in topics):
            raise TypeError(f"topics must be a list of topic names, got {topics!r}")
        if not isinstance(retry, int) or retry < -1:
            raise ValueError(f"retry must be -1 (for ever), 0 or more, got {retry!r}")
        if not isinstance(batch_size, int) or not 1 <= batch_size <= 10000:
            raise ValueError(f"batch_size must be 1 to 10000, got {batch_size!r}")
        if conf is None:
            conf = cfg.ConfigOpts()
            conf([], default_config_files=[])  # no file: url says where
        self.engine = prepare_engine(engine)
        self.topics = tuple(topics)
        self.publisher_id = publisher_id or f"tasktoolkit:{socket.gethostname()}"
        self.retry = retry
        self.sweep_after: timedelta = duration(sweep_after, what="sweep_after")
        self.sweep_within: timedelta = duration(sweep_within, what="sweep_within")
        self.batch_size = batch_size
        self.deadline = deadline
        self._messaging = oslo_messaging
        self._conf = conf
        self._url = url
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._condition = threading.Condition()
        self._waiting: list[str] = []
        self._busy = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._transport: Any = oslo_messaging.get_notification_transport(conf, url=url)
        #: The database as the sender and the sweep see it: a line when it goes, one when back.
        self._outage = Outage(_log, "notifications")

    def __repr__(self) -> str:
        return f"Notifications(topics={list(self.topics)!r}, publisher_id={self.publisher_id!r})"

    # -- the hook ----------------------------------------------------------

    def operation_changed(self, change: OperationChange) -> None:
        """An operation's end is committed: hand it to the sender (never waits for it)."""
        if change.state == OperationState.RUNNING:
            return
        with self._condition:
            if self._pid != os.getpid():
                self._forked()
            if len(self._waiting) >= _MAX_WAITING:
                return  # the broker is far behind: the sweep sends it
            self._waiting.append(change.operation_id)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tasktoolkit-notifications", daemon=True
                )
                self._thread.start()
            self._condition.notify_all()

    # -- upkeep ------------------------------------------------------------

    def sweep(self) -> int:
        """Send the ends nobody sent (finished ``sweep_after`` to ``sweep_within`` ago).

        For the periodic job beside the reaper (``tasktoolkit reap --bridge``
        calls it). Stops at the first send that fails: the broker is away.

        :returns: how many were sent.
        """
        with self._condition:
            if self._pid != os.getpid():
                self._forked()
        total = 0
        while True:
            sent, complete = self._send_batch(None)
            total += sent
            if not complete or sent < self.batch_size:
                return total

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until the ends this process was told of are sent (or left to the sweep).

        :returns: whether it finished within ``timeout`` seconds.
        """
        with self._condition:
            return self._condition.wait_for(
                lambda: not self._waiting and not self._busy, timeout=timeout
            )

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush, stop the sender and let go of the broker's connections."""
        self.flush(timeout)
        with self._condition:
            self._stopped = True
            thread, self._thread = self._thread, None
            self._condition.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._condition:
            self._stopped = False
        self._transport.cleanup()

    # -- the sender ----------------------------------------------------------

    def _forked(self) -> None:
        """In a child of a fork: the parent's thread, ends and broker connections are not ours."""
        self._pid = os.getpid()
        self._outage = Outage(_log, "notifications")
        self._waiting = []
        self._busy = False
        self._thread = None
        self._transport = self._messaging.get_notification_transport(self._conf, url=self._url)

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._waiting or self._stopped)
                if not self._waiting:
                    return  # stopped
                batch = self._waiting[: self.batch_size]
                del self._waiting[: self.batch_size]
                self._busy = True
            try:
                self._send_batch(batch)
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def _send_batch(self, ids: list[str] | None) -> tuple[int, bool]:
        """Read, send and mark one batch (``ids``, or the sweep's); never raises.

        :returns: how many were sent, and whether every one found was.
        """
        try:
            with deadline(self.deadline), self._sessions() as session, session.begin():
                found = operations_to_notify(
                    session,
                    ids=ids,
                    settled=self.sweep_after,
                    within=self.sweep_within,
                    limit=self.batch_size,
                )
        except Exception as exc:  # the database's errors, SQLAlchemy's or oslo.db's
            if database_unavailable(exc):
                self._outage.failed(exc, "the ends are read again by the next sweep")
            else:
                _log.warning(
                    "notifications: cannot read the operations to notify: %s", first_line(exc)
                )
            return 0, False
        self._outage.over()
        sent: list[str] = []
        for operation in found:  # no transaction is held while the broker is asked
            try:
                self._send(operation)
            except Exception as exc:  # the transport's (kombu's, the driver's)
                _log.warning(
                    "notifications: the end of %d operation(s) not sent, left for the sweep "
                    "(%s: %s)",
                    len(found) - len(sent),
                    type(exc).__name__,
                    first_line(exc),
                )
                break
            sent.append(operation.id)
        if not sent:
            return 0, not found
        try:
            with deadline(self.deadline), self.engine.begin() as connection:
                mark_notified(connection, sent)
        except Exception as exc:
            if database_unavailable(exc):
                self._outage.failed(exc, "ends sent but not marked are sent again by a sweep")
            else:
                _log.warning(
                    "notifications: %d sent operation end(s) not marked (a sweep sends them "
                    "again): %s",
                    len(sent),
                    first_line(exc),
                )
            return len(sent), False  # read again, they would be sent again at once
        return len(sent), len(sent) == len(found)

    def _send(self, operation: Operation) -> None:
        """One notification, as the Notifier's ``messagingv2`` driver sends it; raises when
        the broker did not take it."""
        context = {
            "request_id": operation.id,
            "global_request_id": operation.global_request_id,
            "project_id": operation.project_id,
            "user_id": operation.user_id,
        }
        message = {
            "message_id": str(uuid.uuid4()),
            "publisher_id": self.publisher_id,
            "event_type": EVENT_TYPE,
            "priority": "INFO",
            "payload": operation_payload(operation),
            "timestamp": str(datetime.now(UTC).replace(tzinfo=None)),
        }
        for topic in self.topics:
            self._transport._send_notification(
                self._messaging.Target(topic=f"{topic}.info"),
                context,
                message,
                version=2.0,
                retry=self.retry,
            )

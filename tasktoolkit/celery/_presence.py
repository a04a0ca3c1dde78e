"""A Celery worker in the list of live workers, from ``worker_ready`` to ``worker_shutdown``.

A Celery worker runs its tasks in pool processes and idles in Celery's own
loop, which makes no call to the database: so the main process of each worker
running a bridge beats from a daemon thread of its own, every third of the
toolkit's ``Settings.worker_beat_timeout`` (60 s by default), while Celery runs it.
Its row (:mod:`tasktoolkit.orm._registry`) is named by the worker's node name
(``-n``, ``celery@<hostname>`` by default), of kind ``celery``, with the
bridge's task names and the queues it consumes from (Celery's default queue is
the toolkit's default queue, ``None``); it leaves at a warm or cold shutdown.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import Engine

from tasktoolkit.errors import database_unavailable
from tasktoolkit.hooks import first_line
from tasktoolkit.orm._registry import Announcement, beat, leave

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["Presence", "Present"]


class Present(Protocol):
    """What a presence reads of its bridge (a ``CeleryBridge``): its app, names, engine."""

    @property
    def app(self) -> Celery: ...

    @property
    def names(self) -> frozenset[str]: ...

    @property
    def engine(self) -> Engine: ...

_log = logging.getLogger("tasktoolkit.celery")


class Presence:
    """The beat of the Celery worker (main process) running ``bridge``, if one does."""

    def __init__(self, bridge: Present, timeout: float) -> None:
        from celery import signals

        self.bridge = bridge
        self.timeout = timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._announcement: Announcement | None = None
        signals.worker_ready.connect(self._ready, weak=False)
        signals.worker_shutdown.connect(self._shutdown, weak=False)

    def close(self) -> None:
        """Stop listening to Celery's worker signals."""
        from celery import signals

        signals.worker_ready.disconnect(self._ready)
        signals.worker_shutdown.disconnect(self._shutdown)

    def _queues(self) -> list[str | None]:
        app = self.bridge.app
        default = app.conf.task_default_queue
        queues = app.amqp.queues
        names = sorted(queues.consume_from or queues)
        return [None if name == default else name for name in names]

    def _ready(self, sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not self.bridge.app or self._thread is not None:
            return
        self._announcement = Announcement(
            str(getattr(sender, "hostname", None) or "celery"),
            "celery",
            sorted(self.bridge.names),
            self._queues(),
            math.ceil(self.timeout),
        )
        self._beat()
        self._thread = threading.Thread(target=self._run, name="tasktoolkit-beat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        announcement = self._announcement
        if announcement is None:
            return
        try:
            with self.bridge.engine.begin() as conn:
                beat(conn, announcement)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            _log.warning("%s: no beat, the database is unavailable: %s", announcement.id, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.timeout / 3):
            try:
                self._beat()
            except Exception as exc:  # a beat's failure is the beat's, never the worker's
                _log.warning("tasktoolkit: a worker beat failed: %s", first_line(exc))

    def _shutdown(self, sender: Any = None, **_: Any) -> None:
        announcement, self._announcement = self._announcement, None
        thread, self._thread = self._thread, None
        if announcement is None:
            return
        self._stop.set()
        if thread is not None:
            thread.join(5.0)
        try:
            with self.bridge.engine.begin() as conn:
                leave(conn, announcement.id)
        except Exception as exc:
            _log.warning("%s: not taken off the list of workers: %s", announcement.id, exc)

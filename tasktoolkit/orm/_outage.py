"""One log line per change of the database's availability, never a traceback per try.

While the database is away, whoever keeps trying (the ``LISTEN`` connection, a
worker's claims, its reports and outcomes) tries again every few seconds; a
line per try, with its traceback, would bury the one thing an operator needs
to read: when it went, how it is retried, and when it came back.

Example::

    outage = Outage(logging.getLogger("tasktoolkit.worker"), "worker w1: claims")
    try:
        claim()
    except Exception as exc:
        outage.failed(exc, "trying again every 1.0 s")   # logged the first time only
    else:
        outage.over()                                     # "back after 12.3 s", once
"""

from __future__ import annotations

import logging
import threading
import time

from tasktoolkit.hooks import first_line

__all__ = ["Outage"]


class Outage:
    """The availability of the database as one party sees it, logged when it changes.

    :param log: where the two lines go (a warning each; the tries between them
        at debug level, with their tracebacks).
    :param what: who is speaking, as the lines start with it.
    """

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self.what = what
        self._since: float | None = None
        self._lock = threading.Lock()

    @property
    def ongoing(self) -> bool:
        """Whether the last try failed."""
        return self._since is not None

    def failed(self, exc: BaseException, retrying: str) -> None:
        """A try failed because the database is away; ``retrying`` says what happens next."""
        with self._lock:
            first, self._since = self._since is None, self._since or time.monotonic()
        if first:
            self._log.warning(
                "%s: database unavailable (%s); %s", self.what, first_line(exc), retrying
            )
        else:
            self._log.debug("%s: database still unavailable", self.what, exc_info=exc)

    def over(self) -> None:
        """A try succeeded: say so once if the database had been away."""
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            self._log.warning(
                "%s: database back after %.1f s", self.what, time.monotonic() - since
            )

"""Waiting requests (RFC 7240 ``Prefer: wait=<seconds>``): woken by PostgreSQL, or polling.

A ``GET`` of an operation or a task with ``Prefer: wait=<n>`` answers when the
record is terminal, or (with ``If-None-Match``) as soon as it differs from
that ETag, or when the wait is over. Between two reads it holds no
transaction and no pooled connection: it sleeps on a subscription.

- On PostgreSQL the engine's one listener of the process (shared with
  its idle database workers; see :mod:`tasktoolkit.orm._listening`) wakes it
  when the record changes. While its connection is down, waiters poll.
- Elsewhere, a waiter polls: it reads again after 50 ms, then twice as long
  each time, up to 1 s.

Example::

    wait = parse_prefer(request.headers.get("Prefer"), cap=30)
    with waiter.subscribe(operation_id) as changes:
        while not done():
            changes.wait(remaining)
"""

from __future__ import annotations

import re

from tasktoolkit.errors import InvalidHeaderError

__all__ = ["parse_prefer"]

_PREFER = re.compile(r"\A\s*wait\s*=\s*(\d{1,9})\s*\Z", re.IGNORECASE)


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

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

Preferences other than ``wait`` are ignored (RFC 7240, section 2): only a
malformed ``wait`` is refused.

A wait holds a thread of the server, so a process holds at most
``Settings.max_waiting`` at once (a share of its threads: a WSGI app cannot
ask its server how many it has, so it is told, as a count). Past them, the
record is answered at once, without ``Preference-Applied``, and the client
polls as ``Retry-After`` says: no client can take every thread of a server.

Example::

    wait = parse_prefer(request.headers.get("Prefer"), cap=30)
    with waiter.subscribe(operation_id) as changes:
        while not done():
            changes.wait(remaining)
"""

from __future__ import annotations

import re

from tasktoolkit.errors import InvalidHeaderError

__all__ = ["PREFER_REFUSED", "parse_prefer"]

_SECONDS = re.compile(r"\A[0-9]{1,9}\Z")
_OWS = " \t"
# What parse_prefer refuses, as the OpenAPI document says it (``not`` this
# JSON Schema pattern; ECMA 262 with Python's meaning): elements split at
# commas; an element whose name (before "=" and ";") is "wait" in any case is a
# wait; the first wait is refused unless a whole number of seconds, bare or
# quoted. Said as what is refused, a generator of invalid headers (schemathesis)
# can make them. tests/endpoints/test_waiting.py holds it to parse_prefer.
_NAMED_WAIT = r"[ \t]*[Ww][Aa][Ii][Tt][ \t]*"
_OTHER = rf"(?!{_NAMED_WAIT}(?:[=;,]|$))[^,]*"
_GOOD_WAIT = rf'{_NAMED_WAIT}=[ \t]*(?:[0-9]{{1,9}}|"[0-9]{{1,9}}")[ \t]*(?:;[^,]*)?'
_BAD_WAIT = rf"(?={_NAMED_WAIT}(?:[=;,]|$))(?!{_GOOD_WAIT}(?:,|$))[^,]*"
#: The ``Prefer`` headers :func:`parse_prefer` refuses, as a JSON Schema pattern.
PREFER_REFUSED = rf"^(?:{_OTHER},)*{_BAD_WAIT}(?:,[\s\S]*)?$"


def parse_prefer(header: str | None, *, cap: int) -> int | None:
    """The seconds a request asks to wait (``Prefer: wait=<n>``), capped; ``None`` if none.

    As RFC 7240 says: preferences other than ``wait`` are ignored, as if
    absent (``return=minimal``, ``respond-async``, anything unknown), as are a
    preference's parameters; of two waits the first counts. Names are
    case-insensitive; a value may be quoted.

    :raises InvalidHeaderError: a ``wait`` that is not a whole number of seconds
        (negative, a fraction, not a number, no value).
    """
    if header is None:
        return None
    for element in header.split(","):
        name, equals, value = element.split(";", 1)[0].partition("=")
        name = name.strip(_OWS)
        if not (name.isascii() and name.lower() == "wait"):
            continue
        value = value.strip(_OWS)
        if len(value) > 1 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if not equals or not _SECONDS.match(value):
            shown = element if len(element) <= 64 else element[:64] + "..."
            raise InvalidHeaderError(
                f"Prefer: {shown.strip(_OWS)!r} is not wait=<seconds> (a whole number)"
            )
        return min(int(value), cap)
    return None

"""Checks shared by every layer: one rule per kind of value, written once.

Example::

    >>> whole_number(5, "batch size", maximum=10)
    5
    >>> whole_number(True, "batch size")
    Traceback (most recent call last):
    ...
    ValueError: batch size must be an integer from 1, got True
"""

from __future__ import annotations

import re

from tasktoolkit.errors import InvalidQueueError, InvalidTaskNameError

__all__ = [
    "ACTION",
    "DIGITS",
    "HTTP_TOKEN",
    "QUEUE",
    "RESOURCE_ID",
    "RESOURCE_TYPE",
    "TASK_NAME",
    "UNSTORABLE",
    "UUID",
    "check_queue",
    "check_task_name",
    "storable",
    "whole_number",
]

#: An HTTP token (RFC 9110): a method or a header name.
HTTP_TOKEN = re.compile(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
#: A task name: 1 to 128 letters, digits or ``_.:-``, starting with a letter or digit.
TASK_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
#: A resource type: lower-case letters, digits and ``_``, at most 39 characters, which
#: keeps ``ix_tasktoolkit_tasks_<type>_id`` within PostgreSQL's 63-character names.
RESOURCE_TYPE = re.compile(r"\A[a-z][a-z0-9_]{0,38}\Z")
#: A queue a task is routed to: 1 to 255 printable ASCII characters, no spaces (AMQP
#: limits a queue name to 255 bytes; a Neutron-style agent's host name fits).
QUEUE = re.compile(r"\A[\x21-\x7e]{1,255}\Z")
#: A task's id, as the toolkit makes them: a lower-case uuid.
UUID = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
#: A resource id in a filter: what the resource columns (64 characters) can hold.
RESOURCE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
#: A route's action as recorded on an operation (a Python name, as Routes has them).
ACTION = re.compile(r"\A[A-Za-z_][A-Za-z0-9_.:-]{0,63}\Z")
#: A decimal number, digits only.
DIGITS = re.compile(r"\A[0-9]+\Z")


#: What no database keeps: NUL (PostgreSQL refuses it) and lone surrogates (no UTF-8).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    r"""``text`` as every database keeps it: NUL and lone surrogates replaced by U+FFFD.

    For text that only describes (a path, a message, a traceback); ids that
    select records are refused instead.

    >>> storable("half\x00way") == "half\ufffdway"
    True
    """
    return UNSTORABLE.sub("\ufffd", text)


def whole_number(
    value: object,
    what: str,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    error: type[ValueError] = ValueError,
) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) within ``minimum..maximum``.

    :param what: names the value in the message.
    :param error: the exception raised otherwise (a ``ValueError`` subclass).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f"from {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise error(f"{what} must be an integer {bounds}, got {value!r}")
    return value


def check_queue(queue: object) -> str | None:
    """``queue`` if it is ``None`` (the default queue) or a queue name (:data:`QUEUE`).

    :raises InvalidQueueError: anything else (spaces, over 255 characters, not text).
    """
    if queue is None:
        return None
    if not isinstance(queue, str) or not QUEUE.match(queue):
        shown = queue if not isinstance(queue, str) or len(queue) <= 64 else queue[:64] + "..."
        raise InvalidQueueError(
            f"a queue name is 1 to 255 printable ASCII characters without spaces, got {shown!r}"
        )
    return queue


def check_task_name(name: object) -> str:
    """``name`` if it is a task name (:data:`TASK_NAME`); else :class:`InvalidTaskNameError`."""
    if not isinstance(name, str) or not TASK_NAME.match(name):
        raise InvalidTaskNameError(
            f"task name must be 1-128 letters, digits or '_.:-' (not first), got {name!r}"
        )
    return name

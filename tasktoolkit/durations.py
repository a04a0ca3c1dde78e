"""One duration type for every knob: a ``timedelta``, seconds, or text like ``90s`` or ``1d12h``.

Every front (Python, Paste, the command line, oslo.config) reads durations
through :func:`duration`, so ``deadline = 2.5``, ``deadline = "2500ms"`` and
``deadline = timedelta(seconds=2.5)`` mean the same everywhere.

Example::

    >>> duration("1d12h")
    datetime.timedelta(days=1, seconds=43200)
    >>> duration(90)
    datetime.timedelta(seconds=90)
    >>> optional_duration("none") is None
    True
    >>> format_duration(timedelta(minutes=15))
    '15m'
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from tasktoolkit.errors import InvalidDurationError

__all__ = [
    "MAX_DURATION",
    "DurationLike",
    "duration",
    "format_duration",
    "optional_duration",
]

#: What a duration may be given as: a ``timedelta``, seconds, or text (``90s``, ``1d12h``).
DurationLike = timedelta | int | float | str
#: Anything longer is taken for a mistake (use ``None`` where "never" is allowed).
MAX_DURATION = timedelta(days=3650)
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|w|d|h|m|s)", re.IGNORECASE)
_NUMBER = re.compile(r"\A\d+(?:\.\d+)?\Z")
_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_NEVER = frozenset({"none", "never"})
_FORM = "write it as seconds (2.5) or like 500ms, 90s, 15m, 12h, 7d, 2w or 1d12h"


def _seconds(value: object, what: str) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidDurationError(f"{what}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        if math.isnan(value) or math.isinf(value):
            raise InvalidDurationError(f"{what}: {value!r} is not a duration")
        return float(value)
    text = value.strip()
    if _NUMBER.match(text):
        return float(text)
    if not text or _PART.sub("", text).strip():
        raise InvalidDurationError(f"{what}: {value!r} is not a duration ({_FORM})")
    return sum(float(n) * _UNITS[unit.lower()] for n, unit in _PART.findall(text))


def duration(
    value: DurationLike,
    *,
    what: str = "duration",
    minimum: timedelta = timedelta(0),
    maximum: timedelta = MAX_DURATION,
) -> timedelta:
    """``value`` as a ``timedelta`` within ``minimum`` and ``maximum``.

    :raises InvalidDurationError: not a duration, or out of bounds (the message names ``what``).
    """
    seconds = _seconds(value, what)
    result = timedelta(seconds=seconds)
    if result < minimum:
        raise InvalidDurationError(
            f"{what}: {format_duration(result)} is under {format_duration(minimum)}"
        )
    if result > maximum:
        raise InvalidDurationError(f"{what}: {value!r} is longer than {format_duration(maximum)}")
    return result


def optional_duration(
    value: DurationLike | None,
    *,
    what: str = "duration",
    minimum: timedelta = timedelta(0),
    maximum: timedelta = MAX_DURATION,
) -> timedelta | None:
    """As :func:`duration`, with ``None`` (or the text ``none``/``never``) for "no limit"."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _NEVER):
        return None
    return duration(value, what=what, minimum=minimum, maximum=maximum)


def format_duration(value: timedelta | None) -> str:
    """The shortest text :func:`duration` reads back as ``value`` (``none`` for ``None``)."""
    if value is None:
        return "none"
    milliseconds = round(value.total_seconds() * 1000)
    if milliseconds % 1000:
        return f"{milliseconds}ms"
    seconds = milliseconds // 1000
    parts: list[str] = []
    for unit in ("d", "h", "m", "s"):
        size = int(_UNITS[unit])
        if seconds >= size or (unit == "s" and not parts):
            count, seconds = divmod(seconds, size)
            if count or not parts:
                parts.append(f"{count}{unit}")
    return "".join(parts)

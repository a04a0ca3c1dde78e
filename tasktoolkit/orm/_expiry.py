"""Time-to-live of finished records: the default, the limit, and the check of a value.

A finished task or operation gets ``expires_at = finished_at + ttl``; ``None``
keeps it (a task until its resource is deleted). Pending and running records
never expire. A task name's ttl per final state is one of its
:class:`~tasktoolkit.orm.TaskRules`.
"""

from __future__ import annotations

from datetime import timedelta

from tasktoolkit.errors import InvalidTTLError

__all__ = ["DEFAULT_TTL", "MAX_TTL", "check_ttl"]

#: The time-to-live of a finished record when nothing else is configured.
DEFAULT_TTL = timedelta(hours=24)
#: Anything longer is taken for a mistake (use ``None`` to keep forever).
MAX_TTL = timedelta(days=3650)


def check_ttl(ttl: object, *, what: str = "ttl") -> timedelta | None:
    """``ttl`` if it is ``None`` or a timedelta in ``0..MAX_TTL``; else :class:`InvalidTTLError`."""
    if ttl is None:
        return None
    if not isinstance(ttl, timedelta):
        raise InvalidTTLError(f"{what}: expected a timedelta or None, got {ttl!r}")
    if ttl < timedelta(0):
        raise InvalidTTLError(f"{what}: {ttl} is negative")
    if ttl > MAX_TTL:
        raise InvalidTTLError(f"{what}: {ttl} is longer than {MAX_TTL.days} days; use None")
    return ttl

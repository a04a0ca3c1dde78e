"""Time-to-live of finished tasks: when a finished record expires.

A finished task gets ``expires_at = finished_at + ttl``. The ttl is looked up
from the most specific rule: (name, final state), then name, then final state,
then the default (24 hours). ``None`` keeps the record until its resource is
deleted. Pending and running records never expire.

Example::

    ExpiryPolicy(
        by_state={"failed": timedelta(days=7)},      # keep failures longer
        by_name={"audit": None},                     # keep audits with the resource
    )
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from tasktoolkit.errors import InvalidTTLError
from tasktoolkit.orm._states import TERMINAL_TASK_STATES, parse_task_state

__all__ = ["DEFAULT_TTL", "MAX_TTL", "ExpiryPolicy", "check_ttl"]

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


def _frozen(mapping: Mapping[str, timedelta | None], what: str) -> Mapping[str, timedelta | None]:
    return MappingProxyType(
        {str(k): check_ttl(v, what=f"{what}[{k!r}]") for k, v in mapping.items()}
    )


@dataclass(frozen=True)
class ExpiryPolicy:
    """How long finished tasks are kept.

    :param default: the ttl when no rule below matches.
    :param by_name: a ttl per task name.
    :param by_state: a ttl per final state (``succeeded``, ``failed``, ``cancelled``).
    :param by_name_and_state: a ttl per ``(name, final state)``.
    """

    default: timedelta | None = DEFAULT_TTL
    by_name: Mapping[str, timedelta | None] = field(default_factory=dict)
    by_state: Mapping[str, timedelta | None] = field(default_factory=dict)
    by_name_and_state: Mapping[tuple[str, str], timedelta | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_ttl(self.default, what="default")
        object.__setattr__(self, "by_name", _frozen(self.by_name, "by_name"))
        for state in [*self.by_state, *(s for _, s in self.by_name_and_state)]:
            if parse_task_state(state) not in TERMINAL_TASK_STATES:
                raise InvalidTTLError(f"{state!r} is not a final state; only finished tasks expire")
        object.__setattr__(self, "by_state", _frozen(self.by_state, "by_state"))
        object.__setattr__(
            self,
            "by_name_and_state",
            MappingProxyType(
                {
                    (str(n), str(s)): check_ttl(v, what=f"by_name_and_state[{(n, s)!r}]")
                    for (n, s), v in self.by_name_and_state.items()
                }
            ),
        )

    def ttl_for(self, name: str, state: str) -> timedelta | None:
        """The ttl of a task named ``name`` that finished in ``state``."""
        if (name, state) in self.by_name_and_state:
            return self.by_name_and_state[(name, state)]
        if name in self.by_name:
            return self.by_name[name]
        if state in self.by_state:
            return self.by_state[state]
        return self.default

    def expires_at(self, finished_at: datetime, name: str, state: str) -> datetime | None:
        """When a task named ``name`` that finished in ``state`` at ``finished_at`` expires."""
        ttl = self.ttl_for(name, state)
        return None if ttl is None else finished_at + ttl

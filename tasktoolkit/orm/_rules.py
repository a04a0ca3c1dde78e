"""A task name's rules: deadlines, attempts, backoff and time-to-live, declared in one place.

A resource model declares them per task name in ``__task_rules__``, a mapping
of task names to :class:`TaskRules`; the key ``"*"`` gives the model's default,
and a name with no entry gets that default (or the library's). A name's entry
is whole: fields it does not give take the library's defaults, not the
``"*"`` entry's (``dataclasses.replace(base, ...)`` derives one from another).

Rules are applied to each task when it is spawned: its row carries its
``max_attempts``, ``heartbeat_timeout``, ``start_deadline`` and the rest (as
compact JSON in ``rules``), so that workers and reapers in any process enforce
them without importing the host's models, and a deploy that changes a rule
changes it for tasks spawned from then on.

Example::

    class Port(TaskResource, Base):
        __task_rules__ = {
            "*": TaskRules(start_timeout=timedelta(minutes=30)),
            "l2_wiring": TaskRules(max_attempts=3, backoff=timedelta(seconds=5)),
            "audit": TaskRules(ttl=None),                           # kept with the port
            "dhcp_provisioning": TaskRules(ttl_by_state={"failed": timedelta(days=7)}),
        }
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property, lru_cache
from types import MappingProxyType
from typing import Any

from tasktoolkit._checks import TASK_NAME
from tasktoolkit.errors import InvalidTaskRulesError, InvalidTTLError
from tasktoolkit.orm._clock import Moment, later
from tasktoolkit.orm._expiry import DEFAULT_TTL, MAX_TTL, check_ttl
from tasktoolkit.orm._states import TERMINAL_TASK_STATES

__all__ = ["DEFAULT_NAME", "DEFAULT_RULES", "RowRules", "TaskRules", "check_rules_table"]

#: The key of a model's default rules in ``__task_rules__``.
DEFAULT_NAME = "*"
_MAX_ATTEMPTS = 1000
#: A published task not started within this many heartbeat timeouts is published again.
_REDELIVER_TIMEOUTS = 3


def _duration(value: object, what: str, *, optional: bool, minimum: timedelta) -> None:
    if value is None and optional:
        return
    if not isinstance(value, timedelta):
        allowed = "a timedelta or None" if optional else "a timedelta"
        raise InvalidTaskRulesError(f"{what}: expected {allowed}, got {value!r}")
    if value < minimum:
        raise InvalidTaskRulesError(f"{what}: {value} is under {minimum}")
    if value > MAX_TTL:
        raise InvalidTaskRulesError(f"{what}: {value} is longer than {MAX_TTL.days} days")


def _ttl(value: object, what: str) -> timedelta | None:
    try:
        return check_ttl(value, what=what)
    except InvalidTTLError as exc:
        raise InvalidTaskRulesError(str(exc)) from None


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


@dataclass(frozen=True, init=False)
class TaskRules:
    """The rules of one task name. Every value is checked here, at declaration.

    :param start_timeout: a ``pending`` task not started within it (from its
        spawn, or from the end of a retry's backoff) is failed with code
        ``not_started``; ``None``: never.
    :param heartbeat_timeout: a ``running`` task without a heartbeat for
        longer is taken from its worker (re-queued or failed ``worker_lost``);
        whole seconds, at least one.
    :param redeliver_after: a task a queue bridge published that has not
        started within it (from its publish, and from the end of its backoff)
        is published again by the bridge's sweeper, as a broker's visibility
        timeout hands back a message nobody acknowledged: the broker lost the
        message, or a dead worker holds it. Whole seconds, at least one;
        ``None``: three heartbeat timeouts. Keep it above the longest a task
        waits in a healthy queue: a backlog older than it is published twice
        (the second delivery runs nothing).
    :param max_attempts: how many times the task may start; a retryable
        failure or a lost worker re-queues it until they are used up.
    :param backoff: the wait before the second attempt; it doubles with each
        attempt after, up to ``backoff_cap``.
    :param backoff_cap: the longest wait between two attempts.
    :param jitter: the share of each wait drawn at random (0: none, 1: all of
        it), so that tasks failed together do not all come back together.
    :param ttl: how long a finished task is kept; ``None`` keeps it until its
        resource is deleted.
    :param ttl_by_state: a ttl per final state (``succeeded``, ``failed``,
        ``cancelled``), over ``ttl``.
    :param exclusive: never two tasks of this name running at once on one
        resource, whichever workers claim them: the later waits until the
        earlier ended (``waiting: exclusive``), in creation order.
    :raises InvalidTaskRulesError: an unknown option or a value that cannot be.
    """

    start_timeout: timedelta | None
    heartbeat_timeout: timedelta
    redeliver_after: timedelta | None
    max_attempts: int
    backoff: timedelta
    backoff_cap: timedelta
    jitter: float
    ttl: timedelta | None
    ttl_by_state: Mapping[str, timedelta | None] = field(default_factory=dict)
    exclusive: bool = False

    def __init__(
        self,
        *,
        start_timeout: timedelta | None = timedelta(hours=1),
        heartbeat_timeout: timedelta = timedelta(minutes=5),
        redeliver_after: timedelta | None = None,
        max_attempts: int = 1,
        backoff: timedelta = timedelta(seconds=10),
        backoff_cap: timedelta = timedelta(minutes=10),
        jitter: float = 0.5,
        ttl: timedelta | None = DEFAULT_TTL,
        ttl_by_state: Mapping[str, timedelta | None] | None = None,
        exclusive: bool = False,
        **unknown: object,
    ) -> None:
        if unknown:
            raise InvalidTaskRulesError(f"unknown task rule(s): {', '.join(sorted(unknown))}")
        _duration(start_timeout, "start_timeout", optional=True, minimum=timedelta(seconds=1))
        _duration(
            heartbeat_timeout, "heartbeat_timeout", optional=False, minimum=timedelta(seconds=1)
        )
        _duration(redeliver_after, "redeliver_after", optional=True, minimum=timedelta(seconds=1))
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise InvalidTaskRulesError(f"max_attempts: expected an integer, got {max_attempts!r}")
        if not 1 <= max_attempts <= _MAX_ATTEMPTS:
            raise InvalidTaskRulesError(
                f"max_attempts: must be 1 to {_MAX_ATTEMPTS}, got {max_attempts}"
            )
        _duration(backoff, "backoff", optional=False, minimum=timedelta(0))
        _duration(backoff_cap, "backoff_cap", optional=False, minimum=timedelta(0))
        if backoff_cap < backoff:
            raise InvalidTaskRulesError(f"backoff_cap ({backoff_cap}) is under backoff ({backoff})")
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
            raise InvalidTaskRulesError(f"jitter: expected a number from 0 to 1, got {jitter!r}")
        if not isinstance(exclusive, bool):
            raise InvalidTaskRulesError(f"exclusive: expected True or False, got {exclusive!r}")
        by_state = {} if ttl_by_state is None else ttl_by_state
        if not isinstance(by_state, Mapping):
            raise InvalidTaskRulesError(f"ttl_by_state: expected a mapping, got {by_state!r}")
        for state in by_state:
            if state not in TERMINAL_TASK_STATES:
                raise InvalidTaskRulesError(
                    f"ttl_by_state: {state!r} is not a final state; only finished tasks expire"
                )
        values = {
            "start_timeout": start_timeout,
            "heartbeat_timeout": heartbeat_timeout,
            "redeliver_after": redeliver_after,
            "max_attempts": max_attempts,
            "backoff": backoff,
            "backoff_cap": backoff_cap,
            "jitter": float(jitter),
            "ttl": _ttl(ttl, "ttl"),
            "ttl_by_state": MappingProxyType(
                {str(s): _ttl(v, f"ttl_by_state[{s!r}]") for s, v in by_state.items()}
            ),
            "exclusive": exclusive,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def redelivery(self) -> timedelta:
        """:attr:`redeliver_after`, or three heartbeat timeouts when it is ``None``."""
        return self.redeliver_after or _REDELIVER_TIMEOUTS * self.heartbeat_timeout

    def ttl_for(self, state: str) -> timedelta | None:
        """The time-to-live of a task that finished in ``state``."""
        return self.ttl_by_state.get(state, self.ttl)

    @cached_property
    def encoded(self) -> str:
        """What a task's ``rules`` column holds: the rules a row needs at its moves."""
        return json.dumps(
            {
                "start": _seconds(self.start_timeout),
                "backoff": [_seconds(self.backoff), _seconds(self.backoff_cap), self.jitter],
                "ttl": {s: _seconds(self.ttl_for(s)) for s in TERMINAL_TASK_STATES},
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    def row_values(self) -> dict[str, Any]:
        """The columns of a task spawned under these rules (its start deadline counts
        from its spawn, on the database's clock: see :mod:`tasktoolkit.orm._ready`)."""
        return {
            "max_attempts": self.max_attempts,
            "heartbeat_timeout": math.ceil(self.heartbeat_timeout.total_seconds()),
            "redeliver_after": math.ceil(self.redelivery.total_seconds()),
            "rules": self.encoded,
            "exclusive": self.exclusive,
        }


#: The rules of a task name nobody declared.
DEFAULT_RULES = TaskRules()


@dataclass(frozen=True, slots=True)
class RowRules:
    """The rules a task's row carries, read back for a move (see :func:`row_rules`)."""

    start_timeout: float | None
    backoff: float
    backoff_cap: float
    jitter: float
    ttl: Mapping[str, float | None]

    def delay(self, attempt: int) -> timedelta:
        """The wait before the attempt after ``attempt`` (1 for the first), jittered."""
        full = min(self.backoff_cap, self.backoff * 2 ** min(max(attempt - 1, 0), 60))
        return timedelta(seconds=full * (1 - self.jitter * random.random()))

    def expires_at(self, finished_at: Moment, state: str) -> Moment | None:
        """When a task that finished in ``state`` at ``finished_at`` expires."""
        ttl = self.ttl.get(state, DEFAULT_TTL.total_seconds())
        return None if ttl is None else later(finished_at, ttl)


@lru_cache(maxsize=256)
def row_rules(encoded: str | None) -> RowRules:
    """The :class:`RowRules` of a task's ``rules`` column (the defaults for ``None``)."""
    data = json.loads(encoded or DEFAULT_RULES.encoded)
    base, cap, jitter = data["backoff"]
    return RowRules(data["start"], base, cap, jitter, MappingProxyType(data["ttl"]))


def check_rules_table(owner: str, table: object) -> Mapping[str, TaskRules]:
    """``table`` if it maps task names (or ``"*"``) to :class:`TaskRules`; else
    :class:`InvalidTaskRulesError` naming ``owner``."""
    if not isinstance(table, Mapping):
        raise InvalidTaskRulesError(
            f"{owner}.__task_rules__ must map task names to TaskRules, got {table!r}"
        )
    for name, rules in table.items():
        if not isinstance(name, str) or not (name == DEFAULT_NAME or TASK_NAME.match(name)):
            raise InvalidTaskRulesError(f"{owner}.__task_rules__: {name!r} is not a task name")
        if not isinstance(rules, TaskRules):
            raise InvalidTaskRulesError(
                f"{owner}.__task_rules__[{name!r}] must be TaskRules, got {rules!r}"
            )
    return MappingProxyType(dict(table))

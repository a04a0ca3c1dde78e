"""Query parameters: strict parsing of a list's filters into :class:`ListParams`.

Anything the contract does not name is refused, as is every value that is not
exactly of its kind (a state, a task name, a request id, an ISO 8601 time, a
positive integer, ...), so no text from the query string ever reaches SQL
except as a validated bound value. Each refusal is an
:class:`~tasktoolkit.errors.InvalidFilterError` (a 400).

Example::

    >>> params, pairs = parse_list_query("state=active&limit=5", TASK_LIST)
    >>> params.states, params.limit
    (('pending', 'running'), 5)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from tasktoolkit._checks import (
    ACTION,
    DIGITS,
    HTTP_TOKEN,
    QUEUE,
    RESOURCE_ID,
    RESOURCE_TYPE,
    TASK_NAME,
    UUID,
)
from tasktoolkit.context import is_valid_request_id
from tasktoolkit.errors import InvalidFilterError
from tasktoolkit.orm import ACTIVE_TASK_STATES, ListParams, OperationState, TaskState
from tasktoolkit.orm._resource import resource_types

__all__ = [
    "OPERATION_LIST",
    "RESOURCE_TASK_LIST",
    "TASK_LIST",
    "ListKind",
    "parse_list_query",
    "parse_pairs",
    "refuse_any",
]

_MAX_FIELDS = 64
_REPEATABLE = frozenset({"state"})


@dataclass(frozen=True, slots=True)
class ListKind:
    """What one kind of list accepts."""

    allowed: frozenset[str]
    states: tuple[str, ...]
    active: tuple[str, ...]
    sort_keys: tuple[str, ...]
    is_record_id: Callable[[str], bool]
    check_resource_type: bool


_COMMON = frozenset(
    {
        "state",
        "request_id",
        "changes-since",
        "changes-before",
        "limit",
        "marker",
        "sort_key",
        "sort_dir",
    }
)
_RESOURCE_FILTERS = frozenset({"resource_type", "resource_id"})
#: Who asked, and how it failed: on ``/tasks`` and ``/operations``.
_CALLER_FILTERS = frozenset({"global_request_id", "user_id", "error_code"})
#: Text a user id or an error code may be: 1 to 64 characters, no control character.
_STORED_TEXT = re.compile(r"\A[^\x00-\x1f\x7f\ud800-\udfff]{1,64}\Z")
_TASK_STATES = tuple(s.value for s in TaskState)


def _is_uuid(value: str) -> bool:
    return UUID.match(value) is not None


#: ``GET /<collection>/<id>/tasks``.
RESOURCE_TASK_LIST = ListKind(
    allowed=_COMMON | {"name"},
    states=_TASK_STATES,
    active=ACTIVE_TASK_STATES,
    sort_keys=ListParams.TASK_SORT_KEYS,
    is_record_id=_is_uuid,
    check_resource_type=True,
)
#: ``GET /tasks``: across resources, so they may be filtered by.
TASK_LIST = replace(
    RESOURCE_TASK_LIST,
    allowed=RESOURCE_TASK_LIST.allowed | _RESOURCE_FILTERS | _CALLER_FILTERS | {"queue"},
)
#: ``GET /operations`` (operations have no name; ``active`` means ``running``).
OPERATION_LIST = ListKind(
    allowed=_COMMON | _RESOURCE_FILTERS | _CALLER_FILTERS | {"action", "method"},
    states=tuple(s.value for s in OperationState),
    active=(OperationState.RUNNING.value,),
    sort_keys=ListParams.OPERATION_SORT_KEYS,
    is_record_id=is_valid_request_id,
    check_resource_type=False,
)


def parse_pairs(query_string: str) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs of a WSGI ``QUERY_STRING``, decoded as strict UTF-8."""
    try:
        # WSGI hands the raw bytes over as latin-1 text.
        raw = query_string.encode("latin-1").decode("utf-8")
        return parse_qsl(
            raw,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except UnicodeError:
        raise InvalidFilterError("the query string is not valid UTF-8") from None
    except ValueError:
        raise InvalidFilterError(f"too many query parameters (at most {_MAX_FIELDS})") from None


def refuse_any(query_string: str) -> None:
    """Refuse every query parameter (single records take none)."""
    pairs = parse_pairs(query_string)
    if pairs:
        raise InvalidFilterError(f"{_shown(pairs[0][0])}: unknown parameter")


def _shown(value: str) -> str:
    """A parameter name or value as quoted in an error, cut short."""
    return repr(value[:64] + ("..." if len(value) > 64 else ""))


def _states(values: list[str], kind: ListKind) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if item == "active":
                found.extend(kind.active)
            elif item in kind.states:
                found.append(item)
            else:
                raise InvalidFilterError(
                    f"state: {_shown(item)} is not one of {', '.join(kind.states)}, active"
                )
    return tuple(dict.fromkeys(found))


_UNENCODED_PLUS = re.compile(r"(T\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d:?\d\d)\Z")


def _time(name: str, value: str) -> datetime:
    try:
        if len(value) > 40:
            raise ValueError(value)
        # An offset's "+" sent unencoded arrives as a space: take it as meant.
        moment = datetime.fromisoformat(_UNENCODED_PLUS.sub(r"\1+\2", value))
        # A time without a zone is taken as UTC, as the records are kept.
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError:
        raise InvalidFilterError(
            f"{name}: {_shown(value)} is not an ISO 8601 time (2024-01-31T12:00:00Z)"
        ) from None
    except OverflowError:  # an offset that moves it past year 1 or 9999
        raise InvalidFilterError(f"{name}: {_shown(value)} is out of range in UTC") from None


def _limit(value: str) -> int:
    if not DIGITS.match(value):
        raise InvalidFilterError(f"limit: {_shown(value)} is not a positive integer")
    # Very long digit strings are beyond any limit: clamp them without int().
    digits = value.lstrip("0")
    number = int(digits or "0") if len(digits) <= 18 else ListParams.MAX_LIMIT + 1
    if number < 1:
        raise InvalidFilterError("limit: must be at least 1")
    return min(number, ListParams.MAX_LIMIT)


def _single(pairs: list[tuple[str, str]], kind: ListKind) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        if name not in kind.allowed:
            expected = ", ".join(sorted(kind.allowed))
            raise InvalidFilterError(f"{_shown(name)}: unknown parameter; use one of {expected}")
        values.setdefault(name, []).append(value)
        if name not in _REPEATABLE and len(values[name]) > 1:
            raise InvalidFilterError(f"{name}: given more than once")
    return values


def _match(name: str, value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise InvalidFilterError(f"{name}: {_shown(value)} is not {what}")
    return value


def _record_filters(
    values: dict[str, list[str]], get: dict[str, str], kind: ListKind
) -> dict[str, Any]:
    """The options of the filters on what a record is (state, name, ids, resource, route)."""
    options: dict[str, Any] = {}
    if "state" in values:
        options["states"] = _states(values["state"], kind)
    if "name" in get:
        options["names"] = (_match("name", get["name"], TASK_NAME, "a task name"),)
    if "request_id" in get:
        if not is_valid_request_id(get["request_id"]):
            raise InvalidFilterError(
                f"request_id: {_shown(get['request_id'])} is not a request id (req-<uuid>)"
            )
        options["request_id"] = get["request_id"]
    if "global_request_id" in get:
        if not is_valid_request_id(get["global_request_id"]):
            raise InvalidFilterError(
                f"global_request_id: {_shown(get['global_request_id'])} is not a request id "
                "(req-<uuid>)"
            )
        options["global_request_id"] = get["global_request_id"]
    for name, what in (("user_id", "a user id"), ("error_code", "an error code")):
        if name in get:
            options[name] = _match(name, get[name], _STORED_TEXT, what)
    if "queue" in get:
        options["queue"] = _match("queue", get["queue"], QUEUE, "a queue name")
    if "resource_type" in get:
        value = _match("resource_type", get["resource_type"], RESOURCE_TYPE, "a resource type")
        known = sorted(resource_types())
        if kind.check_resource_type and value not in known:
            raise InvalidFilterError(
                f"resource_type: {_shown(value)} is not one of {', '.join(known)}"
            )
        options["resource_type"] = value
    if "resource_id" in get:
        options["resource_id"] = _match(
            "resource_id", get["resource_id"], RESOURCE_ID, "a resource id"
        )
    if "action" in get:
        options["action"] = _match("action", get["action"], ACTION, "a route action")
    if "method" in get:
        method = _match("method", get["method"], HTTP_TOKEN, "an HTTP method")
        if len(method) > 16:
            raise InvalidFilterError(f"method: {_shown(method)} is not an HTTP method")
        options["method"] = method.upper()
    return options


def parse_list_query(query_string: str, kind: ListKind) -> tuple[ListParams, list[tuple[str, str]]]:
    """The :class:`ListParams` of a list request, and its pairs (for the next link).

    :raises InvalidFilterError: anything unknown, repeated or malformed.
    """
    pairs = parse_pairs(query_string)
    values = _single(pairs, kind)
    get = {name: found[0] for name, found in values.items()}
    options: dict[str, Any] = {"limit": ListParams.DEFAULT_LIMIT}
    options.update(_record_filters(values, get, kind))
    for name, key in (("changes-since", "changes_since"), ("changes-before", "changes_before")):
        if name in get:
            options[key] = _time(name, get[name])
    since, before = options.get("changes_since"), options.get("changes_before")
    if since is not None and before is not None and before < since:
        raise InvalidFilterError("changes-before: earlier than changes-since")
    if "limit" in get:
        options["limit"] = _limit(get["limit"])
    if "marker" in get:
        if not kind.is_record_id(get["marker"]):
            raise InvalidFilterError(f"marker: {_shown(get['marker'])} is not a record id")
        options["marker"] = get["marker"]
    if "sort_key" in get:
        if get["sort_key"] not in kind.sort_keys:
            raise InvalidFilterError(
                f"sort_key: {_shown(get['sort_key'])} is not one of {', '.join(kind.sort_keys)}"
            )
        options["sort_key"] = get["sort_key"]
    if "sort_dir" in get:
        if get["sort_dir"] not in ListParams.SORT_DIRS:
            dirs = ", ".join(ListParams.SORT_DIRS)
            raise InvalidFilterError(f"sort_dir: {_shown(get['sort_dir'])} is not one of {dirs}")
        options["sort_dir"] = get["sort_dir"]
    return ListParams(**options), pairs

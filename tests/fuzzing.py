"""Fuzzing an API from its OpenAPI document: hypothesis settings, and the contract's rules
that no document can state.

Two rules of the contract hold across parameters, which a JSON Schema cannot
say (``docs/api.md`` names them): ``changes-before`` is not earlier than
``changes-since``, and a ``marker`` is a record of the very list it pages (its
filters, what the caller may see). A request breaking either is a 400 that the
document cannot predict, so :func:`fuzzed` leaves such cases out; the tests of
the list parameters test both. A third, of the middleware: an ``Idempotency-Key``
sent before with another request is a 422, so each case sends a key of its own.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.core.parameters import ParameterLocation

from tasktoolkit.endpoints._params import _time
from tasktoolkit.errors import InvalidFilterError, InvalidHeaderError
from tasktoolkit.middleware._idempotency import idempotency_key
from tasktoolkit.orm._idempotency import MAX_KEY_LENGTH

#: The contract's rules across parameters that the fuzzing leaves out (named in docs/api.md).
CROSS_PARAMETER_RULES = (
    "changes-before is not earlier than changes-since",
    "a marker is a record of the list it pages",
)
_KEYS = itertools.count()


def replayable(max_examples: int) -> settings:
    """``max_examples`` examples, the same on every run (none kept between runs),
    without a time limit per example or a health check refusing slow or filtered data."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


def fuzzed(cases: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``cases`` kept to :data:`CROSS_PARAMETER_RULES`, each with an ``Idempotency-Key``
    of its own."""
    return cases.map(_without_marker).map(_with_a_key_of_its_own).filter(_changes_in_order)


def aimed(cases: st.SearchStrategy[Any], known: dict[str, str]) -> st.SearchStrategy[Any]:
    """``cases`` whose generated path is valid aimed at records that exist (``known`` ids by
    path parameter): what the rest of an invalid case carries must get it refused, not
    a record that does not exist."""

    def aim(case: Any) -> Any:
        meta = case.meta.components.get(ParameterLocation.PATH) if case.meta else None
        if meta is None or meta.mode.is_positive:
            for name in case.path_parameters or {}:
                if name in known:
                    case.path_parameters[name] = known[name]
        return case

    return cases.map(aim)


def _changes_in_order(case: Any) -> bool:
    """Whether the case keeps ``changes-before`` not earlier than ``changes-since``."""
    query = case.query or {}
    since, before = query.get("changes-since"), query.get("changes-before")
    if not isinstance(since, str) or not isinstance(before, str):
        return True
    try:
        return _time("changes-since", since) <= _time("changes-before", before)
    except InvalidFilterError:
        return True  # a malformed time: the 400 it must get is the server's to say


def _without_marker(case: Any) -> Any:
    """The case without ``marker``: a well-formed id of no record of the list is a 400."""
    if case.query:
        case.query.pop("marker", None)
    return case


def _with_a_key_of_its_own(case: Any) -> Any:
    """The case with an ``Idempotency-Key`` no case sent before, when it sends one the
    server takes (a counter goes before the key's own characters: 255 at most)."""
    key = (case.headers or {}).get("Idempotency-Key")
    try:
        idempotency_key({"HTTP_IDEMPOTENCY_KEY": key})
    except InvalidHeaderError:
        return case  # a malformed key: the 400 it must get is the server's to say
    if isinstance(key, str):
        prefix = f"{next(_KEYS):08d}"
        case.headers["Idempotency-Key"] = prefix + key[len(prefix) - MAX_KEY_LENGTH :]
    return case

"""Task views as the JSON shows them, made by hand for the pages' unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2024, 1, 31, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    """The view's text of ``seconds`` after :data:`T0`."""
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def attempt(number: int, start: float, end: float | None, outcome: str | None, **extra: Any) -> Any:
    return {
        "number": number,
        "started_at": at(start),
        "finished_at": None if end is None else at(end),
        "outcome": outcome,
        "error": extra.pop("error", None),
        **extra,
    }


def task(name: str, state: str, *attempts: Any, resource: str = "r1", **extra: Any) -> Any:
    return {
        "id": f"id-{name}",
        "name": name,
        "state": state,
        "resource_type": "port",
        "resource_id": resource,
        "progress": extra.pop("progress", 0),
        "message": extra.pop("message", None),
        "error": extra.pop("error", None),
        "created_at": at(0),
        "not_before": extra.pop("not_before", None),
        "attempts": list(attempts),
        **extra,
    }

"""Column types shared by the records: timezone-aware UTC datetimes on every backend."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, String, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["JSONObject", "UTCDateTime", "exact_string", "json_text", "utcnow"]


def exact_string(length: int) -> TypeEngine[str]:
    """``VARCHAR(length)`` compared exactly, case included, on every database.

    MariaDB and MySQL compare text by the column's collation, which by default
    ignores case (``'ABC' = 'abc'``): ids and names get ``utf8mb4_bin`` there,
    as PostgreSQL and SQLite compare them already.
    """
    return String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
    )


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored in UTC and always read back timezone-aware.

    PostgreSQL keeps ``timestamptz``; SQLite and MariaDB keep naive UTC values
    (MariaDB with microseconds, ``DATETIME(6)``, so ordering by time is exact).
    Naive datetimes are refused on the way in: their zone is a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        if dialect.name != "postgresql":
            value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def json_text(value: dict[str, Any]) -> str:
    """``value`` as compact JSON text, as :class:`JSONObject` stores it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class JSONObject(TypeDecorator[dict[str, Any]]):
    """A JSON object kept as text, the same on every backend.

    Text rather than each database's JSON type: MariaDB's JSON is a ``LONGTEXT``
    that reflects differently from what it was declared as, and the toolkit
    never queries inside the object.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: dict[str, Any] | None, dialect: Dialect) -> str | None:
        return None if value is None else json_text(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> dict[str, Any] | None:
        if value is None:
            return None
        loaded: dict[str, Any] = json.loads(value)
        return loaded

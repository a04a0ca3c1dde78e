"""One duration type: a timedelta, seconds, or text, read alike by every front."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tasktoolkit.durations import duration, format_duration, optional_duration
from tasktoolkit.errors import ConfigurationError, InvalidDurationError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(timedelta(minutes=2), timedelta(minutes=2), id="timedelta"),
        pytest.param(90, timedelta(seconds=90), id="int-seconds"),
        pytest.param(2.5, timedelta(seconds=2.5), id="float-seconds"),
        pytest.param("2.5", timedelta(seconds=2.5), id="text-seconds"),
        pytest.param("500ms", timedelta(milliseconds=500), id="milliseconds"),
        pytest.param("90s", timedelta(seconds=90), id="s"),
        pytest.param("15m", timedelta(minutes=15), id="m"),
        pytest.param("1d12h", timedelta(days=1, hours=12), id="d-and-h"),
        pytest.param(" 2w ", timedelta(weeks=2), id="w-spaced"),
        pytest.param("1H30M", timedelta(hours=1, minutes=30), id="upper-case"),
    ],
)
def test_a_duration_reads_every_form(given: object, expected: timedelta) -> None:
    assert duration(given) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        pytest.param("7x", "'7x' is not a duration", id="unknown-unit"),
        pytest.param("", "is not a duration", id="empty"),
        pytest.param("-5s", "is not a duration", id="negative-text"),
        pytest.param(-5, "is under 0s", id="negative-number"),
        pytest.param(float("nan"), "is not a duration", id="nan"),
        pytest.param(True, "expected a duration", id="bool"),
        pytest.param([5], "expected a duration", id="list"),
        pytest.param("3651d", "is longer than 3650d", id="absurd"),
    ],
)
def test_a_bad_duration_is_a_typed_error_naming_it(given: object, message: str) -> None:
    with pytest.raises(InvalidDurationError, match=message) as caught:
        duration(given, what="ttl")  # type: ignore[arg-type]
    assert str(caught.value).startswith("ttl: ")
    assert isinstance(caught.value, ConfigurationError)


@pytest.mark.parametrize("never", [None, "none", "NEVER", " never "])
def test_optional_durations_read_none_as_no_limit(never: object) -> None:
    assert optional_duration(never) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        timedelta(0),
        timedelta(milliseconds=250),
        timedelta(seconds=90),
        timedelta(hours=1),
        timedelta(days=1, hours=12, minutes=3, seconds=4),
    ],
    ids=str,
)
def test_format_duration_reads_back_as_itself(value: timedelta) -> None:
    assert duration(format_duration(value)) == value

"""Settings: every knob once, checked when made, read from strings by every front."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tasktoolkit import Settings
from tasktoolkit.caller import keystone_caller
from tasktoolkit.errors import ConfigurationError, InvalidBatchSizeError, InvalidDurationError
from tasktoolkit.hooks import Hook, Hooks
from tasktoolkit.settings import OPTIONS


def test_defaults() -> None:
    settings = Settings()
    assert settings.deadline == timedelta(seconds=5)
    assert settings.request_timeout == timedelta(minutes=10)
    assert settings.operation_ttl == timedelta(hours=24)
    assert settings.methods == ("POST", "PUT", "PATCH", "DELETE")
    assert settings.caller_getter is keystone_caller
    assert not settings.hooks
    assert settings.batch_size == 500
    assert settings.reap_every == timedelta(minutes=1)


def test_every_option_is_a_setting_and_every_setting_an_option() -> None:
    from dataclasses import fields

    assert [o.name for o in OPTIONS] == [f.name for f in fields(Settings)]


def test_settings_read_back_from_their_own_strings() -> None:
    settings = Settings(
        deadline="2500ms", methods=["post", "delete"], exclude_paths=["/health/"], durable=True
    )
    again = Settings.from_strings(settings.as_strings())
    assert again == settings


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param({"deadline": "none"}, {"deadline": None}, id="no-deadline"),
        pytest.param({"deadline": "2"}, {"deadline": timedelta(seconds=2)}, id="seconds"),
        pytest.param(
            {"request_timeout": "15m"}, {"request_timeout": timedelta(minutes=15)}, id="15m"
        ),
        pytest.param({"methods": "POST, put"}, {"methods": ("POST", "PUT")}, id="list"),
        pytest.param({"durable": "yes"}, {"durable": True}, id="bool"),
        pytest.param({"batch_size": "20"}, {"batch_size": 20}, id="int"),
        pytest.param({"reap_every": "10s"}, {"reap_every": timedelta(seconds=10)}, id="reap-every"),
        pytest.param({"base_url": "none"}, {"base_url": None}, id="optional-str"),
        pytest.param(
            {"caller_getter": "tasktoolkit.caller:keystone_caller"},
            {"caller_getter": keystone_caller},
            id="object",
        ),
    ],
)
def test_from_strings(options: dict[str, str], expected: dict[str, object]) -> None:
    settings = Settings.from_strings(options)
    assert {name: getattr(settings, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        pytest.param({"nope": "1"}, ConfigurationError, "unknown option 'nope'", id="unknown"),
        pytest.param({"deadline": "7x"}, InvalidDurationError, "deadline: '7x'", id="duration"),
        pytest.param({"durable": "maybe"}, ConfigurationError, "durable: expected", id="bool"),
        pytest.param({"batch_size": "0"}, InvalidBatchSizeError, "batch_size must be", id="batch"),
        pytest.param({"batch_size": "x"}, ConfigurationError, "whole number", id="not-int"),
        pytest.param({"methods": "GE/T"}, ConfigurationError, "methods:", id="method"),
        pytest.param(
            {"caller_getter": "no.such.module:f"}, ConfigurationError, "cannot import", id="import"
        ),
        pytest.param(
            {"caller_getter": "nocolon"}, ConfigurationError, "package.module:attr", id="dotted"
        ),
        pytest.param({"path_prefix": "/v2/"}, ConfigurationError, "path_prefix", id="prefix"),
        pytest.param({"base_url": "ftp://x"}, ConfigurationError, "base_url", id="base-url"),
        pytest.param({"retry_after": "1.5"}, ConfigurationError, "whole seconds", id="retry"),
        pytest.param({"request_timeout": "0"}, InvalidDurationError, "under 1s", id="timeout"),
    ],
)
def test_a_bad_option_is_a_configuration_error_naming_it(
    options: dict[str, str], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Settings.from_strings(options)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"methods": "POST"}, TypeError, id="methods-string"),
        pytest.param({"caller_getter": 5}, TypeError, id="getter"),
        pytest.param({"hooks": [object()]}, TypeError, id="hook"),
    ],
)
def test_a_value_of_the_wrong_kind_is_a_type_error(kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        Settings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param({"batch_size": 0}, InvalidBatchSizeError, "from 1 to 10000", id="batch-zero"),
        pytest.param(
            {"batch_size": 10001}, InvalidBatchSizeError, "from 1 to 10000", id="batch-huge"
        ),
        pytest.param({"batch_size": True}, InvalidBatchSizeError, "got True", id="batch-bool"),
        pytest.param({"batch_size": 2.5}, InvalidBatchSizeError, "got 2.5", id="batch-float"),
        pytest.param({"reap_every": 0}, InvalidDurationError, "reap_every: 0s is under", id="zero"),
        pytest.param({"reap_every": "-1s"}, InvalidDurationError, "reap_every", id="negative"),
        pytest.param(
            {"reap_every": "40000d"}, InvalidDurationError, "reap_every: .* longer", id="absurd"
        ),
        pytest.param({"reap_every": "soon"}, InvalidDurationError, "reap_every", id="not-a-time"),
        pytest.param({"reap_every": None}, InvalidDurationError, "reap_every", id="none"),
        pytest.param({"deadline": 0}, InvalidDurationError, "deadline: 0s is under", id="deadline"),
        pytest.param({"retryable": "x"}, TypeError, "retryable must be callable", id="retryable"),
    ],
)
def test_the_reaper_and_purge_knobs_are_checked_when_made(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_replace_checks_like_the_constructor() -> None:
    settings = Settings()
    assert settings.replace(deadline="1s").deadline == timedelta(seconds=1)
    with pytest.raises(InvalidDurationError):
        settings.replace(deadline="soon")


def test_hooks_are_kept_as_given() -> None:
    hook = Hook()
    assert list(Settings(hooks=[hook]).hooks) == [hook]
    hooks = Hooks(hook)
    assert Settings(hooks=hooks).hooks is hooks

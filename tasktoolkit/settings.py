"""Every knob of the toolkit, set once: :class:`Settings`, and the options every front reads.

A host builds one :class:`Settings` (or lets a front build it: a Paste filter's
options, the command line, oslo.config's ``[tasktoolkit]`` group) and hands it
to the :class:`~tasktoolkit.Toolkit`, which gives it to every part it makes.
Each value is checked here, when the settings are made, never later.

The options are declared once, in :data:`OPTIONS` (name, kind, help): Paste
and the command line parse strings with :meth:`Settings.from_strings`, and
``tasktoolkit.oslo.list_opts`` registers the same list with oslo.config.
Durations take one form everywhere (:mod:`tasktoolkit.durations`).

Example::

    settings = Settings(deadline="2s", request_timeout="15m", path_prefix="/v2.0")
    settings = Settings.from_strings({"deadline": "2s", "methods": "POST, DELETE"})
    settings.replace(durable=True)
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from tasktoolkit._checks import HTTP_TOKEN, whole_number
from tasktoolkit.caller import Authorize, CallerGetter, default_authorize, keystone_caller
from tasktoolkit.durations import DurationLike, duration, format_duration, optional_duration
from tasktoolkit.errors import ConfigurationError, InvalidBatchSizeError
from tasktoolkit.hooks import Hook, Hooks

if TYPE_CHECKING:
    RetryPredicate = Callable[[BaseException], bool]

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_METHODS",
    "OPTIONS",
    "Option",
    "Settings",
    "settings_or_default",
]

#: The methods that open an operation unless configured otherwise.
DEFAULT_METHODS = ("POST", "PUT", "PATCH", "DELETE")
#: The most rows one reaper, sweeper or purge transaction looks at.
MAX_BATCH_SIZE = 10000
#: Seconds the toolkit's own database work may take before it gives up (the ``deadline``).
DEFAULT_DEADLINE = 5.0
_PREFIX = re.compile(r"\A(/[A-Za-z0-9_.~-]+)*\Z")
_BASE_URL = re.compile(r"\Ahttps?://[!-~]+\Z")
_SECOND = timedelta(seconds=1)
_DAY = timedelta(days=1)

Kind = Literal[
    "duration",
    "optional_duration",
    "bool",
    "int",
    "str",
    "optional_str",
    "list",
    "object",
    "objects",
]


@dataclass(frozen=True, slots=True)
class Option:
    """One knob as the fronts declare it: its name, how a string is read, what it does."""

    name: str
    kind: Kind
    help: str


#: Every knob, in the order documentation shows them. Defaults are :class:`Settings`'s.
OPTIONS: tuple[Option, ...] = (
    Option(
        "request_id_header",
        "str",
        "The response header with the request id (read for an inbound global id too); OpenStack "
        "services use X-OpenStack-Request-ID.",
    ),
    Option(
        "compat_headers",
        "list",
        "More headers to answer with the request id (and to read an inbound one from).",
    ),
    Option("methods", "list", "The HTTP methods that open an operation."),
    Option("exclude_paths", "list", "Path prefixes that never open an operation (/healthcheck)."),
    Option(
        "path_prefix",
        "str",
        "Where the API lives under the application URL (/v2.0): the endpoints are mounted there "
        "and Operation-Location points there.",
    ),
    Option(
        "base_url",
        "optional_str",
        "The application URL for Operation-Location when the environ does not know it (behind a "
        "proxy).",
    ),
    Option(
        "caller_getter", "object", "package.module:function turning the WSGI environ into a Caller."
    ),
    Option(
        "authorize", "object", "package.module:function answering authorize(caller, rule, target)."
    ),
    Option("hooks", "objects", "package.module:attribute of each Hook to add, in order."),
    Option(
        "deadline",
        "optional_duration",
        "How long the toolkit's own database work may take before it gives up (a 503 to a "
        "request); none: no limit.",
    ),
    Option(
        "request_timeout",
        "duration",
        "A request that has not recorded its end after this long is ended by the reaper.",
    ),
    Option(
        "operation_ttl",
        "optional_duration",
        "How long a finished operation is kept; none keeps it.",
    ),
    Option(
        "retry_after",
        "duration",
        "When a client should look again at a running operation (the Retry-After of a 202 and of a "
        "running operation).",
    ),
    Option(
        "unavailable_retry_after",
        "duration",
        "The Retry-After of a 503 answered while the database is away.",
    ),
    Option(
        "max_wait",
        "duration",
        "The longest Prefer: wait honoured on a GET of an operation or a task.",
    ),
    Option(
        "max_waiting",
        "int",
        "The most Prefer: wait requests one process holds at once, each on a thread of its "
        "server: keep it to a share of the threads (half: gunicorn --threads 4, 2). Past it a "
        "wait is answered at once, without Preference-Applied; 0: none waits.",
    ),
    Option(
        "durable",
        "bool",
        "Wait for the middleware's own writes to reach the disk (off: synchronous_commit = off on "
        "PostgreSQL).",
    ),
    Option(
        "serve_openapi",
        "bool",
        "Serve the OpenAPI document of what is mounted at <path_prefix>/openapi.json.",
    ),
    Option(
        "pages",
        "bool",
        "Answer a browser (Accept preferring text/html) with pages: the operation's timeline, the "
        "lists; needs the [pages] extra (Jinja2).",
    ),
    Option("batch_size", "int", "The most rows one reaper, sweeper or purge transaction handles."),
    Option(
        "reap_every",
        "duration",
        "How often reapers run (a loop, cron, a timer): a pass that finds the reapers' last look "
        "older than twice this and a second starts their watch anew, and no worker is called "
        "lost before the watch has lasted its heartbeat timeout.",
    ),
    Option(
        "sweep_after",
        "duration",
        "How long a task may stay pending and unpublished before a bridge's sweeper publishes it.",
    ),
    Option(
        "heartbeat_every",
        "optional_duration",
        "Seconds between a bridge's background heartbeats; none: a third of the task's heartbeat "
        "timeout.",
    ),
    Option(
        "worker_beat_timeout",
        "duration",
        "How long after its last beat a worker is not live any more (GET /workers, waiting: "
        "no_worker, tasktoolkit health); it beats every third of it.",
    ),
    Option(
        "retryable",
        "object",
        "package.module:function telling which more database errors are worth running a "
        "transaction again.",
    ),
)


@dataclass(frozen=True, init=False, slots=True)
class Settings:
    """Every knob of the toolkit; checked when made, immutable after.

    Durations are a ``timedelta``, seconds, or text (``90s``, ``15m``, ``1d12h``);
    they are kept as ``timedelta``. See :data:`OPTIONS` for what each does.

    :raises ConfigurationError: a value that cannot be (its message names the option).
    :raises TypeError: a value of the wrong kind (a string where a list is expected, ...).
    """

    request_id_header: str
    compat_headers: tuple[str, ...]
    methods: tuple[str, ...]
    exclude_paths: tuple[str, ...]
    path_prefix: str
    base_url: str | None
    caller_getter: CallerGetter
    authorize: Authorize
    hooks: Hooks
    deadline: timedelta | None
    request_timeout: timedelta
    operation_ttl: timedelta | None
    retry_after: timedelta
    unavailable_retry_after: timedelta
    max_wait: timedelta
    max_waiting: int
    durable: bool
    serve_openapi: bool
    pages: bool
    batch_size: int
    reap_every: timedelta
    sweep_after: timedelta
    heartbeat_every: timedelta | None
    worker_beat_timeout: timedelta
    retryable: RetryPredicate | None

    def __init__(
        self,
        *,
        request_id_header: str = "X-Request-Id",
        compat_headers: Iterable[str] = (),
        methods: Iterable[str] = DEFAULT_METHODS,
        exclude_paths: Iterable[str] = (),
        path_prefix: str = "",
        base_url: str | None = None,
        caller_getter: CallerGetter = keystone_caller,
        authorize: Authorize = default_authorize,
        hooks: Hooks | Iterable[Hook] = (),
        deadline: DurationLike | None = DEFAULT_DEADLINE,
        request_timeout: DurationLike = "10m",
        operation_ttl: DurationLike | None = "24h",
        retry_after: DurationLike = 1,
        unavailable_retry_after: DurationLike = 5,
        max_wait: DurationLike = 30,
        max_waiting: int = 2,
        durable: bool = False,
        serve_openapi: bool = False,
        pages: bool = True,
        batch_size: int = 500,
        reap_every: DurationLike = 60,
        sweep_after: DurationLike = 60,
        heartbeat_every: DurationLike | None = None,
        worker_beat_timeout: DurationLike = 60,
        retryable: RetryPredicate | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "request_id_header": _header(request_id_header, "request_id_header"),
            "compat_headers": tuple(
                _header(h, "compat_headers") for h in _words(compat_headers, "compat_headers")
            ),
            "methods": _methods(methods),
            "exclude_paths": _prefixes(exclude_paths),
            "path_prefix": _path_prefix(path_prefix),
            "base_url": _base_url(base_url),
            "caller_getter": _callable(caller_getter, "caller_getter"),
            "authorize": _callable(authorize, "authorize"),
            "hooks": hooks if isinstance(hooks, Hooks) else Hooks(*hooks),
            "deadline": optional_duration(
                deadline, what="deadline", minimum=timedelta(milliseconds=1), maximum=_DAY
            ),
            "request_timeout": duration(request_timeout, what="request_timeout", minimum=_SECOND),
            "operation_ttl": optional_duration(operation_ttl, what="operation_ttl"),
            "retry_after": _whole_seconds(retry_after, "retry_after"),
            "unavailable_retry_after": _whole_seconds(
                unavailable_retry_after, "unavailable_retry_after"
            ),
            "max_wait": duration(max_wait, what="max_wait", maximum=timedelta(hours=1)),
            "max_waiting": whole_number(
                max_waiting, "max_waiting", minimum=0, maximum=100000, error=ConfigurationError
            ),
            "durable": _bool(durable, "durable"),
            "serve_openapi": _bool(serve_openapi, "serve_openapi"),
            "pages": _bool(pages, "pages"),
            "batch_size": _batch_size(batch_size),
            "reap_every": duration(
                reap_every, what="reap_every", minimum=timedelta(milliseconds=1)
            ),
            "sweep_after": duration(sweep_after, what="sweep_after"),
            "heartbeat_every": optional_duration(
                heartbeat_every, what="heartbeat_every", minimum=timedelta(milliseconds=100)
            ),
            "worker_beat_timeout": duration(
                worker_beat_timeout,
                what="worker_beat_timeout",
                minimum=timedelta(seconds=3),
                maximum=_DAY,
            ),
            "retryable": None if retryable is None else _callable(retryable, "retryable"),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (checked as the constructor checks them)."""
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        return Settings(**{**current, **changes})

    @classmethod
    def from_strings(cls, options: Mapping[str, str], *, base: Settings | None = None) -> Settings:
        """Settings from text options (a Paste filter's, the command line's), over ``base``.

        Every key must be one of :data:`OPTIONS`; ``package.module:attribute``
        names the objects; lists are comma or space separated.

        :raises ConfigurationError: an unknown option or a value that cannot be.
        """
        declared = {option.name: option for option in OPTIONS}
        changes: dict[str, Any] = {}
        for name, text in options.items():
            option = declared.get(name)
            if option is None:
                raise ConfigurationError(
                    f"unknown option {name!r}; the options are: {', '.join(declared)}"
                )
            changes[name] = parse_option(option, text)
        return (base or cls()).replace(**changes)

    @property
    def deadline_seconds(self) -> float | None:
        """:attr:`deadline` in seconds, as the database layer takes it."""
        return None if self.deadline is None else self.deadline.total_seconds()

    def as_strings(self) -> dict[str, str]:
        """The settings as :meth:`from_strings` reads them (objects as ``module:name``)."""
        return {option.name: _format(option, getattr(self, option.name)) for option in OPTIONS}


def settings_or_default(settings: Settings | None) -> Settings:
    """``settings``, or the defaults when ``None``: how every part takes its settings.

    >>> settings_or_default(None) == Settings()
    True

    :raises TypeError: ``settings`` is neither.
    """
    if settings is None:
        return Settings()
    if not isinstance(settings, Settings):
        raise TypeError(f"settings must be a tasktoolkit.Settings, got {settings!r}")
    return settings


def parse_option(option: Option, text: str) -> Any:
    """The value of ``option`` written as ``text``.

    :raises ConfigurationError: text that is not of the option's kind.
    """
    kind = option.kind
    if kind in ("str", "duration"):
        return text.strip()
    if kind in ("optional_str", "optional_duration"):
        word = text.strip()
        return None if word.lower() in ("", "none") else word
    if kind == "bool":
        return _bool(text, option.name)
    if kind == "int":
        try:
            return int(text.strip())
        except ValueError:
            raise ConfigurationError(
                f"{option.name}: expected a whole number, got {text!r}"
            ) from None
    if kind == "list":
        return [w for w in text.replace(",", " ").split() if w]
    if kind == "object":
        return None if text.strip().lower() == "none" else resolve(text, option.name)
    words = [w for w in text.replace(",", " ").split() if w.lower() != "none"]
    return [resolve(w, option.name) for w in words]  # objects


def resolve(value: str, name: str = "option") -> Any:
    """The object a ``package.module:attribute`` string names.

    :raises ConfigurationError: not of that form, or nothing to import there.
    """
    module_name, sep, attribute = value.strip().partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"{name}: expected 'package.module:attribute', got {value!r}")
    try:
        found: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{name}: cannot import {value!r}: {exc}") from exc
    return found


def _format(option: Option, value: Any) -> str:
    if option.kind in ("duration", "optional_duration"):
        return format_duration(value)
    if option.kind == "bool":
        return "true" if value else "false"
    if option.kind == "list":
        return ", ".join(value)
    if option.kind in ("object", "objects"):
        items = list(value) if option.kind == "objects" else [value]
        return ", ".join(_dotted(v) for v in items if v is not None) or "none"
    return "none" if value is None else str(value)


def _dotted(value: Any) -> str:
    owner = value if callable(value) and hasattr(value, "__qualname__") else type(value)
    return f"{owner.__module__}:{owner.__qualname__}"


def _words(value: object, name: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a list of strings, not {value!r}")
    return list(value)


def _header(name: object, option: str) -> str:
    if not isinstance(name, str) or not HTTP_TOKEN.match(name):
        raise ConfigurationError(f"{option}: not a valid HTTP header name: {name!r}")
    return name


def _methods(methods: Iterable[str]) -> tuple[str, ...]:
    found = []
    for method in _words(methods, "methods"):
        if not isinstance(method, str) or not HTTP_TOKEN.match(method):
            raise ConfigurationError(f"methods: not an HTTP method: {method!r}")
        found.append(method.upper())
    return tuple(dict.fromkeys(found))


def _prefixes(paths: Iterable[str]) -> tuple[str, ...]:
    found = []
    for prefix in _words(paths, "exclude_paths"):
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ConfigurationError(f"exclude_paths: entries must start with '/', got {prefix!r}")
        found.append(prefix.rstrip("/") or "/")
    return tuple(found)


def _path_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise ConfigurationError(
            f"path_prefix must be '' or like '/v2.0' (no trailing /): {prefix!r}"
        )
    return prefix


def _base_url(url: object) -> str | None:
    if url is None:
        return None
    if not isinstance(url, str) or not _BASE_URL.match(url):
        raise ConfigurationError(f"base_url must be an absolute http(s) URL, got {url!r}")
    return url.rstrip("/")


def _callable(value: Any, name: str) -> Any:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {value!r}")
    return value


def _bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("true", "yes", "on", "1"):
            return True
        if word in ("false", "no", "off", "0"):
            return False
    raise ConfigurationError(f"{name}: expected true or false, got {value!r}")


def _whole_seconds(value: DurationLike, name: str) -> timedelta:
    """A ``Retry-After``: whole seconds, up to a day."""
    found = duration(value, what=name, maximum=_DAY)
    if found.total_seconds() != int(found.total_seconds()):
        raise ConfigurationError(
            f"{name}: Retry-After is whole seconds, got {format_duration(found)}"
        )
    return found


def _batch_size(value: object) -> int:
    return whole_number(value, "batch_size", maximum=MAX_BATCH_SIZE, error=InvalidBatchSizeError)

"""Hooks: the one seam for cross-cutting work (metrics, tracing, a host's own).

A :class:`Hook` is a class whose methods the toolkit calls around its units of
work and on everything that happens; it overrides only what it needs (every
method of the base does nothing). The toolkit holds its hooks in one
:class:`Hooks` (``Settings(hooks=Hooks(MyHook()))``), which calls them in order:

- **around** a request, a spawn, a bridge's publish, a job's run and a
  bridge's delivery: a context manager (a span, a timer), entered before and
  left after;
- at a spawn, for the **trace context** to store on the tasks
  (:meth:`Hook.trace_context`), which is handed back to whoever starts them
  (:attr:`JobInfo.trace_context`);
- on every **committed move** of a task (:meth:`Hook.task_moved`, with the
  attempt's number, outcome and error code) and change of an operation
  (opened, finished), after commit only, never for a rolled-back change;
- on every **not-move** (:meth:`Hook.happened`): a cancel asked of a running
  task, progress, a reaper's or a purge's batch, a bridge's publish or sweep;
- when **the database is unavailable** (:meth:`Hooks.unavailable`): the one
  policy of the toolkit for an outage it degrades through (a response without
  ``Operation-Location``, a skipped heartbeat): one line logged, no traceback
  (but at ``DEBUG``), every hook told, so a metric can count it.

A hook that raises is the hook's problem: it is logged, and the toolkit's work
and the other hooks go on. Hooks are called synchronously, from the thread that
did the work; a coroutine method is refused when the hook is added, never
silently dropped.

Example::

    class Timing(Hook):
        def task_moved(self, change):
            if change.outcome == "failed":
                print(change.name, "failed:", change.error_code)

        @contextmanager
        def around_job(self, job):
            began = time.monotonic()
            yield
            print(job.name, "ran", time.monotonic() - began, "s")

    toolkit = Toolkit(engine, Settings(hooks=Hooks(Timing())))
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tasktoolkit.errors import database_unavailable

if TYPE_CHECKING:
    from tasktoolkit.signals import OperationChange, TaskChange

__all__ = [
    "ENGINE_OPTION",
    "EVENT_KINDS",
    "NO_HOOKS",
    "TRACE_CONTEXT_LENGTH",
    "Delivery",
    "Event",
    "Hook",
    "Hooks",
    "JobInfo",
    "Outage",
    "PublishInfo",
    "RequestInfo",
    "SpawnInfo",
    "decode_trace_context",
    "hooks_of",
]

_log = logging.getLogger("tasktoolkit.hooks")
#: The engine execution option that carries a toolkit's :class:`Hooks` to the
#: ORM, which counts moves and announces them after commit on the engine's
#: connections (set by :class:`~tasktoolkit.Toolkit`).
ENGINE_OPTION = "tasktoolkit_hooks"

#: What :meth:`Hook.happened` may be told of (:attr:`Event.kind`).
EVENT_KINDS = frozenset(
    {
        "cancel_asked",  # a running task was asked to stop: ``task``
        "progress",  # a worker reported progress: ``task``, ``progress``
        "reaped",  # a reaper's batch moved ``count`` rows for ``reason``
        "purged",  # a purge batch deleted ``count`` rows of ``reason`` (tasks, operations)
        "published",  # a bridge published ``count`` tasks (``reason``: the bridge)
        "swept",  # a bridge's sweeper published ``count`` tasks again
    }
)


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened that is not a committed move of a task.

    :param kind: one of :data:`EVENT_KINDS`.
    :param count: how many rows or tasks it concerns.
    :param reason: what kind of rows (``worker_lost``, ``tasks``, ...), where it says.
    :param task: the task it concerns, where there is one.
    :param progress: the progress reported, for ``progress``.
    """

    kind: str
    count: int = 1
    reason: str | None = None
    task: TaskChange | None = None
    progress: int | None = None


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """A request the toolkit serves, as :meth:`Hook.around_request` sees it.

    :param environ: the WSGI environ (read it; do not keep it).
    :param operation_id: the request's operation id when it is a mutating
        request, else ``None``.
    """

    request_id: str
    method: str
    path: str
    environ: Any
    operation_id: str | None = None


@dataclass(frozen=True, slots=True)
class SpawnInfo:
    """Tasks about to be spawned together (one statement), for :meth:`Hook.around_spawn`.

    :param operation_id: the operation of the request spawning them, or ``None``.
    :param names: the tasks' names, in spawn order.
    """

    operation_id: str | None
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PublishInfo:
    """Committed tasks a queue bridge publishes, for :meth:`Hook.around_publish`.

    :param bridge: the bridge's class name (``CeleryBridge``).
    :param task_ids: the tasks published.
    """

    bridge: str
    task_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A held task about to run (a database worker's or a bridge's), for :meth:`Hook.around_job`.

    :param trace_context: the W3C trace context the task was spawned in
        (``traceparent`` and ``tracestate``), as :meth:`Hook.trace_context` gave
        it, or ``None``.
    """

    task_id: str
    name: str
    resource_type: str
    resource_id: str
    request_id: str | None
    attempt: int
    queue: str | None = None
    trace_context: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A bridge's delivery of a task's message, for :meth:`Hook.around_delivery`."""

    bridge: str
    task_id: str
    name: str


class Hook:
    """The base of every hook: each method does nothing; override what you need.

    The ``around_*`` methods return a context manager, or ``None`` for none.
    """

    def around_request(self, request: RequestInfo) -> AbstractContextManager[object] | None:
        """Around one request (the app and its response body included)."""
        return None

    def around_spawn(self, spawn: SpawnInfo) -> AbstractContextManager[object] | None:
        """Around one spawn of tasks (their insert), in the spawning transaction."""
        return None

    def trace_context(self) -> Mapping[str, str] | None:
        """The W3C trace context to store on the tasks spawned now (asked inside
        :meth:`around_spawn`): ``{"traceparent": ..., "tracestate": ...}``, or ``None``."""
        return None

    def around_publish(self, publish: PublishInfo) -> AbstractContextManager[object] | None:
        """Around a queue bridge's publish of tasks once their spawn (or re-queue) commits."""
        return None

    def around_job(self, job: JobInfo) -> AbstractContextManager[object] | None:
        """Around one attempt of a task in its worker (the ``with job:`` block, its
        outcome recorded inside: :meth:`task_moved` hears of it before this ends)."""
        return None

    def around_delivery(self, delivery: Delivery) -> AbstractContextManager[object] | None:
        """Around one delivery of a bridge's message (the start, the run, the record)."""
        return None

    def task_moved(self, change: TaskChange) -> None:
        """A task was created or moved, and it is committed."""

    def operation_changed(self, change: OperationChange) -> None:
        """An operation was opened or finished, and it is committed."""

    def happened(self, event: Event) -> None:
        """Something that is not a task's move happened (:data:`EVENT_KINDS`)."""

    def database_unavailable(self, where: str, error: BaseException) -> None:
        """The toolkit degraded at ``where`` because the database was unavailable."""


_METHODS = tuple(name for name, _ in inspect.getmembers(Hook, inspect.isfunction))


class Hooks:
    """The toolkit's hooks, called in order; each one's failure logged, never raised.

    :param hooks: the hooks, in the order they are called (``around_*``: entered
        in that order, left in reverse).
    :raises TypeError: a hook that is not a :class:`Hook`, or has a coroutine method.
    """

    __slots__ = (
        "_around_delivery",
        "_around_job",
        "_around_publish",
        "_around_request",
        "_around_spawn",
        "_hooks",
        "_outages",
        "_outages_lock",
        "_trace_context",
    )

    def __init__(self, *hooks: Hook) -> None:
        for hook in hooks:
            if not isinstance(hook, Hook):
                raise TypeError(f"a hook must be a tasktoolkit.hooks.Hook, got {hook!r}")
            for name in _METHODS:
                if inspect.iscoroutinefunction(getattr(hook, name)):
                    raise TypeError(
                        f"{type(hook).__name__}.{name} is a coroutine function: hooks are "
                        "called synchronously (run your coroutine from a synchronous method)"
                    )
        self._hooks: tuple[Hook, ...] = hooks
        # Only the hooks that override a method are asked for it: none costs nothing.
        self._around_request = _overriding(hooks, "around_request")
        self._around_spawn = _overriding(hooks, "around_spawn")
        self._around_publish = _overriding(hooks, "around_publish")
        self._trace_context = _overriding(hooks, "trace_context")
        self._around_job = _overriding(hooks, "around_job")
        self._around_delivery = _overriding(hooks, "around_delivery")
        #: Each ``where``'s outage, as :meth:`unavailable` and :meth:`available` see it.
        self._outages: dict[str, Outage] = {}
        self._outages_lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def __iter__(self) -> Iterator[Hook]:
        return iter(self._hooks)

    def __repr__(self) -> str:
        return f"Hooks({', '.join(type(h).__name__ for h in self._hooks)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hooks) and self._hooks == other._hooks

    def __hash__(self) -> int:
        return hash(self._hooks)

    def __add__(self, other: Hooks) -> Hooks:
        return Hooks(*self._hooks, *other._hooks)

    # -- around ------------------------------------------------------------

    def around_request(self, request: RequestInfo) -> AbstractContextManager[object]:
        """The hooks' context managers around a request, as one."""
        if not self._around_request:
            return nullcontext()
        return _Around(self._around_request, "around_request", request)

    def around_spawn(self, spawn: SpawnInfo) -> AbstractContextManager[object]:
        """The hooks' context managers around a spawn, as one."""
        if not self._around_spawn:
            return nullcontext()
        return _Around(self._around_spawn, "around_spawn", spawn)

    def trace_context(self) -> str | None:
        """The first trace context a hook gives, as the text a task stores; else ``None``.

        Only ``traceparent`` and ``tracestate`` are kept, and ``tracestate`` only
        while the whole fits :data:`TRACE_CONTEXT_LENGTH` characters.
        """
        for hook in self._trace_context:
            try:
                found = hook.trace_context()
            except Exception:
                _log.exception("hook %s.trace_context failed", type(hook).__name__)
                continue
            if found:
                return _encode_trace_context(found)
        return None

    def around_publish(self, publish: PublishInfo) -> AbstractContextManager[object]:
        """The hooks' context managers around a bridge's publish, as one."""
        if not self._around_publish:
            return nullcontext()
        return _Around(self._around_publish, "around_publish", publish)

    def around_job(self, job: JobInfo) -> AbstractContextManager[object]:
        """The hooks' context managers around a job's run, as one."""
        if not self._around_job:
            return nullcontext()
        return _Around(self._around_job, "around_job", job)

    def around_delivery(self, delivery: Delivery) -> AbstractContextManager[object]:
        """The hooks' context managers around a bridge's delivery, as one."""
        if not self._around_delivery:
            return nullcontext()
        return _Around(self._around_delivery, "around_delivery", delivery)

    # -- on ----------------------------------------------------------------

    def task_moved(self, changes: Sequence[TaskChange]) -> None:
        """Tell every hook of these committed moves."""
        for hook in self._hooks:
            for change in changes:
                _call(hook, "task_moved", change)

    def operation_changed(self, change: OperationChange) -> None:
        """Tell every hook of this committed change of an operation."""
        for hook in self._hooks:
            _call(hook, "operation_changed", change)

    def happened(self, event: Event) -> None:
        """Tell every hook of ``event``."""
        if event.kind not in EVENT_KINDS:
            raise ValueError(f"not an event kind: {event.kind!r}")
        for hook in self._hooks:
            _call(hook, "happened", event)

    def unavailable(self, where: str, error: BaseException, *, doing: str = "") -> bool:
        """The toolkit's one policy for a database outage it can degrade through.

        When ``error`` says the database is unavailable (SQLAlchemy's, the
        drivers' or oslo.db's connection errors): every hook is told, and
        ``True`` is returned: the caller degrades. Any other error: ``False``,
        nothing logged: the caller raises it.

        One line per change, never one per try: the first failure at ``where``
        is logged at ``WARNING`` (no traceback), the next ones only at
        ``DEBUG`` (with theirs), until :meth:`available` says ``where`` wrote
        again ("database back after 12.3 s (40 tries failed)"), once.

        :param where: where it happened, a short stable name (``middleware.end``),
            which is also the ``where`` label a metric counts it by.
        :param doing: what was not done, for the log line ("operation req-... not written").

        Example::

            except Exception as exc:
                if not hooks.unavailable("worker.heartbeat", exc, doing=f"task {id}"):
                    raise
        """
        if not database_unavailable(error):
            return False
        with self._outages_lock:
            outage = self._outages.get(where)
            if outage is None:
                outage = self._outages[where] = Outage(_log, where)
        outage.failed(error, doing or "degraded until it is back")
        for hook in self._hooks:
            _call(hook, "database_unavailable", where, error)
        return True

    def available(self, where: str) -> None:
        """``where`` reached the database again: the end of its outage is logged, once
        (nothing when it had none). Call it after each success of what
        :meth:`unavailable` degraded."""
        outage = self._outages.get(where)
        if outage is not None:
            outage.over()


class Outage:
    """The availability of the database as one party sees it, logged when it changes.

    While the database is away, whoever keeps trying (the ``LISTEN``
    connection, a worker's claims, the end writer, a reaper's passes) tries
    again; a line per try, with its traceback, would bury the one thing an
    operator needs to read: when it went, how it is retried, and when it came back.

    :param log: where the two lines go (a warning each; the tries between them
        at debug level, with their tracebacks).
    :param what: who is speaking, as the lines start with it.

    Example::

        outage = Outage(logging.getLogger("myservice.reaper"), "reaper")
        try:
            reap(engine)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            outage.failed(exc, "trying again every 1 s")  # logged the first time only
        else:
            outage.over()                                  # "back after 12.3 s", once
    """

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self.what = what
        self._since: float | None = None
        self._tries = 0
        self._lock = threading.Lock()

    @property
    def ongoing(self) -> bool:
        """Whether the last try failed."""
        return self._since is not None

    def failed(self, exc: BaseException, retrying: str) -> None:
        """A try failed because the database is away; ``retrying`` says what happens next."""
        with self._lock:
            first, self._since = self._since is None, self._since or time.monotonic()
            self._tries += 1
        if first:
            # exc_info False: no traceback, nor oslo.log's summary of the exception handled.
            self._log.warning(
                "%s: database unavailable (%s); %s",
                self.what,
                first_line(exc),
                retrying,
                exc_info=False,
            )
        else:
            self._log.debug("%s: database still unavailable", self.what, exc_info=exc)

    def over(self) -> None:
        """A try succeeded: say so once if the database had been away."""
        if self._since is None:  # the usual case, without the lock
            return
        with self._lock:
            since, self._since = self._since, None
            tries, self._tries = self._tries, 0
        if since is not None:
            self._log.warning(
                "%s: database back after %.1f s (%d %s failed)",
                self.what,
                time.monotonic() - since,
                tries,
                "try" if tries == 1 else "tries",
                exc_info=False,
            )


#: The longest trace context a task stores (its ``trace_context`` column).
TRACE_CONTEXT_LENGTH = 1024
_TRACE_HEADERS = ("traceparent", "tracestate")


def _encode_trace_context(carrier: Mapping[str, str]) -> str | None:
    kept = {k: carrier[k] for k in _TRACE_HEADERS if isinstance(carrier.get(k), str)}
    if "traceparent" not in kept:
        return None
    text = json.dumps(kept, separators=(",", ":"))
    if len(text) > TRACE_CONTEXT_LENGTH:
        text = json.dumps({"traceparent": kept["traceparent"]}, separators=(",", ":"))
    return text if len(text) <= TRACE_CONTEXT_LENGTH else None


def decode_trace_context(text: str | None) -> dict[str, str] | None:
    """The W3C trace context a task stores (see :meth:`Hooks.trace_context`), as headers.

    ``None`` for none, or for text that is not one (never raises).
    """
    if not text:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        return None
    if not isinstance(found, dict) or not isinstance(found.get("traceparent"), str):
        return None
    return {k: v for k, v in found.items() if k in _TRACE_HEADERS and isinstance(v, str)}


def first_line(error: BaseException) -> str:
    """The first line of what ``error`` says (a driver's error, when SQLAlchemy wraps one)."""
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _overriding(hooks: Sequence[Hook], name: str) -> tuple[Hook, ...]:
    return tuple(h for h in hooks if getattr(type(h), name) is not getattr(Hook, name))


def _call(hook: Hook, name: str, *args: object) -> None:
    try:
        getattr(hook, name)(*args)
    except Exception:
        _log.exception("hook %s.%s failed on %r", type(hook).__name__, name, args[0])


class _Around:
    """The context managers of ``hooks`` for ``name(info)``, entered in order and left in
    reverse; a hook's failure, on the way in or out, is logged, never raised, and never
    swallows the toolkit's error. A plain class: it runs on every request and attempt."""

    __slots__ = ("entered", "hooks", "info", "name")

    def __init__(self, hooks: Sequence[Hook], name: str, info: object) -> None:
        self.hooks = hooks
        self.name = name
        self.info = info
        self.entered: list[tuple[Hook, AbstractContextManager[object]]] = []

    def __enter__(self) -> None:
        for hook in self.hooks:
            try:
                manager = getattr(hook, self.name)(self.info)
                if manager is not None:
                    manager.__enter__()
                    self.entered.append((hook, manager))
            except Exception:
                _log.exception("hook %s.%s failed on %r", type(hook).__name__, self.name, self.info)

    def __exit__(self, *exc_info: Any) -> Literal[False]:
        while self.entered:
            hook, manager = self.entered.pop()
            try:
                manager.__exit__(*exc_info)
            except Exception:
                _log.exception("hook %s.%s failed on the way out", type(hook).__name__, self.name)
        return False


#: No hooks: what an engine no toolkit was made on has.
NO_HOOKS = Hooks()


def hooks_of(bind: Any) -> Hooks:
    """The hooks an engine (or connection) carries in :data:`ENGINE_OPTION`; else none."""
    found = bind.get_execution_options().get(ENGINE_OPTION)
    return found if isinstance(found, Hooks) else NO_HOOKS

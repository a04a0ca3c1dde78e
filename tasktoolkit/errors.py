"""Typed errors. Each carries the HTTP status and error code the endpoints answer with.

Catch :class:`TaskToolkitError` for all of them; every class also derives from the
built-in exception a caller would expect (``ValueError``, ``LookupError``, ...).
"""

from __future__ import annotations

from sqlalchemy import exc as sqlalchemy_exc

__all__ = [
    "ApplicationError",
    "BodyTooLargeError",
    "ConfigurationError",
    "CrossResourceDependencyError",
    "DatabaseUnavailableError",
    "DependencyCycleError",
    "ForbiddenError",
    "HandlerConflictError",
    "IdempotencyInProgressError",
    "IdempotencyKeyReusedError",
    "IncompleteBodyError",
    "InvalidBatchSizeError",
    "InvalidBrokerError",
    "InvalidCallerError",
    "InvalidDependencyError",
    "InvalidDurationError",
    "InvalidErrorCodeError",
    "InvalidFilterError",
    "InvalidHeaderError",
    "InvalidProgressError",
    "InvalidQueueError",
    "InvalidResultError",
    "InvalidRevisionError",
    "InvalidStateError",
    "InvalidTTLError",
    "InvalidTaskNameError",
    "InvalidTaskOptionError",
    "InvalidTaskRulesError",
    "InvalidTransitionError",
    "NotAResourceError",
    "NotFoundError",
    "NothingToRerunError",
    "OperationNotFoundError",
    "OperationTransitionError",
    "ResourceTypeConflictError",
    "TaskCancelRequested",
    "TaskFailure",
    "TaskNotFoundError",
    "TaskNotHeldError",
    "TaskToolkitError",
    "TransientResourceError",
    "UnknownDependencyError",
    "WorkerStopping",
    "database_unavailable",
]


class TaskToolkitError(Exception):
    """Base class of every error the toolkit raises on purpose."""

    #: HTTP status the endpoints answer with.
    status: int = 500
    #: Machine-readable code, ``tasktoolkit.<what>``.
    code: str = "tasktoolkit.error"


class InvalidStateError(TaskToolkitError, ValueError):
    """A state name that is not one of the known states."""

    status = 400
    code = "tasktoolkit.invalid_state"


class InvalidProgressError(TaskToolkitError, ValueError):
    """A progress value outside 0..100 (or not an integer)."""

    status = 400
    code = "tasktoolkit.invalid_progress"


class InvalidTTLError(TaskToolkitError, ValueError):
    """A time-to-live that is negative, absurd or not a duration."""

    status = 400
    code = "tasktoolkit.invalid_ttl"


class ConfigurationError(TaskToolkitError, ValueError):
    """A setting that cannot be: an unknown option, a value out of bounds, a name
    that imports nothing. Raised when the settings (or a part) are made, never later."""

    code = "tasktoolkit.invalid_configuration"


class InvalidDurationError(ConfigurationError):
    """A duration that cannot be parsed (``--older-than 7x``), is negative or absurd."""

    status = 400
    code = "tasktoolkit.invalid_duration"


class InvalidBatchSizeError(ConfigurationError):
    """A batch size (the rows of one reaper, sweeper or purge transaction) out of bounds."""

    code = "tasktoolkit.invalid_batch_size"


class InvalidFilterError(TaskToolkitError, ValueError):
    """A bad query parameter on a list or a bad marker."""

    status = 400
    code = "tasktoolkit.invalid_filter"


class InvalidHeaderError(TaskToolkitError, ValueError):
    """A request header the contract reads with a value it refuses (``Prefer``,
    ``Idempotency-Key``)."""

    status = 400
    code = "tasktoolkit.invalid_header"


class InvalidResultError(TaskToolkitError, ValueError):
    """A task result that is not a JSON object of at most 16 KiB."""

    status = 400
    code = "tasktoolkit.invalid_result"


class IdempotencyInProgressError(TaskToolkitError):
    """A request with the ``Idempotency-Key`` of a request still running."""

    status = 409
    code = "tasktoolkit.idempotency_in_progress"


class IdempotencyKeyReusedError(TaskToolkitError):
    """An ``Idempotency-Key`` sent before with another method, path or body."""

    status = 422
    code = "tasktoolkit.idempotency_key_reused"


class InvalidTransitionError(TaskToolkitError):
    """A transition the state machine does not allow; nothing was changed.

    :param task_id: the task.
    :param current: its state when the transition was refused.
    :param requested: the state that was asked for.
    """

    status = 409
    code = "tasktoolkit.invalid_transition"

    def __init__(self, task_id: str, current: str, requested: str) -> None:
        self.task_id = task_id
        self.current = current
        self.requested = requested
        super().__init__(f"task {task_id} cannot go from {current!r} to {requested!r}")


class OperationTransitionError(TaskToolkitError):
    """A move of an operation that its state does not allow (cancelling a finished one).

    :param operation_id: the operation.
    :param current: its state when the move was refused.
    :param requested: what was asked for.
    """

    status = 409
    code = "tasktoolkit.invalid_transition"

    def __init__(self, operation_id: str, current: str, requested: str) -> None:
        self.operation_id = operation_id
        self.current = current
        self.requested = requested
        super().__init__(f"operation {operation_id} cannot go from {current!r} to {requested!r}")


class NothingToRerunError(TaskToolkitError):
    """A re-run with nothing to re-run: the task (or every task of the operation) is not
    ``failed`` or ``cancelled``, or is gone with its resource; nothing was changed."""

    status = 409
    code = "tasktoolkit.nothing_to_rerun"


class TaskNotHeldError(TaskToolkitError):
    """A worker reported on a task it does not hold (another host runs it)."""

    status = 409
    code = "tasktoolkit.task_not_held"


class TaskCancelRequested(TaskToolkitError):
    """Raised in worker code when cancellation of its task was asked.

    :meth:`tasktoolkit.orm.Job.check_cancelled` raises it; the job's ``with``
    block turns it into the ``cancelled`` state.
    """

    status = 409
    code = "tasktoolkit.cancel_requested"


class TaskFailure(TaskToolkitError):
    """Raise from worker code to fail its task with a chosen error code.

    :param error_code: the task's ``error.code`` (``dhcp_timeout``).
    :param message: the task's ``error.message``, shown to API consumers.
    :param retryable: the task may run again: it goes back to ``pending``
        after its backoff while its name's ``max_attempts`` allow another
        attempt (the last failure is final).

    Example::

        raise TaskFailure("dhcp_timeout", "no lease after 30 s", retryable=True)
    """

    status = 500
    code = "tasktoolkit.task_failure"

    def __init__(self, error_code: str, message: str, *, retryable: bool = False) -> None:
        self.error_code = error_code
        self.message = message
        self.retryable = bool(retryable)
        super().__init__(f"{error_code}: {message}")


class ForbiddenError(TaskToolkitError, PermissionError):
    """The caller may see the record but not do this to it (the authorization hook said no)."""

    status = 403
    code = "tasktoolkit.forbidden"


class WorkerStopping(TaskToolkitError):
    """Raised in worker code when its worker was asked to stop and the grace period is over.

    :meth:`tasktoolkit.orm.Job.check_cancelled` raises it; the job's ``with``
    block hands the task back as ``pending`` (not a failed attempt).
    """

    status = 503
    code = "tasktoolkit.worker_stopping"


class NotFoundError(TaskToolkitError, LookupError):
    """A record that does not exist, or that the caller may not see."""

    status = 404
    code = "tasktoolkit.not_found"


class TaskNotFoundError(NotFoundError):
    """No task with that id (or none the caller may see)."""

    code = "tasktoolkit.task_not_found"


class OperationNotFoundError(NotFoundError):
    """No operation with that id (or none the caller may see)."""

    code = "tasktoolkit.operation_not_found"


class TransientResourceError(TaskToolkitError, ValueError):
    """A task was spawned on a resource that is not in a session (not saved)."""

    status = 400
    code = "tasktoolkit.transient_resource"


class ResourceTypeConflictError(TaskToolkitError, TypeError):
    """A resource model that cannot be declared: two models with the same resource
    type, a model with none, or a malformed one."""

    code = "tasktoolkit.resource_type_conflict"


class NotAResourceError(TaskToolkitError, TypeError):
    """A task was spawned on an object whose model does not mix in ``TaskResource``."""

    code = "tasktoolkit.not_a_resource"


class InvalidTaskNameError(TaskToolkitError, ValueError):
    """A task name that is empty, too long or has characters other than ``A-Za-z0-9_.:-``."""

    status = 400
    code = "tasktoolkit.invalid_task_name"


class InvalidErrorCodeError(TaskToolkitError, ValueError):
    """A task's error code that is empty, not a string, longer than 64 characters, or holds
    a NUL or a lone surrogate (which no database keeps)."""

    status = 400
    code = "tasktoolkit.invalid_error_code"


class InvalidTaskOptionError(TaskToolkitError, ValueError):
    """A bad option when spawning tasks (``max_attempts``, ``heartbeat_timeout``)."""

    status = 400
    code = "tasktoolkit.invalid_task_option"


class InvalidTaskRulesError(ConfigurationError):
    """A task name's rules that cannot be: an unknown option, a negative or absurd
    timeout, ``max_attempts`` under 1, a backoff cap under its base, a bad jitter,
    or a ``__task_rules__`` that is not a mapping of task names to rules."""

    status = 400
    code = "tasktoolkit.invalid_task_rules"


class InvalidDependencyError(InvalidTaskOptionError):
    """A spawn's ``after`` that cannot be: not a mapping of task names to lists of task
    names (the base of the other refusals of ``after``)."""

    code = "tasktoolkit.invalid_dependency"


class UnknownDependencyError(InvalidDependencyError):
    """A spawn's ``after`` naming a task that the spawn does not spawn."""

    code = "tasktoolkit.unknown_dependency"


class CrossResourceDependencyError(InvalidDependencyError):
    """A spawn's ``after`` naming a task the spawn makes only on other resources: a task
    runs after tasks of its own resource."""

    code = "tasktoolkit.cross_resource_dependency"


class DependencyCycleError(InvalidDependencyError):
    """A spawn's ``after`` whose tasks wait on each other in a circle."""

    code = "tasktoolkit.dependency_cycle"


class InvalidQueueError(InvalidTaskOptionError):
    """A queue name that is empty, has spaces or other characters than printable ASCII,
    or is longer than 255 characters."""

    code = "tasktoolkit.invalid_queue"


class HandlerConflictError(TaskToolkitError, ValueError):
    """A task name bound to a handler twice (on one queue bridge)."""

    code = "tasktoolkit.handler_conflict"


class InvalidBrokerError(ConfigurationError):
    """A broker URL whose scheme the queue bridge does not run on (not RabbitMQ or Redis)."""

    code = "tasktoolkit.invalid_broker"


class DatabaseUnavailableError(TaskToolkitError):
    """The database could not be reached; the request may be retried.

    Its response's ``Retry-After`` is the settings' ``unavailable_retry_after``
    (:func:`tasktoolkit.http_errors.response_for` reads it from the request).
    """

    status = 503
    code = "tasktoolkit.database_unavailable"

    def __init__(self, detail: str = "the database is unavailable; retry later") -> None:
        super().__init__(detail)


#: oslo.db's exception filters raise their own errors instead of SQLAlchemy's;
#: they are recognised by name, so that oslo.db is not a dependency.
_OSLO_DB = "oslo_db.exception"


def raised_by_oslo_db(exc: BaseException, name: str) -> bool:
    """Whether ``exc`` is oslo.db's ``name`` error (``DBDeadlock``, ...) or a subclass of it."""
    return any(c.__name__ == name and c.__module__ == _OSLO_DB for c in type(exc).__mro__)


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc``, raised by the database layer, means the database cannot serve us now.

    The one rule every layer answers ``503`` by: a connection that could not be
    made or was lost (``OperationalError``, ``InterfaceError``, an invalidated
    connection, oslo.db's ``DBConnectionError``), and a pool with no connection
    to give within its timeout. Anything else (a constraint, bad SQL) is a bug,
    not an outage. A driver's own ``OperationalError`` or ``InterfaceError``
    counts too: SQLAlchemy lets it through unwrapped when a pooled connection
    that died fails while its isolation level is set on checkout.
    """
    if isinstance(exc, sqlalchemy_exc.TimeoutError) or raised_by_oslo_db(exc, "DBConnectionError"):
        return True
    if not isinstance(exc, sqlalchemy_exc.DBAPIError):
        return not isinstance(exc, sqlalchemy_exc.SQLAlchemyError) and any(
            cls.__name__ in _DBAPI_UNAVAILABLE for cls in type(exc).__mro__
        )
    return exc.connection_invalidated or isinstance(
        exc, (sqlalchemy_exc.OperationalError, sqlalchemy_exc.InterfaceError)
    )


class ApplicationError(TaskToolkitError):
    """The application raised before its response started; the request-id middleware answers."""

    status = 500
    code = "tasktoolkit.internal_error"


class BodyTooLargeError(TaskToolkitError, ValueError):
    """A request body over the limit the toolkit reads (:data:`tasktoolkit.wsgi_input.MAX_BODY`)."""

    status = 413
    code = "tasktoolkit.body_too_large"


class IncompleteBodyError(TaskToolkitError, ValueError):
    """A request body shorter than its ``Content-Length`` (the client stopped sending)."""

    status = 400
    code = "tasktoolkit.incomplete_body"


class InvalidCallerError(TaskToolkitError, ValueError):
    """A project or user id that does not fit its column (too long, NUL, not text)."""

    status = 400
    code = "tasktoolkit.invalid_caller"


#: The PEP 249 exception classes that mean the connection, not the statement, failed.
_DBAPI_UNAVAILABLE = frozenset({"OperationalError", "InterfaceError"})


class InvalidRevisionError(TaskToolkitError, ValueError):
    """A migration revision that the toolkit's history does not have."""

    status = 400
    code = "tasktoolkit.invalid_revision"

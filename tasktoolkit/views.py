"""Tasks and operations as documents: what the API, the command line and the pages show.

One view per record, made of plain data (dicts, lists, text, numbers), so each
front renders it its own way: the endpoints as JSON, ``tasktoolkit watch`` as
lines, the pages as HTML. Nothing here knows of HTTP.

Times are UTC, ISO 8601 with a ``Z``. Tracebacks and worker hosts are shown to
admins only: for anyone else the keys are absent. So is the text of an
unexpected worker error (``worker_error``): anyone else reads a generic message.

Example::

    document = {"task": task_view(task, admin=False)}
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tasktoolkit.orm._ready import DEPENDENCY
from tasktoolkit.orm._records import Operation, Task, TaskAttempt
from tasktoolkit.orm._registry import LiveWorker, Waits
from tasktoolkit.orm._stats import TaskStats
from tasktoolkit.orm._workers import WORKER_ERROR, WORKER_ERROR_MESSAGE

__all__ = [
    "REQUEST_FAILED",
    "attempts_view",
    "isoformat",
    "operation_view",
    "resources_view",
    "stats_view",
    "task_view",
    "worker_view",
]


def isoformat(moment: datetime | None) -> str | None:
    """``2024-01-31T12:00:00.123456Z``, or ``None``."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error(record: Task | TaskAttempt, *, admin: bool) -> dict[str, Any] | None:
    if record.error_code is None and record.error_message is None:
        return None
    shown = admin or record.error_code != WORKER_ERROR
    error: dict[str, Any] = {
        "code": record.error_code or "error",
        "message": (record.error_message or "") if shown else WORKER_ERROR_MESSAGE,
    }
    if admin:
        error["traceback"] = record.error_traceback
    return error


def _attempt_view(
    number: int,
    attempt: TaskAttempt | None,
    task: Task,
    *,
    admin: bool,
) -> dict[str, Any]:
    """An ended attempt, or (``attempt`` None) the one ``task`` is running now."""
    view: dict[str, Any] = {"number": number}
    if admin:
        view["host"] = task.host if attempt is None else attempt.host
    view.update(
        started_at=isoformat(task.started_at if attempt is None else attempt.started_at),
        finished_at=None if attempt is None else isoformat(attempt.finished_at),
        outcome=None if attempt is None else attempt.outcome,
        error=None if attempt is None else _error(attempt, admin=admin),
    )
    return view


def attempts_view(task: Task, *, admin: bool) -> list[dict[str, Any]]:
    """Every start of the task, oldest first: the ended ones, then the one in progress."""
    views = [_attempt_view(a.number, a, task, admin=admin) for a in task.attempt_records]
    if task.state == "running":
        views.append(_attempt_view(task.attempts, None, task, admin=admin))
    return views


def _waiting(task: Task, waits: Waits | None) -> str | None:
    """Why the pending ``task`` does not run yet: as ``waits`` (read for its list) says,
    or, without them, what its own row says (``dependency``)."""
    if waits is not None:
        return waits.why(task)
    return DEPENDENCY if task.state == "pending" and task.waiting_on else None


def task_view(task: Task, *, admin: bool, waits: Waits | None = None) -> dict[str, Any]:
    """The task as the API shows it to a caller (``admin``: with tracebacks and hosts).

    :param waits: what says why the tasks of its list wait (``waiting``:
        :func:`~tasktoolkit.orm._registry.waits_of`); without them, only what the
        task's own row says (``dependency``).
    """
    error = _error(task, admin=admin)
    view: dict[str, Any] = {
        "id": task.id,
        "request_id": task.request_id,
        "resource_type": task.resource_type,
        "resource_id": task.resource_id,
        "name": task.name,
        "state": task.state,
        "progress": task.progress,
        "message": task.message,
        "error": error,
    }
    if admin:
        view["host"] = task.host
    view.update(
        created_at=isoformat(task.created_at),
        started_at=isoformat(task.started_at),
        updated_at=isoformat(task.updated_at),
        finished_at=isoformat(task.finished_at),
        expires_at=isoformat(task.expires_at),
        result=task.result,
        not_before=isoformat(task.not_before) if task.state == "pending" else None,
        queue=task.queue,
        after=json.loads(task.after) if task.after else [],
        waiting=_waiting(task, waits),
        attempts=attempts_view(task, admin=admin),
    )
    return view


#: The error code of an operation whose response was a 4xx or 5xx, when no task failed.
REQUEST_FAILED = "request_failed"


def _operation_error(operation: Operation, *, admin: bool) -> dict[str, Any] | None:
    """Why the operation failed: its first failed task's error (with the task), its own
    (``request_lost``), or its failed response's; ``None`` otherwise."""
    error: dict[str, Any] | None = operation.error
    if error is None:
        status = operation.http_status
        if status is None or status < 400:
            return None
        return {"code": REQUEST_FAILED, "message": f"the request was answered {status}"}
    if not admin and error["code"] == WORKER_ERROR:
        error["message"] = WORKER_ERROR_MESSAGE
    return error


def resources_view(operation: Operation) -> list[dict[str, str]]:
    """Every resource the operation touched (its target first, if it had one)."""
    seen: list[tuple[str, str]] = []
    if operation.resource_type is not None and operation.resource_id is not None:
        seen.append((operation.resource_type, operation.resource_id))
    for touched in operation.resource_records:
        key = (touched.resource_type, touched.resource_id)
        if key not in seen:
            seen.append(key)
    return [{"type": kind, "id": ident} for kind, ident in seen]


def operation_view(
    operation: Operation,
    *,
    admin: bool,
    tasks: list[Task] | None = None,
    waits: Waits | None = None,
) -> dict[str, Any]:
    """The operation as the API shows it; with ``tasks`` (its own GET) when given, their
    ``waiting`` said by ``waits``.

    Its ``error`` shows members a generic message for an unexpected worker error,
    as a task's view does.
    """
    view: dict[str, Any] = {
        "id": operation.id,
        "global_request_id": operation.global_request_id,
        "method": operation.method,
        "path": operation.path,
        "action": operation.action,
        "resource_type": operation.resource_type,
        "resource_id": operation.resource_id,
        "project_id": operation.project_id,
        "user_id": operation.user_id,
        "state": operation.state,
        "http_status": operation.http_status,
        "error": _operation_error(operation, admin=admin),
        "task_counts": operation.task_counts,
        "resources": resources_view(operation),
        "retry_of": operation.retry_of,
        "created_at": isoformat(operation.created_at),
        "updated_at": isoformat(operation.updated_at),
        "finished_at": isoformat(operation.finished_at),
        "expires_at": isoformat(operation.expires_at),
    }
    if tasks is not None:
        view["tasks"] = [task_view(task, admin=admin, waits=waits) for task in tasks]
    return view


def worker_view(worker: LiveWorker) -> dict[str, Any]:
    """A worker as ``GET /workers`` and ``tasktoolkit workers`` show it."""
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "kind": worker.kind,
        "names": list(worker.names),
        "queues": list(worker.queues),
        "started_at": isoformat(worker.started_at),
        "beat_at": isoformat(worker.beat_at),
        "timeout": worker.timeout,
        "live": worker.live,
    }


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def stats_view(stats: TaskStats) -> dict[str, Any]:
    """One task name's figures on one queue, as ``GET /tasks/stats`` and ``tasktoolkit
    stats`` show them (seconds, to the millisecond)."""
    return {
        "name": stats.name,
        "queue": stats.queue,
        "pending": stats.pending,
        "running": stats.running,
        "oldest_pending_seconds": _seconds(stats.oldest_pending_seconds),
        "failed_last_hour": dict(sorted(stats.failed_last_hour.items())),
        "attempts_last_hour": stats.attempts_last_hour,
        "run_seconds_p50": _seconds(stats.run_seconds_p50),
        "run_seconds_p95": _seconds(stats.run_seconds_p95),
    }

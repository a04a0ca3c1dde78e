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
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tasktoolkit.orm._ready import DEPENDENCY
from tasktoolkit.orm._records import Operation, Task, TaskAttempt
from tasktoolkit.orm._workers import WORKER_ERROR, WORKER_ERROR_MESSAGE

__all__ = ["attempts_view", "isoformat", "operation_view", "task_view"]


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


def _waiting(task: Task, reasons: Mapping[str, str] | None) -> str | None:
    """Why the pending ``task`` does not run yet, from ``reasons`` (of its list:
    :func:`~tasktoolkit.orm._ready.waiting`) or, without them, from its own row."""
    if task.state != "pending":
        return None
    if reasons is not None:
        return reasons.get(task.id)
    return DEPENDENCY if task.waiting_on else None


def task_view(
    task: Task, *, admin: bool, waiting: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The task as the API shows it to a caller (``admin``: with tracebacks and hosts).

    :param waiting: why the tasks of its list wait, by id
        (:func:`~tasktoolkit.orm._ready.waiting`); without it, only what the
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
        waiting=_waiting(task, waiting),
        attempts=attempts_view(task, admin=admin),
    )
    return view


def operation_view(
    operation: Operation,
    *,
    admin: bool,
    tasks: list[Task] | None = None,
    waiting: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The operation as the API shows it; with ``tasks`` (its own GET) when given,
    and why they wait (``waiting``, as for :func:`task_view`)."""
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
        "error": operation.error,
        "task_counts": operation.task_counts,
        "created_at": isoformat(operation.created_at),
        "updated_at": isoformat(operation.updated_at),
        "finished_at": isoformat(operation.finished_at),
        "expires_at": isoformat(operation.expires_at),
    }
    if tasks is not None:
        view["tasks"] = [task_view(task, admin=admin, waiting=waiting) for task in tasks]
    return view

"""oslo.context: the caller from the environ, and the request of every log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from oslo_context import context as oslo

from tasktoolkit import context
from tasktoolkit.caller import Caller
from tasktoolkit.context import RequestContext, new_request_id
from tasktoolkit.orm import Job

__all__ = ["OsloContextFilter", "job_context", "oslo_caller", "oslo_context"]


class _Unstored(oslo.RequestContext):
    """A ``RequestContext`` that never goes into oslo's thread-local store.

    oslo.context stores every new context while the store is empty, even with
    ``overwrite=False``; one the toolkit makes must not outlive its request there.
    """

    def update_store(self) -> None:
        pass


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def oslo_caller(environ: Mapping[str, Any]) -> Caller:
    """The caller as oslo.context reads it (``RequestContext.from_environ``).

    The same headers as keystonemiddleware's (``X-Project-Id``, ``X-User-Id``,
    ``X-Roles``, ``OpenStack-System-Scope``, and their older spellings); roles are
    compared in lower case. Nothing is put in oslo's thread-local store.
    """
    found = _Unstored.from_environ(dict(environ))
    return Caller(
        project_id=_text(found.project_id),
        user_id=_text(found.user_id),
        roles=frozenset(r.strip().lower() for r in found.roles if r and r.strip()),
        system_scope=_text(found.system_scope),
    )


def oslo_context(ctx: RequestContext) -> oslo.RequestContext:
    """An oslo.context ``RequestContext`` for the toolkit's context of a request.

    If oslo's thread-local store already holds the context of this very request
    (the host made it, with roles and names), that one; otherwise a new one with
    the request id, global request id, user and project, never put in oslo's
    thread-local store.
    """
    stored = oslo.get_current()
    if isinstance(stored, oslo.RequestContext) and stored.request_id == ctx.request_id:
        return stored
    return _Unstored(
        request_id=ctx.request_id,
        global_request_id=ctx.global_request_id,
        user_id=ctx.user_id,
        project_id=ctx.project_id,
    )


class OsloContextFilter(logging.Filter):
    """Give each record made during a request the oslo context of that request.

    oslo.log's ``ContextFormatter`` takes a record's ids from ``record.context``
    or, without one, from oslo's thread-local store, which still holds the
    *previous* request's context wherever the current request has not (yet)
    made its own: the toolkit's middleware lines, a worker's lines. This filter
    sets ``record.context`` from the toolkit's context variable, so every line of
    a request carries its own ids. A record with a ``context`` of its own (passed
    with ``extra=``) keeps it; outside a request the record is left alone.

    Add it to the handlers oslo.log set up::

        for handler in logging.getLogger().handlers:
            handler.addFilter(OsloContextFilter())
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if "context" not in record.__dict__:
            ctx = context.current()
            if ctx is not None:
                record.context = oslo_context(ctx)
        return True


@contextmanager
def job_context(job: Job) -> Iterator[RequestContext]:
    """Bind the request that spawned ``job`` for the ``with`` block (worker log lines).

    The context is the job's own (:attr:`Job.context <tasktoolkit.orm.Job.context>`):
    the request id, global request id, project and user of the task's
    operation, and tasks spawned in the block belong to that operation, as
    they do in a plain ``with job``. A task spawned outside a request gets a
    fresh request id for its log lines, and what it spawns belongs to no
    operation, with the job's project and user where their resource has none.

    Example::

        while (job := worker.claim()) is not None:
            with job, job_context(job):
                log.info("wiring %s", job.resource_id)   # [req-... user project] under oslo.log
    """
    bound = job.context or RequestContext(
        request_id=new_request_id(), project_id=job.project_id, user_id=job.user_id
    )
    with context.request_context(bound):
        yield bound
